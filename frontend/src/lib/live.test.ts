import { QueryClient } from "@tanstack/react-query";
import { applyEvent } from "./live";
import type { Device, Plant, Reading } from "./types";

const plant = (id: string, latest: Reading | null): Plant => ({
  id,
  name: id,
  species: null,
  thresholds: null,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  latest_telemetry: latest,
  device_count: 1,
  status: "healthy",
  alert_cooldown_minutes: 60,
  low_battery_percent: null,
});

const reading = (plantId: string, time: string, soil: number): Reading => ({
  time,
  device_id: "d1",
  plant_id: plantId,
  soil_moisture: soil,
  temperature: null,
  humidity: null,
  light_level: null,
});

describe("applyEvent", () => {
  it("puts a newer reading on its plant only", () => {
    const client = new QueryClient();
    client.setQueryData(["plants"], { plants: [plant("a", null), plant("b", null)], total: 2 });
    applyEvent(client, "reading", reading("a", "2026-01-01T10:00:00Z", 41));
    const list = client.getQueryData<{ plants: Plant[] }>(["plants"]);
    expect(list?.plants[0]?.latest_telemetry?.soil_moisture).toBe(41);
    expect(list?.plants[1]?.latest_telemetry).toBeNull();
  });

  it("keeps the newest reading when an older one arrives late", () => {
    const client = new QueryClient();
    client.setQueryData(["plant", "a"], plant("a", reading("a", "2026-01-01T10:00:00Z", 41)));
    applyEvent(client, "reading", reading("a", "2026-01-01T09:00:00Z", 30));
    expect(client.getQueryData<Plant>(["plant", "a"])?.latest_telemetry?.soil_moisture).toBe(41);
  });

  it("updates a device's status in every cached device list", () => {
    const client = new QueryClient();
    const device: Device = {
      id: "d1",
      mac_address: "aa:bb:cc:dd:ee:ff",
      mqtt_username: "device_1",
      plant_id: null,
      status: "online",
      firmware_version: null,
      sensor_types: null,
      last_seen_at: null,
      created_at: "2026-01-01T00:00:00Z",
      enrollment: "key",
      vitals: null,
      vitals_at: null,
    };
    client.setQueryData(["devices", "all"], { devices: [device], total: 1 });
    applyEvent(client, "device_status", {
      device_id: "d1",
      plant_id: null,
      status: "offline",
      last_seen_at: "2026-01-01T10:00:00Z",
    });
    const list = client.getQueryData<{ devices: Device[] }>(["devices", "all"]);
    expect(list?.devices[0]?.status).toBe("offline");
  });
});
