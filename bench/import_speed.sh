#!/usr/bin/env bash
# Import speed of `pophost import maildir` for a real Dovecot Maildir (issue 6).
#
#   bench/import_speed.sh [MESSAGES]          # default 10000; SQLite in a temp dir
#   POPHOST_DATABASE_URL=postgres://postgres@127.0.0.1/pophost_bench bench/import_speed.sh
#
# Needs: cargo build --release -p pophost; apt-get install dovecot-pop3d dovecot-lmtpd argon2.
# Delivers MESSAGES messages (about 3 KiB each) to a private Dovecot over LMTP, lists them over
# POP3 (so Dovecot has assigned its UIDLs), imports the Maildir into a fresh pophost store and
# prints messages/s, and how long a second (idempotent, nothing new) import takes. That the
# UIDLs come out equal to Dovecot's is checked by tests/e2e/import.rs.
set -euo pipefail
N=${1:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/pophost
PEER=$ROOT/bench/dovecot
WORK=$(mktemp -d /tmp/pophost-import-bench.XXXXXX)
chmod 755 "$WORK"
export ANCHOR=$WORK/dovecot POP3_PORT=${POP3_PORT:-31110} POP3S_PORT=${POP3S_PORT:-31995} LMTP_PORT=${LMTP_PORT:-32424}
cleanup() { bash "$PEER/dovecot-down.sh" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
[ -x "$BIN" ] || { echo "build first: cargo build --release -p pophost" >&2; exit 1; }
mkdir -p "$ANCHOR"
bash "$PEER/dovecot-up.sh" >/dev/null 2>&1 </dev/null
bash "$PEER/dovecot-provision.sh" add-domain example.com
bash "$PEER/dovecot-provision.sh" add-user john@example.com 'bench pass'
python3 - "$N" "$LMTP_PORT" "$POP3_PORT" > "$WORK/dovecot.uidl" <<'PY'
import poplib, smtplib, sys
n, lmtp_port, pop3_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = "".join(f"line {i:03d} of a message body that is about three kilobytes long, padding.\r\n" for i in range(40))
l = smtplib.LMTP("127.0.0.1", lmtp_port)
for i in range(n):
    msg = f"From: sender{i % 97}@example.net\r\nTo: john@example.com\r\nSubject: bench {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n{body}"
    l.sendmail("sender@example.net", ["john@example.com"], msg)
l.quit()
p = poplib.POP3("127.0.0.1", pop3_port)
p.user("john@example.com"); p.pass_("bench pass")
for line in p.uidl()[1]:
    print(line.decode())
p.quit()
PY
echo "dovecot: $(wc -l < "$WORK/dovecot.uidl") messages, UIDLs assigned"
bash "$PEER/dovecot-down.sh" >/dev/null
export POPHOST_CONFIG=/dev/null
P=("$BIN" --data-dir "$WORK/pophost")
"${P[@]}" domain add example.com >/dev/null
echo 'bench pass' | "${P[@]}" user add john@example.com --password-stdin >/dev/null
MAILDIR=$ANCHOR/mail/example.com/john
echo "command: pophost import maildir $MAILDIR --user john@example.com  (store: ${POPHOST_DATABASE_URL:-sqlite})"
start=$(date +%s.%N)
"${P[@]}" import maildir "$MAILDIR" --user john@example.com
end=$(date +%s.%N)
python3 -c "import sys; n,s=int(sys.argv[1]),float(sys.argv[2]); print(f'{n} messages in {s:.2f} s = {n/s:.0f} messages/s')" "$N" "$(echo "$end - $start" | bc)"
start=$(date +%s.%N)
"${P[@]}" import maildir "$MAILDIR" --user john@example.com | head -1
end=$(date +%s.%N)
echo "second import (nothing new): $(echo "$end - $start" | bc) s"
