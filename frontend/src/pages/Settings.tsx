import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api } from "../lib/api";
import type { BackupStatus, LlmSettings, Provider, TestResult } from "../lib/types";
import { ErrorState, Skeleton } from "../components/ui";
import {
  healthQuery,
  homeAssistantQuery,
  keys,
  llmSettingsQuery,
  notificationSettingsQuery,
} from "../lib/queries";
import { formatTime, timeAgo } from "../lib/format";
import { useSession } from "../lib/session";

const DEFAULT_MODEL: Record<Provider, string> = {
  anthropic: "claude-sonnet-4-20250514",
  openai: "gpt-4o",
};

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
              if (model === DEFAULT_MODEL[provider]) setModel(DEFAULT_MODEL[next]);
            }}
          >
            <option value="anthropic">Anthropic</option>
            <option value="openai">OpenAI (or compatible)</option>
          </select>
        </label>
        <label>
          Model
          <input value={model} onChange={(e) => setModel(e.target.value)} placeholder={DEFAULT_MODEL[provider]} />
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
      <HomeAssistantForm />
      <Backups />
    </div>
  );
}
