#!/usr/bin/env bash
# Builds sensor-etl and loads sample_data/ into the embedded default database (or DATABASE_URL),
# then shows the ledger. Quarantined rows land in quarantine/, the error log in logs/errors.log.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo build --release --locked
BIN="${CARGO_TARGET_DIR:-target}/release/sensor-etl"
status=0
"$BIN" ingest sample_data || status=$?
# Exit code 3 means "done, some rows were rejected": expected for the broken sample files.
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
"$BIN" status
