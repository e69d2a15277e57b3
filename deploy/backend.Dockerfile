# syntax=docker/dockerfile:1
# PlantOps backend. Build context: the repository root
# (docker compose -f deploy/docker-compose.prod.yml build backend).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# The ESPHome configuration the API fills in for a device.
COPY deploy/esphome deploy/esphome
# The UI is served by the frontend image; this binary carries the API only.
# The registry and target caches persist between builds (BuildKit), so a
# code change recompiles PlantOps' own crates, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plantops \
    && cp target/release/plantops /usr/local/bin/plantops \
    && mkdir /empty

# The backup service (docker-compose.prod.yml, `backup`): the same binary
# beside the PostgreSQL client of the database's major version (pg_dump,
# pg_restore). It runs as Mosquitto's user (1883), the one that can read
# the broker's dynamic-security file it copies beside each dump.
FROM debian:bookworm-slim AS backup
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 1883 -g 1883 -m 0700 /backups
COPY --from=build /usr/local/bin/plantops /usr/local/bin/plantops
USER 1883:1883
ENV PLANTOPS_BACKUP_DIR=/backups \
    LOG_FORMAT=json
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=1 \
    CMD ["/usr/local/bin/plantops", "backup", "--status"]
ENTRYPOINT ["/usr/local/bin/plantops"]
CMD ["backup", "--scheduled"]

# glibc and libgcc only: no shell, no package manager, no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/plantops /usr/local/bin/plantops
COPY --from=build --chown=1000:1000 /empty /data
USER 1000:1000
ENV PLANTOPS_HTTP_ADDR=0.0.0.0:8000 \
    PLANTOPS_DATA_DIR=/data \
    LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/plantops", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/plantops"]
CMD ["serve"]
