#!/usr/bin/env bash
# Speed of `pophost import accounts passwd-file` (Migration, item 2): N accounts with a real
# Dovecot {SHA512-CRYPT} hash, into a fresh store on SQLite and on Postgres.
#
#   bench/accounts.sh [N]                   # default 100000; both backends
#   BACKENDS=sqlite bench/accounts.sh 10000 # one backend
#   PG_URL=postgres://postgres@127.0.0.1:5432/postgres (default; trust auth) is where a
#   throwaway database is created and dropped.
#
# Needs: cargo build --release -p pophost; doveadm (dovecot-core); psql for Postgres.
# One hash is made by `doveadm pw -s SHA512-CRYPT` and reused with N user names (imported hashes
# are stored as they are, so every line costs the same). Prints, per backend, the time of the
# dry run (all would be added), of the import itself and of a second import (all unchanged).
set -euo pipefail
N=${1:-100000}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/pophost
WORK=$(mktemp -d /tmp/pophost-accounts-bench.XXXXXX)
DB=pophost_accounts_bench_$$
cleanup() {
  if [[ " $BACKENDS " == *" postgres "* ]]; then
    psql "$PG_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -x "$BIN" ] || { echo "build first: cargo build --release -p pophost" >&2; exit 1; }

HASH=$(doveadm pw -s SHA512-CRYPT -p 'bench password')
python3 - "$N" "$HASH" > "$WORK/passwd" <<'PY'
import sys
n, h = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f"user{i:06d}:{h}:5000:5000::/var/vmail/bench.example/user{i:06d}::")
PY

# Runs "$@" and prints its wall time in seconds (its output goes to $WORK/out).
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$WORK/out" 2>&1 || true
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

rate() { python3 -c "import sys; n,s=int(sys.argv[1]),float(sys.argv[2]); print(f'{s:8.1f} s  {n/s:8.0f} accounts/s')" "$N" "$1"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
for backend in $BACKENDS; do
  export POPHOST_CONFIG=/dev/null
  unset POPHOST_DATABASE_URL
  rm -rf "$WORK/data"
  if [ "$backend" = postgres ]; then
    PGOPTIONS=--client-min-messages=warning psql "$PG_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
    export POPHOST_DATABASE_URL=${PG_URL%/*}/$DB
  fi
  P=("$BIN" --data-dir "$WORK/data")
  "${P[@]}" domain add bench.example >/dev/null
  CMD=("${P[@]}" import accounts passwd-file "$WORK/passwd" --domain bench.example)
  echo "== $backend: $N accounts; pophost import accounts passwd-file FILE --domain bench.example"
  t=$(timed "${CMD[@]}" --dry-run)
  echo "dry run     $(rate "$t")   $(tail -1 "$WORK/out")"
  t=$(timed "${CMD[@]}")
  echo "import      $(rate "$t")   $(tail -1 "$WORK/out")"
  t=$(timed "${CMD[@]}")
  echo "again       $(rate "$t")   $(tail -1 "$WORK/out")"
  users=$("${P[@]}" domain list | awk '/^bench.example/ {print $2}')
  echo "stored: $users"
done
