#!/usr/bin/env bash
# Runs every test: unit, golden, integration (against private PostgreSQL clusters the tests
# start themselves), the fault-point tests (feature `failpoints`), the HTTP tests (curl is the
# client), the dashboard in headless Chromium, the API against its OpenAPI document
# (schemathesis) and the end-to-end test over ../shared/realdata (required under CI=true).
# What the tests need and the machine lacks is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing ${missing[*]} for the HTTP and browser tests." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The property-based API check; pinned, installed for this user.
SCHEMATHESIS_VERSION=4.32.5
if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "Installing schemathesis $SCHEMATHESIS_VERSION for the API check." >&2
  python3 -m pip install -q --user "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
    || python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
  export PATH="$HOME/.local/bin:$PATH"
fi
cargo test --locked --features failpoints "$@"
