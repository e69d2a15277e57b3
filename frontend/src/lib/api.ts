// The HTTP client: one function per endpoint, errors as ApiError.
import type {
  ApiToken,
  AuthStatus,
  EnrollmentKey,
  EnrollmentWindow,
  Health,
  HomeAssistant,
  IssuedEnrollmentKey,
  IssuedToken,
  Role,
  Scope,
  User,
  Alert,
  AlertKind,
  CarePlanResponse,
  Channel,
  ChannelInput,
  Device,
  DeviceStatus,
  LlmSettings,
  NotificationSettings,
  Plant,
  Provider,
  Reading,
  Registration,
  Series,
  StoredCarePlan,
  TestResult,
  Thresholds,
} from "./types";

/** A failed request, with the server's explanation. */
export class ApiError extends Error {
  readonly status: number;
  /** Per-field messages of a 422, keyed by the field's name. */
  readonly fields: Record<string, string>;

  constructor(status: number, message: string, fields: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

interface FieldProblem {
  loc: (string | number)[];
  msg: string;
}

let unauthorized: (() => void) | null = null;

/**
 * Called when a request answers 401 (the session expired or was ended), so
 * the app can send the user to the login page. Sign-in calls are exempt:
 * their 401 means a wrong password.
 */
export function onUnauthorized(listener: (() => void) | null) {
  unauthorized = listener;
}

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`/api${path}`, {
      method,
      headers: body === undefined ? undefined : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "Cannot reach the PlantOps server. Check that it is running.");
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && !path.startsWith("/auth/")) unauthorized?.();
  if (!response.ok) {
    const detail = (data as { detail?: unknown } | null)?.detail;
    if (Array.isArray(detail)) {
      const fields: Record<string, string> = {};
      for (const problem of detail as FieldProblem[]) {
        fields[String(problem.loc[problem.loc.length - 1])] = problem.msg;
      }
      const message = (detail as FieldProblem[]).map((p) => p.msg).join("; ");
      throw new ApiError(response.status, message || "Invalid input", fields);
    }
    throw new ApiError(
      response.status,
      typeof detail === "string" ? detail : `${response.status} ${response.statusText}`,
    );
  }
  return data as T;
}

export interface PlantInput {
  name?: string;
  species?: string | null;
  thresholds?: Thresholds | null;
  alert_cooldown_minutes?: number;
  /** null: the server's PLANTOPS_LOW_BATTERY_PERCENT; 0: no alert. */
  low_battery_percent?: number | null;
}

export const api = {
  authStatus: () => request<AuthStatus>("GET", "/auth/status"),
  me: () => request<User>("GET", "/auth/me"),
  login: (username: string, password: string) => request<User>("POST", "/auth/login", { username, password }),
  logout: () => request<void>("POST", "/auth/logout"),
  setup: (token: string, username: string, password: string) =>
    request<User>("POST", "/auth/setup", { token, username, password }),
  changePassword: (current_password: string, new_password: string) =>
    request<void>("PUT", "/auth/password", { current_password, new_password }),

  users: () => request<{ users: User[] }>("GET", "/users"),
  createUser: (input: { username: string; password: string; role: Role }) => request<User>("POST", "/users", input),
  updateUser: (id: string, input: { role?: Role; password?: string }) => request<User>("PUT", `/users/${id}`, input),
  deleteUser: (id: string) => request<void>("DELETE", `/users/${id}`),

  tokens: () => request<{ tokens: ApiToken[] }>("GET", "/tokens"),
  createToken: (name: string, scope: Scope) => request<IssuedToken>("POST", "/tokens", { name, scope }),
  deleteToken: (id: string) => request<void>("DELETE", `/tokens/${id}`),

  enrollmentKeys: () => request<{ keys: EnrollmentKey[] }>("GET", "/enrollment-keys"),
  createEnrollmentKey: (input: { name: string; max_uses?: number; expires_at?: string }) =>
    request<IssuedEnrollmentKey>("POST", "/enrollment-keys", input),
  revokeEnrollmentKey: (id: string) => request<void>("DELETE", `/enrollment-keys/${id}`),
  enrollmentWindow: () => request<EnrollmentWindow>("GET", "/enrollment/window"),
  openEnrollmentWindow: (minutes: number) => request<EnrollmentWindow>("POST", "/enrollment/window", { minutes }),
  closeEnrollmentWindow: () => request<EnrollmentWindow>("DELETE", "/enrollment/window"),

  plants: () => request<{ plants: Plant[]; total: number }>("GET", "/plants?limit=1000"),
  plant: (id: string) => request<Plant>("GET", `/plants/${id}`),
  createPlant: (input: PlantInput) => request<Plant>("POST", "/plants", input),
  updatePlant: (id: string, input: PlantInput) => request<Plant>("PUT", `/plants/${id}`, input),
  deletePlant: (id: string) => request<void>("DELETE", `/plants/${id}`),
  plantDevices: (id: string) => request<{ devices: Device[]; total: number }>("GET", `/plants/${id}/devices`),
  series: (id: string, hours: number, points = 500) =>
    request<Series>("GET", `/plants/${id}/series?hours=${hours}&points=${points}`),
  latestHistory: (id: string) => request<{ records: Reading[]; count: number }>("GET", `/plants/${id}/history?hours=1`),

  devices: (status?: DeviceStatus) =>
    request<{ devices: Device[]; total: number }>("GET", `/devices?limit=1000${status ? `&status=${status}` : ""}`),
  register: (mac_address: string) => request<Registration>("POST", "/devices/register", { mac_address }),
  assign: (deviceId: string, plantId: string) =>
    request<unknown>("POST", `/devices/${deviceId}/provision`, { plant_id: plantId }),
  unassign: (deviceId: string) => request<unknown>("POST", `/devices/${deviceId}/unassign`),
  deleteDevice: (deviceId: string) => request<unknown>("DELETE", `/devices/${deviceId}`),
  caCertificate: async (): Promise<string | null> => {
    const response = await fetch("/api/mqtt/ca");
    return response.ok ? response.text() : null;
  },

  alerts: (filter: { plant_id?: string; kind?: AlertKind | ""; since?: string }) => {
    const query = new URLSearchParams({ limit: "200" });
    if (filter.plant_id) query.set("plant_id", filter.plant_id);
    if (filter.kind) query.set("kind", filter.kind);
    if (filter.since) query.set("since", filter.since);
    return request<{ alerts: Alert[]; total: number }>("GET", `/alerts?${query}`);
  },
  acknowledge: (id: string) => request<Alert>("POST", `/alerts/${id}/acknowledge`),

  llmSettings: () => request<LlmSettings>("GET", "/settings/llm"),
  health: () => request<Health>("GET", "/health"),
  saveLlm: (input: { provider: Provider; api_key?: string; model?: string }) =>
    request<LlmSettings>("PUT", "/settings/llm", input),
  testLlm: (input: { provider: Provider; api_key?: string; model?: string }) =>
    request<TestResult>("POST", "/settings/llm/test", input),
  notifications: () => request<NotificationSettings>("GET", "/settings/notifications"),
  saveNotifications: (discord_webhook_url: string | null) =>
    request<NotificationSettings>("PUT", "/settings/notifications", { discord_webhook_url }),
  testNotification: () => request<TestResult>("POST", "/settings/notifications/test"),
  channels: () => request<{ channels: Channel[] }>("GET", "/notification-channels"),
  createChannel: (input: ChannelInput) => request<Channel>("POST", "/notification-channels", input),
  deleteChannel: (id: string) => request<void>("DELETE", `/notification-channels/${id}`),
  testChannel: (id: string) => request<TestResult>("POST", `/notification-channels/${id}/test`),
  homeAssistant: () => request<HomeAssistant>("GET", "/settings/home-assistant"),
  saveHomeAssistant: (input: { url: string | null; discovery_prefix?: string }) =>
    request<HomeAssistant>("PUT", "/settings/home-assistant", input),

  carePlan: (id: string) => request<CarePlanResponse>("GET", `/plants/${id}/care-plan`),
  carePlans: (id: string) =>
    request<{ plant_id: string; care_plans: StoredCarePlan[] }>("GET", `/plants/${id}/care-plans`),
  analyze: (id: string) => request<CarePlanResponse>("POST", `/plants/${id}/analyze`),
};
