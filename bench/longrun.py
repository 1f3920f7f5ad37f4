#!/usr/bin/env python3
"""(k) A long run: --sessions full POP3 sessions and --deliveries LMTP deliveries on each backend,
with the server's RSS, open files and Postgres connections sampled; each must stay flat (within
5%) after warm-up.

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p pophost -p pop3-bench
    python3 bench/longrun.py [--backends sqlite,postgres] [--sessions 200000] [--deliveries 200000]

For each backend, starts a release `pophost serve` (the auth cache on; otherwise as bench/run.py
configures it) with --users session mailboxes of --messages 4 KB messages and --sinks delivery
mailboxes. The run is --chunks equal chunks; in each, `pop3-bench sessions` (login, STAT, UIDL,
RETR of every message, QUIT; every --dele-every-th session of a client also deletes message 1 and
delivers a replacement, so the session mailboxes keep their size) and `pop3-bench lmtp` (4 KB, one
recipient, into the sink mailboxes, which grow) run side by side. A sampler reads, every
--interval seconds: VmRSS of the server, its open file descriptors (/proc/PID/fd) and, on
Postgres, the server's connections (pg_stat_activity, application_name = 'pophost'). After each
chunk, once no session is logged in (`pophost_maildrops_held` = 0 on /metrics) and 2 s more, it
takes an at-rest reading of RSS and open files.

Warm-up is the first --warmup chunks (default 2 of 10: 40,000 sessions and deliveries). Flat
means: the largest at-rest reading after warm-up is within 5% of the reading at the end of warm-up
(RSS, open files), and the most Postgres connections seen in any later chunk is within 5% of the
most seen during warm-up (or within the pool size). On SQLite, RSS rises while the database grows
until the page caches are full (8 pooled connections × SQLite's default 2 MB): `rss_growth_kb`
(per chunk) shows whether growth has stopped.
Prints one JSON object per backend (every sample in `samples`), and exits 1 if anything grew.

Postgres: POPHOST_BENCH_PG (default postgres://postgres@127.0.0.1:5432), database pophost_bench,
dropped after. Takes bench/run.py's lock (/tmp/pophost-bench.lock) unless --no-lock.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: the server set-up and the loader)

PORTS = {"sqlite": (21710, 21724, 21780, 21795), "postgres": (21810, 21824, 21880, 21895)}  # POP3 LMTP admin POP3S
POOL = 20  # database.max_connections, the default
bench.PG_DB = "pophost_longrun"  # not bench/run.py's database: the two may run at once with --no-lock


class Server(bench.Pophost):
    def __init__(self, backend, run_dir, binary):
        pop3, lmtp, self.admin, pop3s = PORTS[backend]
        super().__init__(backend, backend, pop3, lmtp, run_dir, binary, pop3s_port=pop3s)

    def start(self, cache):
        self.write_config(cache)
        with open(self.cfg, "a") as f:
            f.write(f"[database]\nmax_connections = {POOL}\n")
        self.proc = subprocess.Popen(
            [self.bin, "--data-dir", self.data, "--config", self.cfg, "serve", "--pop3-listen", self.pop3,
             "--pop3s-listen", self.pop3s, "--lmtp-listen", self.lmtp,
             "--admin-listen", f"127.0.0.1:{self.admin}"],
            env=self.env, stderr=open(os.path.join(self.data, "server.log"), "a"), preexec_fn=bench.raise_nofile)
        for addr in (self.pop3, self.lmtp, f"127.0.0.1:{self.admin}"):
            bench.wait_port(addr)

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def pg_conns(self):
        if self.backend != "postgres":
            return None
        return int(bench.psql(f"{bench.PG_SERVER}/postgres",
                              f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{bench.PG_DB}' "
                              "AND application_name = 'pophost'") or 0)

    def held(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("pophost_maildrops_held "):
                    return float(line.split()[1])
        return None

    def at_rest(self):
        deadline = time.time() + 10
        while (held := self.held()) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        return {"rss_kb": self.rss_kb(), "fds": self.fds(), "pg_conns": self.pg_conns(), "held": self.held()}


class Sampler:
    def __init__(self, s, interval, t0):
        self.s, self.interval, self.t0 = s, interval, t0
        self.samples, self.chunk = [], 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.wait(self.interval):
            try:
                self.samples.append({"t": round(time.time() - self.t0, 1), "chunk": self.chunk,
                                     "rss_kb": self.s.rss_kb(), "fds": self.s.fds(), "pg_conns": self.s.pg_conns()})
            except (OSError, subprocess.CalledProcessError, StopIteration):
                pass

    def stop(self):
        self.stop_ev.set()
        self.t.join()


def run_chunk(args, s, sessions, deliveries):
    """Sessions and deliveries side by side; both must complete without an error."""
    def cmd(*a):
        return [args.loader, *a]
    procs = {
        "sessions": subprocess.Popen(cmd(
            "sessions", "--addr", s.pop3, "--user", "m{}@" + bench.DOMAIN, "--users", str(args.users),
            "--pass", bench.PASSWORD, "--clients", str(args.users), "--sessions", str(sessions),
            "--expect", str(args.messages), "--dele-every", str(args.dele_every), "--lmtp", s.lmtp),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=bench.raise_nofile),
        "lmtp": subprocess.Popen(cmd(
            "lmtp", "--addr", s.lmtp, "--rcpt", "sink{}@" + bench.DOMAIN, "--rcpts", str(args.sinks),
            "--count", str(deliveries), "--size", "4096", "--clients", str(args.lmtp_clients)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=bench.raise_nofile),
    }
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{s.name}: {name} failed:\n{stderr[-2000:]}")
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    res, lm = out["sessions"], out["lmtp"]
    if res["sessions"] != sessions or res["errors"]:
        raise SystemExit(f"{s.name}: {res['sessions']} of {sessions} sessions, {res['errors']} errors: "
                         f"{res['first_error']}")
    if lm["messages"] != deliveries:
        raise SystemExit(f"{s.name}: {lm['messages']} of {deliveries} deliveries")
    return res, lm


def flat(series, base, slack=0.05):
    worst = max(series) if series else base
    return worst, round(worst / base, 4) if base else None, (worst <= base * (1 + slack)) if base else True


def measure(args, s):
    s.provision([f"m{i}" for i in range(args.users)] + [f"sink{i}" for i in range(args.sinks)])
    s.start(cache=True)
    t0 = time.time()
    sampler = Sampler(s, args.interval, t0)
    chunks = []
    try:
        bench.loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "m{}@" + bench.DOMAIN, "--rcpts", str(args.users),
                     "--count", str(args.users * args.messages), "--size", "4096", "--clients", "1")
        start = s.at_rest()
        for c in range(args.chunks):
            sampler.chunk = c
            n_s = args.sessions // args.chunks + (1 if c < args.sessions % args.chunks else 0)
            n_d = args.deliveries // args.chunks + (1 if c < args.deliveries % args.chunks else 0)
            res, lm = run_chunk(args, s, n_s, n_d)
            rest = s.at_rest()
            chunk = {"chunk": c, "sessions": n_s, "deliveries": n_d, "sessions_per_s": res["sessions_per_s"],
                     "msgs_per_s": lm["msgs_per_s"], "deleted": res["deleted"],
                     "pg_conns_max": max((x["pg_conns"] or 0 for x in sampler.samples if x["chunk"] == c),
                                         default=0), **{f"rest_{k}": v for k, v in rest.items()}}
            chunks.append(chunk)
            bench.log(f"{s.name}: {json.dumps(chunk)}")
    finally:
        sampler.stop()
        s.stop()
    warm, later = chunks[args.warmup - 1], chunks[args.warmup:]
    rss_max, rss_ratio, rss_ok = flat([c["rest_rss_kb"] for c in later], warm["rest_rss_kb"])
    fd_max, fd_ratio, fd_ok = flat([c["rest_fds"] for c in later], warm["rest_fds"])
    out = {
        "backend": s.name, "sessions": args.sessions, "deliveries": args.deliveries, "chunks": args.chunks,
        "users": args.users, "messages": args.messages, "sinks": args.sinks, "wall_s": round(time.time() - t0),
        "rss_kb_start": start["rss_kb"], "rss_kb_after_warmup": warm["rest_rss_kb"], "rss_kb_max_after": rss_max,
        "rss_kb_end": chunks[-1]["rest_rss_kb"], "rss_ratio": rss_ratio, "warmup_chunks": args.warmup,
        "rss_growth_kb": [b["rest_rss_kb"] - a["rest_rss_kb"] for a, b in zip(chunks, chunks[1:])],
        "fds_start": start["fds"], "fds_after_warmup": warm["rest_fds"], "fds_max_after": fd_max,
        "fds_ratio": fd_ratio,
        "in_load_rss_kb_max_after": max((x["rss_kb"] for x in sampler.samples if x["chunk"] >= args.warmup),
                                        default=None),
        "in_load_fds_max_after": max((x["fds"] for x in sampler.samples if x["chunk"] >= args.warmup),
                                     default=None),
        "sessions_per_s": [c["sessions_per_s"] for c in chunks], "msgs_per_s": [c["msgs_per_s"] for c in chunks],
        "chunk_readings": chunks, "samples": sampler.samples,
    }
    ok = rss_ok and fd_ok
    if s.backend == "postgres":
        pg_max, pg_ratio, pg_ok = flat([c["pg_conns_max"] for c in later], warm["pg_conns_max"])
        pg_ok = pg_ok or pg_max <= POOL
        out.update(pg_conns_max_warmup=warm["pg_conns_max"], pg_conns_max_after=pg_max, pg_conns_ratio=pg_ratio,
                   pg_pool=POOL)
        ok = ok and pg_ok
    out["flat"] = ok
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--sessions", type=int, default=200000)
    ap.add_argument("--deliveries", type=int, default=200000)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="chunks of warm-up")
    ap.add_argument("--users", type=int, default=16, help="session mailboxes, one client each")
    ap.add_argument("--messages", type=int, default=5, help="4 KB messages per session mailbox")
    ap.add_argument("--sinks", type=int, default=100, help="mailboxes the deliveries go to")
    ap.add_argument("--lmtp-clients", type=int, default=8)
    ap.add_argument("--dele-every", type=int, default=10)
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    ap.add_argument("--no-lock", action="store_true", help="do not wait for other bench/ runs")
    args = ap.parse_args()
    assert 1 <= args.warmup < args.chunks
    bench.raise_nofile()
    lock = None if args.no_lock else bench.one_run_at_a_time()  # noqa: F841 (held until exit)
    run_dir = tempfile.mkdtemp(prefix="pophost-longrun-")
    binary = os.path.join(run_dir, "pophost")
    shutil.copy2(os.environ.get("POPHOST_BIN") or os.path.join(bench.TARGET, "release", "pophost"), binary)
    args.loader = os.path.join(run_dir, "pop3-bench")
    shutil.copy2(os.path.join(bench.TARGET, "release", "pop3-bench"), args.loader)
    bench.log(f"run dir {run_dir}; load {os.getloadavg()}")
    all_flat = True
    for backend in args.backends.split(","):
        s = Server(backend, run_dir, binary)
        try:
            r = measure(args, s)
            all_flat = all_flat and r["flat"]
            print(json.dumps(r), flush=True)
        finally:
            s.cleanup()
    shutil.rmtree(run_dir, ignore_errors=True)
    sys.exit(0 if all_flat else 1)


if __name__ == "__main__":
    main()
