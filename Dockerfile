# syntax=docker/dockerfile:1
# PlantOps in one container: web UI, API, SQLite and the built-in MQTT
# broker, data in the /data volume. (The production stack with TimescaleDB
# and Mosquitto is deploy/docker-compose.prod.yml.)
#   docker build -t plantops --build-arg PLANTOPS_COMMIT=$(git rev-parse --short=12 HEAD) .
#   docker run -d --name plantops -p 8000:8000 -p 1883:1883 -p 8883:8883 -v plantops-data:/data plantops
#   docker logs plantops    # the one-time setup link for the first admin

FROM node:20-bookworm-slim AS ui
WORKDIR /ui
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM rust:1.95-slim-bookworm AS build
ARG PLANTOPS_COMMIT=unknown
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# The ESPHome configuration the API fills in for a device.
COPY deploy/esphome deploy/esphome
COPY --from=ui /ui/dist frontend/dist
# The UI is embedded into the binary at compile time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    PLANTOPS_COMMIT=${PLANTOPS_COMMIT} cargo build --release --locked -p plantops \
    && cp target/release/plantops /usr/local/bin/plantops \
    && mkdir /empty

# glibc and libgcc only: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/plantops /usr/local/bin/plantops
COPY --from=build --chown=1000:1000 /empty /data
USER 1000:1000
ENV PLANTOPS_DATA_DIR=/data \
    PLANTOPS_HTTP_ADDR=0.0.0.0:8000 \
    PLANTOPS_MQTT_ADDR=0.0.0.0:1883 \
    PLANTOPS_MQTTS_ADDR=0.0.0.0:8883
VOLUME ["/data"]
EXPOSE 8000 1883 8883
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/plantops", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/plantops"]
CMD ["serve"]
