#!/bin/sh
# Runs as root in the eclipse-mosquitto image. Mosquitto 2 drops to its own
# user before it reads any file, so the certificates (mounted read-only and
# owned by the host user) are copied where that user can read them, and the
# dynamic-security file is created with its admin on first start.
set -eu

: "${MQTT_DYNSEC_USERNAME:?MQTT_DYNSEC_USERNAME is required}"
: "${MQTT_DYNSEC_PASSWORD:?MQTT_DYNSEC_PASSWORD is required}"

for file in ca.pem server.pem server-key.pem; do
    if [ ! -r "/mosquitto/certs/$file" ]; then
        echo "missing /mosquitto/certs/$file: run 'make certs' before 'make prod-up'" >&2
        exit 1
    fi
done
install -d -o mosquitto -g mosquitto -m 0700 /mosquitto/tls
install -o mosquitto -g mosquitto -m 0644 /mosquitto/certs/ca.pem /mosquitto/certs/server.pem /mosquitto/tls/
install -o mosquitto -g mosquitto -m 0600 /mosquitto/certs/server-key.pem /mosquitto/tls/

dynsec=/mosquitto/data/dynamic-security.json
if [ ! -f "$dynsec" ]; then
    mosquitto_ctrl dynsec init "$dynsec" "$MQTT_DYNSEC_USERNAME" "$MQTT_DYNSEC_PASSWORD" >/dev/null
    echo "created $dynsec with admin $MQTT_DYNSEC_USERNAME"
fi
chown -R mosquitto:mosquitto /mosquitto/data

exec mosquitto -c /mosquitto/config/mosquitto.conf
