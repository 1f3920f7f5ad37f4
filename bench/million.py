#!/usr/bin/env python3
"""(h) A million mailboxes: bulk load, login latency at scale, admin pages at scale.

    bench/million.py                          # 1,000,000 x 5 on SQLite and Postgres
    bench/million.py --users 10000 --backends sqlite

Per backend, on a fresh store (SQLite: a temp dir; Postgres: a database of its own on
$PG_SERVER, default postgres://postgres@127.0.0.1:5432, dropped after):
  1. `pophost domain generate big.example --users N --messages-per-user 5 --size S` (the store's
     bulk path; one argon2id hash + SCRAM verifier shared), timed; then small.example with 1,000
     users the same way. On Postgres a VACUUM ANALYZE follows, as autovacuum would soon after.
  2. `pophost serve` (release build, auth cache on, no failure delay). SAMPLES random mailboxes
     of each domain are logged in to once (this fills the auth cache: argon2 is out of what is
     measured), then each is polled once more, big and small alternating: connect, greeting,
     USER/PASS, STAT, UIDL, QUIT. Latency = connect to the end of UIDL's reply; p50/p99 per domain
     and their ratio.
  3. A super admin signs in through /signin as a browser does (see bench/admin-pages.sh); curl
     fetches the domain list, big.example's user list (first page, a middle page, the last
     page, a search), REQUESTS times each after a warm-up; median and p95 of time_total.
Needs: cargo, curl, psql (for Postgres).
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "million bench pass"
ADMIN, ADMIN_PW = "bench@admin.example", "bench admin password"
PG_SERVER = os.environ.get("PG_SERVER", "postgres://postgres@127.0.0.1:5432")
PG_DB = f"pophost_million_{os.getpid()}"


def psql(url, sql):
    return subprocess.run(["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True,
                          env=dict(os.environ, PGOPTIONS="--client-min-messages=warning")).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} never opened")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v)) - 1))]


class Pophost:
    def __init__(self, backend, work, binary):
        self.backend, self.bin = backend, binary
        self.data = os.path.join(work, backend)
        os.makedirs(self.data)
        self.cfg = os.path.join(self.data, "bench.toml")
        with open(self.cfg, "w") as f:
            f.write('node_id = "million"\n[pop3]\nmax_connections = 1000\nmax_connections_per_ip = 1000\n'
                    '[auth]\nfailure_delay_ms = 0\ncache_ttl_secs = 3600\n[log]\nfilter = "warn"\n')
        self.env = dict(os.environ, RUST_LOG="warn")
        self.env.pop("POPHOST_DATABASE_URL", None)
        self.env.pop("POPHOST_CONFIG", None)
        if backend == "postgres":
            psql(f"{PG_SERVER}/postgres", f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            psql(f"{PG_SERVER}/postgres", f"CREATE DATABASE {PG_DB}")
            self.env["POPHOST_DATABASE_URL"] = f"{PG_SERVER}/{PG_DB}"
        self.proc = None

    def cli(self, *args, stdin=None):
        r = subprocess.run([self.bin, "--data-dir", self.data, "--config", self.cfg, *args], env=self.env,
                           capture_output=True, text=True, input=stdin)
        if r.returncode != 0:
            sys.exit(f"pophost {' '.join(args)}: {r.stderr}")
        return r.stdout.strip()

    def generate(self, domain, users, messages, size):
        start = time.monotonic()
        out = self.cli("domain", "generate", domain, "--users", str(users), "--messages-per-user",
                       str(messages), "--size", str(size), "--password-stdin", stdin=PASSWORD + "\n")
        return time.monotonic() - start, out

    def size_on_disk(self):
        if self.backend == "postgres":
            return int(psql(f"{PG_SERVER}/postgres", f"SELECT pg_database_size('{PG_DB}')"))
        return sum(os.path.getsize(os.path.join(self.data, f)) for f in os.listdir(self.data)
                   if f.startswith("pophost.db"))

    def start(self):
        self.pop3, self.admin = free_port(), free_port()
        self.proc = subprocess.Popen(
            [self.bin, "--data-dir", self.data, "--config", self.cfg, "serve", "--pop3-listen",
             f"127.0.0.1:{self.pop3}", "--pop3s-listen", "127.0.0.1:0", "--lmtp-listen", "127.0.0.1:0",
             "--admin-listen", f"127.0.0.1:{self.admin}"],
            env=self.env, stderr=open(os.path.join(self.data, "server.log"), "a"))
        wait_port(self.pop3)
        wait_port(self.admin)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def drop(self):
        self.stop()
        if self.backend == "postgres":
            psql(f"{PG_SERVER}/postgres", f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


def poll(port, user):
    """connect, USER/PASS, STAT, UIDL, QUIT; seconds from connect to the end of UIDL; messages."""
    start = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")

    def cmd(line):
        s.sendall(line.encode() + b"\r\n")
        reply = f.readline()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{user}: {line.split()[0]}: {reply!r}")
        return reply

    if not f.readline().startswith(b"+OK"):
        raise RuntimeError("greeting")
    cmd(f"USER {user}")
    cmd(f"PASS {PASSWORD}")
    count = int(cmd("STAT").split()[1])
    cmd("UIDL")
    lines = 0
    while f.readline() != b".\r\n":
        lines += 1
    took = time.perf_counter() - start
    cmd("QUIT")
    s.close()
    if lines != count:
        raise RuntimeError(f"{user}: UIDL listed {lines} of {count}")
    return took, count


def latency(p, big_users, small_users, samples, messages):
    rng = random.Random(23)
    big = [f"user{n}@big.example" for n in rng.sample(range(1, big_users + 1), samples)]
    small = [f"user{n}@small.example" for n in rng.sample(range(1, small_users + 1), min(samples, small_users))]
    for u in big + small:  # fills the auth cache
        poll(p.pop3, u)
    times = {"big": [], "small": []}
    for i in range(max(len(big), len(small))):
        for name, users in (("big", big), ("small", small)):
            if i < len(users):
                took, count = poll(p.pop3, users[i])
                assert count == messages, (users[i], count)
                times[name].append(took * 1000)
    return times


def admin_pages(p, work, big_users, requests):
    base = f"http://127.0.0.1:{p.admin}"
    p.cli("admin", "add", ADMIN, "--super", "--password-stdin", stdin=ADMIN_PW + "\n")

    def curl(*args):
        return subprocess.run(["curl", "-s", *args], check=True, capture_output=True, text=True).stdout

    pre_h = os.path.join(work, "pre.h")
    page = curl("-D", pre_h, f"{base}/signin")
    pre_cookie = re.search(r"(?im)^set-cookie: (__Host-pophost-pre=[^;]*)", open(pre_h).read()).group(1)
    pre_field = re.search(r'name="_pre" value="([^"]*)"', page).group(1)
    signin_h = os.path.join(work, "signin.h")
    curl("-o", "/dev/null", "-D", signin_h, "-H", f"Cookie: {pre_cookie}", "--data-urlencode", f"email={ADMIN}",
         "--data-urlencode", f"password={ADMIN_PW}", "--data-urlencode", f"_pre={pre_field}", f"{base}/signin")
    session = re.search(r"(?im)^set-cookie: (__Host-pophost-session=[^;]*)", open(signin_h).read()).group(1)

    def get(path):
        out = curl("-o", os.path.join(work, "page"), "-H", f"Cookie: {session}", "-w",
                   "%{http_code} %{time_total} %{size_download}", base + path)
        code, t, size = out.split()
        return int(code), float(t) * 1000, int(size)

    get("/domains/big.example/users")
    text = open(os.path.join(work, "page"), errors="replace").read()
    m = re.search(r"Page 1 of ([0-9,]+)", text)
    last = int(m.group(1).replace(",", "")) if m else 1
    mid = f"user{big_users // 2}"
    pages = ["/domains", "/domains/big.example/users", f"/domains/big.example/users?page={(last + 1) // 2}",
             f"/domains/big.example/users?page={last}", f"/domains/big.example/users?q={mid}",
             f"/domains/big.example/users?q={mid[:7]}", "/domains/big.example/users?q=nobody"]
    rows = []
    for path in pages:
        get(path)
        runs = [get(path) for _ in range(requests)]
        rows.append((path, runs[-1][0], statistics.median(r[1] for r in runs), pct([r[1] for r in runs], 95),
                     runs[-1][2]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=5)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pophost"))
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "pophost"], cwd=ROOT, check=True)
    binary = args.bin
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}")
    print(f"load: {args.users:,} users x {args.messages} messages of {args.size} B (big.example); "
          f"{args.small:,} users the same way (small.example)")
    work = tempfile.mkdtemp(prefix="pophost-million.")
    try:
        for backend in args.backends.split(","):
            p = Pophost(backend, work, binary)
            try:
                took, out = p.generate("big.example", args.users, args.messages, args.size)
                print(f"\n== {backend}\nbig load: {took:.1f} s ({out})")
                took, out = p.generate("small.example", args.small, args.messages, args.size)
                print(f"small load: {took:.1f} s")
                if backend == "postgres":
                    start = time.monotonic()
                    psql(p.env["POPHOST_DATABASE_URL"], "VACUUM ANALYZE")
                    print(f"VACUUM ANALYZE: {time.monotonic() - start:.1f} s")
                print(f"store size: {p.size_on_disk() / 2**30:.2f} GiB")
                p.start()
                t = latency(p, args.users, args.small, args.samples, args.messages)
                print(f"login+STAT+UIDL over {len(t['big'])} random mailboxes (auth cache warm), ms:")
                for name in ("big", "small"):
                    print(f"  {name:5} p50 {pct(t[name], 50):7.2f}  p99 {pct(t[name], 99):7.2f}")
                print(f"  ratio big/small: p50 {pct(t['big'], 50) / pct(t['small'], 50):.2f}  "
                      f"p99 {pct(t['big'], 99) / pct(t['small'], 99):.2f}")
                print(f"admin pages (curl time_total, {args.requests} requests after a warm-up), ms:")
                print(f"  {'page':48} {'status':>6} {'median':>8} {'p95':>8} {'bytes':>8}")
                for path, code, med, p95, size in admin_pages(p, work, args.users, args.requests):
                    print(f"  {path:48} {code:>6} {med:8.1f} {p95:8.1f} {size:>8}")
            finally:
                p.drop()
                shutil.rmtree(p.data, ignore_errors=True)
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
