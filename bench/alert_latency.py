#!/usr/bin/env python3
"""Publish → Discord-webhook latency of threshold alerts.

Starts `plantops serve` (the binary given) on free ports with a local HTTP
server standing in for Discord, registers a device on a plant with
cooldown 0, then alternates breaching and recovering readings (each one
produces a notice) and reports p50/p99 from just before `mosquitto_pub`
starts to the webhook request arriving. Process start-up of mosquitto_pub
is included, so the numbers are an upper bound.

    python3 bench/alert_latency.py target/release/plantops --count 200
"""
import argparse, json, os, socket, statistics, subprocess, tempfile, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

arrivals = []
arrived = threading.Condition()


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with arrived:
            arrivals.append(time.monotonic())
            arrived.notify_all()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--background-rate", type=int, default=0,
                        help="readings per second from 100 other devices meanwhile")
    args = parser.parse_args()

    hook = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    http, mqtt = free_port(), free_port()
    data = tempfile.mkdtemp()
    env = dict(os.environ, PLANTOPS_DATA_DIR=data, PLANTOPS_HTTP_ADDR=f"127.0.0.1:{http}",
               PLANTOPS_MQTT_ADDR=f"127.0.0.1:{mqtt}", PLANTOPS_MQTTS_ADDR="", LOG_LEVEL="warn",
               # A throwaway server on localhost: the documented opt-outs of
               # sign-in and enrollment keep the script free of credentials.
               PLANTOPS_AUTH="off", PLANTOPS_ENROLLMENT="open",
               DISCORD_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/api/webhooks/1/t")
    server = subprocess.Popen([args.binary, "serve"], env=env)
    base = f"http://127.0.0.1:{http}/api"
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/ready")
                break
            except Exception:
                time.sleep(0.05)
        plant = call(base, "POST", "/plants", {"name": "Bench", "alert_cooldown_minutes": 0,
                                               "thresholds": {"soil_moisture": {"min": 20, "max": 80}}})
        device = call(base, "POST", "/devices/register", {"mac_address": "02:00:00:00:00:01"})
        call(base, "POST", f"/devices/{device['device_id']}/provision", {"plant_id": plant["id"]})
        background = []
        if args.background_rate:
            per_device = max(1, args.background_rate // 100)
            for n in range(100):
                other = call(base, "POST", "/devices/register", {"mac_address": f"02:00:00:00:01:{n:02x}"})
                call(base, "POST", f"/devices/{other['device_id']}/provision", {"plant_id": plant["id"]})
                pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt), "-q", "1", "-l",
                                        "-i", other["device_id"],
                                        "-u", other["mqtt_username"], "-P", other["mqtt_password"],
                                        "-t", f"devices/{other['device_id']}/telemetry"],
                                       stdin=subprocess.PIPE, text=True)
                background.append((pub, per_device))

            def feed():
                while background:
                    for pub, rate in list(background):
                        for _ in range(rate):
                            pub.stdin.write(json.dumps({"temperature": 21, "soil_moisture": 50}) + "\n")
                        pub.stdin.flush()
                    time.sleep(1)

            threading.Thread(target=feed, daemon=True).start()
        latencies = []
        for i in range(args.count):
            value = 10 if i % 2 == 0 else 50
            expected = len(arrivals) + 1
            start = time.monotonic()
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt), "-q", "1",
                            "-i", device["device_id"],
                            "-u", device["mqtt_username"], "-P", device["mqtt_password"],
                            "-t", f"devices/{device['device_id']}/telemetry",
                            "-m", json.dumps({"soil_moisture": value})], check=True)
            with arrived:
                arrived.wait_for(lambda: len(arrivals) >= expected, timeout=10)
            latencies.append((arrivals[expected - 1] - start) * 1000)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        for pub, _ in background:
            pub.stdin.close()
            pub.terminate()
        background.clear()
        print(json.dumps({"count": len(latencies), "background_rate": args.background_rate, "p50_ms": round(statistics.median(latencies), 1),
                          "p99_ms": round(p99, 1), "max_ms": round(latencies[-1], 1)}))
    finally:
        server.terminate()
        server.wait()
        hook.shutdown()


if __name__ == "__main__":
    main()
