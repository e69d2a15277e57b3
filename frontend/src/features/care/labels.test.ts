import { nextTaskByPlant, timeUntil } from "./labels";

describe("care labels", () => {
  it("says how long until a due date", () => {
    const now = Date.parse("2026-12-07T12:00:00Z");
    expect(timeUntil("2026-12-07T11:00:00Z", now)).toBe("now");
    expect(timeUntil("2026-12-07T17:00:00Z", now)).toBe("in 5 h");
    expect(timeUntil("2026-12-10T12:00:00Z", now)).toBe("in 3 d");
  });

  it("keeps each plant's soonest task", () => {
    const tasks = [
      { plant_id: "a", due_at: "2026-12-09T00:00:00Z", task: "water" },
      { plant_id: "a", due_at: "2026-12-08T00:00:00Z", task: "fertilize" },
      { plant_id: "b", due_at: "2026-12-20T00:00:00Z", task: "repot" },
    ];
    const next = nextTaskByPlant(tasks);
    expect(next.get("a")?.task).toBe("fertilize");
    expect(next.get("b")?.task).toBe("repot");
    expect(next.size).toBe(2);
  });
});
