#!/usr/bin/env bash
# The benchmarks behind docs/benchmarks.md's summary, in one run with one
# binary: ingest (SQLite and PostgreSQL, built-in broker), idle connections,
# the API at concurrency 1 and 4, raw store batches, alert latency, binary
# size and idle memory. Each result is one JSON line in OUT/results.jsonl
# (the command that produced it as "command"); nothing is asserted.
# Needs a release build, PostgreSQL on 127.0.0.1:5432 (trust) and python3.
# Usage: bench/all.sh [OUT]   (PLANTOPS=path/to/binary to measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
plantops=${PLANTOPS:-target/release/plantops}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
pg=postgres://postgres@127.0.0.1:5432
key=$(openssl rand -hex 32)

# Runs a bench command; its last output line (JSON) goes to results with the command.
measure() {
  local name=$1; shift
  echo "== $name" >&2
  local line
  line=$("$@" 2>"$out/$name.log" | tail -1)
  # The throwaway encryption key is not worth keeping, nor showing.
  python3 -c 'import json,re,sys; r=json.loads(sys.argv[3]); r["bench"]=sys.argv[1]; r["command"]=re.sub(r"ENCRYPTION_KEY=\S+", "ENCRYPTION_KEY=…", sys.argv[2]); print(json.dumps(r))' \
    "$name" "$*" "$line" >> "$results"
}

fresh_pg() {
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}

measure ingest-sqlite "$plantops" bench ingest --json
fresh_pg bench_all_ingest
measure ingest-postgres env DATABASE_URL="$pg/bench_all_ingest" ENCRYPTION_KEY="$key" \
  "$plantops" bench ingest --duration 10 --warmup 5 --connections 1000 --inflight 2 --json
fresh_pg bench_all_ingest
measure ingest-postgres-100x32 env DATABASE_URL="$pg/bench_all_ingest" ENCRYPTION_KEY="$key" \
  "$plantops" bench ingest --json
measure connections "$plantops" bench connections --connections 10000 --json
measure api-c1 "$plantops" bench api --concurrency 1 --json
measure api-c4 "$plantops" bench api --concurrency 4 --json
fresh_pg bench_all_api
measure api-postgres-c4 env DATABASE_URL="$pg/bench_all_api" ENCRYPTION_KEY="$key" \
  "$plantops" bench api --concurrency 4 --json
measure store-sqlite-1000 "$plantops" bench store --batch 1000 --rows 300000 --json
fresh_pg bench_all_store
measure store-postgres-1000 "$plantops" bench store --batch 1000 --rows 300000 --json \
  --database-url "$pg/bench_all_store"
measure alert-latency python3 bench/alert_latency.py "$plantops" --count 200
measure alert-latency-loaded python3 bench/alert_latency.py "$plantops" --count 200 --background-rate 1000
python3 - "$plantops" >> "$results" <<'PY'
import json, os, sys
print(json.dumps({"bench": "binary", "bytes": os.path.getsize(sys.argv[1]),
                  "command": f"ls -l {sys.argv[1]}"}))
PY
for db in bench_all_ingest bench_all_api bench_all_store; do
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done
echo "results: $results" >&2
