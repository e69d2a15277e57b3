// A plant's care schedule: what is due when, edited as a list of tasks.
import { useState, type FormEvent } from "react";
import { ErrorState, Skeleton } from "../../components/ui";
import { ApiError } from "../../lib/api";
import { timeAgo } from "../../lib/format";
import { useSession } from "../../lib/session";
import type { CareScheduleView, CareTaskRule } from "../../lib/types";
import { useSaveSchedule, useSchedule } from "./api";
import { taskLabel } from "./labels";

interface Draft {
  task: string;
  every_days: string;
  soil_minutes: string;
  /** Comma-separated month numbers, e.g. "11, 12, 1, 2". */
  winter_months: string;
  winter_factor: string;
}

function draftOf(rule: CareTaskRule): Draft {
  return {
    task: rule.task,
    every_days: String(rule.every_days),
    soil_minutes: rule.when_soil_below_min_minutes ? String(rule.when_soil_below_min_minutes) : "",
    winter_months: (rule.winter_months ?? []).join(", "),
    winter_factor: rule.winter_factor ? String(rule.winter_factor) : "",
  };
}

function ruleOf(draft: Draft): CareTaskRule {
  const months = draft.winter_months
    .split(",")
    .map((m) => m.trim())
    .filter(Boolean)
    .map(Number);
  return {
    task: draft.task.trim(),
    every_days: Number(draft.every_days),
    when_soil_below_min_minutes: draft.soil_minutes.trim() === "" ? null : Number(draft.soil_minutes),
    winter_months: months,
    winter_factor: draft.winter_factor.trim() === "" ? null : Number(draft.winter_factor),
  };
}

function Editor({ plantId, schedule }: { plantId: string; schedule: CareScheduleView }) {
  const save = useSaveSchedule(plantId);
  const [drafts, setDrafts] = useState<Draft[]>(schedule.tasks.map(draftOf));
  const set = (n: number, change: Partial<Draft>) =>
    setDrafts(drafts.map((d, i) => (i === n ? { ...d, ...change } : d)));
  const submit = (event: FormEvent) => {
    event.preventDefault();
    save.mutate(drafts.map(ruleOf));
  };
  return (
    <form className="stack" onSubmit={submit} aria-label="Care schedule" noValidate>
      {drafts.map((draft, n) => (
        <fieldset key={n} className="row">
          <legend className="sr-only">Task {n + 1}</legend>
          <label>
            Task
            <input
              name={`task-${n}`}
              list="task-names"
              value={draft.task}
              onChange={(e) => set(n, { task: e.target.value })}
            />
          </label>
          <label>
            Every (days)
            <input
              name={`every-${n}`}
              type="number"
              inputMode="numeric"
              min={1}
              max={730}
              value={draft.every_days}
              onChange={(e) => set(n, { every_days: e.target.value })}
            />
          </label>
          {draft.task.trim() === "water" && (
            <label>
              Or when dry for (minutes)
              <input
                name={`soil-${n}`}
                type="number"
                inputMode="numeric"
                min={5}
                max={10080}
                value={draft.soil_minutes}
                onChange={(e) => set(n, { soil_minutes: e.target.value })}
              />
            </label>
          )}
          <label>
            Winter months
            <input
              name={`winter-months-${n}`}
              inputMode="numeric"
              placeholder="11, 12, 1, 2"
              value={draft.winter_months}
              onChange={(e) => set(n, { winter_months: e.target.value })}
            />
          </label>
          <label>
            × in winter
            <input
              name={`winter-factor-${n}`}
              type="number"
              inputMode="decimal"
              min={1}
              max={10}
              step="any"
              placeholder="2"
              value={draft.winter_factor}
              onChange={(e) => set(n, { winter_factor: e.target.value })}
            />
          </label>
          <button type="button" className="secondary" onClick={() => setDrafts(drafts.filter((_, i) => i !== n))}>
            Remove
          </button>
        </fieldset>
      ))}
      <datalist id="task-names">
        <option value="water" />
        <option value="fertilize" />
        <option value="repot" />
      </datalist>
      {save.error && (
        <p className="field-error flush" role="alert">
          {save.error instanceof ApiError ? save.error.message : "Could not save the schedule"}
        </p>
      )}
      <div className="row">
        <button
          type="button"
          className="secondary"
          onClick={() =>
            setDrafts([
              ...drafts,
              {
                task: drafts.length ? "" : "water",
                every_days: "7",
                soil_minutes: "",
                winter_months: "",
                winter_factor: "",
              },
            ])
          }
        >
          Add task
        </button>
        <button type="submit" disabled={save.isPending}>
          Save schedule
        </button>
      </div>
    </form>
  );
}

export function CareSchedule({ plantId }: { plantId: string }) {
  const { canEdit } = useSession();
  const schedule = useSchedule(plantId);
  return (
    <section className="card stack" aria-labelledby="schedule-title">
      <h2 id="schedule-title">Care schedule</h2>
      {schedule.isPending ? (
        <Skeleton lines={2} label="Loading the schedule" />
      ) : schedule.isError ? (
        <ErrorState error={schedule.error} retry={() => schedule.refetch()} />
      ) : (
        <>
          {schedule.data.due.length > 0 && (
            <ul className="task-list" data-testid="schedule-due">
              {schedule.data.due.map((task) => (
                <li key={task.id}>
                  <strong>{taskLabel(task.task)}</strong>{" "}
                  <span className={task.overdue ? "field-error" : "muted"}>
                    {task.overdue
                      ? `due ${timeAgo(task.due_at)}`
                      : `next ${new Date(task.due_at).toLocaleDateString()}`}
                  </span>
                </li>
              ))}
            </ul>
          )}
          {canEdit ? (
            <Editor key={JSON.stringify(schedule.data.tasks)} plantId={plantId} schedule={schedule.data} />
          ) : (
            schedule.data.due.length === 0 && <p className="muted flush">No care schedule.</p>
          )}
        </>
      )}
    </section>
  );
}
