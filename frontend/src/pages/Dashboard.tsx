import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, ApiError } from "../lib/api";
import { METRICS, type Alert, type Plant } from "../lib/types";
import { METRIC_LABEL, formatValue, timeAgo } from "../lib/format";
import { EmptyState, ErrorState, Skeleton, StatusBadge } from "../components/ui";
import { devicesQuery, keys, plantsQuery, recentAlertsQuery } from "../lib/queries";
import { useSession } from "../lib/session";
import { Today } from "../features/care/Today";
import { useUpcomingTasks } from "../features/care/api";
import { nextTaskByPlant, taskLabel, timeUntil } from "../features/care/labels";
import type { CareTask } from "../lib/types";

function openAlertsByPlant(alerts: Alert[] | undefined): Map<string, number> {
  const counts = new Map<string, number>();
  for (const alert of alerts ?? []) {
    if (alert.plant_id && !alert.acknowledged_at && alert.kind !== "recovered" && alert.kind !== "device_online") {
      counts.set(alert.plant_id, (counts.get(alert.plant_id) ?? 0) + 1);
    }
  }
  return counts;
}

function PlantCard({ plant, openAlerts, nextTask }: { plant: Plant; openAlerts: number; nextTask?: CareTask }) {
  const latest = plant.latest_telemetry;
  return (
    <Link to={`/plants/${plant.id}`} className="card plant-card" data-testid="plant-card">
      <header>
        <div>
          <h2>{plant.name}</h2>
          <div className="muted small">{plant.species ?? "Species not set"}</div>
        </div>
        <StatusBadge status={plant.status} />
      </header>
      {latest ? (
        <dl className="readings">
          {METRICS.map((metric) => (
            <div key={metric}>
              <dt>{METRIC_LABEL[metric]}</dt>
              <dd data-testid={`value-${metric}`}>{formatValue(metric, latest[metric])}</dd>
            </div>
          ))}
        </dl>
      ) : (
        <p className="muted">No readings yet. Assign a device on the Devices page.</p>
      )}
      <div className="row small muted spread">
        <span>Last reading: {latest ? timeAgo(latest.time) : "never"}</span>
        {nextTask && (
          <span data-testid="next-task" className={nextTask.overdue ? "field-error" : undefined}>
            {taskLabel(nextTask.task)} {nextTask.overdue ? "due now" : timeUntil(nextTask.due_at)}
          </span>
        )}
        {openAlerts > 0 && (
          <span className="badge" data-status="alerts" data-testid="open-alerts">
            {openAlerts} open {openAlerts === 1 ? "alert" : "alerts"}
          </span>
        )}
      </div>
    </Link>
  );
}

function AddPlant({ onDone }: { onDone?: () => void }) {
  const client = useQueryClient();
  const [name, setName] = useState("");
  const [species, setSpecies] = useState("");
  const create = useMutation({
    mutationFn: () => api.createPlant({ name: name.trim(), species: species.trim() || null }),
    onSuccess: () => {
      setName("");
      setSpecies("");
      client.invalidateQueries({ queryKey: keys.plants });
      onDone?.();
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  const error = create.error instanceof ApiError ? create.error : null;
  return (
    <form className="card row align-end" onSubmit={submit} aria-label="Add a plant">
      <label>
        Name
        <input
          value={name}
          onChange={(e) => setName(e.target.value)}
          required
          maxLength={100}
          aria-invalid={error?.fields.name ? true : undefined}
        />
      </label>
      <label>
        Species
        <input value={species} onChange={(e) => setSpecies(e.target.value)} maxLength={200} />
      </label>
      <button type="submit" disabled={create.isPending || !name.trim()}>
        Add plant
      </button>
      {create.error && <span className="field-error">{create.error.message}</span>}
    </form>
  );
}

export function Dashboard() {
  const { canEdit } = useSession();
  const plants = useQuery(plantsQuery());
  const devices = useQuery(devicesQuery());
  const alerts = useQuery(recentAlertsQuery());
  const upcoming = useUpcomingTasks();

  if (plants.isPending) return <Skeleton lines={6} label="Loading plants" />;
  if (plants.isError) return <ErrorState error={plants.error} retry={() => plants.refetch()} />;

  const list = plants.data.plants;
  const attention = list.filter((p) => p.status === "warning" || p.status === "critical").length;
  const offline = devices.data?.devices.filter((d) => d.status === "offline").length ?? 0;
  const open = openAlertsByPlant(alerts.data?.alerts);
  const nextTasks = nextTaskByPlant(upcoming.data?.tasks ?? []);

  return (
    <div className="stack">
      <div className="row spread">
        <h1>Dashboard</h1>
        <p className="muted flush" data-testid="summary">
          {attention === 0
            ? "All plants fine"
            : `${attention} ${attention === 1 ? "plant needs" : "plants need"} attention`}
          {" · "}
          {offline === 0 ? "no devices offline" : `${offline} ${offline === 1 ? "device" : "devices"} offline`}
        </p>
      </div>
      {list.length > 0 && <Today />}
      {list.length === 0 ? (
        <EmptyState title="No plants yet">
          <p>
            {canEdit
              ? "Add your first plant, then register a sensor device and assign it."
              : "An admin adds plants and devices."}
          </p>
          {canEdit && <AddPlant />}
        </EmptyState>
      ) : (
        <>
          <div className="grid">
            {list.map((plant) => (
              <PlantCard
                key={plant.id}
                plant={plant}
                openAlerts={open.get(plant.id) ?? 0}
                nextTask={nextTasks.get(plant.id)}
              />
            ))}
          </div>
          {canEdit && <AddPlant />}
        </>
      )}
    </div>
  );
}
