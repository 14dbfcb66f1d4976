#!/usr/bin/env bash
# The PostgreSQL floor under HTTP pushes: what the database alone costs for what the contract
# writes per delivery, measured with pgbench on a private cluster this script starts (and
# stops), then `sensor-etl serve` under wrk in the same run for the ratio.
#
#   scripts/pg-floor.sh [SECONDS]      (each phase; default 20)
#
# Phases (unique 100-reading deliveries of 10 sensors, as scripts/ingest.lua sends them):
#   1. readings only: 100 rows a transaction, 32 clients (scripts/pg-floor/readings.sql);
#   2. the per-delivery state without readings, 8 deliveries a transaction, 2 clients
#      (scripts/pg-floor/state.sql with r=0): ledger, aggregates, latest values, spans,
#      hourly and daily statistics;
#   3. the same with the readings, copied in binary as the pipeline's COPY sends them (r=2);
#   4. `sensor-etl serve` with wrk -t2 -c32 and scripts/ingest.lua (when wrk is installed).
# Each prints deliveries/s and the machine's busy CPU time per delivery: on a machine of N
# cores no build can acknowledge more than N / (that time) deliveries a second, whatever it does.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
SECONDS_EACH="${1:-20}"
command -v pgbench >/dev/null || { echo "pgbench not found (Debian: postgresql-client)" >&2; exit 1; }
source scripts/private-cluster.sh floor
psql -q -d postgres -c "CREATE DATABASE floor" -c "CREATE DATABASE pushed"
"$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/floor" migrate >/dev/null 2>&1
# The readings of 8 deliveries (80 sensors, 100 lines each) in COPY's binary format, in the data
# directory, where a server-side COPY finds it by a relative name.
DATA="$(psql -d postgres -Atc "SHOW data_directory")"
psql -q -d floor -c "COPY (SELECT clock_timestamp() - make_interval(secs => r / 80), 1::int8,
  (1000 + r % 80)::int8, (r + 2)::int4, 1::int4, 1::int4,
  ARRAY[950.0 + r, 10.5 + r % 20, 40.0 + r % 50]::float8[], (51000 + r % 80)::int8, 48.5::float8,
  9.1::float8 FROM generate_series(0, 799) r) TO '$DATA/floor_readings.bin' WITH (FORMAT binary)"

busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
TICKS="$(getconf CLK_TCK)"
# report LABEL DELIVERIES BUSY_TICKS
report() {
  awk -v label="$1" -v n="$2" -v busy="$3" -v hz="$TICKS" -v s="$SECONDS_EACH" 'BEGIN {
    printf "%-58s %8.0f deliveries/s   %.2f ms busy CPU a delivery\n", label, n / s, busy / hz * 1000 / n }'
}
# bench LABEL DELIVERIES_A_TRANSACTION CLIENTS SCRIPT [pgbench options]
bench() {
  local label="$1" per="$2" clients="$3" script="$4"
  shift 4
  psql -q -d floor -c "CHECKPOINT"
  local b0 b1 tx
  b0="$(busy_ticks)"
  tx="$(pgbench -n -M prepared -d floor -c "$clients" -j 2 -T "$SECONDS_EACH" "$@" \
        -f "$REPO/scripts/pg-floor/$script" 2>&1 | awk '/number of transactions actually processed/ {print $NF}')"
  b1="$(busy_ticks)"
  report "$label" "$((tx * per))" "$((b1 - b0))"
}

echo "== PostgreSQL alone (pgbench, ${SECONDS_EACH} s each, $(nproc) cores)"
bench "1. readings only (1 delivery a transaction, 32 clients)" 1 32 readings.sql
bench "2. state without readings (8 a transaction, 2 clients)" 8 2 state.sql -D d=8 -D r=0
bench "3. state and readings (8 a transaction, 2 clients)" 8 2 state.sql -D d=8 -D r=2

if command -v wrk >/dev/null; then
  echo "== sensor-etl serve, wrk -t2 -c32 (scripts/ingest.lua)"
  ADDR=127.0.0.1:19897
  RUST_LOG=warn "$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/pushed" serve --http-addr "$ADDR" >serve.log 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 150); do curl -sf "http://$ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  psql -q -d pushed -c "CHECKPOINT"
  b0="$(busy_ticks)"
  wrk -t2 -c32 -d"${SECONDS_EACH}s" -s "$REPO/scripts/ingest.lua" "http://$ADDR/v1/ingest" >wrk.txt
  b1="$(busy_ticks)"
  kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true
  stored="$(psql -d pushed -Atc "SELECT count(*) FROM sensor_etl.files")"
  report "4. sensor-etl serve, every check and guarantee" "$stored" "$((b1 - b0))"
  grep -E "latency ms|non-2xx" wrk.txt
else
  echo "(wrk not installed: phase 4 skipped; apt-get install wrk)"
fi
