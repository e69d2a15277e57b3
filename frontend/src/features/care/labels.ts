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
