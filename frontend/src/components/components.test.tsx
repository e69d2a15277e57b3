import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { StatusBadge } from "./ui";
import { ThresholdEditor } from "../pages/PlantDetail";
import type { Plant } from "../lib/types";

describe("StatusBadge", () => {
  it("names the status in words, not colour alone", () => {
    render(<StatusBadge status="critical" />);
    expect(screen.getByTestId("status")).toHaveTextContent("Critical");
    render(<StatusBadge status="unknown" />);
    expect(screen.getByText("No data")).toBeInTheDocument();
  });
});

describe("ThresholdEditor", () => {
  const plant: Plant = {
    id: "p1",
    name: "Fern",
    species: null,
    // As the server sends them: every metric, null when unset.
    thresholds: {
      soil_moisture: { min: 20, max: 80 },
      temperature: null,
      humidity: null,
      light_level: null,
    },
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    latest_telemetry: null,
    device_count: 0,
    status: "unknown",
    alert_cooldown_minutes: 60,
    low_battery_percent: null,
  };

  it("refuses min above max before anything is sent", async () => {
    const user = userEvent.setup();
    render(
      <QueryClientProvider client={new QueryClient()}>
        <ThresholdEditor plant={plant} />
      </QueryClientProvider>,
    );
    const [min] = screen.getAllByRole("spinbutton", { name: "Min" }) as HTMLInputElement[];
    if (!min) throw new Error("no min field");
    expect(min.value).toBe("20");
    await user.clear(min);
    await user.type(min, "90");
    expect(screen.getByRole("alert")).toHaveTextContent("min must not be above max");
    expect(screen.getByRole("button", { name: "Save thresholds" })).toBeDisabled();
  });
});
