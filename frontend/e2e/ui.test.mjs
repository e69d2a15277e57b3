// End-to-end: a real `plantops serve` fed by `plantops simulate`, driven in
// Debian's Chromium through playwright-core. Screenshots of every page at
// phone and desktop widths go to e2e/artifacts/screenshots/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHmac } from "node:crypto";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const binary = resolve(process.env.PLANTOPS_BIN ?? join(here, "../../target/debug/plantops"));
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshots = join(here, "artifacts", "screenshots");
const TIMEOUT = 20_000;

const freePort = () =>
  new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });

let dataDir;
let ports;
let server;
let simulator;
let browser;
let base;
/** The first admin's full API token, for setting up through the API. */
let adminToken;
/** The signed-in admin's cookies, for every page that is not about signing in. */
let adminState;
const ADMIN = { username: "owner", password: "owner-password-1" };

const cleanEnv = () => {
  const env = { ...process.env, LOG_LEVEL: "warn" };
  for (const name of ["DATABASE_URL", "MQTT_HOST", "PLANTOPS_DATA_DIR", "LOG_FORMAT"]) delete env[name];
  return env;
};

async function startServer() {
  server = spawn(binary, ["serve"], {
    env: {
      ...cleanEnv(),
      PLANTOPS_DATA_DIR: dataDir,
      PLANTOPS_HTTP_ADDR: `127.0.0.1:${ports.http}`,
      PLANTOPS_MQTT_ADDR: `127.0.0.1:${ports.mqtt}`,
      PLANTOPS_MQTTS_ADDR: `127.0.0.1:${ports.mqtts}`,
      PLANTOPS_HEARTBEAT_INTERVAL_SECS: "60",
      // None on record, so the first is taken at start.
      PLANTOPS_BACKUP_SCHEDULE: "0 3 * * *",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${base}/api/ready`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("plantops serve did not become ready");
}

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await exited;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${adminToken}` };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(`${base}/api${path}`, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => null);
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

async function shoot(page, name) {
  for (const [label, viewport] of [
    ["phone", { width: 390, height: 844 }],
    ["desktop", { width: 1280, height: 900 }],
  ]) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(screenshots, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "plantops-e2e-"));
  ports = { http: await freePort(), mqtt: await freePort(), mqtts: await freePort() };
  base = `http://127.0.0.1:${ports.http}`;
  await startServer();
  const index = await (await fetch(base)).text();
  assert.ok(index.includes('id="root"'), "plantops serve does not serve the built UI (run `make ui`, then rebuild)");
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  simulator?.kill("SIGINT");
  await browser?.close();
  await stopServer();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Waits until some value on the dashboard's cards differs from now. */
async function cardValuesChange(page, timeout = TIMEOUT) {
  const before = await page.locator("[data-testid=plant-card] dd").allTextContents();
  await page.waitForFunction(
    (previous) =>
      JSON.stringify([...document.querySelectorAll("[data-testid=plant-card] dd")].map((e) => e.textContent)) !==
      JSON.stringify(previous),
    before,
    { timeout },
  );
}

async function newPage(storageState = adminState, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, storageState, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  return page;
}

async function signIn(page, { username, password }) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

// First, because every later test signs in as the admin it creates.
test("the setup link creates the first admin, who signs out and in again", async () => {
  const token = readFileSync(join(dataDir, "setup-token"), "utf8").trim();
  const page = await newPage(undefined);
  // Without an account every page is the setup page.
  await page.goto(`${base}/devices`);
  await page.getByRole("heading", { name: "Create the first admin" }).waitFor();
  await page.goto(`${base}/setup?token=${token}`);
  await page.getByLabel("Username").fill(ADMIN.username);
  await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
  await page.getByLabel("Repeat the password").fill(ADMIN.password);
  await shoot(page, "setup");
  await page.getByRole("button", { name: "Create admin" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  assert.match(await page.getByTestId("signed-in-user").textContent(), /owner \(admin\)/);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.goto(`${base}/alerts`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.match(page.url(), /\/login\?next=%2Falerts$/);
  await signIn(page, { ...ADMIN, password: "wrong-password" });
  await page.getByText("Wrong username or password").waitFor();
  await shoot(page, "login");
  await signIn(page, ADMIN);
  // Back to the page that asked for the sign-in.
  await page.getByRole("heading", { name: "Alerts" }).waitFor();
  adminState = await page.context().storageState();
  await page.context().close();

  // Tools get their credentials from the CLI and the API.
  adminToken = execFileSync(binary, ["token", "create", "--user", ADMIN.username, "--name", "e2e", "--scope", "full"], {
    env: { ...cleanEnv(), PLANTOPS_DATA_DIR: dataDir },
  })
    .toString()
    .trim();
  const key = await api("POST", "/enrollment-keys", { name: "simulator" });
  simulator = spawn(
    binary,
    [
      "simulate",
      "--url",
      base,
      "--devices",
      "3",
      "--interval",
      "0.5",
      "--breach-rate",
      "0",
      "--create-plants",
      "--credentials",
      join(dataDir, "sim.json"),
      "--seed",
      "7",
    ],
    {
      env: { ...cleanEnv(), PLANTOPS_TOKEN: adminToken, PLANTOPS_ENROLLMENT_KEY: key.key },
      stdio: ["ignore", "ignore", "ignore"],
    },
  );
});

test("the dashboard shows live values arriving without a reload", async () => {
  const page = await newPage();
  await page.goto(base);
  await page.getByTestId("plant-card").nth(2).waitFor();
  await page.getByText("● Live").waitFor();
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
  const first = page.getByTestId("plant-card").first().getByTestId("value-temperature");
  await page.waitForFunction((el) => el && el.textContent !== "—", await first.elementHandle());
  await cardValuesChange(page);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "values changed without a reload");
  const summary = await page.getByTestId("summary").textContent();
  assert.match(summary, /no devices offline/);
  await shoot(page, "dashboard");
  await page.context().close();
});

test("a threshold edit is validated and persists after reload", async () => {
  const page = await newPage();
  const { plants } = await api("GET", "/plants");
  const plant = plants[0];
  await page.goto(`${base}/plants/${plant.id}`);
  const min = page.locator("input[name=soil_moisture-min]");
  const max = page.locator("input[name=soil_moisture-max]");
  await min.fill("95");
  await max.fill("20");
  await page.getByText("min must not be above max").waitFor();
  assert.equal(await page.getByRole("button", { name: "Save thresholds" }).isDisabled(), true);
  await min.fill("12.5");
  await max.fill("88");
  const battery = page.locator("input[name=low-battery]");
  await battery.fill("120");
  await page.getByText("Low battery must be a whole percentage from 0 to 100").waitFor();
  assert.equal(await page.getByRole("button", { name: "Save thresholds" }).isDisabled(), true);
  await battery.fill("25");
  await page.getByRole("button", { name: "Save thresholds" }).click();
  await page.getByText("Saved").waitFor();
  await page.reload();
  await page.locator("input[name=soil_moisture-min]").waitFor();
  assert.equal(await page.locator("input[name=soil_moisture-min]").inputValue(), "12.5");
  assert.equal(await page.locator("input[name=soil_moisture-max]").inputValue(), "88");
  const stored = await api("GET", `/plants/${plant.id}`);
  assert.deepEqual(stored.thresholds.soil_moisture, { min: 12.5, max: 88 });
  assert.equal(stored.low_battery_percent, 25);
  assert.equal(await page.locator("input[name=low-battery]").inputValue(), "25");
  await page.locator(".chart canvas").first().waitFor();
  await shoot(page, "plant-detail");
  // The download link works with the page's session: the simulator's readings, as CSV.
  const csvHref = await page.getByRole("link", { name: "CSV" }).getAttribute("href");
  const csv = await page.evaluate(async (href) => (await fetch(href)).text(), csvHref);
  const csvLines = csv.trim().split("\n");
  assert.equal(csvLines[0], "time,device_id,plant_id,soil_moisture,temperature,humidity,light_level");
  assert.ok(csvLines.length > 1, "the simulator's readings are in the export");

  await page.getByRole("link", { name: "Care plan" }).click();
  await page.getByTestId("llm-missing").waitFor();
  await shoot(page, "care-plan");
  await page.context().close();
});

test("on a phone, a due task is marked done from Today and a note joins the journal", async () => {
  const { plants } = await api("GET", "/plants");
  const plant = plants[1];
  await api("PUT", `/plants/${plant.id}/care-schedule`, { tasks: [{ task: "water", every_days: 3 }] });
  const longAgo = new Date(Date.now() - 5 * 86_400_000).toISOString();
  await api("POST", `/plants/${plant.id}/care-events`, { kind: "watered", at: longAgo });
  const page = await newPage(adminState, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(base);
  const today = page.getByTestId("today-tasks");
  await today.getByText(plant.name).waitFor();
  await today.getByRole("button", { name: "Done" }).first().click();
  await page.getByTestId("today-empty").waitFor();
  const card = page.getByTestId("plant-card").filter({ hasText: plant.name });
  await card.getByTestId("next-task").filter({ hasText: "Water in 3 d" }).waitFor();
  const { tasks } = await api("GET", "/tasks");
  assert.equal(tasks.length, 0, "nothing due once done");
  const journal = await api("GET", `/plants/${plant.id}/care-events`);
  assert.equal(journal.events[0].kind, "watered");
  assert.equal(journal.events[0].source, "user", "recorded with the page's session");

  await page.goto(`${base}/plants/${plant.id}`);
  // The watering just recorded is marked on the soil-moisture chart.
  assert.match(await page.getByTestId("care-markers").textContent(), /1 watered/);
  await page.locator("select[name=kind]").selectOption("note");
  await page.locator("textarea[name=text]").fill("New leaf unfurling");
  await page.getByRole("button", { name: "Add to journal" }).click();
  await page.getByTestId("journal").getByText("New leaf unfurling").waitFor();
  const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(wide, false, "no horizontal scroll at 390 px");
  await page.context().close();
});

test("registering a device shows its credentials once", async () => {
  const page = await newPage();
  await page.goto(`${base}/devices`);
  await page.getByTestId("device-row").nth(2).waitFor();
  await page.getByLabel("MAC address").fill("AA-BB-CC-00-11-22");
  await page.getByRole("button", { name: "Register device" }).click();
  const panel = page.getByTestId("credentials");
  await panel.waitFor();
  const password = await page.getByTestId("mqtt-password").textContent();
  assert.ok(password.length >= 32, `password shown: ${password}`);
  await panel.getByText("shown only this once").waitFor();
  await panel.getByText("BEGIN CERTIFICATE").waitFor();
  assert.equal(await page.getByTestId("tls-port").textContent(), String(ports.mqtts));
  await shoot(page, "devices-credentials");
  await page.getByRole("button", { name: "I have saved them" }).click();
  await panel.waitFor({ state: "detached" });
  assert.equal(await page.getByText(password).count(), 0, "the password is gone");
  await page.getByTestId("device-row").nth(3).waitFor();

  await page.getByLabel("MAC address").fill("aa:bb:cc:00:11:22");
  await page.getByRole("button", { name: "Register device" }).click();
  await page.getByText("already registered").waitFor();
  assert.equal(await page.getByTestId("credentials").count(), 0);
  await page.getByRole("button", { name: "OK", exact: true }).click();
  await shoot(page, "devices");
  await page.context().close();
});

test("an alert appears when a breaching reading arrives", async () => {
  const page = await newPage();
  await page.goto(`${base}/alerts`);
  await page.getByRole("heading", { name: "Alerts" }).waitFor();
  const { plants } = await api("GET", "/plants");
  const plant = plants[1];
  const device = await api("POST", "/devices/register", { mac_address: "aa:bb:cc:00:33:44" });
  await api("POST", `/devices/${device.device_id}/provision`, { plant_id: plant.id });
  execFileSync("mosquitto_pub", [
    "-h",
    "127.0.0.1",
    "-p",
    String(ports.mqtt),
    "-q",
    "1",
    "-i",
    device.device_id,
    "-u",
    device.mqtt_username,
    "-P",
    device.mqtt_password,
    "-t",
    `devices/${device.device_id}/telemetry`,
    "-m",
    JSON.stringify({ soil_moisture: 2 }),
  ]);
  // The threshold alert: the simulator's next reading adds a "recovered" one above it.
  const row = page.getByTestId("alert-row").filter({ hasText: plant.name }).filter({ hasText: "Threshold" });
  await row.first().waitFor();
  await row.first().getByRole("button", { name: "Acknowledge" }).click();
  await row.first().getByText("✓").waitFor();
  await shoot(page, "alerts");
  await page.context().close();
});

/**
 * deploy/nginx.conf in Debian's nginx, proxying to this test's server, with
 * the certificate the server generated for its broker (it covers 127.0.0.1).
 */
async function startNginx() {
  const port = await freePort();
  const plainPort = await freePort();
  const prefix = mkdtempSync(join(tmpdir(), "plantops-nginx-"));
  const site = readFileSync(join(here, "../../deploy/nginx.conf"), "utf8")
    .replace("http://backend:8000", base)
    .replace("listen 80;", `listen 127.0.0.1:${plainPort};`)
    .replace("listen 443 ssl http2;", `listen 127.0.0.1:${port} ssl http2;`)
    .replaceAll("/etc/nginx/tls/", `${dataDir}/tls/`)
    .replace("root /usr/share/nginx/html;", `root ${resolve(here, "../dist")};`);
  writeFileSync(join(prefix, "site.conf"), site);
  const user = process.getuid?.() === 0 ? "user root;" : "";
  writeFileSync(
    join(prefix, "nginx.conf"),
    `${user} pid ${prefix}/nginx.pid; error_log ${prefix}/error.log warn; events {}
     http { include /etc/nginx/mime.types; access_log off;
       client_body_temp_path ${prefix}/b; proxy_temp_path ${prefix}/p; fastcgi_temp_path ${prefix}/f;
       uwsgi_temp_path ${prefix}/u; scgi_temp_path ${prefix}/s; include ${prefix}/site.conf; }`,
  );
  // One process (no workers), so killing it leaves nothing behind.
  const nginx = spawn(
    "nginx",
    ["-p", prefix, "-e", `${prefix}/error.log`, "-c", `${prefix}/nginx.conf`, "-g", "daemon off; master_process off;"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const url = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      // The plain port answers the health check (and redirects the rest).
      if ((await fetch(`http://127.0.0.1:${plainPort}/health`)).ok) return { nginx, url, prefix };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  nginx.kill("SIGKILL");
  throw new Error("nginx (Debian package nginx) did not start");
}

test("behind the production nginx the UI runs live under its security policy", async () => {
  const { nginx, url, prefix } = await startNginx();
  // The stack's own CA signed the certificate; this browser does not trust it.
  const page = await newPage(adminState, { ignoreHTTPSErrors: true });
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  try {
    await page.goto(url);
    await page.getByTestId("plant-card").nth(2).waitFor();
    await page.getByText("● Live").waitFor();
    // Live values through nginx's unbuffered event stream.
    await cardValuesChange(page);
    await page.getByTestId("plant-card").first().click();
    await page.locator(".chart canvas").first().waitFor();
    await page.reload();
    await page.locator(".chart canvas").first().waitFor();
    assert.deepEqual(problems, [], "console errors (a Content-Security-Policy violation is one)");
  } finally {
    await page.context().close();
    nginx.kill("SIGKILL");
    rmSync(prefix, { recursive: true, force: true });
  }
});

test("a viewer sees everything and no edit controls", async () => {
  await api("POST", "/users", { username: "guest", password: "guest-password", role: "viewer" });
  const page = await newPage(undefined);
  await page.goto(`${base}/login`);
  await signIn(page, { username: "guest", password: "guest-password" });
  await page.getByTestId("plant-card").nth(2).waitFor();
  assert.match(await page.getByTestId("signed-in-user").textContent(), /guest \(viewer\)/);
  assert.equal(await page.getByRole("button", { name: "Add plant" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Users" }).count(), 0);
  await page.getByTestId("plant-card").first().click();
  await page.locator(".chart canvas").first().waitFor();
  assert.equal(await page.getByRole("button", { name: "Delete plant" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Save thresholds" }).count(), 0);
  await page.getByRole("heading", { name: "Care journal" }).waitFor();
  for (const name of ["Add to journal", "Save schedule", "Remove"]) {
    assert.equal(await page.getByRole("button", { name }).count(), 0, `viewer sees ${name}`);
  }
  await page.goto(`${base}/devices`);
  await page.getByTestId("device-row").first().waitFor();
  for (const name of ["Register device", "Delete", "Open enrollment window", "Create key"]) {
    assert.equal(await page.getByRole("button", { name }).count(), 0, `viewer sees ${name}`);
  }
  assert.equal(await page.getByRole("combobox").count(), 1, "only the status filter");
  await page.goto(`${base}/alerts`);
  await page.getByTestId("alert-row").first().waitFor();
  assert.equal(await page.getByRole("button", { name: "Acknowledge" }).count(), 0);
  await page.goto(`${base}/settings`);
  await page.getByText("Only admins change").waitFor();
  await shoot(page, "viewer-devices");
  await page.context().close();
});

test("admins manage users, API tokens, enrollment keys and the window", async () => {
  const page = await newPage();
  await page.goto(`${base}/account`);
  await page.getByLabel("Name").fill("grafana");
  await page.getByRole("button", { name: "Create token" }).click();
  const secret = await page.getByTestId("secret").textContent();
  assert.match(secret, /^pot_[0-9a-f]{64}$/);
  const read = await fetch(`${base}/api/plants`, { headers: { Authorization: `Bearer ${secret}` } });
  assert.equal(read.status, 200, "the shown token works");
  await page.getByRole("button", { name: "I have saved it" }).click();
  await page.getByTestId("token-row").filter({ hasText: "grafana" }).waitFor();
  assert.equal(await page.getByText(secret).count(), 0, "shown once");
  await shoot(page, "account");

  await page.goto(`${base}/devices`);
  await page.getByRole("button", { name: "Open enrollment window" }).click();
  await page
    .getByTestId("enrollment-window")
    .getByText(/for 4:5\d|for 5:00/)
    .waitFor();
  await page.getByLabel("Name").fill("greenhouse");
  await page.getByRole("button", { name: "Create key" }).click();
  assert.match(await page.getByTestId("secret").textContent(), /^pek_/);
  await page.getByRole("button", { name: "I have saved it" }).click();
  await page.getByTestId("key-row").filter({ hasText: "greenhouse" }).waitFor();
  await shoot(page, "devices-enrollment");
  await page.getByRole("button", { name: "Close now" }).click();
  await page.getByRole("button", { name: "Open enrollment window" }).waitFor();

  await page.goto(`${base}/users`);
  await page.getByTestId("user-row").filter({ hasText: "guest" }).waitFor();
  await shoot(page, "users");
  await page.context().close();
});

test("settings pages and the UI reconnects after a server restart", async () => {
  const page = await newPage();
  await page.goto(`${base}/settings`);
  await page.getByTestId("llm-key-state").waitFor();
  await page.getByTestId("webhook-state").waitFor();
  assert.match(
    await page.getByTestId("last-backup").textContent(),
    /^Last verified backup: .*plantops-\d{8}T\d{6}Z\.sqlite3, \d+ rows\.$/,
  );
  assert.equal(await page.getByTestId("ha-state").textContent(), "Off: no broker set.");
  await page.getByLabel("Broker URL").fill("mqtt://homeassistant:pw@127.0.0.1:1");
  await page.getByRole("button", { name: "Save broker" }).click();
  await page.getByTestId("ha-state").filter({ hasText: "mqtt://homeassistant:***@127.0.0.1:1" }).waitFor();
  await page.getByRole("button", { name: "Remove broker" }).click();
  await page.getByTestId("ha-state").filter({ hasText: "Off" }).waitFor();

  // A signed webhook channel: added, tested against a receiver that checks
  // the signature, removed.
  const secret = "e2e-webhook-secret-0123";
  const received = [];
  const receiver = createHttpServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      const expected = `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
      const valid = request.headers["x-plantops-signature"] === expected;
      if (valid) received.push(JSON.parse(body.toString()));
      response.writeHead(valid ? 204 : 401).end();
    });
  });
  await new Promise((done) => receiver.listen(0, "127.0.0.1", done));
  const hook = `http://127.0.0.1:${receiver.address().port}/plantops`;
  const channels = page.getByRole("form", { name: "Add a notification channel" });
  await channels.getByLabel("Kind").selectOption("webhook");
  await channels.getByLabel("Name").fill("Automation");
  await channels.getByLabel("Alerts from").selectOption("critical");
  await channels.getByLabel("URL").fill(hook);
  await channels.getByLabel("Signing secret").fill("short");
  await channels.getByRole("button", { name: "Add channel" }).click();
  await page.getByText("secret must be 16–256 characters").waitFor();
  await channels.getByLabel("Signing secret").fill(secret);
  await channels.getByRole("button", { name: "Add channel" }).click();
  const row = page.getByTestId("channel-row").filter({ hasText: "Automation" });
  await row.filter({ hasText: `POST to 127.0.0.1 (signed)` }).waitFor();
  assert.match(await row.textContent(), /critical and up/);
  await shoot(page, "settings");
  await row.getByRole("button", { name: "Test" }).click();
  await row.getByText("✓ Test notification sent").waitFor();
  assert.equal(received.length, 1);
  assert.equal(received[0].event, "test");
  await row.getByRole("button", { name: "Remove" }).click();
  await page.getByText("No channels yet").waitFor();
  receiver.close();

  await page.goto(base);
  await page.getByText("● Live").waitFor();
  await stopServer();
  await page.getByText("Reconnecting").waitFor();
  await startServer();
  await page.getByText("● Live").waitFor({ timeout: 40_000 });
  // Readings flow again: the simulator reconnects, the page updates.
  await cardValuesChange(page, 40_000);
  await page.context().close();
});
