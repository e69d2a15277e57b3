import { useState, type FormEvent } from "react";
import { ErrorState, Skeleton } from "../../components/ui";
import { useHomeAssistant, useSaveHomeAssistant } from "./api";

export function HomeAssistantForm() {
  const current = useHomeAssistant();
  const [url, setUrl] = useState("");
  const [prefix, setPrefix] = useState("");
  const save = useSaveHomeAssistant(() => {
    setUrl("");
    setPrefix("");
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
        Plants appear in Home Assistant through MQTT discovery: give the broker it uses (the Mosquitto add-on: a Home
        Assistant user). The URL is stored encrypted.
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
