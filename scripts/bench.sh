#!/usr/bin/env bash
# Benchmark: sensor-etl side by side with PostgreSQL's own COPY, in one run, on one private
# PostgreSQL cluster that this script starts (and stops).
#
#   scripts/bench.sh [ROWS] [SMALL_FILES] [REPEAT]
#       ROWS: rows of the big file, or several sizes separated by commas (default 1000000);
#       SMALL_FILES: files in the burst (default 2000); REPEAT: paired runs per size (default 1).
#   COMPARE_BIN=/path/to/other/sensor-etl scripts/bench.sh ...
#       also loads each big file with another build (into a database of its own) right after
#       this one, and prints its time and ratio: a before/after comparison in one run.
#
# For each size and each repeat, a new BME280 file (its own seed, so never a duplicate) is
# loaded by `psql \copy` into an unindexed table of plain columns (the baseline, emptied
# first) and by `sensor-etl ingest` doing everything (validation, quarantine, normalization,
# aggregates, indexed readings, ledger), one right after the other; printed: both times,
# rows/s, the time ratio and peak RSS. Then files/s for a burst of SMALL_FILES 100-row files
# renamed into the inbox of `sensor-etl run`, and the latency (rename -> file committed and
# moved) of 30 single files.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
SMALL_FILES="${2:-2000}"
REPEAT="${3:-1}"
scripts/ensure-postgres.sh
cargo build --release --locked -q
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sensor-etl"
COMPARE_BIN="${COMPARE_BIN:-}"
WORK="$(mktemp -d /tmp/sensor-etl-bench.XXXXXX)"
chmod 755 "$WORK"
trap '"$BIN" --state-dir "$WORK/state" db stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
cd "$WORK"

"$BIN" --state-dir state db start >/dev/null 2>&1
PORT="$(cat state/postgres/port)"
export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres
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
    if [ -n "$COMPARE_BIN" ]; then
      psql -q -d bench -c "CHECKPOINT"
      start="$(now)"
      /usr/bin/time -f "%M" -o rss.txt "$COMPARE_BIN" --database-url "$CMP_URL" ingest "$FILE" >/dev/null 2>&1 || true
      cmp_s="$(echo "$(now) - $start" | bc -l)"
      printf "%-28s %8.2f s   peak RSS %.0f MB   ratio / \\copy: %.2f   this build / other: %.2f\n" "other build (COMPARE_BIN)" "$cmp_s" "$(echo "$(cat rss.txt) / 1024" | bc -l)" "$(echo "$cmp_s / $copy_s" | bc -l)" "$(echo "$etl_s / $cmp_s" | bc -l)"
    fi
  done
done
rm -rf big

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
