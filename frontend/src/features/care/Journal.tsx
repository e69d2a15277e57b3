// A plant's care journal: the timeline, and a form to add to it.
import { useState, type FormEvent } from "react";
import { ErrorState, Skeleton } from "../../components/ui";
import { ApiError } from "../../lib/api";
import { formatTime } from "../../lib/format";
import { useSession } from "../../lib/session";
import type { AmountUnit, CareEventKind } from "../../lib/types";
import { useDeleteCareEvent, useJournal, useRecordCareEvent } from "./api";
import { EVENT_KINDS, EVENT_LABEL } from "./labels";

function AddCareEvent({ plantId }: { plantId: string }) {
  const record = useRecordCareEvent(plantId);
  const [kind, setKind] = useState<CareEventKind>("watered");
  const [amount, setAmount] = useState("");
  const [unit, setUnit] = useState<AmountUnit>("ml");
  const [text, setText] = useState("");
  const fields = record.error instanceof ApiError ? record.error.fields : {};
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const value = amount.trim() === "" ? undefined : Number(amount);
    record.mutate(
      { kind, amount: value, unit: value === undefined ? undefined : unit, text: text.trim() || undefined },
      {
        onSuccess: () => {
          setAmount("");
          setText("");
        },
      },
    );
  };
  return (
    <form className="stack" onSubmit={submit} aria-label="Add to the journal">
      <div className="row">
        <label>
          What
          <select name="kind" value={kind} onChange={(e) => setKind(e.target.value as CareEventKind)}>
            {EVENT_KINDS.map((k) => (
              <option key={k} value={k}>
                {EVENT_LABEL[k]}
              </option>
            ))}
          </select>
        </label>
        <label>
          Amount
          <input
            name="amount"
            type="number"
            inputMode="decimal"
            min={0}
            step="any"
            value={amount}
            aria-invalid={fields.amount ? true : undefined}
            onChange={(e) => setAmount(e.target.value)}
          />
        </label>
        <label>
          Unit
          <select name="unit" value={unit} onChange={(e) => setUnit(e.target.value as AmountUnit)}>
            <option value="ml">ml</option>
            <option value="g">g</option>
          </select>
        </label>
      </div>
      <label>
        Note
        <textarea
          name="text"
          rows={2}
          maxLength={2000}
          value={text}
          aria-invalid={fields.text ? true : undefined}
          onChange={(e) => setText(e.target.value)}
        />
      </label>
      {record.error && (
        <p className="field-error flush" role="alert">
          {record.error.message}
        </p>
      )}
      <div>
        <button type="submit" disabled={record.isPending}>
          Add to journal
        </button>
      </div>
    </form>
  );
}

export function Journal({ plantId }: { plantId: string }) {
  const { canEdit } = useSession();
  const journal = useJournal(plantId);
  const remove = useDeleteCareEvent(plantId);
  return (
    <section className="card stack" aria-labelledby="journal-title">
      <h2 id="journal-title">Care journal</h2>
      {canEdit && <AddCareEvent plantId={plantId} />}
      {journal.isPending ? (
        <Skeleton lines={3} label="Loading the journal" />
      ) : journal.isError ? (
        <ErrorState error={journal.error} retry={() => journal.refetch()} />
      ) : journal.data.events.length === 0 ? (
        <p className="muted flush">Nothing recorded yet.</p>
      ) : (
        <ol className="timeline" data-testid="journal">
          {journal.data.events.map((event) => (
            <li key={event.id}>
              <div className="row spread">
                <strong>{EVENT_LABEL[event.kind]}</strong>
                <span className="muted small">{formatTime(event.at)}</span>
              </div>
              <div className="small">
                {event.amount !== null && `${event.amount} ${event.unit ?? ""} · `}
                {event.text}
              </div>
              <div className="row spread">
                <span className="muted small">
                  {event.source === "detected"
                    ? "detected from the soil moisture"
                    : `by ${event.recorded_by ?? event.source}`}
                </span>
                {canEdit && (
                  <button
                    type="button"
                    className="secondary small"
                    aria-label={`Remove ${EVENT_LABEL[event.kind]} of ${formatTime(event.at)}`}
                    onClick={() => remove.mutate(event.id)}
                  >
                    Remove
                  </button>
                )}
              </div>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
