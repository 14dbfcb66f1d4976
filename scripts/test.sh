#!/usr/bin/env bash
# Runs every test: unit, golden, integration (against private PostgreSQL clusters the tests
# start themselves), the fault-point tests (feature `failpoints`), the HTTP tests (a real
# client, reqwest, over sockets), the dashboard in headless Chromium, the API against its OpenAPI document
# (schemathesis), the lake read back by DuckDB and the end-to-end test over
# ../shared/realdata (required under CI=true).
# What the tests need and the machine lacks is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing ${missing[*]} for the browser tests." >&2
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
# The independent engine the lake is read back with: DuckDB and its Delta extension from PyPI
# (the extension is a file in the package: no download at test time). Pinned.
if ! python3 -c "import duckdb, duckdb_ext, pytz; assert duckdb.__version__ == '1.4.4'" 2>/dev/null; then
  echo "Installing DuckDB 1.4.4 and its Delta extension for the lake tests." >&2
  lake_packages=(duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 pytz)
  python3 -m pip install -q --user "${lake_packages[@]}" 2>/dev/null \
    || python3 -m pip install -q "${lake_packages[@]}"
fi
cargo test --locked --features failpoints "$@"
