import { useState, type FormEvent } from "react";
import { EmptyState, ErrorState, Skeleton } from "../../components/ui";
import { ApiError } from "../../lib/api";
import { timeAgo } from "../../lib/format";
import type { Channel, ChannelInput, ChannelKind, Severity } from "../../lib/types";
import { useApiDocument, useChannels, useCreateChannel, useDeleteChannel, useTestChannel } from "./api";
import { channelFields, type FieldSpec, type OpenApiDocument } from "./channelFields";
import { Outcome } from "./Outcome";

const KIND_LABELS: Record<ChannelKind, string> = {
  ntfy: "ntfy",
  telegram: "Telegram",
  webhook: "Webhook (signed)",
  email: "Email",
  discord: "Discord",
};

/** The form's text fields as the API takes them: only the kind's, none empty. */
function channelInput(
  fields: FieldSpec[],
  kind: ChannelKind,
  name: string,
  minSeverity: Severity,
  values: Record<string, string>,
): ChannelInput {
  const input: Record<string, unknown> = { kind, name: name.trim(), min_severity: minSeverity };
  for (const { field, list, number } of fields) {
    const value = values[field]?.trim();
    if (!value) continue;
    if (list)
      input[field] = value
        .split(",")
        .map((a) => a.trim())
        .filter(Boolean);
    else if (number) input[field] = Number(value);
    else input[field] = value;
  }
  return input as unknown as ChannelInput;
}

function AddChannel({ doc }: { doc: OpenApiDocument }) {
  const [kind, setKind] = useState<ChannelKind>("ntfy");
  const [name, setName] = useState("");
  const [minSeverity, setMinSeverity] = useState<Severity>("info");
  const [values, setValues] = useState<Record<string, string>>({});
  const create = useCreateChannel(() => {
    setName("");
    setValues({});
  });
  const fields = channelFields(doc, kind);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate(channelInput(fields, kind, name, minSeverity, values));
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
        {fields.map(({ field, label, placeholder, secret, optional, options }) => (
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
  const test = useTestChannel(channel.id);
  const remove = useDeleteChannel(channel.id);
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

export function NotificationChannels() {
  const channels = useChannels();
  const doc = useApiDocument();
  return (
    <section className="card stack" aria-labelledby="channels-title">
      <h2 id="channels-title">Notification channels</h2>
      <p className="muted small flush">
        Alerts also go to these, each from the severity you choose: critical (a threshold breached, a backup failed),
        warning (offline, battery, certificate), info (back to normal). Secrets are stored encrypted.
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
      {doc.isError && <ErrorState error={doc.error} retry={() => doc.refetch()} />}
      {doc.data && <AddChannel doc={doc.data} />}
    </section>
  );
}
