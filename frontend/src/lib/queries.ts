// Every query the UI makes, defined once: its key (for caching and
// invalidation) and how it is fetched. Pages and the live event stream use
// these; no page spells a query key by hand.
import { queryOptions } from "@tanstack/react-query";
import { api } from "./api";
import type { AlertKind, DeviceStatus } from "./types";

export const keys = {
  plants: ["plants"] as const,
  plant: (id: string) => ["plant", id] as const,
  /** Every range of a plant's chart series. */
  series: (plantId: string) => ["series", plantId] as const,
  devices: ["devices"] as const,
  alerts: ["alerts"] as const,
  llmSettings: ["settings", "llm"] as const,
  notificationSettings: ["settings", "notifications"] as const,
  health: ["health"] as const,
  homeAssistant: ["settings", "home-assistant"] as const,
  channels: ["settings", "channels"] as const,
  carePlan: (plantId: string) => ["care-plan", plantId] as const,
  carePlans: (plantId: string) => ["care-plans", plantId] as const,
  authStatus: ["auth", "status"] as const,
  me: ["auth", "me"] as const,
  users: ["users"] as const,
  tokens: ["tokens"] as const,
  enrollmentKeys: ["enrollment", "keys"] as const,
  enrollmentWindow: ["enrollment", "window"] as const,
};

export const plantsQuery = () => queryOptions({ queryKey: keys.plants, queryFn: api.plants });

export const plantQuery = (id: string) => queryOptions({ queryKey: keys.plant(id), queryFn: () => api.plant(id) });

export const seriesQuery = (plantId: string, hours: number) =>
  queryOptions({
    queryKey: [...keys.series(plantId), hours],
    queryFn: () => api.series(plantId, hours),
  });

export const devicesQuery = (status?: DeviceStatus) =>
  queryOptions({
    queryKey: [...keys.devices, status ?? "all"],
    queryFn: () => api.devices(status),
  });

export const plantDevicesQuery = (plantId: string) =>
  queryOptions({
    queryKey: [...keys.devices, "plant", plantId],
    queryFn: () => api.plantDevices(plantId),
  });

export const recentAlertsQuery = () =>
  queryOptions({ queryKey: [...keys.alerts, "recent"], queryFn: () => api.alerts({}) });

export const plantAlertsQuery = (plantId: string) =>
  queryOptions({
    queryKey: [...keys.alerts, "plant", plantId],
    queryFn: () => api.alerts({ plant_id: plantId }),
  });

/** Alerts of one kind and plant (either may be empty) within the last `hours` (null = all). */
export const filteredAlertsQuery = (kind: AlertKind | "", plantId: string, hours: number | null) =>
  queryOptions({
    queryKey: [...keys.alerts, "list", kind, plantId, hours],
    queryFn: () => {
      // Rounded to the minute, so refetches within a minute ask the same.
      const since = hours
        ? new Date(Math.floor(Date.now() / 60000) * 60000 - hours * 3600 * 1000).toISOString()
        : undefined;
      return api.alerts({ kind, plant_id: plantId || undefined, since });
    },
  });

export const llmSettingsQuery = () => queryOptions({ queryKey: keys.llmSettings, queryFn: api.llmSettings });

export const homeAssistantQuery = () => queryOptions({ queryKey: keys.homeAssistant, queryFn: api.homeAssistant });

export const channelsQuery = () => queryOptions({ queryKey: keys.channels, queryFn: api.channels });

export const healthQuery = () => queryOptions({ queryKey: keys.health, queryFn: api.health });

export const notificationSettingsQuery = () =>
  queryOptions({ queryKey: keys.notificationSettings, queryFn: api.notifications });

export const carePlanQuery = (plantId: string) =>
  queryOptions({ queryKey: keys.carePlan(plantId), queryFn: () => api.carePlan(plantId) });

export const carePlansQuery = (plantId: string) =>
  queryOptions({ queryKey: keys.carePlans(plantId), queryFn: () => api.carePlans(plantId) });

export const authStatusQuery = () =>
  queryOptions({ queryKey: keys.authStatus, queryFn: api.authStatus, staleTime: Infinity });

export const meQuery = () => queryOptions({ queryKey: keys.me, queryFn: api.me, retry: false });

export const usersQuery = () => queryOptions({ queryKey: keys.users, queryFn: api.users });

export const tokensQuery = () => queryOptions({ queryKey: keys.tokens, queryFn: api.tokens });

export const enrollmentKeysQuery = () => queryOptions({ queryKey: keys.enrollmentKeys, queryFn: api.enrollmentKeys });

export const enrollmentWindowQuery = () =>
  queryOptions({ queryKey: keys.enrollmentWindow, queryFn: api.enrollmentWindow });
