#!/usr/bin/env bash
# Makes sure the PostgreSQL server programs (initdb, pg_ctl, postgres) are installed: sensor-etl
# runs its embedded database and its tests' private clusters from them.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
echo "PostgreSQL server programs not found; installing them." >&2
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
  # Debian starts a system cluster on install; sensor-etl uses its own, so stop that one.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
      $sudo pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
    done
  fi
elif command -v dnf >/dev/null 2>&1; then
  sudo dnf install -y postgresql-server
elif command -v brew >/dev/null 2>&1; then
  brew install postgresql
else
  echo "Install the PostgreSQL server package with your package manager." >&2
  exit 1
fi
