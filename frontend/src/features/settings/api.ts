// The settings pages' server state: each setting's query and the
// mutations that change it, with the cache entries they refresh.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api } from "../../lib/api";
import {
  channelsQuery,
  healthQuery,
  homeAssistantQuery,
  keys,
  llmSettingsQuery,
  notificationSettingsQuery,
} from "../../lib/queries";
import type { ChannelInput, Provider } from "../../lib/types";
import type { OpenApiDocument } from "./channelFields";

export type LlmInput = { provider: Provider; api_key?: string; model?: string };

export const useLlmSettings = () => useQuery(llmSettingsQuery());

export function useSaveLlm(onSaved: () => void) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (input: LlmInput) => api.saveLlm(input),
    onSuccess: (saved) => {
      onSaved();
      client.setQueryData(keys.llmSettings, saved);
    },
  });
}

export const useTestLlm = () => useMutation({ mutationFn: (input: LlmInput) => api.testLlm(input) });

export const useNotificationSettings = () => useQuery(notificationSettingsQuery());

export function useSaveDiscordWebhook(onSaved: () => void) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (url: string | null) => api.saveNotifications(url),
    onSuccess: (saved) => {
      onSaved();
      client.setQueryData(keys.notificationSettings, saved);
    },
  });
}

export const useTestDiscordWebhook = () => useMutation({ mutationFn: api.testNotification });

export const useChannels = () => useQuery(channelsQuery());

/** The server's OpenAPI document: each channel kind's fields are read from it. */
export const useApiDocument = () =>
  useQuery(
    queryOptions({
      queryKey: ["openapi"],
      queryFn: async (): Promise<OpenApiDocument> => (await fetch("/api/openapi.json")).json(),
      staleTime: Infinity,
    }),
  );

export function useCreateChannel(onCreated: () => void) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (input: ChannelInput) => api.createChannel(input),
    onSuccess: () => {
      onCreated();
      client.invalidateQueries({ queryKey: keys.channels });
    },
  });
}

export const useTestChannel = (id: string) => useMutation({ mutationFn: () => api.testChannel(id) });

export function useDeleteChannel(id: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: () => api.deleteChannel(id),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.channels }),
  });
}

export const useHomeAssistant = () => useQuery(homeAssistantQuery());

export function useSaveHomeAssistant(onSaved: () => void) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (input: { url: string | null; discovery_prefix?: string }) => api.saveHomeAssistant(input),
    onSuccess: (saved) => {
      onSaved();
      client.setQueryData(keys.homeAssistant, saved);
    },
  });
}

export const useHealth = () => useQuery(healthQuery());
