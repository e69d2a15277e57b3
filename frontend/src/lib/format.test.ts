import { formatValue, planCost, thresholdErrors, timeAgo, vitalsText } from "./format";

describe("thresholdErrors", () => {
  it("accepts an empty or ordered range", () => {
    expect(thresholdErrors("soil_moisture", null, null)).toBeNull();
    expect(thresholdErrors("soil_moisture", 20, 80)).toBeNull();
    expect(thresholdErrors("temperature", -10, null)).toBeNull();
    // Scripts written for the original set bounds no sensor reports.
    expect(thresholdErrors("temperature", null, 100)).toBeNull();
  });
  it("refuses min above max and values outside the metric's range", () => {
    expect(thresholdErrors("soil_moisture", 80, 20)).toMatch(/min must not be above max/);
    expect(thresholdErrors("humidity", null, 120)).toMatch(/between 0 and 100/);
    expect(thresholdErrors("temperature", -150, null)).toMatch(/between -100 and 200/);
    expect(thresholdErrors("light_level", Number.NaN, null)).not.toBeNull();
  });
});

describe("formatting", () => {
  it("shows units and a dash for missing values", () => {
    expect(formatValue("temperature", 21.456)).toBe("21.5 °C");
    expect(formatValue("light_level", 12000.4)).toBe("12,000 lux");
    expect(formatValue("soil_moisture", null)).toBe("—");
  });
  it("says how long ago", () => {
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(timeAgo("2026-01-01T11:59:30Z", now)).toBe("30 s ago");
    expect(timeAgo("2026-01-01T11:55:00Z", now)).toBe("5 min ago");
    expect(timeAgo("2026-01-01T09:00:00Z", now)).toBe("3 h ago");
    expect(timeAgo("2025-12-30T12:00:00Z", now)).toBe("2 d ago");
    expect(timeAgo(null, now)).toBe("never");
  });
});

describe("planCost", () => {
  it("names the model, the time and the tokens the provider billed", () => {
    expect(planCost({ model: "claude-sonnet-4", duration_ms: 4200, input_tokens: 1234, output_tokens: 456 })).toBe(
      "claude-sonnet-4 · 4.2 s · 1,234 + 456 tokens",
    );
  });
  it("leaves out what the provider did not report", () => {
    expect(planCost({ model: "llama3.1", duration_ms: 950, input_tokens: null, output_tokens: null })).toBe(
      "llama3.1 · 1 s",
    );
  });
});

describe("safeNext", () => {
  it("returns only paths on this site after sign-in", async () => {
    const { safeNext } = await import("./session");
    expect(safeNext("/plants/1?x=2")).toBe("/plants/1?x=2");
    for (const hostile of [
      null,
      "",
      "https://evil.example",
      "//evil.example",
      "/\\evil.example",
      "javascript:alert(1)",
    ]) {
      expect(safeNext(hostile)).toBe("/");
    }
  });
});

describe("vitalsText", () => {
  it("shows what a device sent, and a dash for nothing", () => {
    expect(vitalsText(null)).toBe("–");
    expect(vitalsText({ battery_percent: 81.6, battery_volts: 3.9, rssi_dbm: -67 })).toBe("82 % · 3.90 V · -67 dBm");
    expect(vitalsText({ battery_percent: null, battery_volts: null, rssi_dbm: -80 })).toBe("-80 dBm");
  });
});
