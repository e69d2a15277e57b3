# PlantOps developer commands. `make help` lists them.
CARGO ?= cargo

.PHONY: help check fmt-check fmt clippy test run build release

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

check: fmt-check clippy test ## Everything CI runs: format check, lints, all tests

fmt-check: ## Fail when code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: ## Lints, warnings denied
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: ## All tests (needs PostgreSQL on 127.0.0.1:5432 and the mosquitto binary)
	$(CARGO) test --workspace

build: ## Debug build
	$(CARGO) build --workspace

release: ## Optimised binary at target/release/plantops
	$(CARGO) build --release -p plantops

run: ## Run PlantOps with embedded defaults (SQLite in ./data, built-in broker)
	$(CARGO) run --release -p plantops -- serve
