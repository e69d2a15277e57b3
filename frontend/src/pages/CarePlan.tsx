import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, useParams } from "react-router-dom";
import { api } from "../lib/api";
import type { CarePlan } from "../lib/types";
import { formatTime, planCost } from "../lib/format";
import { ErrorState, Skeleton } from "../components/ui";
import { carePlanQuery, carePlansQuery, keys, llmSettingsQuery } from "../lib/queries";
import { useSession } from "../lib/session";

function Plan({ plan }: { plan: CarePlan }) {
  const sections = [
    ["Light", plan.light],
    ["Humidity", plan.humidity],
    ...(plan.temperature ? [["Temperature", plan.temperature] as const] : []),
  ] as const;
  return (
    <article className="stack" data-testid="care-plan">
      <p className="lead">{plan.summary}</p>
      <section className="card">
        <h3>Watering</h3>
        <p className="flush">
          {plan.watering.frequency}, {plan.watering.amount}
          {plan.watering.next_date && <> — next on {plan.watering.next_date}</>}
        </p>
      </section>
      <div className="grid">
        {sections.map(([title, advice]) => (
          <section key={title} className="card">
            <h3>{title}</h3>
            <p className="small flush">
              Now: {advice.current} · Ideal: {advice.ideal}
            </p>
            <p className="flush-bottom">{advice.recommendation}</p>
          </section>
        ))}
      </div>
      {plan.alerts.length > 0 && (
        <section className="notice warning">
          <h3>Needs attention</h3>
          <ul className="flush">
            {plan.alerts.map((text) => (
              <li key={text}>{text}</li>
            ))}
          </ul>
        </section>
      )}
      {plan.tips.length > 0 && (
        <section className="card">
          <h3>Tips</h3>
          <ul className="flush">
            {plan.tips.map((text) => (
              <li key={text}>{text}</li>
            ))}
          </ul>
        </section>
      )}
    </article>
  );
}

export function CarePlanPage() {
  const { canEdit } = useSession();
  const { id = "" } = useParams();
  const client = useQueryClient();
  const current = useQuery(carePlanQuery(id));
  const history = useQuery(carePlansQuery(id));
  const llm = useQuery(llmSettingsQuery());
  const regenerate = useMutation({
    mutationFn: () => api.analyze(id),
    onSuccess: (plan) => {
      client.setQueryData(keys.carePlan(id), plan);
      client.invalidateQueries({ queryKey: keys.carePlans(id) });
    },
  });

  if (current.isPending) return <Skeleton lines={6} label="Loading care plan" />;
  if (current.isError) return <ErrorState error={current.error} retry={() => current.refetch()} />;
  const configured = llm.data?.api_key_set ?? false;
  const data = current.data;
  return (
    <div className="stack">
      <div className="row spread">
        <div>
          <h1>Care plan: {data.plant_name}</h1>
          <p className="muted flush">
            {data.species ?? "Species not set"}
            {data.last_generated && <> · written {formatTime(data.last_generated)}</>}
          </p>
          {history.data?.care_plans[0] && (
            <p className="muted small flush" data-testid="plan-cost">
              {planCost(history.data.care_plans[0])}
            </p>
          )}
        </div>
        <div className="row">
          <Link to={`/plants/${id}`}>Back to the plant</Link>
          {canEdit && (
            <button type="button" disabled={!configured || regenerate.isPending} onClick={() => regenerate.mutate()}>
              {regenerate.isPending ? "Writing…" : data.care_plan ? "Regenerate" : "Write a care plan"}
            </button>
          )}
        </div>
      </div>
      {llm.data && !configured && (
        <div className="notice warning" role="note" data-testid="llm-missing">
          No LLM is configured. Add an Anthropic or OpenAI key in <Link to="/settings">Settings</Link> to get care
          plans; everything else works without it.
        </div>
      )}
      {regenerate.isError && <ErrorState error={regenerate.error} retry={() => regenerate.mutate()} />}
      {data.care_plan ? (
        <Plan plan={data.care_plan} />
      ) : (
        <div className="card">
          <p className="muted flush">No care plan yet.</p>
        </div>
      )}
      {history.data && history.data.care_plans.length > 1 && (
        <section className="card stack" aria-labelledby="previous-title">
          <h2 id="previous-title">Previous plans</h2>
          {history.data.care_plans.slice(1).map((stored) => (
            <details key={stored.id}>
              <summary>
                {formatTime(stored.created_at)} · {stored.provider} {planCost(stored)} ·{" "}
                {stored.reason.replace("_", " ")}
              </summary>
              <Plan plan={stored.plan} />
            </details>
          ))}
        </section>
      )}
    </div>
  );
}
