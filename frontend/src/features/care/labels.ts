import type { CareEventKind } from "../../lib/types";

export const EVENT_LABEL: Record<CareEventKind, string> = {
  watered: "Watered",
  fertilized: "Fertilized",
  repotted: "Repotted",
  pruned: "Pruned",
  treated: "Treated",
  note: "Note",
};

export const EVENT_KINDS = Object.keys(EVENT_LABEL) as CareEventKind[];

/** A task as people say it. */
export function taskLabel(task: string): string {
  switch (task) {
    case "water":
      return "Water";
    case "fertilize":
      return "Fertilize";
    case "repot":
      return "Repot";
    default:
      return task;
  }
}

/** "now", "in 5 h", "in 3 d". */
export function timeUntil(iso: string, now: number = Date.now()): string {
  const hours = Math.round((new Date(iso).getTime() - now) / 3_600_000);
  if (hours <= 0) return "now";
  if (hours < 48) return `in ${hours} h`;
  return `in ${Math.round(hours / 24)} d`;
}

/** The soonest task of each plant. */
export function nextTaskByPlant<T extends { plant_id: string; due_at: string }>(tasks: T[]): Map<string, T> {
  const next = new Map<string, T>();
  for (const task of tasks) {
    const known = next.get(task.plant_id);
    if (!known || task.due_at < known.due_at) next.set(task.plant_id, task);
  }
  return next;
}
