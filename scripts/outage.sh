#!/usr/bin/env bash
# A PostgreSQL outage under device pushes, on a private cluster this script starts (and stops):
# `sensor-etl serve` takes `POST /v1/ingest` CSV bodies (`generate --http`, steady RATE a
# second) and airRohr devices' own-API and push-API bodies (DEVICES devices, a cycle each a
# second), while the database is stopped for OUTAGE seconds. The server is killed with
# SIGKILL in the middle of the outage and again 2 s after the database is back (while the push
# journal drains), and restarted each time.
#
#   scripts/outage.sh [OUTAGE_SECONDS] [RATE] [DEVICES]      (defaults 60, 180, 10)
#
# Prints what was acknowledged (200 after a commit, 202 from the journal) and what PostgreSQL
# holds: every acknowledged row must be there exactly once (a request cut off by a kill may be
# stored unanswered, so stored >= acknowledged), and how long after the database's return the
# journal was empty.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTAGE="${1:-60}"
RATE="${2:-180}"
DEVICES="${3:-10}"
source scripts/private-cluster.sh outage
psql -q -d postgres -c "CREATE DATABASE outage"
URL="postgres://postgres@127.0.0.1:$PORT/outage"
ADDR=127.0.0.1:19896
SERVER=""
start_server() {
  RUST_LOG=warn SENSOR_ETL_RETRY__MAX_DELAY_MS=1000 "$BIN" --state-dir serve_state \
    --database-url "$URL" serve --http-addr "$ADDR" >>serve.log 2>&1 &
  SERVER=$!
  until curl -s -o /dev/null "http://$ADDR/healthz"; do sleep 0.05; done
}
kill_server() { kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
until_journal_empty() {
  local waiting
  while :; do
    waiting="$(curl -s "http://$ADDR/metrics" | awk '$1 == "sensor_etl_journal_bodies" {print $2}')"
    [ "${waiting:-1}" = 0 ] && break
    sleep 0.2
  done
}
now() { date +%s.%N; }
say() { awk -v t="$(now)" -v s="$STARTED" -v m="$1" 'BEGIN { printf "[%5.1f s] %s\n", t - s, m }'; }

start_server
until curl -s "http://$ADDR/readyz" | grep -qx ready; do sleep 0.2; done
LOAD_SECONDS=$((OUTAGE + 40))
STARTED="$(now)"
"$BIN" generate --http "http://$ADDR/v1/ingest" --scenario steady --rate "$RATE" \
  --duration "$LOAD_SECONDS" --concurrency 32 --rows 100 >generate.txt 2>&1 &
GENERATOR=$!

# A device: a firmware own-API cycle (SDS011 and BME280: 5 readings) and a push-API body for
# its DHT22 (pin 7: 2 readings) every second; each answer's status is logged with its readings.
device() {
  local id="$1" cycle=0 own push status
  while [ "$(awk -v t="$(now)" -v s="$STARTED" -v d="$LOAD_SECONDS" 'BEGIN {print (t - s < d)}')" = 1 ]; do
    cycle=$((cycle + 1))
    own="{\"esp8266id\": \"$id\", \"software_version\": \"NRZ-2020-133\", \"sensordatavalues\": [
      {\"value_type\": \"SDS_P1\", \"value\": \"$((cycle % 50)).1\"}, {\"value_type\": \"SDS_P2\", \"value\": \"2.3\"},
      {\"value_type\": \"BME280_temperature\", \"value\": \"7.4\"}, {\"value_type\": \"BME280_humidity\", \"value\": \"81.3\"},
      {\"value_type\": \"BME280_pressure\", \"value\": \"100659.00\"}]}"
    push="{\"software_version\": \"NRZ-2020-133\", \"sensordatavalues\": [
      {\"value_type\": \"temperature\", \"value\": \"4.$((cycle % 10))\"}, {\"value_type\": \"humidity\", \"value\": \"90.2\"}]}"
    status="$(curl -s -o /dev/null -w '%{http_code}' -m 20 -H 'Content-Type: application/json' \
      -H "X-Sensor: esp8266-$id" --data-binary "$own" "http://$ADDR/v1/ingest" || true)"
    echo "$status 5" >>"device_$id.txt"
    status="$(curl -s -o /dev/null -w '%{http_code}' -m 20 -H 'Content-Type: application/json' \
      -H "X-Sensor: esp8266-$id" -H 'X-Pin: 7' --data-binary "$push" \
      "http://$ADDR/v1/push-sensor-data/" || true)"
    echo "$status 2" >>"device_$id.txt"
    # A cycle a second or slower: two cycles never share a reading time (the receive second).
    sleep 1
  done
}
DEVICE_PIDS=()
for id in $(seq 900001 $((900000 + DEVICES))); do
  device "$id" &
  DEVICE_PIDS+=($!)
done

sleep 10
say "database stops for $OUTAGE s"
"$BIN" --state-dir state db stop >/dev/null 2>&1
sleep $((OUTAGE / 2))
say "kill -9 of the server during the outage; restarted"
kill_server
start_server
sleep $((OUTAGE - OUTAGE / 2))
"$BIN" --state-dir state db start >/dev/null 2>&1
BACK="$(now)"
say "database back"
sleep 2
say "kill -9 of the server while the journal drains; restarted"
kill_server
start_server
until_journal_empty
say "push journal empty, $(awk -v t="$(now)" -v b="$BACK" 'BEGIN { printf "%.1f", t - b }') s after the database came back"
wait "$GENERATOR" || true
wait "${DEVICE_PIDS[@]}" || true
until_journal_empty
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

echo "== generate --http (POST /v1/ingest, $RATE requests/s)"
cat generate.txt
acked_csv="$(awk '/^rows loaded:/ {gsub(";", "", $3); print $3}' generate.txt)"
journaled_csv="$(awk '/^journaled \(202\):/ {print $5}' generate.txt)"
stored_csv="$(psql -d outage -Atc "SELECT coalesce(sum(rows_loaded), 0) FROM v_files WHERE file_name NOT LIKE 'esp8266-%'")"
echo "CSV rows acknowledged: $((acked_csv + journaled_csv)) ($acked_csv after a commit, $journaled_csv from the journal); stored: $stored_csv"
echo "== devices ($DEVICES, own API and push API, a cycle a second)"
cat device_*.txt | awk '{ n[$1]++; if ($1 == 200 || $1 == 202) r += $2 }
  END { for (s in n) printf "status %s: %d\n", (s == "000" ? "none (server killed)" : s), n[s]; printf "device readings acknowledged: %d\n", r }'
device_acked="$(cat device_*.txt | awk '$1 == 200 || $1 == 202 { r += $2 } END { print r + 0 }')"
stored_devices="$(psql -d outage -Atc "SELECT count(*) FROM v_readings r JOIN v_sensors s USING (sensor_id) WHERE s.device LIKE 'esp8266-9%'")"
echo "device readings stored: $stored_devices"
twice="$(psql -d outage -Atc "SELECT count(*) FROM (SELECT content_sha256 FROM v_files GROUP BY 1 HAVING count(*) > 1) d")"
receipts="$(psql -d outage -Atc "SELECT count(*) FROM sensor_etl.journal_receipts")"
echo "bodies loaded from the journal: $receipts; contents stored twice: $twice"
if [ "$stored_csv" -ge "$((acked_csv + journaled_csv))" ] && [ "$stored_devices" -ge "$device_acked" ] && [ "$twice" = 0 ]; then
  echo "every acknowledged reading is stored, none twice"
else
  echo "MISMATCH: acknowledged readings missing or stored twice" >&2
  exit 1
fi
