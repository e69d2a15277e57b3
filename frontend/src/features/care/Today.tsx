// "Today": the due and overdue care tasks across plants, each one tap from
// done or snoozed.
import { Link } from "react-router-dom";
import { ErrorState, Skeleton } from "../../components/ui";
import { timeAgo } from "../../lib/format";
import { useSession } from "../../lib/session";
import { useDueTasks, useMarkDone, useSnooze } from "./api";
import { taskLabel } from "./labels";

export function Today() {
  const { canEdit } = useSession();
  const tasks = useDueTasks();
  const done = useMarkDone();
  const snooze = useSnooze();

  if (tasks.isPending) return <Skeleton lines={2} label="Loading today's tasks" />;
  if (tasks.isError) return <ErrorState error={tasks.error} retry={() => tasks.refetch()} />;
  const due = tasks.data.tasks;
  const failed = done.error ?? snooze.error;
  return (
    <section className="card stack" aria-labelledby="today-title">
      <h2 id="today-title">Today</h2>
      {due.length === 0 ? (
        <p className="muted flush" data-testid="today-empty">
          Nothing due. Tasks appear here when a plant's care schedule says so.
        </p>
      ) : (
        <ul className="task-list" data-testid="today-tasks">
          {due.map((task) => (
            <li key={task.id} className="row spread">
              <div>
                <strong>{taskLabel(task.task)}</strong> <Link to={`/plants/${task.plant_id}`}>{task.plant_name}</Link>
                <div className="muted small">
                  {task.reason === "soil_below_min" ? "Soil dry since " : "Due "}
                  {timeAgo(task.due_at)}
                  {task.last_done_at ? ` · last done ${timeAgo(task.last_done_at)}` : " · never done"}
                </div>
              </div>
              {canEdit && (
                <div className="row">
                  <button type="button" disabled={done.isPending} onClick={() => done.mutate(task.id)}>
                    Done
                  </button>
                  <button
                    type="button"
                    className="secondary"
                    disabled={snooze.isPending}
                    onClick={() => snooze.mutate({ taskId: task.id, hours: 24 })}
                  >
                    Tomorrow
                  </button>
                </div>
              )}
            </li>
          ))}
        </ul>
      )}
      {failed && (
        <p className="notice error flush" role="alert">
          {failed.message}
        </p>
      )}
    </section>
  );
}
