import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api } from "../lib/api";
import type { Device, DeviceStatus, EnrollmentKey, Plant, Registration } from "../lib/types";
import { formatTime, timeAgo, vitalsText } from "../lib/format";
import { CopyButton, EmptyState, ErrorState, OneTimeSecret, Skeleton, StatusBadge } from "../components/ui";
import { devicesQuery, enrollmentKeysQuery, enrollmentWindowQuery, keys, plantsQuery } from "../lib/queries";
import { useSession } from "../lib/session";

const MAC = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

function Credentials({
  registration,
  ca,
  onDone,
}: {
  registration: Registration;
  ca: string | null;
  onDone: () => void;
}) {
  const rows: [string, string][] = [
    ["Device id", registration.device_id],
    ["MQTT username", registration.mqtt_username],
    ["MQTT password", registration.mqtt_password],
    ["MQTT host", registration.mqtt_host],
  ];
  if (registration.mqtt_tls_port) rows.push(["TLS port", String(registration.mqtt_tls_port)]);
  if (registration.mqtt_port && registration.mqtt_port !== registration.mqtt_tls_port) {
    rows.push(["Plain port", String(registration.mqtt_port)]);
  }
  return (
    <section className="card stack" aria-labelledby="credentials-title" data-testid="credentials">
      <h2 id="credentials-title">Device credentials</h2>
      <p className="notice warning flush" role="alert">
        Copy these now: the password is shown only this once. If it is lost, rotate the device's credentials.
      </p>
      <div className="table-wrap">
        <table>
          <tbody>
            {rows.map(([label, value]) => (
              <tr key={label}>
                <th scope="row">{label}</th>
                <td>
                  <code data-testid={label.toLowerCase().replace(/ /g, "-")}>{value}</code>
                </td>
                <td>
                  <CopyButton text={value} label={`Copy ${label.toLowerCase()}`} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {ca && (
        <div className="stack tight">
          <div className="row spread">
            <h3>CA certificate (trust this for TLS)</h3>
            <CopyButton text={ca} label="Copy CA certificate" />
          </div>
          <pre className="secret">{ca}</pre>
        </div>
      )}
      <div>
        <button type="button" onClick={onDone}>
          I have saved them
        </button>
      </div>
    </section>
  );
}

function Register() {
  const client = useQueryClient();
  const [mac, setMac] = useState("");
  const [shown, setShown] = useState<{ registration: Registration; ca: string | null } | null>(null);
  const register = useMutation({
    mutationFn: async () => {
      const registration = await api.register(mac.trim());
      const ca = await api.caCertificate();
      return { registration, ca };
    },
    onSuccess: (result) => {
      setMac("");
      setShown(result);
      client.invalidateQueries({ queryKey: keys.devices });
    },
  });
  const macError = mac.trim() && !MAC.test(mac.trim()) ? "Six hex octets, e.g. aa:bb:cc:dd:ee:ff" : null;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!macError && mac.trim()) register.mutate();
  };
  if (shown) {
    if (shown.registration.mqtt_password === "<stored_securely>") {
      return (
        <div className="notice warning row" role="alert">
          This MAC address is already registered as {shown.registration.mqtt_username}; its password is not shown again.
          Rotate its credentials to get a new one.
          <button type="button" className="secondary" onClick={() => setShown(null)}>
            OK
          </button>
        </div>
      );
    }
    return <Credentials registration={shown.registration} ca={shown.ca} onDone={() => setShown(null)} />;
  }
  return (
    <form className="card row align-end" onSubmit={submit} aria-label="Register a device">
      <label>
        MAC address
        <input
          name="mac"
          value={mac}
          placeholder="aa:bb:cc:dd:ee:ff"
          onChange={(e) => setMac(e.target.value)}
          aria-invalid={macError ? true : undefined}
          aria-describedby="mac-help"
        />
      </label>
      <button type="submit" disabled={register.isPending || !!macError || !mac.trim()}>
        Register device
      </button>
      <span id="mac-help" className={macError || register.isError ? "field-error" : "muted small"}>
        {macError ?? register.error?.message ?? "Devices can also register themselves over the API."}
      </span>
    </form>
  );
}

function DeviceRow({ device, plants }: { device: Device; plants: Plant[] }) {
  const { canEdit } = useSession();
  const client = useQueryClient();
  const dialog = useRef<HTMLDialogElement>(null);
  const refresh = () => {
    client.invalidateQueries({ queryKey: keys.devices });
    client.invalidateQueries({ queryKey: keys.plants });
  };
  const assign = useMutation({
    mutationFn: (plantId: string) => (plantId ? api.assign(device.id, plantId) : api.unassign(device.id)),
    onSuccess: refresh,
  });
  const remove = useMutation({ mutationFn: () => api.deleteDevice(device.id), onSuccess: refresh });
  return (
    <tr data-testid="device-row">
      <td>
        <code>{device.mac_address}</code>
        <div className="muted small">{device.mqtt_username}</div>
        {device.enrollment === "window" && (
          <span className="badge" title="Registered while the enrollment window was open">
            via window
          </span>
        )}
      </td>
      <td>
        <StatusBadge status={device.status} />
      </td>
      <td title={device.last_seen_at ? formatTime(device.last_seen_at) : undefined}>{timeAgo(device.last_seen_at)}</td>
      <td data-testid="vitals" title={device.vitals_at ? `As of ${formatTime(device.vitals_at)}` : undefined}>
        {vitalsText(device.vitals)}
      </td>
      <td>
        {!canEdit && (plants.find((plant) => plant.id === device.plant_id)?.name ?? "Not assigned")}
        {canEdit && (
          <label className="small">
            <span className="sr-only">Plant of {device.mac_address}</span>
            <select
              value={device.plant_id ?? ""}
              disabled={assign.isPending}
              onChange={(e) => assign.mutate(e.target.value)}
            >
              <option value="">Not assigned</option>
              {plants.map((plant) => (
                <option key={plant.id} value={plant.id}>
                  {plant.name}
                </option>
              ))}
            </select>
          </label>
        )}
        {assign.isError && <div className="field-error">{assign.error.message}</div>}
      </td>
      <td>
        <a
          className="small"
          href={`/api/devices/${device.id}/esphome`}
          download
          title="An ESPHome configuration for this device (password and Wi-Fi go in ESPHome's secrets.yaml)"
        >
          ESPHome
        </a>{" "}
        {canEdit && (
          <button type="button" className="danger" onClick={() => dialog.current?.showModal()}>
            Delete
          </button>
        )}
        <dialog ref={dialog} aria-labelledby={`delete-${device.id}`}>
          <h2 id={`delete-${device.id}`}>Delete device {device.mac_address}?</h2>
          <p>It loses broker access at once and is disconnected. Its readings are kept.</p>
          <div className="row">
            <button
              type="button"
              className="danger"
              onClick={() => {
                dialog.current?.close();
                remove.mutate();
              }}
            >
              Delete device
            </button>
            <button type="button" className="secondary" onClick={() => dialog.current?.close()}>
              Cancel
            </button>
          </div>
        </dialog>
        {remove.isError && <div className="field-error">{remove.error.message}</div>}
      </td>
    </tr>
  );
}

/** "4:59" until the window closes. */
function countdown(until: string, now: number): string {
  const seconds = Math.max(0, Math.round((Date.parse(until) - now) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function EnrollmentWindowControl() {
  const client = useQueryClient();
  const enrollmentWindow = useQuery(enrollmentWindowQuery());
  const [minutes, setMinutes] = useState(5);
  const [now, setNow] = useState(() => Date.now());
  const until = enrollmentWindow.data?.open ? enrollmentWindow.data.until : null;
  useEffect(() => {
    if (!until) return;
    const timer = setInterval(() => {
      setNow(Date.now());
      if (Date.parse(until) <= Date.now()) client.invalidateQueries({ queryKey: keys.enrollmentWindow });
    }, 1000);
    return () => clearInterval(timer);
  }, [until, client]);
  const update = (data: unknown) => client.setQueryData(keys.enrollmentWindow, data);
  const open = useMutation({ mutationFn: () => api.openEnrollmentWindow(minutes), onSuccess: update });
  const close = useMutation({ mutationFn: api.closeEnrollmentWindow, onSuccess: update });
  return (
    <div className="card row align-end" aria-label="Enrollment window">
      {until ? (
        <>
          <p className="notice warning flush" role="status" data-testid="enrollment-window">
            Enrollment window open: any device on the network can register for {countdown(until, now)}.
          </p>
          <button type="button" className="secondary" onClick={() => close.mutate()}>
            Close now
          </button>
        </>
      ) : (
        <>
          <label>
            Minutes
            <input
              type="number"
              min={1}
              max={60}
              value={minutes}
              onChange={(e) => setMinutes(Number(e.target.value))}
            />
          </label>
          <button type="button" disabled={open.isPending || minutes < 1 || minutes > 60} onClick={() => open.mutate()}>
            Open enrollment window
          </button>
          <span className="muted small">Lets devices without a key register, like a Zigbee permit-join.</span>
        </>
      )}
      {(open.error ?? close.error) && <span className="field-error">{(open.error ?? close.error)?.message}</span>}
    </div>
  );
}

function keyState(key: EnrollmentKey): string {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return "expired";
  if (key.max_uses !== null && key.uses >= key.max_uses) return "used up";
  return "active";
}

function EnrollmentKeys() {
  const client = useQueryClient();
  const enrollmentKeys = useQuery(enrollmentKeysQuery());
  const [name, setName] = useState("");
  const [maxUses, setMaxUses] = useState("");
  const [issued, setIssued] = useState<string | null>(null);
  const refresh = () => client.invalidateQueries({ queryKey: keys.enrollmentKeys });
  const create = useMutation({
    mutationFn: () => api.createEnrollmentKey({ name: name.trim(), max_uses: maxUses ? Number(maxUses) : undefined }),
    onSuccess: (key) => {
      setName("");
      setMaxUses("");
      setIssued(key.key);
      refresh();
    },
  });
  const revoke = useMutation({ mutationFn: api.revokeEnrollmentKey, onSuccess: refresh });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  return (
    <section className="stack" aria-labelledby="keys-title">
      <h2 id="keys-title">Enrollment keys</h2>
      <p className="muted">
        Devices register with a key sent as <code>Authorization: Bearer pek_…</code> (
        <code>plantops simulate --enrollment-key</code>).
      </p>
      {issued ? (
        <OneTimeSecret title="New enrollment key" secret={issued} onDone={() => setIssued(null)} />
      ) : (
        <form className="card row align-end" onSubmit={submit} aria-label="Create an enrollment key">
          <label>
            Name
            <input
              name="key-name"
              value={name}
              placeholder="greenhouse sensors"
              onChange={(e) => setName(e.target.value)}
            />
          </label>
          <label>
            Devices (empty: unlimited)
            <input name="max-uses" type="number" min={1} value={maxUses} onChange={(e) => setMaxUses(e.target.value)} />
          </label>
          <button type="submit" disabled={create.isPending || !name.trim()}>
            Create key
          </button>
          {create.isError && <span className="field-error">{create.error.message}</span>}
        </form>
      )}
      {enrollmentKeys.data && enrollmentKeys.data.keys.length > 0 && (
        <div className="card table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Key</th>
                <th scope="col">State</th>
                <th scope="col">Devices</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {enrollmentKeys.data.keys.map((key) => (
                <tr key={key.id} data-testid="key-row">
                  <td>{key.name}</td>
                  <td>{keyState(key)}</td>
                  <td>
                    {key.uses}
                    {key.max_uses !== null && ` of ${key.max_uses}`}
                  </td>
                  <td>
                    {!key.revoked_at && (
                      <button type="button" className="danger" onClick={() => revoke.mutate(key.id)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function Devices() {
  const { canEdit } = useSession();
  const [status, setStatus] = useState<DeviceStatus | "">("");
  const devices = useQuery(devicesQuery(status || undefined));
  const plants = useQuery(plantsQuery());
  return (
    <div className="stack">
      <h1>Devices</h1>
      {canEdit && <Register />}
      {canEdit && <EnrollmentWindowControl />}
      <div className="row">
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.target.value as DeviceStatus | "")}>
            <option value="">All</option>
            <option value="online">Online</option>
            <option value="offline">Offline</option>
            <option value="provisioning">Provisioning</option>
            <option value="error">Error</option>
          </select>
        </label>
      </div>
      {devices.isPending && <Skeleton lines={4} label="Loading devices" />}
      {devices.isError && <ErrorState error={devices.error} retry={() => devices.refetch()} />}
      {devices.data?.devices.length === 0 &&
        (status ? (
          <p className="muted">No {status} devices.</p>
        ) : (
          <EmptyState title="No devices yet">
            <p>
              Register a device above with its MAC address, or let it register itself. See the{" "}
              <Link to="/settings">settings</Link> for alerts.
            </p>
          </EmptyState>
        ))}
      {devices.data && devices.data.devices.length > 0 && (
        <div className="card table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Status</th>
                <th scope="col">Last seen</th>
                <th scope="col">Battery · signal</th>
                <th scope="col">Plant</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {devices.data.devices.map((device) => (
                <DeviceRow key={device.id} device={device} plants={plants.data?.plants ?? []} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {canEdit && <EnrollmentKeys />}
    </div>
  );
}
