# syntax=docker/dockerfile:1
# PlantOps backend. Build context: the repository root
# (docker compose -f deploy/docker-compose.prod.yml build backend).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# The UI is served by the frontend image; this binary carries the API only.
# The registry and target caches persist between builds (BuildKit), so a
# code change recompiles PlantOps' own crates, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plantops \
    && cp target/release/plantops /usr/local/bin/plantops \
    && mkdir /empty

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
