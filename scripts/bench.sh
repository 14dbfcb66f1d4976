#!/usr/bin/env bash
# Benchmark: sensor-etl side by side with PostgreSQL's own COPY, in one run, on one private
# PostgreSQL cluster that this script starts (and stops).
#
#   scripts/bench.sh [ROWS] [SMALL_FILES] [REPEAT]
#       ROWS: rows of the big file, or several sizes separated by commas (default 1000000);
#       SMALL_FILES: files in the burst (default 2000); REPEAT: paired runs per size (default 1).
#   HTTP_SECONDS=30 scripts/bench.sh ...   (length of each HTTP scenario; 0 skips the HTTP phase)
#   QUERY_ROWS=1000000 scripts/bench.sh ... (the query phase on that many BME280 rows from 1,000
#                                            interleaved sensors: SQL over the views, then the
#                                            read API under 4 concurrent clients with wrk;
#                                            0, the default, skips it)
#   FLEET_ROWS=4000000 FLEET_WIDE_ROWS=1000000 scripts/bench.sh ...
#                                           (fleet-shaped files: 1,000 and 20,000 interleaved
#                                            sensors, jittered times, against \copy; 0 skips)
#   COMPARE_BIN=/path/to/other/sensor-etl scripts/bench.sh ...
#       also loads each big file with another build (into a database of its own) right after
#       this one, and prints its time and ratio: a before/after comparison in one run.
#
# For each size and each repeat, a new BME280 file (its own seed, so never a duplicate) is
# loaded by `psql \copy` into an unindexed table of plain columns (the baseline, emptied
# first) and by `sensor-etl ingest` doing everything (validation, quarantine, normalization,
# aggregates, indexed readings, ledger), one right after the other; printed: both times,
# rows/s, the time ratio and peak RSS; then `sensor-etl export` of the same readings to a Delta
# lake (incremental: each run adds its file), its time against the ingest's, peak RSS and the
# CSV's bytes against the lake's; then the same file again under other bytes (every line already
# stored: the exactly-once lookup alone). Then files/s for a burst of SMALL_FILES 100-row files
# renamed into the inbox of `sensor-etl run`, and the latency (rename -> file committed and
# moved) of 30 single files. Then the HTTP API (`sensor-etl serve`, its load generator on the
# same machine): unique 100-row CSV bodies from 32 connections as fast as answered (burst), then
# steady and variable rates (each with the server's and PostgreSQL's CPU time per request),
# then the burst again with an Idempotency-Key on every body (keyed bodies share the group
# commit: the ratio shows what a key costs), with the server's RSS sampled every second (first minute against
# the end) and the acknowledged rows checked against the database, the burst again from wrk when
# it is installed (scripts/ingest.lua), then with an Idempotency-Key on every body (the ratio
# keyed / unkeyed); and one POST of the big file
# against `ingest` of the same file (time and peak RSS side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
ROWS="${1:-1000000}"
SMALL_FILES="${2:-2000}"
REPEAT="${3:-1}"
COMPARE_BIN="${COMPARE_BIN:-}"
source scripts/private-cluster.sh bench
psql -q -d postgres -c "CREATE DATABASE bench" -c "CREATE DATABASE bench_small"
BENCH_URL="postgres://postgres@127.0.0.1:$PORT/bench"
SMALL_URL="postgres://postgres@127.0.0.1:$PORT/bench_small"
"$BIN" --database-url "$BENCH_URL" migrate >/dev/null 2>&1
"$BIN" --database-url "$SMALL_URL" migrate >/dev/null 2>&1
CMP_URL="postgres://postgres@127.0.0.1:$PORT/bench_cmp"
if [ -n "$COMPARE_BIN" ]; then
  psql -q -d postgres -c "CREATE DATABASE bench_cmp"
  "$COMPARE_BIN" --database-url "$CMP_URL" migrate >/dev/null 2>&1
fi

now() { date +%s.%N; }
psql -q -d bench -c "CREATE TABLE baseline (sensor_id bigint, sensor_type text, location bigint, lat float8, lon float8, ts timestamp, pressure float8, altitude float8, pressure_sealevel float8, temperature float8, humidity float8)"
seed=1
for rows in ${ROWS//,/ }; do
  for run in $(seq "$REPEAT"); do
    seed=$((seed + 1))
    rm -rf big
    "$BIN" generate --out big --files 1 --rows "$rows" --sensors 500 --kind bme280 --seed "$seed" >/dev/null 2>&1
    FILE="$(ls big/*.csv)"
    size_mb="$(stat -c %s "$FILE" | awk '{printf "%.0f", $1/1e6}')"
    echo "== $rows BME280 rows ($size_mb MB), run $run of $REPEAT"
    psql -q -d bench -c "TRUNCATE baseline" -c "CHECKPOINT"
    start="$(now)"
    psql -q -d bench -c "\\copy baseline FROM '$FILE' WITH (FORMAT csv, HEADER true, DELIMITER ';')"
    copy_s="$(echo "$(now) - $start" | bc -l)"

    psql -q -d bench -c "CHECKPOINT"
    start="$(now)"
    /usr/bin/time -f "%M" -o rss.txt "$BIN" --database-url "$BENCH_URL" ingest "$FILE" >/dev/null 2>&1 || true
    etl_s="$(echo "$(now) - $start" | bc -l)"
    rss_mb="$(echo "$(cat rss.txt) / 1024" | bc -l)"
    loaded="$(psql -d bench -Atc "SELECT rows_loaded FROM v_files ORDER BY file_id DESC LIMIT 1")"

    printf "%-28s %8.2f s %12.0f rows/s\n" "psql \\copy (baseline)" "$copy_s" "$(echo "$rows / $copy_s" | bc -l)"
    printf "%-28s %8.2f s %12.0f rows/s   peak RSS %.0f MB   rows loaded %s\n" "sensor-etl ingest" "$etl_s" "$(echo "$rows / $etl_s" | bc -l)" "$rss_mb" "$loaded"
    printf "ratio sensor-etl / \\copy: %.2f\n" "$(echo "$etl_s / $copy_s" | bc -l)"
    # The lake: the same readings exported (incremental: only this file's are new).
    lake_before="$(du -sb lake/readings 2>/dev/null | cut -f1 || echo 0)"
    start="$(now)"
    /usr/bin/time -f "%M" -o rss.txt "$BIN" --database-url "$BENCH_URL" export --to lake >export.txt 2>&1 || cat export.txt
    export_s="$(echo "$(now) - $start" | bc -l)"
    lake_bytes="$(( $(du -sb lake/readings | cut -f1) - ${lake_before:-0} ))"
    printf "%-28s %8.2f s   peak RSS %.0f MB   %s\n" "sensor-etl export (lake)" "$export_s" "$(echo "$(cat rss.txt) / 1024" | bc -l)" "$(grep '^readings' export.txt)"
    printf "ratio export / ingest: %.2f   CSV / lake readings bytes: %.2f (%s / %s)\n" "$(echo "$export_s / $etl_s" | bc -l)" "$(echo "$(stat -c %s "$FILE") / $lake_bytes" | bc -l)" "$(stat -c %s "$FILE")" "$lake_bytes"
    if [ -n "$COMPARE_BIN" ]; then
      psql -q -d bench -c "CHECKPOINT"
      start="$(now)"
      /usr/bin/time -f "%M" -o rss.txt "$COMPARE_BIN" --database-url "$CMP_URL" ingest "$FILE" >/dev/null 2>&1 || true
      cmp_s="$(echo "$(now) - $start" | bc -l)"
      printf "%-28s %8.2f s   peak RSS %.0f MB   ratio / \\copy: %.2f   this build / other: %.2f\n" "other build (COMPARE_BIN)" "$cmp_s" "$(echo "$(cat rss.txt) / 1024" | bc -l)" "$(echo "$cmp_s / $copy_s" | bc -l)" "$(echo "$etl_s / $cmp_s" | bc -l)"
    fi
    # The same readings again under other bytes (a blank line added): every line is already
    # stored, looked up and counted as a duplicate, nothing written.
    cp "$FILE" again.csv && echo >>again.csv
    psql -q -d bench -c "CHECKPOINT"
    start="$(now)"
    "$BIN" --database-url "$BENCH_URL" ingest again.csv >again.txt 2>&1 || cat again.txt
    again_s="$(echo "$(now) - $start" | bc -l)"
    printf "%-28s %8.2f s   %s   ratio / first load: %.2f\n" "the same readings again" "$again_s" "$(grep -o '[0-9]* already stored' again.txt | tail -1)" "$(echo "$again_s / $etl_s" | bc -l)"
    rm -f again.csv
  done
done
rm -rf big

# Files shaped like a fleet's (issue of real archives): many interleaved sensors, times jittered
# as devices report them, into a database that already holds other readings. FLEET_ROWS lines
# of 1,000 sensors after 1M other readings, the same file again under other bytes, then
# FLEET_WIDE_ROWS lines of 20,000 sensors; each against `\copy` of the same file (0 skips).
FLEET_ROWS="${FLEET_ROWS:-4000000}"
FLEET_WIDE_ROWS="${FLEET_WIDE_ROWS:-1000000}"
if [ "$FLEET_ROWS" -gt 0 ]; then
  psql -q -d postgres -c "CREATE DATABASE bench_fleet"
  FLEET_URL="postgres://postgres@127.0.0.1:$PORT/bench_fleet"
  "$BIN" --database-url "$FLEET_URL" migrate >/dev/null 2>&1
  rm -rf fleet && mkdir fleet
  "$BIN" generate --out fleet/before --files 1 --rows 1000000 --sensors 1000 --kind bme280 --jitter 120 --seed 61 >/dev/null 2>&1
  "$BIN" --database-url "$FLEET_URL" ingest fleet/before/*.csv >/dev/null 2>&1
  # One line: `\copy` of FILE into the baseline, then ingest of FILE; both times, the ratio
  # and the ingest's peak RSS.
  fleet_load() {
    local label="$1" file="$2" lines="$3"
    psql -q -d bench -c "TRUNCATE baseline" -c "CHECKPOINT"
    local start copy_s etl_s
    start="$(now)"
    psql -q -d bench -c "\\copy baseline FROM '$file' WITH (FORMAT csv, HEADER true, DELIMITER ';')"
    copy_s="$(echo "$(now) - $start" | bc -l)"
    psql -q -d bench_fleet -c "CHECKPOINT"
    start="$(now)"
    /usr/bin/time -f "%M" -o rss.txt "$BIN" --database-url "$FLEET_URL" ingest "$file" >fleet.txt 2>&1 || cat fleet.txt
    etl_s="$(echo "$(now) - $start" | bc -l)"
    FLEET_ETL_S="$etl_s"
    printf "%-34s \\copy %6.2f s   sensor-etl %6.2f s   ratio %.2f   peak RSS %.0f MB   %s lines\n" "$label" "$copy_s" "$etl_s" "$(echo "$etl_s / $copy_s" | bc -l)" "$(echo "$(cat rss.txt) / 1024" | bc -l)" "$lines"
  }
  echo "== fleet-shaped files (interleaved sensors, jittered times), into a database holding 1M other readings"
  "$BIN" generate --out fleet/big --files 1 --rows "$FLEET_ROWS" --sensors 1000 --kind bme280 --jitter 120 --seed 62 >/dev/null 2>&1
  fleet_load "1,000 sensors" "$(ls fleet/big/*.csv)" "$FLEET_ROWS"
  first_s="$FLEET_ETL_S"
  cp "$(ls fleet/big/*.csv)" fleet/again.csv && echo >>fleet/again.csv
  start="$(now)"
  "$BIN" --database-url "$FLEET_URL" ingest fleet/again.csv >again.txt 2>&1 || cat again.txt
  again_s="$(echo "$(now) - $start" | bc -l)"
  printf "%-34s %6.2f s   %s   ratio / first load: %.2f\n" "the same readings again" "$again_s" "$(grep -o '[0-9]* already stored' again.txt | tail -1)" "$(echo "$again_s / $first_s" | bc -l)"
  if [ "$FLEET_WIDE_ROWS" -gt 0 ]; then
    "$BIN" generate --out fleet/wide --files 1 --rows "$FLEET_WIDE_ROWS" --sensors 20000 --kind bme280 --jitter 120 --seed 63 >/dev/null 2>&1
    fleet_load "20,000 sensors" "$(ls fleet/wide/*.csv)" "$FLEET_WIDE_ROWS"
  fi
  rm -rf fleet
fi

echo "== burst of $SMALL_FILES files of 100 rows into the inbox of sensor-etl run"
# Each phase starts from a checkpoint, so it does not wait on the previous phase's writes.
psql -q -d bench -c "CHECKPOINT"
"$BIN" generate --out staging --files "$SMALL_FILES" --rows 100 --sensors 2 --kind sds011 >/dev/null 2>&1
mkdir -p data
# Default settings (settle 1 s, rescan 1 s): renamed files are ready on their rename event.
RUST_LOG=warn "$BIN" --database-url "$SMALL_URL" run --http-addr "" >run.log 2>&1 &
RUN_PID=$!
sleep 2
start="$(now)"
# One rename per file, all at once (a loop of `mv` processes would measure the shell).
find staging -name '*.csv' -print0 | xargs -0 mv -t data/
# Cheap polling: stop at the first file found, so the poll does not compete with the worker.
while [ -n "$(find data -maxdepth 1 -type f -print -quit)" ]; do sleep 0.05; done
burst_s="$(echo "$(now) - $start" | bc -l)"
printf "%s files in %.2f s: %.0f files/s\n" "$SMALL_FILES" "$burst_s" "$(echo "$SMALL_FILES / $burst_s" | bc -l)"

echo "== latency of 30 single files (rename -> committed and moved to processed/)"
psql -q -d bench -c "CHECKPOINT"
"$BIN" generate --out single --files 30 --rows 100 --sensors 1 --kind dht22 --seed 9 >/dev/null 2>&1
: >latency.txt
for f in single/*.csv; do
  name="$(basename "$f")"
  touch "$f"  # written just now, as by a producer: only the rename event makes it ready
  start="$(now)"
  mv "$f" data/
  while [ ! -e "processed/$name" ] && [ ! -e "processed/${name%.csv}".*.csv ]; do sleep 0.002; done
  echo "($(now) - $start) * 1000" | bc -l >>latency.txt
  sleep 0.2
done
echo "each, in order: $(awk '{printf "%.0f ", $1}' latency.txt)"
sort -n latency.txt | awk '{a[NR]=$1} END {printf "latency ms: median %.0f, p90 %.0f, max %.0f\n", a[int((NR+1)/2)], a[int(NR*0.9)], a[NR]}'
kill -TERM "$RUN_PID"
wait "$RUN_PID"

HTTP_SECONDS="${HTTP_SECONDS:-30}"
if [ "$HTTP_SECONDS" -gt 0 ]; then
  echo "== HTTP: POST /v1/ingest, unique 100-row CSV bodies (server, database and load generator on this machine)"
  psql -q -d postgres -c "CREATE DATABASE bench_http"
  HTTP_URL="postgres://postgres@127.0.0.1:$PORT/bench_http"
  "$BIN" --database-url "$HTTP_URL" migrate >/dev/null 2>&1
  HTTP_ADDR="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  RUST_LOG=warn "$BIN" --database-url "$HTTP_URL" serve --http-addr "$HTTP_ADDR" >serve.log 2>&1 &
  SERVE_PID=$!
  until curl -sf "http://$HTTP_ADDR/readyz" >/dev/null 2>&1; do sleep 0.2; done
  (while kill -0 "$SERVE_PID" 2>/dev/null; do
     awk '/VmRSS/ {print $2}' "/proc/$SERVE_PID/status" 2>/dev/null; sleep 1; done) >rss_http.txt &
  SAMPLER_PID=$!
  # CPU time so far (clock ticks) of the server, and of the cluster's live processes (its
  # backends stay up for the pool's connections): what a request costs, less noisy than
  # requests/s on a shared machine.
  TICKS="$(getconf CLK_TCK)"
  server_ticks() { awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"; }
  cluster_ticks() {
    for p in $(ps --ppid "$(head -1 state/postgres/data/postmaster.pid)" -o pid=); do
      awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null
    done | awk '{s += $1} END {print s + 0}'
  }
  acknowledged=0
  seed=100
  for scenario in "burst" "steady --rate 500" "variable --rate 500"; do
    seed=$((seed + 1))
    psql -q -d bench_http -c "CHECKPOINT"
    server0="$(server_ticks)"; cluster0="$(cluster_ticks)"
    # shellcheck disable=SC2086
    "$BIN" generate --http "http://$HTTP_ADDR/v1/ingest" --scenario $scenario --concurrency 32 \
      --rows 100 --sensors 10 --duration "$HTTP_SECONDS" --seed "$seed" | tee gen.txt
    rows="$(awk '/^rows loaded:/ {print $3}' gen.txt)"
    requests="$(awk '/^requests:/ {print $2; exit}' gen.txt)"
    awk -v s="$(( $(server_ticks) - server0 ))" -v p="$(( $(cluster_ticks) - cluster0 ))" \
      -v n="$requests" -v hz="$TICKS" 'BEGIN {printf "CPU per request: server %.2f ms, PostgreSQL %.2f ms\n", \
      1000 * s / hz / n, 1000 * p / hz / n}'
    [ "$scenario" = "burst" ] && cp gen.txt burst.txt
    awk '/VmRSS/ {printf "server RSS after this scenario: %.0f MB\n", $2 / 1024}' "/proc/$SERVE_PID/status"
    acknowledged=$((acknowledged + rows))
  done
  # RSS flatness over the three scenarios: the first minute against their end.
  cp rss_http.txt rss_scenarios.txt
  awk 'NR <= 60 && $1 > first {first = $1} {last = $1} END {printf "server RSS over the scenarios: first minute max %.0f MB, end %.0f MB (end / first minute %.2f)\n", first / 1024, last / 1024, last / first}' rss_scenarios.txt
  # The same burst with an Idempotency-Key on every request: keyed bodies share the group
  # commit like unkeyed ones (the key is locked and recorded in the group's transaction).
  psql -q -d bench_http -c "CHECKPOINT"
  echo "-- the burst again, an Idempotency-Key on every body"
  "$BIN" generate --http "http://$HTTP_ADDR/v1/ingest" --scenario burst --concurrency 32 \
    --rows 100 --sensors 10 --duration "$HTTP_SECONDS" --seed 200 --idempotency-keys | tee gen_keyed.txt
  acknowledged=$((acknowledged + $(awk '/^rows loaded:/ {print $3}' gen_keyed.txt)))
  grouped_rps="$(awk '/^requests:/ {print $7; exit}' burst.txt)"
  single_rps="$(awk '/^requests:/ {print $7; exit}' gen_keyed.txt)"
  printf "burst requests/s: unkeyed %s, keyed %s, keyed / unkeyed %.2f\n" "$grouped_rps" "$single_rps" "$(echo "$single_rps / $grouped_rps" | bc -l)"
  stored="$(psql -d bench_http -Atc "SELECT coalesce(sum(rows_loaded), 0) FROM v_files")"
  echo "rows acknowledged (200): $acknowledged; rows in the database: $stored"
  if command -v wrk >/dev/null 2>&1; then
    # The burst from an independent load generator (wrk, scripts/ingest.lua: its own unique
    # bodies). Requests still in flight when wrk stops may commit unanswered, so the database
    # may hold a few more bodies than wrk counted.
    psql -q -d bench_http -c "CHECKPOINT"
    before="$(psql -d bench_http -Atc "SELECT count(*) FROM v_files")"
    echo "-- the burst from wrk (2 threads, 32 connections)"
    wrk -t2 -c32 -d"${HTTP_SECONDS}s" -s "$REPO/scripts/ingest.lua" "http://$HTTP_ADDR/v1/ingest" | tail -3 | tee wrk_plain.txt
    echo "bodies stored during the wrk run: $(( $(psql -d bench_http -Atc "SELECT count(*) FROM v_files") - before ))"
    # The same burst with a unique Idempotency-Key on every body: keyed bodies share the
    # group commit, so they are acknowledged at the rate of unkeyed ones.
    echo "-- the burst from wrk, every body with an Idempotency-Key"
    wrk -t2 -c32 -d"${HTTP_SECONDS}s" -s "$REPO/scripts/ingest.lua" "http://$HTTP_ADDR/v1/ingest" -- keyed | tail -3 | tee wrk_keyed.txt
    plain_rps="$(awk '/^requests:/ {print $7; exit}' wrk_plain.txt)"
    keyed_rps="$(awk '/^requests:/ {print $7; exit}' wrk_keyed.txt)"
    printf "keyed / unkeyed requests/s: %s / %s = %.2f\n" "$keyed_rps" "$plain_rps" "$(echo "$keyed_rps / $plain_rps" | bc -l)"
  fi
  awk '{ if ($1 > peak) peak = $1 } END {printf "server RSS peak over the whole HTTP phase: %.0f MB\n", peak / 1024}' rss_http.txt
  kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true
  kill "$SAMPLER_PID" 2>/dev/null || true

  first_rows="${ROWS%%,*}"
  echo "== one POST of a $first_rows-row CSV body against ingest of the same file"
  "$BIN" generate --out bigpost --files 1 --rows "$first_rows" --sensors 500 --kind bme280 --seed 999 >/dev/null 2>&1
  FILE="$(ls bigpost/*.csv)"
  psql -q -d postgres -c "CREATE DATABASE bench_post" -c "CREATE DATABASE bench_post_file"
  "$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/bench_post" migrate >/dev/null 2>&1
  "$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/bench_post_file" migrate >/dev/null 2>&1
  RUST_LOG=warn SENSOR_ETL_HTTP__MAX_BODY_BYTES=1000000000 \
    "$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/bench_post" serve --http-addr "$HTTP_ADDR" >serve.log 2>&1 &
  SERVE_PID=$!
  until curl -sf "http://$HTTP_ADDR/readyz" >/dev/null 2>&1; do sleep 0.2; done
  psql -q -d bench_post -c "CHECKPOINT"
  start="$(now)"
  status="$(curl -s -o post.json -w '%{http_code}' -H 'Content-Type: text/csv' -H 'Expect:' \
    --data-binary "@$FILE" "http://$HTTP_ADDR/v1/ingest?name=$(basename "$FILE")")"
  post_s="$(echo "$(now) - $start" | bc -l)"
  post_rss="$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")"
  kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true
  psql -q -d bench_post_file -c "CHECKPOINT"
  start="$(now)"
  /usr/bin/time -f "%M" -o rss.txt "$BIN" --database-url "postgres://postgres@127.0.0.1:$PORT/bench_post_file" ingest "$FILE" >/dev/null 2>&1 || true
  file_s="$(echo "$(now) - $start" | bc -l)"
  printf "%-28s %8.2f s   server peak RSS %.0f MB   status %s   rows loaded %s\n" "POST /v1/ingest" "$post_s" "$(echo "$post_rss / 1024" | bc -l)" "$status" "$(python3 -c 'import json; print(json.load(open("post.json"))["rows_loaded"])')"
  printf "%-28s %8.2f s   peak RSS %.0f MB\n" "sensor-etl ingest (file)" "$file_s" "$(echo "$(cat rss.txt) / 1024" | bc -l)"
  printf "ratio POST / file: time %.2f, peak RSS %.2f\n" "$(echo "$post_s / $file_s" | bc -l)" "$(echo "$post_rss / $(cat rss.txt)" | bc -l)"
fi

QUERY_ROWS="${QUERY_ROWS:-0}"
if [ "$QUERY_ROWS" -gt 0 ]; then
  echo "== queries over $QUERY_ROWS BME280 rows from 1,000 interleaved sensors"
  "$BIN" generate --out query --files 1 --rows "$QUERY_ROWS" --sensors 1000 --kind bme280 --seed 4242 >/dev/null 2>&1
  FILE="$(ls query/*.csv)"
  psql -q -d postgres -c "CREATE DATABASE bench_query"
  Q_URL="postgres://postgres@127.0.0.1:$PORT/bench_query"
  "$BIN" --database-url "$Q_URL" migrate >/dev/null 2>&1
  psql -q -d bench -c "TRUNCATE baseline" -c "CHECKPOINT"
  start="$(now)"
  psql -q -d bench -c "\\copy baseline FROM '$FILE' WITH (FORMAT csv, HEADER true, DELIMITER ';')"
  copy_s="$(echo "$(now) - $start" | bc -l)"
  psql -q -d bench_query -c "CHECKPOINT"
  start="$(now)"
  "$BIN" --database-url "$Q_URL" ingest "$FILE" >/dev/null 2>&1 || true
  etl_s="$(echo "$(now) - $start" | bc -l)"
  printf "load: %s %.2f s, sensor-etl ingest %.2f s, ratio %.2f\n" 'psql \copy' "$copy_s" "$etl_s" "$(echo "$etl_s / $copy_s" | bc -l)"
  # The same readings as a plain long table, the baseline of the scan question.
  psql -q -d bench_query -c "CREATE TABLE plain_long AS SELECT sensor_id, ts, measurement, value FROM v_readings" -c "ANALYZE plain_long" -c "ANALYZE"
  day="$(psql -d bench_query -Atc "SELECT date_trunc('day', min(ts), 'UTC') + interval '1 day' FROM v_readings")"
  # Median of 5 runs, in ms.
  timed() {
    for _ in 1 2 3 4 5; do
      psql -X -q -d bench_query -o /dev/null -c '\timing on' -c "$1" | awk '/^Time:/ {print $2}'
    done | sort -n | awk '{a[NR]=$1} END {print a[3]}'
  }
  printf "%-62s %8s ms\n" "one sensor, one day, from v_readings" "$(timed "SELECT ts, measurement, value FROM v_readings WHERE sensor_id = 1500 AND ts >= '$day' AND ts < timestamptz '$day' + interval '1 day'")"
  printf "%-62s %8s ms\n" "v_latest, all sensors" "$(timed "SELECT * FROM v_latest")"
  printf "%-62s %8s ms\n" "v_sensors, all sensors" "$(timed "SELECT * FROM v_sensors")"
  printf "%-62s %8s ms\n" "daily mean per sensor, from v_daily" "$(timed "SELECT sensor_id, day, mean FROM v_daily WHERE measurement = 'temperature'")"
  printf "%-62s %8s ms\n" "hourly mean of one sensor, one day, from v_hourly" "$(timed "SELECT hour, measurement, mean FROM v_hourly WHERE sensor_id = 1500 AND hour >= '$day' AND hour < timestamptz '$day' + interval '1 day'")"
  printf "%-62s %8s ms\n" "daily mean per sensor, from v_readings" "$(timed "SELECT sensor_id, date_trunc('day', ts, 'UTC'), avg(value) FROM v_readings WHERE measurement = 'temperature' GROUP BY 1, 2")"
  view_ms="$(timed "SELECT sensor_id, avg(value) FROM v_readings WHERE measurement = 'temperature' GROUP BY 1")"
  long_ms="$(timed "SELECT sensor_id, avg(value) FROM plain_long WHERE measurement = 'temperature' GROUP BY 1")"
  printf "%-62s %8s ms\n" "avg(value) by sensor, one measurement, from v_readings" "$view_ms"
  printf "%-62s %8s ms   (ratio %.2f)\n" "the same from a plain long table" "$long_ms" "$(echo "$view_ms / $long_ms" | bc -l)"
  # The read API over the same data: 4 concurrent clients (wrk), median and p99 latency.
  if command -v wrk >/dev/null 2>&1; then
    sensor="$(psql -d bench_query -Atc "SELECT sensor_id FROM v_sensors ORDER BY sensor_id LIMIT 1 OFFSET 500")"
    from="$(psql -d bench_query -Atc "SELECT to_char(date_trunc('day', first_ts, 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM v_sensors WHERE sensor_id = $sensor")"
    to="$(psql -d bench_query -Atc "SELECT to_char(timestamptz '$from' + interval '2 days', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")"
    Q_ADDR=127.0.0.1:19898
    api() {
      local label="$1" path="$2"
      local n
      n="$(curl -s "http://$Q_ADDR$path" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d.get("buckets", d.get("readings", []))) if isinstance(d, dict) else len(d))')"
      wrk -t2 -c4 -d10s --latency "http://$Q_ADDR$path" >wrk_query.txt 2>&1
      printf "%-58s median %8s   p99 %8s   %8s req/s   (%s items)\n" "$label" \
        "$(awk '$1 == "50%" {print $2}' wrk_query.txt)" "$(awk '$1 == "99%" {print $2}' wrk_query.txt)" \
        "$(awk '/^Requests\/sec/ {print $2}' wrk_query.txt)" "$n"
    }
    # Each question asked over and over by 4 clients: first with the answer cache off (every
    # request reads the database), then as served (an answer is kept until the database
    # changes).
    for cache in 0 33554432; do
      if [ "$cache" = 0 ]; then echo "-- read API, answer cache off (each request reads the database)"; else echo "-- read API as served (answers kept until the database changes)"; fi
      SENSOR_ETL_HTTP__ANSWER_CACHE_BYTES="$cache" RUST_LOG=warn "$BIN" --database-url "$Q_URL" serve --http-addr "$Q_ADDR" >serve_query.log 2>&1 &
      Q_PID=$!
      for _ in $(seq 100); do curl -sf "http://$Q_ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
      api "GET /v1/latest?sensor_type=BME280 (4 clients)" "/v1/latest?sensor_type=BME280"
      api "GET /v1/series one sensor, 2 days, 1h buckets (4 clients)" \
        "/v1/series?sensor_id=$sensor&measurement=temperature&start=$from&end=$to&bucket=1h"
      api "GET /v1/series the same with rolling=6h (4 clients)" \
        "/v1/series?sensor_id=$sensor&measurement=temperature&start=$from&end=$to&bucket=1h&rolling=6h"
      api "GET /v1/readings one sensor, 2 days (4 clients)" \
        "/v1/readings?sensor_id=$sensor&measurement=temperature&start=$from&end=$to"
      api "GET /v1/sensors (4 clients)" "/v1/sensors"
      kill -TERM "$Q_PID"; wait "$Q_PID" || true
    done
  else
    echo "(wrk not installed: the read API latency is skipped; apt-get install wrk)"
  fi
fi
