import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, ApiError } from "../lib/api";
import type { BackupStatus, Channel, ChannelInput, ChannelKind, LlmSettings, Provider, Severity, SmtpSecurity, TestResult } from "../lib/types";
import { EmptyState, ErrorState, Skeleton } from "../components/ui";
import {
  channelsQuery,
  healthQuery,
  homeAssistantQuery,
  keys,
  llmSettingsQuery,
  notificationSettingsQuery,
} from "../lib/queries";
import { formatTime, timeAgo } from "../lib/format";
import { useSession } from "../lib/session";

function Outcome({ result }: { result: TestResult | undefined }) {
  if (!result) return null;
  return (
    <p className={`notice ${result.success ? "success" : "error"} flush`} role="status">
      {result.success ? "✓ " : "✕ "}
      {result.message}
      {result.latency_ms ? ` (${result.latency_ms} ms)` : ""}
    </p>
  );
}

function LlmForm({ current }: { current: LlmSettings }) {
  const client = useQueryClient();
  const [provider, setProvider] = useState<Provider>(current.provider);
  const [model, setModel] = useState(current.model);
  const [key, setKey] = useState("");
  const input = () => ({
    provider,
    model: model.trim() || undefined,
    api_key: key.trim() || undefined,
  });
  const save = useMutation({
    mutationFn: () => api.saveLlm(input()),
    onSuccess: (saved) => {
      setKey("");
      client.setQueryData(keys.llmSettings, saved);
    },
  });
  const test = useMutation({ mutationFn: () => api.testLlm(input()) });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    save.mutate();
  };
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="llm-title">
      <h2 id="llm-title">Care advisor (LLM)</h2>
      <p className="muted small flush">
        Your own Anthropic or OpenAI key writes the care plans. It is stored encrypted and never shown again.
      </p>
      <div className="row align-end">
        <label>
          Provider
          <select
            value={provider}
            onChange={(e) => {
              const next = e.target.value as Provider;
              setProvider(next);
              if (model === current.default_models[provider]) setModel(current.default_models[next]);
            }}
          >
            <option value="anthropic">Anthropic</option>
            <option value="openai">OpenAI (or compatible)</option>
          </select>
        </label>
        <label>
          Model
          <input value={model} onChange={(e) => setModel(e.target.value)} placeholder={current.default_models[provider]} />
        </label>
        <label>
          API key
          <input
            type="password"
            autoComplete="off"
            value={key}
            onChange={(e) => setKey(e.target.value)}
            placeholder={current.api_key_masked ?? "not set"}
          />
        </label>
      </div>
      <p className="small muted flush" data-testid="llm-key-state">
        {current.api_key_set ? `Key stored (${current.api_key_masked})` : "No key stored"}
      </p>
      <div className="row">
        <button type="submit" disabled={save.isPending}>
          {save.isPending ? "Saving…" : "Save"}
        </button>
        <button type="button" className="secondary" disabled={test.isPending} onClick={() => test.mutate()}>
          {test.isPending ? "Testing…" : "Test"}
        </button>
        {save.isSuccess && <span className="notice success">Saved</span>}
      </div>
      {save.isError && <ErrorState error={save.error} />}
      {test.isError && <ErrorState error={test.error} />}
      <Outcome result={test.data} />
    </form>
  );
}

function DiscordForm() {
  const client = useQueryClient();
  const settings = useQuery(notificationSettingsQuery());
  const [url, setUrl] = useState("");
  const save = useMutation({
    mutationFn: (value: string | null) => api.saveNotifications(value),
    onSuccess: (saved) => {
      setUrl("");
      client.setQueryData(keys.notificationSettings, saved);
    },
  });
  const test = useMutation({ mutationFn: api.testNotification });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (url.trim()) save.mutate(url.trim());
  };
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="discord-title">
      <h2 id="discord-title">Discord alerts</h2>
      {settings.isPending && <Skeleton lines={2} label="Loading notification settings" />}
      {settings.isError && <ErrorState error={settings.error} retry={() => settings.refetch()} />}
      {settings.data && (
        <p className="small muted flush" data-testid="webhook-state">
          {settings.data.discord_webhook_set
            ? `Webhook set (${settings.data.discord_webhook_masked})`
            : "No webhook: alerts are kept here only."}
        </p>
      )}
      <label>
        Webhook URL
        <input
          type="url"
          value={url}
          onChange={(e) => setUrl(e.target.value)}
          placeholder="https://discord.com/api/webhooks/…"
          aria-invalid={save.isError ? true : undefined}
        />
      </label>
      <div className="row">
        <button type="submit" disabled={save.isPending || !url.trim()}>
          Save webhook
        </button>
        <button type="button" className="secondary" disabled={test.isPending} onClick={() => test.mutate()}>
          Send test notification
        </button>
        {settings.data?.discord_webhook_set && (
          <button type="button" className="danger" onClick={() => save.mutate(null)}>
            Remove webhook
          </button>
        )}
      </div>
      {save.isError && <ErrorState error={save.error} />}
      {test.isError && <ErrorState error={test.error} />}
      <Outcome result={test.data} />
    </form>
  );
}

type ChannelField = Exclude<keyof ChannelInput, "kind" | "name" | "min_severity">;

interface FieldSpec {
  field: ChannelField;
  label: string;
  placeholder?: string;
  secret?: boolean;
  optional?: boolean;
  /** A choice instead of free text; the first is the default. */
  options?: string[];
}

/** What each kind asks for (docs/api.md, notification channels). */
const CHANNEL_FIELDS: Record<ChannelKind, FieldSpec[]> = {
  ntfy: [
    { field: "url", label: "Server and topic", placeholder: "https://ntfy.sh/my-plants" },
    { field: "token", label: "Access token", secret: true, optional: true },
  ],
  telegram: [
    { field: "bot_token", label: "Bot token", placeholder: "123456:ABC…", secret: true },
    { field: "chat_id", label: "Chat id", placeholder: "-1001234567890 or @channel" },
  ],
  webhook: [
    { field: "url", label: "URL", placeholder: "https://automation.example.com/plantops" },
    { field: "secret", label: "Signing secret (16+ characters)", secret: true },
  ],
  email: [
    { field: "smtp_host", label: "SMTP server", placeholder: "smtp.example.com" },
    { field: "smtp_security", label: "Security", options: ["starttls", "tls", "none"] },
    { field: "smtp_port", label: "Port", placeholder: "587", optional: true },
    { field: "smtp_username", label: "User name", optional: true },
    { field: "smtp_password", label: "Password", secret: true, optional: true },
    { field: "from", label: "From", placeholder: "PlantOps <plants@example.com>" },
    { field: "to", label: "To (comma-separated)", placeholder: "me@example.com" },
  ],
  discord: [{ field: "url", label: "Webhook URL", placeholder: "https://discord.com/api/webhooks/…", secret: true }],
};

const KIND_LABELS: Record<ChannelKind, string> = {
  ntfy: "ntfy",
  telegram: "Telegram",
  webhook: "Webhook (signed)",
  email: "Email",
  discord: "Discord",
};

/** The form's text fields as the API takes them: only the kind's, none empty. */
function channelInput(
  kind: ChannelKind,
  name: string,
  minSeverity: Severity,
  values: Partial<Record<ChannelField, string>>,
): ChannelInput {
  const input: ChannelInput = { kind, name: name.trim(), min_severity: minSeverity };
  for (const { field } of CHANNEL_FIELDS[kind]) {
    const value = values[field]?.trim();
    if (!value) continue;
    if (field === "to") input.to = value.split(",").map((a) => a.trim()).filter(Boolean);
    else if (field === "smtp_port") input.smtp_port = Number(value);
    else if (field === "smtp_security") input.smtp_security = value as SmtpSecurity;
    else input[field] = value;
  }
  return input;
}

function AddChannel() {
  const client = useQueryClient();
  const [kind, setKind] = useState<ChannelKind>("ntfy");
  const [name, setName] = useState("");
  const [minSeverity, setMinSeverity] = useState<Severity>("info");
  const [values, setValues] = useState<Partial<Record<ChannelField, string>>>({});
  const create = useMutation({
    mutationFn: () => api.createChannel(channelInput(kind, name, minSeverity, values)),
    onSuccess: () => {
      setName("");
      setValues({});
      client.invalidateQueries({ queryKey: keys.channels });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  const fieldErrors = create.error instanceof ApiError ? create.error.fields : {};
  return (
    <form className="stack" onSubmit={submit} aria-label="Add a notification channel">
      <div className="row align-end">
        <label>
          Kind
          <select
            value={kind}
            onChange={(e) => {
              setKind(e.target.value as ChannelKind);
              setValues({});
            }}
          >
            {(Object.keys(KIND_LABELS) as ChannelKind[]).map((k) => (
              <option key={k} value={k}>
                {KIND_LABELS[k]}
              </option>
            ))}
          </select>
        </label>
        <label>
          Name
          <input name="channel-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="Phone" />
        </label>
        <label>
          Alerts from
          <select value={minSeverity} onChange={(e) => setMinSeverity(e.target.value as Severity)}>
            <option value="info">Everything (info)</option>
            <option value="warning">Warnings and critical</option>
            <option value="critical">Critical only</option>
          </select>
        </label>
      </div>
      <div className="row align-end">
        {CHANNEL_FIELDS[kind].map(({ field, label, placeholder, secret, optional, options }) => (
          <label key={field}>
            {label}
            {optional && <span className="muted small"> (optional)</span>}
            {options ? (
              <select
                name={`channel-${field}`}
                value={values[field] ?? options[0]}
                onChange={(e) => setValues({ ...values, [field]: e.target.value })}
              >
                {options.map((option) => (
                  <option key={option} value={option}>
                    {option}
                  </option>
                ))}
              </select>
            ) : (
            <input
              name={`channel-${field}`}
              type={secret ? "password" : "text"}
              autoComplete="off"
              value={values[field] ?? ""}
              placeholder={placeholder}
              aria-invalid={fieldErrors?.[field] ? true : undefined}
              onChange={(e) => setValues({ ...values, [field]: e.target.value })}
            />
            )}
          </label>
        ))}
      </div>
      <div className="row">
        <button type="submit" disabled={create.isPending || !name.trim()}>
          {create.isPending ? "Adding…" : "Add channel"}
        </button>
      </div>
      {create.isError && <ErrorState error={create.error} />}
    </form>
  );
}

function ChannelRow({ channel }: { channel: Channel }) {
  const client = useQueryClient();
  const test = useMutation({ mutationFn: () => api.testChannel(channel.id) });
  const remove = useMutation({
    mutationFn: () => api.deleteChannel(channel.id),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.channels }),
  });
  return (
    <tr data-testid="channel-row">
      <td>
        {channel.name}
        <div className="muted small">{KIND_LABELS[channel.kind]}</div>
      </td>
      <td className="small">
        {channel.target}
        {channel.last_error && (
          <div className="field-error">
            Failing{channel.last_error_at ? ` since ${timeAgo(channel.last_error_at)}` : ""}: {channel.last_error}
          </div>
        )}
        {channel.pending > 0 && <div className="muted">{channel.pending} waiting</div>}
      </td>
      <td className="small">{channel.min_severity} and up</td>
      <td>
        <div className="row">
          <button type="button" className="secondary" disabled={test.isPending} onClick={() => test.mutate()}>
            {test.isPending ? "Testing…" : "Test"}
          </button>
          <button type="button" className="danger" disabled={remove.isPending} onClick={() => remove.mutate()}>
            Remove
          </button>
        </div>
        {test.isError && <ErrorState error={test.error} />}
        {remove.isError && <ErrorState error={remove.error} />}
        <Outcome result={test.data} />
      </td>
    </tr>
  );
}

function NotificationChannels() {
  const channels = useQuery(channelsQuery());
  return (
    <section className="card stack" aria-labelledby="channels-title">
      <h2 id="channels-title">Notification channels</h2>
      <p className="muted small flush">
        Alerts also go to these, each from the severity you choose: critical (a threshold breached, a backup
        failed), warning (offline, battery, certificate), info (back to normal). Secrets are stored encrypted.
      </p>
      {channels.isPending && <Skeleton lines={2} label="Loading notification channels" />}
      {channels.isError && <ErrorState error={channels.error} retry={() => channels.refetch()} />}
      {channels.data && channels.data.channels.length === 0 && (
        <EmptyState title="No channels yet">Add ntfy, Telegram, a signed webhook, email or another Discord.</EmptyState>
      )}
      {channels.data && channels.data.channels.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Where</th>
              <th>Alerts</th>
              <th>
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {channels.data.channels.map((channel) => (
              <ChannelRow key={channel.id} channel={channel} />
            ))}
          </tbody>
        </table>
      )}
      <AddChannel />
    </section>
  );
}

function HomeAssistantForm() {
  const client = useQueryClient();
  const current = useQuery(homeAssistantQuery());
  const [url, setUrl] = useState("");
  const [prefix, setPrefix] = useState("");
  const save = useMutation({
    mutationFn: (input: { url: string | null; discovery_prefix?: string }) => api.saveHomeAssistant(input),
    onSuccess: (saved) => {
      setUrl("");
      setPrefix("");
      client.setQueryData(keys.homeAssistant, saved);
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (url.trim()) save.mutate({ url: url.trim(), discovery_prefix: prefix.trim() || undefined });
  };
  const data = current.data;
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="ha-title">
      <h2 id="ha-title">Home Assistant</h2>
      <p className="muted small flush">
        Plants appear in Home Assistant through MQTT discovery: give the broker it uses (the Mosquitto add-on:
        a Home Assistant user). The URL is stored encrypted.
      </p>
      {current.isPending && <Skeleton lines={1} label="Loading the Home Assistant settings" />}
      {current.isError && <ErrorState error={current.error} retry={() => current.refetch()} />}
      {data && (
        <p className="small muted flush" data-testid="ha-state">
          {data.enabled
            ? `Publishing to ${data.url} (prefix ${data.discovery_prefix}${data.source === "environment" ? ", from PLANTOPS_HA_MQTT_URL" : ""})`
            : "Off: no broker set."}
        </p>
      )}
      <div className="row align-end">
        <label>
          Broker URL
          <input
            type="password"
            autoComplete="off"
            value={url}
            onChange={(e) => setUrl(e.target.value)}
            placeholder="mqtt://user:password@homeassistant.local:1883"
            aria-invalid={save.isError ? true : undefined}
          />
        </label>
        <label>
          Discovery prefix
          <input value={prefix} onChange={(e) => setPrefix(e.target.value)} placeholder="homeassistant" />
        </label>
      </div>
      <div className="row">
        <button type="submit" disabled={save.isPending || !url.trim()}>
          Save broker
        </button>
        {data?.source === "api" && (
          <button type="button" className="danger" onClick={() => save.mutate({ url: null })}>
            Remove broker
          </button>
        )}
      </div>
      {save.isError && <ErrorState error={save.error} />}
    </form>
  );
}

function BackupState({ backup }: { backup: BackupStatus }) {
  const success = backup.last_success;
  const failure = backup.last_failure;
  const failing = failure && (!success || failure.at > success.at);
  return (
    <>
      <p className="small flush" data-testid="last-backup">
        {success
          ? `Last verified backup: ${formatTime(success.at)} (${timeAgo(success.at)}), ${success.file}, ${success.rows} rows.`
          : "No verified backup yet."}
      </p>
      {failing && (
        <p className="notice error flush" role="status">
          The last backup failed ({formatTime(failure.at)}): {failure.error}
        </p>
      )}
    </>
  );
}

function Backups() {
  const health = useQuery(healthQuery());
  const backup = health.data?.components?.backup;
  return (
    <section className="card stack" aria-labelledby="backups-title">
      <h2 id="backups-title">Backups</h2>
      {health.isPending && <Skeleton lines={1} label="Loading the backup status" />}
      {health.isError && <ErrorState error={health.error} retry={() => health.refetch()} />}
      {backup && <BackupState backup={backup} />}
      <p className="small muted flush">
        Scheduled with <code>PLANTOPS_BACKUP_SCHEDULE</code> (cron, e.g. <code>0 3 * * *</code>); each backup
        is restored into a scratch database and checked before it counts.
      </p>
    </section>
  );
}

export function Settings() {
  const { canEdit } = useSession();
  const llm = useQuery(llmSettingsQuery());
  if (!canEdit) {
    return (
      <div className="stack">
        <h1>Settings</h1>
        <p className="notice">Only admins change the LLM and notification settings.</p>
      </div>
    );
  }
  return (
    <div className="stack">
      <h1>Settings</h1>
      {llm.isPending && <Skeleton lines={3} label="Loading LLM settings" />}
      {llm.isError && <ErrorState error={llm.error} retry={() => llm.refetch()} />}
      {llm.data && <LlmForm key={llm.data.updated_at ?? "default"} current={llm.data} />}
      <DiscordForm />
      <NotificationChannels />
      <HomeAssistantForm />
      <Backups />
    </div>
  );
}
