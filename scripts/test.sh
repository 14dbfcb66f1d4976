#!/usr/bin/env bash
# Runs every test: unit, golden, integration (against private PostgreSQL clusters the tests
# start themselves), the fault-point tests (feature `failpoints`) and the end-to-end test over
# ../shared/realdata (required under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo test --locked --features failpoints "$@"
