import type { Metric, PlantStatus, DeviceStatus, DeviceVitals } from "./types";

export const METRIC_LABEL: Record<Metric, string> = {
  soil_moisture: "Soil moisture",
  temperature: "Temperature",
  humidity: "Humidity",
  light_level: "Light",
};

export const METRIC_UNIT: Record<Metric, string> = {
  soil_moisture: "%",
  temperature: "°C",
  humidity: "% RH",
  light_level: "lux",
};

/** The range a threshold may take (docs/api.md). */
export const METRIC_RANGE: Record<Metric, [number, number]> = {
  soil_moisture: [0, 100],
  temperature: [-100, 200],
  humidity: [0, 100],
  light_level: [0, 1000000],
};

export function formatValue(metric: Metric, value: number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  const digits = metric === "light_level" ? 0 : 1;
  return `${value.toLocaleString("en", { maximumFractionDigits: digits })} ${METRIC_UNIT[metric]}`;
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function timeAgo(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} d ago`;
}

export function formatTime(iso: string): string {
  return new Date(iso).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

export const PLANT_STATUS_LABEL: Record<PlantStatus, string> = {
  healthy: "Healthy",
  warning: "Warning",
  critical: "Critical",
  offline: "Offline",
  unknown: "No data",
};

export const DEVICE_STATUS_LABEL: Record<DeviceStatus, string> = {
  provisioning: "Provisioning",
  online: "Online",
  offline: "Offline",
  error: "Error",
};

/** Threshold validation as the server does it; messages per field. */
export function thresholdErrors(metric: Metric, min: number | null, max: number | null): string | null {
  const [low, high] = METRIC_RANGE[metric];
  for (const value of [min, max]) {
    if (value !== null && (Number.isNaN(value) || value < low || value > high)) {
      return `${METRIC_LABEL[metric]} must be between ${low} and ${high}`;
    }
  }
  if (min !== null && max !== null && min > max) {
    return `${METRIC_LABEL[metric]}: min must not be above max`;
  }
  return null;
}

/** Who wrote a care plan and what it cost: "claude-sonnet-4 · 4.2 s · 1,234 + 456 tokens". */
export function planCost(stored: {
  model: string;
  duration_ms: number | null;
  input_tokens: number | null;
  output_tokens: number | null;
}): string {
  const parts = [stored.model];
  if (stored.duration_ms !== null) {
    parts.push(`${(stored.duration_ms / 1000).toLocaleString("en", { maximumFractionDigits: 1 })} s`);
  }
  if (stored.input_tokens !== null && stored.output_tokens !== null) {
    parts.push(`${stored.input_tokens.toLocaleString("en")} + ${stored.output_tokens.toLocaleString("en")} tokens`);
  }
  return parts.join(" · ");
}

/** "82 % · 3.9 V · −67 dBm", or "–" for a device that sends none. */
export function vitalsText(vitals: DeviceVitals | null | undefined): string {
  if (!vitals) return "–";
  const parts: string[] = [];
  if (vitals.battery_percent != null) parts.push(`${Math.round(vitals.battery_percent)} %`);
  if (vitals.battery_volts != null) parts.push(`${vitals.battery_volts.toFixed(2)} V`);
  if (vitals.rssi_dbm != null) parts.push(`${Math.round(vitals.rssi_dbm)} dBm`);
  return parts.length ? parts.join(" · ") : "–";
}
