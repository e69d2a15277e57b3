// Shapes of the PlantOps API (docs/api.md).

export type Metric = "soil_moisture" | "temperature" | "humidity" | "light_level";
export const METRICS: Metric[] = ["soil_moisture", "temperature", "humidity", "light_level"];

export type PlantStatus = "healthy" | "warning" | "critical" | "offline" | "unknown";
export type DeviceStatus = "provisioning" | "online" | "offline" | "error";

export interface Bounds {
  min: number | null;
  max: number | null;
}
export type Thresholds = Partial<Record<Metric, Bounds | null>>;

export interface Reading {
  time: string;
  device_id: string;
  plant_id: string | null;
  soil_moisture: number | null;
  temperature: number | null;
  humidity: number | null;
  light_level: number | null;
}

export interface Plant {
  id: string;
  name: string;
  species: string | null;
  thresholds: Thresholds | null;
  created_at: string;
  updated_at: string;
  latest_telemetry: Reading | null;
  device_count: number;
  status: PlantStatus;
  alert_cooldown_minutes: number;
}

export interface Device {
  id: string;
  mac_address: string;
  mqtt_username: string;
  plant_id: string | null;
  status: DeviceStatus;
  firmware_version: string | null;
  sensor_types: string[] | null;
  last_seen_at: string | null;
  created_at: string;
}

export interface Registration {
  device_id: string;
  mqtt_username: string;
  mqtt_password: string;
  mqtt_host: string;
  mqtt_port: number | null;
  mqtt_tls_port: number | null;
}

export type AlertKind = "threshold" | "recovered" | "device_offline" | "device_online";

export interface Alert {
  id: string;
  plant_id: string | null;
  device_id: string | null;
  kind: AlertKind;
  metric: Metric | null;
  value: number | null;
  threshold: number | null;
  direction: "min" | "max" | null;
  message: string;
  created_at: string;
  delivery: "pending" | "sent" | "failed" | "disabled";
  acknowledged_at: string | null;
}

export interface Aggregate {
  min: number;
  avg: number;
  max: number;
}
export interface SeriesPoint {
  time: string;
  count: number;
  soil_moisture: Aggregate | null;
  temperature: Aggregate | null;
  humidity: Aggregate | null;
  light_level: Aggregate | null;
}
export interface Series {
  plant_id: string;
  from: string;
  to: string;
  bucket_seconds: number;
  points: SeriesPoint[];
}

export interface Advice {
  current: string;
  ideal: string;
  recommendation: string;
}
export interface CarePlan {
  summary: string;
  watering: { frequency: string; amount: string; next_date: string | null };
  light: Advice;
  humidity: Advice;
  temperature: Advice | null;
  alerts: string[];
  tips: string[];
  generated_at: string;
}
export interface CarePlanResponse {
  plant_id: string;
  plant_name: string;
  species: string | null;
  care_plan: CarePlan | null;
  last_generated: string | null;
}
export interface StoredCarePlan {
  id: string;
  plant_id: string;
  plan: CarePlan;
  provider: string;
  model: string;
  reason: string;
  created_at: string;
}

export type Provider = "anthropic" | "openai";
export interface LlmSettings {
  provider: Provider;
  model: string;
  api_key_set: boolean;
  api_key_masked: string | null;
  updated_at: string | null;
}
export interface NotificationSettings {
  discord_webhook_set: boolean;
  discord_webhook_masked: string | null;
}
export interface TestResult {
  success: boolean;
  message: string;
  latency_ms?: number | null;
}
