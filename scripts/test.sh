#!/usr/bin/env bash
# Runs every test: unit, golden, integration (against private PostgreSQL clusters the tests
# start themselves), the fault-point tests (feature `failpoints`), the HTTP tests (curl is the
# client) and the end-to-end test over ../shared/realdata (required under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
if ! command -v curl >/dev/null 2>&1; then
  echo "curl not found; installing it for the HTTP tests." >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
cargo test --locked --features failpoints "$@"
