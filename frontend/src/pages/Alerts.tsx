import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link } from "react-router-dom";
import { api } from "../lib/api";
import type { AlertKind } from "../lib/types";
import { formatTime } from "../lib/format";
import { ErrorState, Skeleton } from "../components/ui";
import { filteredAlertsQuery, keys, plantsQuery } from "../lib/queries";
import { useSession } from "../lib/session";

const KIND_LABEL: Record<AlertKind, string> = {
  threshold: "Threshold",
  recovered: "Recovered",
  device_offline: "Device offline",
  device_online: "Device online",
  certificate_expiring: "Certificate expiring",
  backup_failed: "Backup failed",
  low_battery: "Battery low",
  care_due: "Care due",
};

const PERIODS: { label: string; hours: number | null }[] = [
  { label: "Last 24 hours", hours: 24 },
  { label: "Last 7 days", hours: 168 },
  { label: "Last 30 days", hours: 720 },
  { label: "All time", hours: null },
];

export function Alerts() {
  const { canEdit } = useSession();
  const client = useQueryClient();
  const [kind, setKind] = useState<AlertKind | "">("");
  const [plantId, setPlantId] = useState("");
  const [hours, setHours] = useState<number | null>(168);
  const plants = useQuery(plantsQuery());
  const alerts = useQuery(filteredAlertsQuery(kind, plantId, hours));
  const acknowledge = useMutation({
    mutationFn: api.acknowledge,
    onSuccess: () => client.invalidateQueries({ queryKey: keys.alerts }),
  });
  const plantName = new Map(plants.data?.plants.map((p) => [p.id, p.name]));

  return (
    <div className="stack">
      <h1>Alerts</h1>
      <div className="row card" role="group" aria-label="Filters">
        <label>
          Kind
          <select value={kind} onChange={(e) => setKind(e.target.value as AlertKind | "")}>
            <option value="">All kinds</option>
            {Object.entries(KIND_LABEL).map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Plant
          <select value={plantId} onChange={(e) => setPlantId(e.target.value)}>
            <option value="">All plants</option>
            {plants.data?.plants.map((plant) => (
              <option key={plant.id} value={plant.id}>
                {plant.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Period
          <select value={hours ?? ""} onChange={(e) => setHours(e.target.value ? Number(e.target.value) : null)}>
            {PERIODS.map((period) => (
              <option key={period.label} value={period.hours ?? ""}>
                {period.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      {alerts.isPending && <Skeleton lines={5} label="Loading alerts" />}
      {alerts.isError && <ErrorState error={alerts.error} retry={() => alerts.refetch()} />}
      {alerts.data?.alerts.length === 0 && (
        <div className="card">
          <p className="muted flush">
            No alerts match. Alerts appear when a reading leaves a plant's thresholds or a device goes silent.
          </p>
        </div>
      )}
      {acknowledge.isError && <ErrorState error={acknowledge.error} />}
      {alerts.data && alerts.data.alerts.length > 0 && (
        <div className="card table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Kind</th>
                <th scope="col">Plant</th>
                <th scope="col">Message</th>
                <th scope="col">Delivery</th>
                <th scope="col">Acknowledged</th>
              </tr>
            </thead>
            <tbody>
              {alerts.data.alerts.map((alert) => (
                <tr key={alert.id} data-testid="alert-row">
                  <td>{formatTime(alert.created_at)}</td>
                  <td>{KIND_LABEL[alert.kind]}</td>
                  <td>
                    {alert.plant_id ? (
                      <Link to={`/plants/${alert.plant_id}`}>{plantName.get(alert.plant_id) ?? "Plant"}</Link>
                    ) : (
                      "—"
                    )}
                  </td>
                  <td>{alert.message}</td>
                  <td>{alert.delivery}</td>
                  <td>
                    {alert.acknowledged_at ? (
                      <span className="muted">✓ {formatTime(alert.acknowledged_at)}</span>
                    ) : (
                      canEdit && (
                        <button
                          type="button"
                          className="secondary"
                          disabled={acknowledge.isPending}
                          onClick={() => acknowledge.mutate(alert.id)}
                        >
                          Acknowledge
                        </button>
                      )
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
