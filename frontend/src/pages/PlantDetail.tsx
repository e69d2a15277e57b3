import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, ApiError } from "../lib/api";
import { METRICS, type Metric, type Plant, type Thresholds } from "../lib/types";
import { METRIC_LABEL, METRIC_UNIT, formatTime, formatValue, thresholdErrors, timeAgo } from "../lib/format";
import { Chart } from "../components/Chart";
import { EmptyState, ErrorState, Skeleton, StatusBadge } from "../components/ui";
import { keys, plantAlertsQuery, plantDevicesQuery, plantQuery, seriesQuery } from "../lib/queries";
import { useSession } from "../lib/session";
import { useJournal } from "../features/care/api";
import { Journal } from "../features/care/Journal";
import { CareSchedule } from "../features/care/ScheduleEditor";

const RANGES: { label: string; hours: number }[] = [
  { label: "1 h", hours: 1 },
  { label: "6 h", hours: 6 },
  { label: "24 h", hours: 24 },
  { label: "7 d", hours: 168 },
  { label: "30 d", hours: 720 },
  { label: "90 d", hours: 2160 },
  { label: "1 y", hours: 8760 },
];

type Draft = Record<Metric, { min: string; max: string }>;

function toDraft(thresholds: Thresholds | null): Draft {
  const draft = {} as Draft;
  for (const metric of METRICS) {
    const bounds = thresholds?.[metric];
    draft[metric] = {
      min: bounds?.min === null || bounds?.min === undefined ? "" : String(bounds.min),
      max: bounds?.max === null || bounds?.max === undefined ? "" : String(bounds.max),
    };
  }
  return draft;
}

const parse = (raw: string): number | null => (raw.trim() === "" ? null : Number(raw));

export function ThresholdEditor({ plant }: { plant: Plant }) {
  const client = useQueryClient();
  const [draft, setDraft] = useState<Draft>(() => toDraft(plant.thresholds));
  const [cooldown, setCooldown] = useState(String(plant.alert_cooldown_minutes));
  // Empty: the server's PLANTOPS_LOW_BATTERY_PERCENT.
  const [battery, setBattery] = useState(plant.low_battery_percent === null ? "" : String(plant.low_battery_percent));
  const [saved, setSaved] = useState(false);
  const errors: Partial<Record<Metric, string>> = {};
  for (const metric of METRICS) {
    const problem = thresholdErrors(metric, parse(draft[metric].min), parse(draft[metric].max));
    if (problem) errors[metric] = problem;
  }
  const cooldownValue = Number(cooldown);
  const cooldownError =
    !Number.isInteger(cooldownValue) || cooldownValue < 0 || cooldownValue > 10080
      ? "Cooldown must be a whole number of minutes from 0 to 10080"
      : null;
  const batteryValue = parse(battery);
  const batteryError =
    batteryValue !== null && (!Number.isInteger(batteryValue) || batteryValue < 0 || batteryValue > 100)
      ? "Low battery must be a whole percentage from 0 to 100 (0: no alert)"
      : null;
  const save = useMutation({
    mutationFn: () => {
      const thresholds: Thresholds = {};
      for (const metric of METRICS) {
        const min = parse(draft[metric].min);
        const max = parse(draft[metric].max);
        thresholds[metric] = min === null && max === null ? null : { min, max };
      }
      return api.updatePlant(plant.id, {
        thresholds,
        alert_cooldown_minutes: cooldownValue,
        low_battery_percent: batteryValue,
      });
    },
    onSuccess: (updated) => {
      client.setQueryData(keys.plant(plant.id), updated);
      client.invalidateQueries({ queryKey: keys.plants });
      setSaved(true);
    },
  });
  const invalid = Object.keys(errors).length > 0 || cooldownError !== null || batteryError !== null;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setSaved(false);
    if (!invalid) save.mutate();
  };
  const serverFields = save.error instanceof ApiError ? save.error.fields : {};
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="thresholds-title" noValidate>
      <h2 id="thresholds-title">Thresholds</h2>
      <p className="muted small flush">
        An alert is sent when a reading leaves the range. Leave a field empty for no bound.
      </p>
      <div className="threshold-grid">
        {METRICS.map((metric) => (
          <fieldset key={metric} aria-describedby={errors[metric] ? `${metric}-error` : undefined}>
            <legend>
              {METRIC_LABEL[metric]} ({METRIC_UNIT[metric]})
            </legend>
            {(["min", "max"] as const).map((side) => (
              <label key={side}>
                {side === "min" ? "Min" : "Max"}
                <input
                  type="number"
                  step="any"
                  inputMode="decimal"
                  name={`${metric}-${side}`}
                  value={draft[metric][side]}
                  aria-invalid={errors[metric] ? true : undefined}
                  onChange={(e) => {
                    setSaved(false);
                    setDraft({ ...draft, [metric]: { ...draft[metric], [side]: e.target.value } });
                  }}
                />
              </label>
            ))}
            {(errors[metric] || serverFields[metric]) && (
              <span id={`${metric}-error`} className="field-error" role="alert">
                {errors[metric] ?? serverFields[metric]}
              </span>
            )}
          </fieldset>
        ))}
      </div>
      <label className="narrow">
        Alert cooldown (minutes)
        <input
          type="number"
          name="cooldown"
          min={0}
          max={10080}
          value={cooldown}
          aria-invalid={cooldownError ? true : undefined}
          onChange={(e) => {
            setSaved(false);
            setCooldown(e.target.value);
          }}
        />
        {cooldownError && <span className="field-error">{cooldownError}</span>}
      </label>
      <label className="narrow">
        Low battery alert below (%)
        <input
          type="number"
          name="low-battery"
          min={0}
          max={100}
          value={battery}
          placeholder="server default"
          aria-invalid={batteryError || serverFields.low_battery_percent ? true : undefined}
          onChange={(e) => {
            setSaved(false);
            setBattery(e.target.value);
          }}
        />
        {(batteryError ?? serverFields.low_battery_percent) && (
          <span className="field-error">{batteryError ?? serverFields.low_battery_percent}</span>
        )}
      </label>
      <div className="row">
        <button type="submit" disabled={invalid || save.isPending}>
          {save.isPending ? "Saving…" : "Save thresholds"}
        </button>
        {saved && (
          <span className="notice success" role="status">
            Saved
          </span>
        )}
        {save.isError && <span className="field-error">{save.error.message}</span>}
      </div>
    </form>
  );
}

/** Downloads of the raw readings of the chosen range (the browser sends the session cookie). */
function ExportLinks({ plantId, hours }: { plantId: string; hours: number }) {
  const from = new Date(Date.now() - hours * 3600 * 1000).toISOString();
  const base = `/api/plants/${plantId}/export?from=${encodeURIComponent(from)}`;
  return (
    <p className="row muted" data-testid="export-links">
      Download the raw readings of this period:
      <a href={`${base}&format=csv`} download>
        CSV
      </a>
      <a href={`${base}&format=jsonl`} download>
        JSON Lines
      </a>
    </p>
  );
}

function cssColor(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function Charts({ plant }: { plant: Plant }) {
  const [hours, setHours] = useState(24);
  const series = useQuery(seriesQuery(plant.id, hours));
  const journal = useJournal(plant.id);
  const from = series.data ? new Date(series.data.from).getTime() : Infinity;
  const to = series.data ? new Date(series.data.to).getTime() : -Infinity;
  const cared = (journal.data?.events ?? []).filter((e) => {
    const at = new Date(e.at).getTime();
    return (e.kind === "watered" || e.kind === "fertilized") && at >= from && at <= to;
  });
  const markers = cared.map((e) => ({
    time: e.at,
    color: e.kind === "watered" ? cssColor("--chart-water", "#2b7bd6") : cssColor("--chart-feed", "#b8860b"),
  }));
  return (
    <section className="card stack" aria-labelledby="charts-title">
      <div className="row spread">
        <h2 id="charts-title">History</h2>
        <div className="segmented" role="group" aria-label="Time range">
          {RANGES.map((range) => (
            <button
              key={range.hours}
              type="button"
              aria-pressed={hours === range.hours}
              onClick={() => setHours(range.hours)}
            >
              {range.label}
            </button>
          ))}
        </div>
      </div>
      <ExportLinks plantId={plant.id} hours={hours} />
      {series.isPending && <Skeleton lines={4} label="Loading charts" />}
      {series.isError && <ErrorState error={series.error} retry={() => series.refetch()} />}
      {series.data && series.data.points.length === 0 && <p className="muted">No readings in this period.</p>}
      {series.data && series.data.points.length > 0 && (
        <div className="grid charts">
          {METRICS.filter((m) => series.data.points.some((p) => p[m])).map((metric) => (
            <div key={metric}>
              <h3>{METRIC_LABEL[metric]}</h3>
              <Chart
                metric={metric}
                points={series.data.points}
                bounds={plant.thresholds?.[metric]}
                from={series.data.from}
                to={series.data.to}
                markers={metric === "soil_moisture" ? markers : undefined}
              />
              {metric === "soil_moisture" && cared.length > 0 && (
                <p className="muted small flush" data-testid="care-markers">
                  Dashed lines: {cared.filter((e) => e.kind === "watered").length} watered (blue),{" "}
                  {cared.filter((e) => e.kind === "fertilized").length} fertilized (gold)
                </p>
              )}
            </div>
          ))}
        </div>
      )}
    </section>
  );
}

function AssignedDevices({ plant }: { plant: Plant }) {
  const { canEdit } = useSession();
  const client = useQueryClient();
  const devices = useQuery(plantDevicesQuery(plant.id));
  const unassign = useMutation({
    mutationFn: api.unassign,
    onSuccess: () => {
      client.invalidateQueries({ queryKey: keys.devices });
      client.invalidateQueries({ queryKey: keys.plant(plant.id) });
    },
  });
  return (
    <section className="card stack" aria-labelledby="devices-title">
      <h2 id="devices-title">Devices</h2>
      {devices.isPending && <Skeleton lines={2} label="Loading devices" />}
      {devices.isError && <ErrorState error={devices.error} retry={() => devices.refetch()} />}
      {devices.data?.devices.length === 0 && (
        <p className="muted">
          No device assigned. <Link to="/devices">Register or assign one</Link>.
        </p>
      )}
      {devices.data && devices.data.devices.length > 0 && (
        <ul className="stack plain-list">
          {devices.data.devices.map((device) => (
            <li key={device.id} className="row">
              <StatusBadge status={device.status} />
              <code>{device.mac_address}</code>
              <span className="muted small">seen {timeAgo(device.last_seen_at)}</span>
              {canEdit && (
                <button type="button" className="secondary" onClick={() => unassign.mutate(device.id)}>
                  Unassign
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function PlantAlerts({ plantId }: { plantId: string }) {
  const alerts = useQuery(plantAlertsQuery(plantId));
  return (
    <section className="card stack" aria-labelledby="alerts-title">
      <h2 id="alerts-title">Alert history</h2>
      {alerts.isPending && <Skeleton lines={2} label="Loading alerts" />}
      {alerts.isError && <ErrorState error={alerts.error} retry={() => alerts.refetch()} />}
      {alerts.data?.alerts.length === 0 && <p className="muted">No alerts for this plant.</p>}
      {alerts.data && alerts.data.alerts.length > 0 && (
        <ul className="bullets" data-testid="plant-alerts">
          {alerts.data.alerts.slice(0, 20).map((alert) => (
            <li key={alert.id}>
              <span className="muted small">{formatTime(alert.created_at)}</span> — {alert.message}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export function PlantDetail() {
  const { canEdit } = useSession();
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const client = useQueryClient();
  const plant = useQuery(plantQuery(id));
  const remove = useMutation({
    mutationFn: () => api.deletePlant(id),
    onSuccess: () => {
      client.invalidateQueries({ queryKey: keys.plants });
      navigate("/");
    },
  });

  if (plant.isPending) return <Skeleton lines={8} label="Loading plant" />;
  if (plant.isError) {
    if (plant.error instanceof ApiError && plant.error.status === 404) {
      return (
        <EmptyState title="Plant not found">
          <Link to="/">Back to the dashboard</Link>
        </EmptyState>
      );
    }
    return <ErrorState error={plant.error} retry={() => plant.refetch()} />;
  }
  const data = plant.data;
  const latest = data.latest_telemetry;
  return (
    <div className="stack">
      <div className="row spread">
        <div>
          <h1>{data.name}</h1>
          <div className="row">
            <StatusBadge status={data.status} />
            <span className="muted">{data.species ?? "Species not set"}</span>
          </div>
        </div>
        <div className="row">
          <Link className="button" to={`/plants/${id}/care`}>
            Care plan
          </Link>
          {canEdit && (
            <button
              type="button"
              className="danger"
              onClick={() => {
                if (window.confirm(`Delete ${data.name}? Its devices are unassigned; readings are kept.`)) {
                  remove.mutate();
                }
              }}
            >
              Delete plant
            </button>
          )}
        </div>
      </div>
      <section className="card" aria-labelledby="now-title">
        <h2 id="now-title">Now</h2>
        {latest ? (
          <>
            <dl className="readings readings-wide">
              {METRICS.map((metric) => (
                <div key={metric}>
                  <dt>{METRIC_LABEL[metric]}</dt>
                  <dd data-testid={`current-${metric}`}>{formatValue(metric, latest[metric])}</dd>
                </div>
              ))}
            </dl>
            <p className="muted small flush">Measured {timeAgo(latest.time)}</p>
          </>
        ) : (
          <p className="muted">No readings yet.</p>
        )}
      </section>
      <Charts plant={data} />
      <CareSchedule plantId={id} />
      <Journal plantId={id} />
      {canEdit && <ThresholdEditor key={data.id} plant={data} />}
      <AssignedDevices plant={data} />
      <PlantAlerts plantId={id} />
    </div>
  );
}
