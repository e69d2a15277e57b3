import { useState, type FormEvent } from "react";
import { ErrorState } from "../../components/ui";
import type { LlmSettings, Provider } from "../../lib/types";
import { useSaveLlm, useTestLlm, type LlmInput } from "./api";
import { Outcome } from "./Outcome";

export function LlmSettingsForm({ current }: { current: LlmSettings }) {
  const [provider, setProvider] = useState<Provider>(current.provider);
  const [model, setModel] = useState(current.model);
  const [key, setKey] = useState("");
  const input = (): LlmInput => ({
    provider,
    model: model.trim() || undefined,
    api_key: key.trim() || undefined,
  });
  const save = useSaveLlm(() => setKey(""));
  const test = useTestLlm();
  const submit = (event: FormEvent) => {
    event.preventDefault();
    save.mutate(input());
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
          <input
            value={model}
            onChange={(e) => setModel(e.target.value)}
            placeholder={current.default_models[provider]}
          />
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
        <button type="button" className="secondary" disabled={test.isPending} onClick={() => test.mutate(input())}>
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
