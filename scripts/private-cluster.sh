# Sourced by the benchmark scripts: builds the release binary (BIN), makes a work folder (WORK,
# named after $1) and enters it, starts a private PostgreSQL cluster there (PORT, and PGHOST,
# PGPORT, PGUSER exported for psql and pgbench), and stops and removes both on exit.
scripts/ensure-postgres.sh
cargo build --release --locked -q
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sensor-etl"
WORK="$(mktemp -d "/tmp/sensor-etl-$1.XXXXXX")"
chmod 755 "$WORK"
trap '"$BIN" --state-dir "$WORK/state" db stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
cd "$WORK"
"$BIN" --state-dir state db start >/dev/null 2>&1
PORT="$(cat state/postgres/port)"
export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres
