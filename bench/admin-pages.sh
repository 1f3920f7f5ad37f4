#!/usr/bin/env bash
# Admin UI page times with 100,000 users in a domain (issue "Admin UI", "Done when": pages load
# in under 100 ms), on SQLite and on Postgres.
#
#   bench/admin-pages.sh [N]                     # default 100000 users; both backends
#   BACKENDS=sqlite REQUESTS=10 bench/admin-pages.sh 20000
#   PG_URL=postgres://postgres@127.0.0.1:5432/postgres (default; trust auth) is where a
#   throwaway database is created and dropped.
#
# Needs: cargo (builds target/release/pophost), sqlite3, psql, curl, python3.
# Per backend: a fresh store made by the release binary (its migrations), then loaded in SQL:
# bench.example with N users (one argon2id hash copied, storage spread over 0..50 MB), 300
# small domains of 10 users each, 30 days of per-hour delivery/login counters, and 30 days of
# login events (LOGINS_PER_USER_DAY successful logins per user and day on average, 1 in 20 of
# them failed) with their per-hour failure counters. `pophost serve` runs on loopback; a super
# admin signs in through /signin (the pre-session cookie and form token, as a browser does) and
# every page is fetched REQUESTS times with curl, one at a time, after one warm-up request. Prints per page the HTTP status,
# the median, p95 and max of curl's time_total in milliseconds, and the page size.
set -euo pipefail
N=${1:-100000}
BACKENDS=${BACKENDS:-sqlite postgres}
REQUESTS=${REQUESTS:-20}
LOGINS_PER_USER_DAY=${LOGINS_PER_USER_DAY:-1}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
ADMIN_PORT=${ADMIN_PORT:-21780}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/pophost
WORK=$(mktemp -d /tmp/pophost-admin-bench.XXXXXX)
DB=pophost_admin_bench_$$
ADMIN=bench@admin.example
ADMIN_PW='bench admin password'
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  if [[ " $BACKENDS " == *" postgres "* ]]; then
    psql "$PG_URL" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release -q -p pophost)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "build: $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- crates migrations web || echo '+changes')"

HOUR_NOW=$(( $(date +%s) / 3600 ))
NOW_MS=$(( $(date +%s) * 1000 ))
DAYS=30
EVENTS=$(( N * DAYS * LOGINS_PER_USER_DAY ))

# The load, in SQL both backends read: $1 = SQL for "now" as created_at holds it.
load_sql() {
  local created=$1 hash=$2
  cat <<SQL
INSERT INTO domains (name, created_at) SELECT 'small' || i || '.example', $created
  FROM generate_series(1, 300) AS g(i);
INSERT INTO users (domain_id, localpart, password_hash, used_bytes, used_messages, created_at)
  SELECT d.id, 'user' || lpad(CAST(i AS TEXT), 6, '0'), '$hash', (i * 7919) % 50000000, i % 100,
         $created
  FROM generate_series(0, $N - 1) AS g(i), domains d WHERE d.name = 'bench.example';
INSERT INTO users (domain_id, localpart, password_hash, used_bytes, used_messages, created_at)
  SELECT d.id, 'u' || i, '$hash', (d.id * 31 + i * 1013) % 2000000, i, $created
  FROM domains d, generate_series(1, 10) AS g(i) WHERE d.name LIKE 'small%';
UPDATE domains SET used_bytes = (SELECT coalesce(sum(used_bytes), 0) FROM users u WHERE u.domain_id = domains.id),
                   used_messages = (SELECT coalesce(sum(used_messages), 0) FROM users u WHERE u.domain_id = domains.id);
INSERT INTO hourly_stats (hour, domain_id, delivered, logins)
  SELECT $HOUR_NOW - h, d.id, 2000 + (h * 37) % 1500, $(( N * LOGINS_PER_USER_DAY / 24 )) + (h * 53) % 900
  FROM generate_series(0, 24 * $DAYS - 1) AS g(h), domains d WHERE d.name = 'bench.example';
INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, reason)
  SELECT (SELECT min(id) FROM users) + (e * 7907) % $N, NULL,
         $NOW_MS - (e * 86400000 / $(( N * LOGINS_PER_USER_DAY ))) % $(( DAYS * 86400000 )),
         '198.51.100.' || (e % 250), 'USER', e % 3 = 0, e % 20 <> 0,
         CASE WHEN e % 20 = 0 THEN 'wrong_password' END
  FROM generate_series(CAST(0 AS BIGINT), CAST($EVENTS - 1 AS BIGINT)) AS g(e);
INSERT INTO hourly_stats (hour, domain_id, failed_logins)
  SELECT le.at / 3600000, u.domain_id, count(*) FROM login_events le JOIN users u ON u.id = le.user_id
  WHERE le.success = FALSE GROUP BY le.at / 3600000, u.domain_id
  ON CONFLICT (hour, domain_id) DO UPDATE SET failed_logins = excluded.failed_logins;
SQL
}

stats() { python3 -c '
import statistics, sys
t = sorted(float(x) * 1000 for x in sys.argv[1:])
p95 = t[min(len(t) - 1, round(0.95 * len(t)) - 1)]
print(f"{statistics.median(t):8.1f} {p95:8.1f} {t[-1]:8.1f}")' "$@"; }

for backend in $BACKENDS; do
  export POPHOST_CONFIG=/dev/null
  unset POPHOST_DATABASE_URL
  rm -rf "$WORK/data"
  mkdir -p "$WORK/data"
  cat > "$WORK/bench.toml" <<TOML
node_id = "admin-bench"
[log]
filter = "warn"
TOML
  if [ "$backend" = postgres ]; then
    PGOPTIONS=--client-min-messages=warning psql "$PG_URL" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    export POPHOST_DATABASE_URL=${PG_URL%/*}/$DB
  fi
  P=("$BIN" --data-dir "$WORK/data" --config "$WORK/bench.toml")
  "${P[@]}" domain add bench.example >/dev/null
  echo "$ADMIN_PW" | "${P[@]}" user add first@bench.example --password-stdin >/dev/null
  echo "$ADMIN_PW" | "${P[@]}" admin add "$ADMIN" --super --password-stdin >/dev/null
  start=$(date +%s.%N)
  if [ "$backend" = postgres ]; then
    HASH=$(psql "$POPHOST_DATABASE_URL" -X -At -c "SELECT password_hash FROM users LIMIT 1")
    psql "$POPHOST_DATABASE_URL" -X -q -c "DELETE FROM users" >/dev/null
    load_sql "now()" "$HASH" | psql "$POPHOST_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 >/dev/null
    # VACUUM as autovacuum would soon after such a load: the visibility map lets counts read
    # only an index.
    psql "$POPHOST_DATABASE_URL" -X -q -c "VACUUM ANALYZE" >/dev/null
  else
    DBFILE=$WORK/data/pophost.db
    HASH=$(sqlite3 "$DBFILE" "SELECT password_hash FROM users LIMIT 1")
    # The sqlite3 shell has generate_series too (its column is `value`), and printf for lpad.
    { echo "PRAGMA journal_mode=WAL; BEGIN; DELETE FROM users;"
      load_sql "$NOW_MS" "$HASH" | sed "s/lpad(CAST(i AS TEXT), 6, '0')/printf('%06d', i)/;
        s/generate_series(\(.*\)) AS g(\([a-z]\))/(SELECT value AS \2 FROM generate_series(\1)) AS g/"
      echo "COMMIT; ANALYZE;"; } | sqlite3 "$DBFILE" >/dev/null
  fi
  load=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
  echo
  echo "== $backend: bench.example with $N users, 300 domains of 10, $EVENTS login events over $DAYS days (loaded in $load s)"

  "${P[@]}" serve --pop3-listen 127.0.0.1:0 --pop3s-listen 127.0.0.1:0 --lmtp-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:$ADMIN_PORT 2>"$WORK/server.log" &
  SERVER=$!
  BASE=http://127.0.0.1:$ADMIN_PORT
  for _ in $(seq 100); do curl -s -o /dev/null "$BASE/healthz" && break; sleep 0.1; done

  # Sign in as a browser does: the pre-session cookie and its form token, then the session cookie.
  pre_page=$(curl -s -D "$WORK/pre.h" "$BASE/signin")
  pre_cookie=$(grep -i '^set-cookie: __Host-pophost-pre=' "$WORK/pre.h" | sed 's/^[^:]*: //; s/;.*//' | tr -d '\r')
  pre_field=$(echo "$pre_page" | grep -o 'name="_pre" value="[^"]*"' | sed 's/.*value="//; s/"$//')
  curl -s -o /dev/null -D "$WORK/signin.h" -H "Cookie: $pre_cookie" \
    --data-urlencode "email=$ADMIN" --data-urlencode "password=$ADMIN_PW" --data-urlencode "_pre=$pre_field" \
    "$BASE/signin"
  session=$(grep -i '^set-cookie: __Host-pophost-session=' "$WORK/signin.h" | sed 's/^[^:]*: //; s/;.*//' | tr -d '\r')
  [ -n "$session" ] || { echo "sign-in failed:"; cat "$WORK/signin.h"; exit 1; }

  get() { curl -s -o "$WORK/page" -H "Cookie: $session" -w '%{http_code} %{time_total} %{size_download}\n' "$BASE$1"; }
  last_page=$(get "/domains/bench.example/users" >/dev/null; grep -o 'Page 1 of [0-9]*' "$WORK/page" | awk '{print $4}')
  mid=user$(printf '%06d' $(( N / 2 )))
  pages=(
    "/"
    "/?range=7d"
    "/?range=30d"
    "/domains"
    "/domains/bench.example/users"
    "/domains/bench.example/users?page=$(( (last_page + 1) / 2 ))"
    "/domains/bench.example/users?page=$last_page"
    "/domains/bench.example/users?q=${mid:0:8}"
    "/domains/bench.example/users?q=nobody"
    "/domains/bench.example/users/$mid"
    "/sessions"
    "/search?q=$mid"
    "/search?q=${mid:0:6}"
  )
  printf '%-52s %6s %8s %8s %8s %9s\n' page status median p95 max bytes
  for page in "${pages[@]}"; do
    first=$(get "$page")
    status=${first%% *}
    if [ "$status" = 404 ] && [[ "$page" == /search* ]]; then
      printf '%-52s %6s   (no /search route in this build)\n' "$page" "$status"
      continue
    fi
    times=()
    for _ in $(seq "$REQUESTS"); do
      r=$(get "$page")
      times+=("$(echo "$r" | awk '{print $2}')")
      size=$(echo "$r" | awk '{print $3}')
      status=$(echo "$r" | awk '{print $1}')
    done
    printf '%-52s %6s %s %9s\n' "$page" "$status" "$(stats "${times[@]}")" "$size"
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
done
