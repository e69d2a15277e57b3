#!/usr/bin/env bash
# Ingest through one Mosquitto (deploy/'s limits and dynamic security, a
# plain listener) into one PostgreSQL with 1, 2 and 3 PlantOps instances
# (docs/benchmarks.md, "Scale-out"). Mosquitto acknowledges devices on
# receipt: a load it accepts faster than it hands on overflows its queue
# (max_queued_messages), so the default load is the one measured before
# for the production path (20 connections, one message in flight each).
# Needs mosquitto, mosquitto_ctrl, psql, a release build.
# Usage: bench/scale-out.sh [connections] [inflight] [seconds]
# (ONLY="1" runs only the listed instance counts.)
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-20}
inflight=${2:-1}
seconds=${3:-10}
plantops=${PLANTOPS:-target/release/plantops}
only=${ONLY:-1 2 3}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_password=$(openssl rand -hex 16)
mosquitto_ctrl dynsec init "$work/dynsec.json" admin "$admin_password" >/dev/null
cat > "$work/mosquitto.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root" )
per_listener_settings false
allow_anonymous false
persistence false
max_packet_size 65536
max_keepalive 3600
max_inflight_messages 1000
max_queued_messages 100000
listener $port 127.0.0.1
use_username_as_clientid true
plugin /usr/lib/$(uname -m)-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $work/dynsec.json
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
export MQTT_HOST=127.0.0.1 MQTT_PORT=$port
export MQTT_BACKEND_USERNAME=plantops_backend MQTT_BACKEND_PASSWORD=$(openssl rand -hex 16)
export MQTT_DYNSEC_USERNAME=admin MQTT_DYNSEC_PASSWORD=$admin_password
export ENCRYPTION_KEY=$(openssl rand -hex 32)
for instances in $only; do
    database=bench_scale_$instances
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/$database \
        "$plantops" bench ingest --instances "$instances" --connections "$connections" \
        --inflight "$inflight" --duration "$seconds" --warmup 3 --json | tail -1
done
