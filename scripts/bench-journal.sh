#!/usr/bin/env bash
# Pushes with the push journal, side by side in one run on a private cluster this script starts
# (and stops): `sensor-etl serve` in the default mode (200 after the commit) and with
# `http.acknowledge = "journal"` (202 after the journal sync, loaded behind the answer), each
# under wrk -t2 -c32 with scripts/ingest.lua (unique 100-reading CSV bodies) for SECONDS.
#
#   scripts/bench-journal.sh [SECONDS]      (default 30)
#
# Prints for each mode: acknowledged requests/s and latency (wrk), the server's peak RSS, and
# for the journal mode how long the drain took after wrk stopped, its rate in bodies/s, and the
# check that every acknowledged body is in PostgreSQL exactly once (bodies stored = 2xx
# answers, readings = 100 a body). `scripts/pg-floor.sh` gives PostgreSQL's own floor for the
# same bodies.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
SECONDS_EACH="${1:-30}"
command -v wrk >/dev/null || { echo "wrk not found (Debian: wrk)" >&2; exit 1; }
source scripts/private-cluster.sh journal

# run MODE ADDR: serve in MODE under wrk; prints the numbers.
run() {
  local mode="$1" addr="$2" db="bench_$1"
  psql -q -d postgres -c "CREATE DATABASE $db"
  SENSOR_ETL_HTTP__ACKNOWLEDGE="$mode" RUST_LOG=warn "$BIN" --state-dir "state_$mode" \
    --database-url "postgres://postgres@127.0.0.1:$PORT/$db" serve --http-addr "$addr" \
    >"serve_$mode.log" 2>&1 &
  local pid=$!
  until curl -sf "http://$addr/readyz" 2>/dev/null | grep -qx ready; do sleep 0.2; done
  (while kill -0 "$pid" 2>/dev/null; do
     awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; sleep 0.5; done) >"rss_$mode.txt" &
  psql -q -d "$db" -c "CHECKPOINT"
  echo "== acknowledge = \"$mode\": wrk -t2 -c32 -d${SECONDS_EACH}s"
  wrk -t2 -c32 -d"${SECONDS_EACH}s" --latency -s "$REPO/scripts/ingest.lua" \
    "http://$addr/v1/ingest" >"wrk_$mode.txt" 2>&1
  local ended answered
  ended="$(date +%s.%N)"
  grep -E '^(requests|latency|non-2xx)' "wrk_$mode.txt"
  answered="$(awk '/^requests:/ {print $2}' "wrk_$mode.txt")"
  if [ "$mode" = journal ]; then
    local waiting left
    left="$(curl -s "http://$addr/metrics" | awk '$1 == "sensor_etl_journal_bodies" {print $2}')"
    while :; do
      waiting="$(curl -s "http://$addr/metrics" | awk '$1 == "sensor_etl_journal_bodies" {print $2}')"
      [ "${waiting:-1}" = 0 ] && break
      sleep 0.2
    done
    awk -v e="$ended" -v n="$(date +%s.%N)" -v left="$left" 'BEGIN {
      printf "journal drained %.1f s after wrk stopped: %d bodies waited then, %.0f bodies/s\n",
        n - e, left, left / (n - e) }'
    psql -d "$db" -Atc "SELECT format('drain over the whole run: %s bodies in %s s = %s bodies/s',
        count(*), round(extract(epoch FROM max(loaded_at) - min(loaded_at))::numeric, 1),
        round(count(*) / greatest(extract(epoch FROM max(loaded_at) - min(loaded_at)), 0.001)))
      FROM sensor_etl.journal_receipts"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  psql -d "$db" -Atc "SELECT format('stored: %s bodies (%s answered; a request cut off by wrk''s end may be stored unanswered), %s readings (%s a body), %s bodies twice',
      (SELECT count(*) FROM v_files), $answered,
      (SELECT count(*) FROM v_readings),
      round((SELECT count(*) FROM v_readings)::numeric / greatest((SELECT count(*) FROM v_files), 1), 1),
      (SELECT count(*) FROM (SELECT content_sha256 FROM v_files GROUP BY 1 HAVING count(*) > 1) d))"
  awk '{ if ($1 > peak) peak = $1 } END {printf "server RSS peak: %.0f MB\n", peak / 1024}' "rss_$mode.txt"
}

run commit 127.0.0.1:19898
run journal 127.0.0.1:19899
