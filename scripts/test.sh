#!/usr/bin/env bash
# Runs every test: unit, golden, integration (against private PostgreSQL clusters the tests
# start themselves) and the end-to-end test over ../shared/realdata when present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo test --locked "$@"
