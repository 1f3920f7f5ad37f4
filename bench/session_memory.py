#!/usr/bin/env python3
"""Server memory after many full POP3 sessions: whatever a session leaves behind shows as growth.

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p pophost -p pop3-bench
    python3 bench/session_memory.py [--backends sqlite,postgres] [--first 20000] [--total 200000] [--scrape SECS]

For each backend, starts a release `pophost serve` (the auth cache on, so argon2 does not bound
the rate; otherwise configured as bench/run.py configures it), provisions --users mailboxes of
--messages messages of 4 KB each over LMTP, and has `pop3-bench sessions` run --first full
sessions: login, STAT, UIDL, RETR of every message, QUIT; every --dele-every-th session of a
client also marks message 1 deleted, and the client then delivers a replacement over LMTP, so
every mailbox keeps its count. Then it reads the server's VmRSS and the `pophost_maildrops_held`
gauge on the admin listener's /metrics (0 once no session is logged in), runs sessions up to
--total in all, and reads both again. Prints one JSON object per backend: both figures and
their ratio (target: within 5%). Nothing reads /metrics between the readings unless --scrape
SECS asks for a scrape every SECS seconds, as a Prometheus server would.

Postgres: POPHOST_BENCH_PG (default postgres://postgres@127.0.0.1:5432), database pophost_bench,
dropped after. Takes bench/run.py's lock, so it never runs beside it.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: the server set-up and the loader)

PORTS = {"sqlite": (21510, 21524, 21580), "postgres": (21610, 21624, 21680)}  # POP3, LMTP, admin


class Server(bench.Pophost):
    """bench/run.py's pophost, with the admin listener on a known port for /metrics."""

    def __init__(self, backend, run_dir, binary):
        pop3, lmtp, self.admin = PORTS[backend]
        super().__init__(backend, backend, pop3, lmtp, run_dir, binary)

    def start(self, cache):
        self.write_config(cache)
        self.proc = subprocess.Popen(
            [self.bin, "--data-dir", self.data, "--config", self.cfg, "serve", "--pop3-listen", self.pop3,
             "--pop3s-listen", "127.0.0.1:0", "--lmtp-listen", self.lmtp,
             "--admin-listen", f"127.0.0.1:{self.admin}"],
            env=self.env, stderr=open(os.path.join(self.data, "server.log"), "a"), preexec_fn=bench.raise_nofile)
        for addr in (self.pop3, self.lmtp, f"127.0.0.1:{self.admin}"):
            bench.wait_port(addr)

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
            return r.read().decode()

    def held(self):
        """`pophost_maildrops_held`, or None if this build does not export it."""
        for line in self.metrics().splitlines():
            if line.startswith("pophost_maildrops_held "):
                return float(line.split()[1])
        return None

    def scrape_every(self, secs):
        """Reads /metrics every `secs` seconds until the returned event is set."""
        stop = threading.Event()

        def scrape():
            while not stop.wait(secs):
                self.metrics()

        threading.Thread(target=scrape, daemon=True).start()
        return stop

    def at_rest(self):
        """Memory and gauge once every session has ended: waits (up to 10 s) for the gauge to
        read 0, then 2 s more, so that nothing of a session still being torn down is counted."""
        deadline = time.time() + 10
        while (held := self.held()) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        return self.rss_kb(), self.held()


def sessions(args, s, n):
    res = bench.loader(args, "sessions", "--addr", s.pop3, "--user", "m{}@" + bench.DOMAIN,
                       "--users", str(args.users), "--pass", bench.PASSWORD, "--clients", str(args.users),
                       "--sessions", str(n), "--expect", str(args.messages),
                       "--dele-every", str(args.dele_every), "--lmtp", s.lmtp)
    if res["sessions"] != n or res["errors"]:
        raise SystemExit(f"{s.name}: {res['sessions']} of {n} sessions, {res['errors']} errors: {res['first_error']}")
    bench.log(f"{s.name}: {json.dumps(res)}")
    return res


def measure(args, s):
    mailboxes = [f"m{i}" for i in range(args.users)]
    s.provision(mailboxes)
    s.start(cache=True)
    scraping = s.scrape_every(args.scrape) if args.scrape else threading.Event()
    try:
        bench.loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "m{}@" + bench.DOMAIN, "--rcpts", str(args.users),
                     "--count", str(args.users * args.messages), "--size", "4096", "--clients", "1")
        rss_start, _ = s.at_rest()
        first = sessions(args, s, args.first)
        rss_first, held_first = s.at_rest()
        bench.log(f"{s.name}: after {args.first} sessions VmRSS {rss_first} kB, maildrops held {held_first}")
        rest = sessions(args, s, args.total - args.first)
        rss_total, held_total = s.at_rest()
        bench.log(f"{s.name}: after {args.total} sessions VmRSS {rss_total} kB, maildrops held {held_total}")
    finally:
        scraping.set()
        s.stop()
    ratio = rss_total / rss_first
    return {
        "backend": s.name, "users": args.users, "messages": args.messages, "dele_every": args.dele_every,
        "scrape_secs": args.scrape, "rss_kb_start": rss_start,
        "sessions_first": args.first, "rss_kb_first": rss_first, "maildrops_held_first": held_first,
        "sessions_total": args.total, "rss_kb_total": rss_total, "maildrops_held_total": held_total,
        "rss_ratio": round(ratio, 4), "within_5pct": ratio <= 1.05,
        "sessions_per_s": [first["sessions_per_s"], rest["sessions_per_s"]],
        "deleted": first["deleted"] + rest["deleted"],
        "loader_cpu": max(first["loader_cpu"], rest["loader_cpu"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--first", type=int, default=20000, help="sessions before the first reading")
    ap.add_argument("--total", type=int, default=200000, help="sessions before the second reading, in all")
    ap.add_argument("--users", type=int, default=4, help="mailboxes, one client each")
    ap.add_argument("--messages", type=int, default=5, help="4 KB messages per mailbox")
    ap.add_argument("--dele-every", type=int, default=10, help="every K-th session of a client deletes one")
    ap.add_argument("--scrape", type=float, default=0, metavar="SECS",
                    help="read /metrics every SECS seconds during the run (default: never)")
    args = ap.parse_args()
    assert 0 < args.first < args.total
    bench.raise_nofile()
    lock = bench.one_run_at_a_time()  # noqa: F841 (held until exit)
    # The measured binaries are copies: a rebuild of target/ during the run changes nothing.
    run_dir = tempfile.mkdtemp(prefix="pophost-session-memory-")
    binary = os.path.join(run_dir, "pophost")
    shutil.copy2(os.environ.get("POPHOST_BIN") or os.path.join(bench.TARGET, "release", "pophost"), binary)
    args.loader = os.path.join(run_dir, "pop3-bench")
    shutil.copy2(os.path.join(bench.TARGET, "release", "pop3-bench"), args.loader)
    bench.log(f"run dir {run_dir}; load {os.getloadavg()}")
    for backend in args.backends.split(","):
        s = Server(backend, run_dir, binary)
        try:
            print(json.dumps(measure(args, s)), flush=True)
        finally:
            s.cleanup()


if __name__ == "__main__":
    main()
