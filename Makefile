# PlantOps developer commands. `make help` lists them.
CARGO ?= cargo
NPM ?= npm

.PHONY: help check fmt-check fmt clippy test ui ui-deps ui-check ui-test e2e run build release

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

check: fmt-check ui-check ui clippy test e2e ## Everything CI runs: formats, lints, type-check, unit, integration and browser tests

fmt-check: ## Fail when code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: ## Lints, warnings denied
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: ## Rust tests (needs PostgreSQL on 127.0.0.1:5432 and the mosquitto binary)
	$(CARGO) test --workspace --no-fail-fast

frontend/node_modules: frontend/package.json frontend/package-lock.json
	cd frontend && $(NPM) ci --no-audit --no-fund
	touch frontend/node_modules

ui-deps: frontend/node_modules ## Install the web UI's packages

ui: ui-deps ## Build the web UI into frontend/dist (embedded by release builds)
	cd frontend && $(NPM) run build

ui-check: ui-deps ## UI type-check, lint and unit tests (Vitest)
	cd frontend && $(NPM) run typecheck && $(NPM) run lint && $(NPM) test

e2e: ui ## Browser tests: Playwright drives /usr/bin/chromium against `plantops serve`
	$(CARGO) build -p plantops
	cd frontend && $(NPM) run e2e

build: ## Debug build
	$(CARGO) build --workspace

release: ui ## Optimised binary with the UI at target/release/plantops
	$(CARGO) build --release -p plantops

run: ui ## Run PlantOps with embedded defaults (SQLite in ./data, built-in broker, UI on :8000)
	$(CARGO) run --release -p plantops -- serve
