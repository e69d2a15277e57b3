import { useState, type FormEvent } from "react";
import { ErrorState, Skeleton } from "../../components/ui";
import { useNotificationSettings, useSaveDiscordWebhook, useTestDiscordWebhook } from "./api";
import { Outcome } from "./Outcome";

export function DiscordWebhookForm() {
  const settings = useNotificationSettings();
  const [url, setUrl] = useState("");
  const save = useSaveDiscordWebhook(() => setUrl(""));
  const test = useTestDiscordWebhook();
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
