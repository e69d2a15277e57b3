// Shapes of the PlantOps API (docs/api.md), taken from the server's OpenAPI
// document: `make ui-types` regenerates openapi.json and api-schema.ts from
// the server, and `make check` fails when they are stale.
import type { components } from "./api-schema";

/**
 * The document marks nullable fields optional, but the server always sends
 * every field of a response (null when empty): responses are complete.
 */
type Complete<T> = T extends readonly (infer Item)[]
  ? Complete<Item>[]
  : T extends object
    ? { [Key in keyof T]-?: Complete<T[Key]> }
    : T;
type Schema<Name extends keyof components["schemas"]> = Complete<components["schemas"][Name]>;

export type Metric = Schema<"Metric">;
export const METRICS: Metric[] = ["soil_moisture", "temperature", "humidity", "light_level"];

export type PlantStatus = Schema<"PlantStatus">;
export type DeviceStatus = Schema<"DeviceStatus">;

export type Bounds = Schema<"Bounds">;
/** As sent: a metric left out has no bounds. */
export type Thresholds = Partial<Schema<"Thresholds">>;

export type Reading = Schema<"Reading">;
export type Plant = Schema<"PlantView">;
export type Device = Schema<"Device">;
export type DeviceVitals = Schema<"DeviceVitals">;
export type Registration = Schema<"Registered">;

export type AlertKind = Schema<"AlertKind">;
export type Alert = Schema<"Alert">;

export type Aggregate = Schema<"Aggregate">;
export type SeriesPoint = Schema<"SeriesPoint">;
export type Series = Schema<"Series">;

export type Advice = Schema<"Advice">;
export type CarePlan = Schema<"CarePlan">;
export type CarePlanResponse = Schema<"CarePlanResponse">;
export type StoredCarePlan = Schema<"StoredCarePlan">;

export type Provider = Schema<"Provider">;
export type LlmSettings = Schema<"LlmSettingsView">;
export type NotificationSettings = Schema<"NotificationSettingsView">;
export type Health = Schema<"Health">;
export type HomeAssistant = Schema<"HomeAssistantView">;
export type Severity = Schema<"Severity">;
export type ChannelKind = Schema<"ChannelKind">;
export type SmtpSecurity = Schema<"SmtpSecurity">;
export type Channel = Schema<"ChannelView">;
/** As sent: only the kind's own fields. */
export type ChannelInput = components["schemas"]["ChannelInput"];
export type BackupStatus = Schema<"BackupStatus">;
/** A provider test (with its latency) or a notification test (without). */
export type TestResult = Schema<"TestResult"> & Partial<Pick<Schema<"LlmTestResult">, "latency_ms">>;

export type Role = Schema<"Role">;
export type Scope = Schema<"Scope">;
export type User = Schema<"User">;
export type AuthStatus = Schema<"AuthStatus">;
export type ApiToken = Schema<"ApiToken">;
export type IssuedToken = Schema<"IssuedToken">;
export type EnrollmentKey = Schema<"EnrollmentKey">;
export type IssuedEnrollmentKey = Schema<"IssuedEnrollmentKey">;
export type EnrollmentWindow = Schema<"EnrollmentWindow">;

export type CareEvent = Schema<"CareEvent">;
export type CareEventKind = Schema<"CareEventKind">;
export type AmountUnit = Schema<"AmountUnit">;
export type NewCareEvent = components["schemas"]["NewCareEvent"];
export type CareTaskRule = components["schemas"]["CareTaskRule"];
export type CareScheduleView = Schema<"CareScheduleView">;
export type CareTask = Schema<"TaskView">;
