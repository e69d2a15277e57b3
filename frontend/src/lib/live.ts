// Live updates: the server's event stream applied to the query cache.
import type { QueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { keys } from "./queries";
import type { Alert, Device, DeviceStatus, Plant, Reading } from "./types";

export type LiveState = "connecting" | "live" | "reconnecting";

interface DeviceStatusEvent {
  device_id: string;
  plant_id: string | null;
  status: DeviceStatus;
  last_seen_at: string | null;
}

type PlantList = { plants: Plant[]; total: number };
type DeviceList = { devices: Device[]; total: number };

const STATUS_REFRESH_MS = 3000;
const pendingStatus = new Map<QueryClient, Set<string>>();

function refreshStatusSoon(client: QueryClient, plantId: string): void {
  let pending = pendingStatus.get(client);
  if (!pending) {
    pending = new Set();
    pendingStatus.set(client, pending);
    setTimeout(() => {
      const plants = pendingStatus.get(client) ?? new Set<string>();
      pendingStatus.delete(client);
      client.invalidateQueries({ queryKey: keys.plants });
      for (const id of plants) {
        client.invalidateQueries({ queryKey: keys.plant(id) });
        client.invalidateQueries({ queryKey: keys.series(id) });
      }
    }, STATUS_REFRESH_MS);
  }
  pending.add(plantId);
}

/** Applies one event to the cached queries. Exported for tests. */
export function applyEvent(client: QueryClient, type: string, data: unknown): void {
  switch (type) {
    case "reading": {
      const reading = data as Reading;
      if (!reading.plant_id) break;
      const update = (plant: Plant): Plant =>
        plant.id === reading.plant_id && (!plant.latest_telemetry || plant.latest_telemetry.time <= reading.time)
          ? { ...plant, latest_telemetry: reading }
          : plant;
      client.setQueryData<PlantList>(keys.plants, (list) =>
        list ? { ...list, plants: list.plants.map(update) } : list,
      );
      client.setQueryData<Plant>(keys.plant(reading.plant_id), (plant) => (plant ? update(plant) : plant));
      // The status is judged on the server: refresh it, at most every few seconds.
      refreshStatusSoon(client, reading.plant_id);
      break;
    }
    case "device_status": {
      const change = data as DeviceStatusEvent;
      const update = (device: Device): Device =>
        device.id === change.device_id
          ? { ...device, status: change.status, last_seen_at: change.last_seen_at }
          : device;
      for (const [key, list] of client.getQueriesData<DeviceList>({ queryKey: keys.devices })) {
        if (list) client.setQueryData(key, { ...list, devices: list.devices.map(update) });
      }
      client.invalidateQueries({ queryKey: keys.plants });
      break;
    }
    case "alert": {
      const alert = data as Alert;
      client.invalidateQueries({ queryKey: keys.alerts });
      client.invalidateQueries({ queryKey: keys.plants });
      if (alert.plant_id) client.invalidateQueries({ queryKey: keys.plant(alert.plant_id) });
      break;
    }
    case "plant": {
      const change = data as { plant_id: string; removed: boolean };
      client.invalidateQueries({ queryKey: keys.plants });
      if (!change.removed) client.invalidateQueries({ queryKey: keys.plant(change.plant_id) });
      break;
    }
  }
}

/**
 * Subscribes to `/api/events` while mounted. The browser resumes a dropped
 * stream by itself (sending Last-Event-ID); when it gives up (e.g. a proxy
 * answered 502 during a restart) we open a new one with backoff. Every time
 * a stream opens, what is shown is refetched, since events may have been
 * missed.
 */
export function useLiveEvents(client: QueryClient): LiveState {
  const [state, setState] = useState<LiveState>("connecting");
  useEffect(() => {
    let source: EventSource | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let delay = 1000;
    let stopped = false;

    const open = () => {
      source = new EventSource("/api/events");
      source.onopen = () => {
        delay = 1000;
        setState("live");
        // Whatever changed between the page's first fetch (or the lost
        // stream) and this moment came as no event: refetch what is shown.
        client.invalidateQueries();
      };
      source.onerror = () => {
        setState("reconnecting");
        if (source?.readyState === EventSource.CLOSED && !stopped) {
          source.close();
          retry = setTimeout(open, delay);
          delay = Math.min(delay * 2, 15000);
        }
      };
      for (const type of ["reading", "device_status", "alert", "plant"]) {
        source.addEventListener(type, (event) => {
          try {
            applyEvent(client, type, JSON.parse((event as MessageEvent<string>).data));
          } catch {
            // A malformed event is skipped; the next refetch corrects the view.
          }
        });
      }
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      source?.close();
    };
  }, [client]);
  return state;
}
