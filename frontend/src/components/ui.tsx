// Small shared pieces: status badges, loading, empty and error states.
import { useState, type ReactNode } from "react";
import { DEVICE_STATUS_LABEL, PLANT_STATUS_LABEL } from "../lib/format";
import type { DeviceStatus, PlantStatus } from "../lib/types";

const ICON: Record<string, string> = {
  healthy: "✓",
  online: "●",
  warning: "!",
  provisioning: "…",
  critical: "✕",
  error: "✕",
  offline: "○",
  unknown: "?",
};

/** Status as icon and word: never colour alone. */
export function StatusBadge({ status }: { status: PlantStatus | DeviceStatus }) {
  const label =
    status in PLANT_STATUS_LABEL
      ? PLANT_STATUS_LABEL[status as PlantStatus]
      : DEVICE_STATUS_LABEL[status as DeviceStatus];
  return (
    <span className="badge" data-status={status} data-testid="status">
      <span aria-hidden="true">{ICON[status]}</span>
      {label}
    </span>
  );
}

export function Skeleton({ lines = 3, label = "Loading" }: { lines?: number; label?: string }) {
  return (
    <div role="status" aria-label={label} className="stack tight">
      {Array.from({ length: lines }, (_, i) => (
        <div key={i} className="skeleton" />
      ))}
    </div>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="card stack align-start">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

export function ErrorState({ error, retry }: { error: unknown; retry?: () => void }) {
  const message = error instanceof Error ? error.message : "Something went wrong";
  return (
    <div role="alert" className="notice error row">
      <span>{message}</span>
      {retry && (
        <button type="button" className="secondary" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className="secondary"
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setCopied(true);
          setTimeout(() => setCopied(false), 2000);
        } catch {
          setCopied(false);
        }
      }}
    >
      {copied ? "Copied" : label}
    </button>
  );
}

/** A secret the server shows only once (an API token, an enrollment key). */
export function OneTimeSecret({ title, secret, onDone }: { title: string; secret: string; onDone: () => void }) {
  return (
    <section className="card stack" aria-label={title} data-testid="one-time-secret">
      <h2>{title}</h2>
      <p className="notice warning flush" role="alert">
        Copy it now: it is shown only this once. PlantOps keeps only a hash of it.
      </p>
      <div className="row">
        <code className="secret" data-testid="secret">
          {secret}
        </code>
        <CopyButton text={secret} label="Copy" />
      </div>
      <div>
        <button type="button" onClick={onDone}>
          I have saved it
        </button>
      </div>
    </section>
  );
}
