import type { TestResult } from "../../lib/types";

/** What a test of a setting answered. */
export function Outcome({ result }: { result: TestResult | undefined }) {
  if (!result) return null;
  return (
    <p className={`notice ${result.success ? "success" : "error"} flush`} role="status">
      {result.success ? "✓ " : "✕ "}
      {result.message}
      {result.latency_ms ? ` (${result.latency_ms} ms)` : ""}
    </p>
  );
}
