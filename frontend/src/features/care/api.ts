// The care feature's server state: every query, mutation and the cache
// entries each mutation refreshes, in one place (pages only compose these).
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { request } from "../../lib/api";
import type { CareEvent, CareScheduleView, CareTask, CareTaskRule, NewCareEvent } from "../../lib/types";

export const careKeys = {
  all: ["care"] as const,
  tasks: ["care", "tasks"] as const,
  upcoming: ["care", "tasks", "upcoming"] as const,
  journal: (plantId: string) => ["care", "journal", plantId] as const,
  schedule: (plantId: string) => ["care", "schedule", plantId] as const,
};

export const dueTasksQuery = () =>
  queryOptions({
    queryKey: careKeys.tasks,
    queryFn: () => request<{ tasks: CareTask[] }>("GET", "/tasks"),
  });

/** Every task due within a month: the dashboard's cards show each plant's next. */
export const upcomingTasksQuery = () =>
  queryOptions({
    queryKey: careKeys.upcoming,
    queryFn: () => {
      const monthAhead = new Date(Date.now() + 30 * 86_400_000).toISOString();
      return request<{ tasks: CareTask[] }>("GET", `/tasks?due_before=${encodeURIComponent(monthAhead)}`);
    },
  });

export const journalQuery = (plantId: string) =>
  queryOptions({
    queryKey: careKeys.journal(plantId),
    queryFn: () =>
      request<{ events: CareEvent[]; next_before: string | null }>("GET", `/plants/${plantId}/care-events?limit=50`),
  });

export const scheduleQuery = (plantId: string) =>
  queryOptions({
    queryKey: careKeys.schedule(plantId),
    queryFn: () => request<CareScheduleView>("GET", `/plants/${plantId}/care-schedule`),
  });

export const useDueTasks = () => useQuery(dueTasksQuery());
export const useUpcomingTasks = () => useQuery(upcomingTasksQuery());
export const useJournal = (plantId: string) => useQuery(journalQuery(plantId));
export const useSchedule = (plantId: string) => useQuery(scheduleQuery(plantId));

/** Whatever changes care data changes the due list, journals and schedules. */
function useRefreshCare() {
  const client = useQueryClient();
  return () => client.invalidateQueries({ queryKey: careKeys.all });
}

export function useMarkDone() {
  const refresh = useRefreshCare();
  return useMutation({
    mutationFn: (taskId: string) => request<CareEvent>("POST", `/tasks/${taskId}/done`),
    onSuccess: refresh,
  });
}

export function useSnooze() {
  const refresh = useRefreshCare();
  return useMutation({
    mutationFn: ({ taskId, hours }: { taskId: string; hours: number }) =>
      request<{ snoozed_until: string }>("POST", `/tasks/${taskId}/snooze`, { hours }),
    onSuccess: refresh,
  });
}

export function useRecordCareEvent(plantId: string) {
  const refresh = useRefreshCare();
  return useMutation({
    mutationFn: (event: NewCareEvent) => request<CareEvent>("POST", `/plants/${plantId}/care-events`, event),
    onSuccess: refresh,
  });
}

export function useDeleteCareEvent(plantId: string) {
  const refresh = useRefreshCare();
  return useMutation({
    mutationFn: (eventId: string) => request<void>("DELETE", `/plants/${plantId}/care-events/${eventId}`),
    onSuccess: refresh,
  });
}

export function useSaveSchedule(plantId: string) {
  const refresh = useRefreshCare();
  return useMutation({
    mutationFn: (tasks: CareTaskRule[]) =>
      request<CareScheduleView>("PUT", `/plants/${plantId}/care-schedule`, { tasks }),
    onSuccess: refresh,
  });
}
