#!/usr/bin/env python3
"""(i) What one Postgres carries: statements, round trips and Postgres CPU per POP3 poll and per
LMTP delivery, and the connections a frontend holds (see docs/SCALING.md).

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p pophost -p pop3-bench
    python3 bench/pg_stats.py [--users 200] [--messages 20] [--polls 4000] [--deliveries 4000]
    python3 bench/pg_stats.py --pgbouncer transaction      # the same, through PgBouncer

Starts a PRIVATE Postgres cluster (initdb in a temporary directory, as the `postgres` user; the
server on 5432 is not touched) with `shared_preload_libraries = pg_stat_statements`,
`pg_stat_statements.track = all`, `track_utility = on` (BEGIN/COMMIT are counted),
`track_planning = on` and `track_io_timing = on`; a release `pophost serve` on it (auth cache on,
otherwise as bench/run.py configures it); --users mailboxes of --messages 4 KB messages to poll
and --users more that the measured deliveries go to.

Each measured phase first resets `pg_stat_statements`, then runs its operations and reads:
- statements: `sum(calls)` of the pophost database's top-level entries, per operation (nested
  ones, such as foreign-key checks, apart), and the table of statements (calls per operation,
  exec + plan ms per call);
- round trips: the phase runs with a counting proxy between pophost and Postgres (in this
  process) that counts the frontend's Sync and simple Query messages: each is one wait for
  Postgres (sqlx sends Parse/Bind/Execute and then one Sync per statement, a bare Sync to test a
  pooled connection before use, BEGIN/COMMIT as simple queries);
- Postgres time: `total_exec_time + total_plan_time` per operation (pg_stat_statements);
- Postgres CPU: utime+stime of the postmaster and all its processes (live children from /proc,
  exited ones from the postmaster's cutime/cstime) over the phase, per operation. A second run
  of each phase without the proxy gives the CPU and the rate (the proxy's own CPU is not
  Postgres's, but it slows the phase down);
- connections: the most `pophost` backends seen in pg_stat_activity during the phase, and what
  the active ones were waiting on (sampled every 0.5 s: `cpu` or wait_event_type:wait_event).

Phases: `lmtp1` (one deliverer: no group commit), `lmtpN` (--lmtp-clients deliverers), `poll`
(login with the auth cache warm, STAT, UIDL, QUIT; nothing new; --poll-clients clients; through
`pop3-bench poll` when the loader has it, else Python's poplib). Prints one JSON object.

--pgbouncer MODE puts PgBouncer (Debian's, /usr/sbin/pgbouncer, run as `postgres`) between
pophost and the cluster with `pool_mode = MODE`, and reports every error the operations got.
--no-login-counter (a diagnostic) adds a trigger that drops the per-domain hourly login count, the
one row every login of a domain updates, to show what that row costs (docs/SCALING.md).
"""
import argparse, asyncio, json, os, poplib, shutil, socket, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: the server set-up and the loader)

PG_BIN = next((p for p in sorted(
    (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")), reverse=True)
    if os.path.exists(os.path.join(p, "initdb"))), None) if os.path.isdir("/usr/lib/postgresql") else None
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Cluster:
    """A private Postgres with pg_stat_statements."""

    def __init__(self, run_dir, max_connections):
        self.dir = os.path.join(run_dir, "pg")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(run_dir, "postgres", "postgres")
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        subprocess.run(as_postgres([os.path.join(PG_BIN, "initdb"), "-A", "trust", "-U", "postgres", "-D",
                                    self.data]), check=True, capture_output=True)
        self.port = free_port()
        conf = f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.dir}'
max_connections = {max_connections}
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_utility = on
pg_stat_statements.track_planning = on
pg_stat_statements.max = 10000
track_io_timing = on
"""
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(conf)
        subprocess.run(as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                                    os.path.join(self.dir, "postgres.log"), "-w", "start"]),
                       check=True, capture_output=True)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}"
        bench.psql(self.url + "/postgres", "CREATE EXTENSION pg_stat_statements")

    @property
    def postmaster(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def cpu_seconds(self):
        """CPU of the postmaster, its live children and its exited (reaped) children."""
        pm = self.postmaster
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ppid = int(fields[1])
            if int(pid) == pm:
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            elif ppid == pm:
                total += int(fields[11]) + int(fields[12])
        return total / CLK

    def stop(self):
        subprocess.run(as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]),
                       capture_output=True)


class CountingProxy:
    """TCP proxy pophost -> Postgres counting the frontend's Sync ('S') and Query ('Q') messages:
    each is one round trip. Runs its own event loop in a thread."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.counts = {}
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.server = server
        ready.set()
        self.loop.run_forever()

    def reset(self):
        with self.lock:
            self.counts = {}

    def snapshot(self):
        with self.lock:
            return dict(self.counts)

    async def _client(self, cr, cw):
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target)

        async def down():
            try:
                while data := await sr.read(65536):
                    cw.write(data)
                    await cw.drain()
            except (ConnectionError, OSError):
                pass
            cw.close()

        task = asyncio.ensure_future(down())
        buf = b""
        started = False
        try:
            while data := await cr.read(65536):
                sw.write(data)
                buf += data
                while True:
                    if not started:  # the untyped startup message
                        if len(buf) < 4:
                            break
                        n = int.from_bytes(buf[:4], "big")
                        if len(buf) < n:
                            break
                        buf, started = buf[n:], True
                        continue
                    if len(buf) < 5:
                        break
                    n = int.from_bytes(buf[1:5], "big")
                    if len(buf) < 1 + n:
                        break
                    kind = chr(buf[0])
                    with self.lock:
                        self.counts[kind] = self.counts.get(kind, 0) + 1
                    buf = buf[1 + n:]
                await sw.drain()
        except (ConnectionError, OSError):
            pass
        sw.close()
        await task


class PgBouncer:
    def __init__(self, run_dir, pg_port, mode, pool_size):
        self.dir = os.path.join(run_dir, "pgbouncer")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(os.path.join(self.dir, "users.txt"), "w") as f:
            f.write('"postgres" ""\n')
        with open(ini, "w") as f:
            f.write(f"""[databases]
* = host=127.0.0.1 port={pg_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        if os.geteuid() == 0:
            for p in os.listdir(self.dir):
                shutil.chown(os.path.join(self.dir, p), "postgres", "postgres")
        self.proc = subprocess.Popen(as_postgres(["/usr/sbin/pgbouncer", ini]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        bench.wait_port(f"127.0.0.1:{self.port}")

    def log_tail(self, n=30):
        with open(os.path.join(self.dir, "pgbouncer.log")) as f:
            return f.read().splitlines()[-n:]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def pophost_backends(cluster):
    return int(bench.psql(cluster.url + "/postgres",
                          "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pophost'") or 0)


class ConnWatch:
    """Most pophost backends seen (every 0.5 s) while running."""

    def __init__(self, cluster):
        self.cluster, self.peak, self.stop_ev = cluster, 0, threading.Event()
        self.waits = {}  # wait_event_type:wait_event of active pophost backends -> times seen
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.wait(0.5):
            try:
                self.peak = max(self.peak, pophost_backends(self.cluster))
                for w in bench.psql(self.cluster.url + "/postgres", """
                        SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu') FROM pg_stat_activity
                        WHERE application_name = 'pophost' AND state = 'active'""").split():
                    self.waits[w] = self.waits.get(w, 0) + 1
            except subprocess.CalledProcessError:
                pass

    def stop(self):
        self.stop_ev.set()
        self.t.join()
        return self.peak


def statements(cluster, db):
    rows = bench.psql(cluster.url + "/postgres", f"""
        SELECT json_agg(s) FROM (
          SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, rows,
                 total_exec_time AS exec_ms, total_plan_time AS plan_ms,
                 shared_blks_hit + shared_blks_read AS blks, toplevel
          FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{db}')
          ORDER BY calls DESC) s""")
    return json.loads(rows) if rows else []


def poll_python(addr, users, clients, polls, expect):
    """login, STAT, UIDL, QUIT with poplib; returns (done, errors, first_error)."""
    host, port = addr.rsplit(":", 1)
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "errors": 0, "first": None}

    def worker():
        while True:
            with lock:
                if state["next"] >= polls:
                    return
                i = state["next"]
                state["next"] += 1
            try:
                c = poplib.POP3(host, int(port), timeout=30)
                c.user(f"m{i % users}@{bench.DOMAIN}")
                c.pass_(bench.PASSWORD)
                n, _ = c.stat()
                c.uidl()
                c.quit()
                if n != expect:
                    raise RuntimeError(f"STAT {n}, expected {expect}")
                with lock:
                    state["done"] += 1
            except Exception as e:  # noqa: BLE001 (counted and reported)
                with lock:
                    state["errors"] += 1
                    state["first"] = state["first"] or repr(e)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["done"], state["errors"], state["first"]


def try_loader(args, *scenario):
    """pop3-bench's JSON result; a failed run (pop3-bench stops at an LMTP error) is reported as
    one error with pop3-bench's message."""
    p = subprocess.run([args.loader, *scenario], capture_output=True, text=True, preexec_fn=bench.raise_nofile)
    if p.returncode != 0:
        return {"errors": 1, "first_error": p.stderr.strip()[:600]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def loader_has(args, scenario):
    p = subprocess.run([args.loader, scenario, "--help"], capture_output=True)
    return p.returncode == 0


def run_phase(args, cluster, s, proxy, name, ops_wanted):
    """One phase: returns the measured figures."""
    bench.psql(cluster.url + "/postgres", "SELECT pg_stat_statements_reset()")
    if proxy:
        proxy.reset()
    watch = ConnWatch(cluster)
    cpu0, t0 = cluster.cpu_seconds(), time.time()
    errors, first_error = 0, None
    if name.startswith("lmtp"):
        clients = 1 if name == "lmtp1" else args.lmtp_clients
        res = try_loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "d{}@" + bench.DOMAIN, "--rcpts",
                         str(args.users), "--count", str(ops_wanted), "--size", "4096", "--clients", str(clients))
        ops = res.get("messages", 0)
        errors, first_error = res.get("errors", 0), res.get("first_error")
    elif args.use_poll:
        res = try_loader(args, "poll", "--addr", s.pop3, "--user", "m{}@" + bench.DOMAIN, "--users",
                           str(args.users), "--pass", bench.PASSWORD, "--clients", str(args.poll_clients),
                           "--polls", str(ops_wanted), "--expect", str(args.messages))
        ops = res.get("polls", 0)
        errors, first_error = res.get("errors", 0), res.get("first_error")
    else:
        ops, errors, first_error = poll_python(s.pop3, args.users, args.poll_clients, ops_wanted, args.messages)
    wall = time.time() - t0
    time.sleep(0.5)  # let the last backend work land in /proc
    cpu = cluster.cpu_seconds() - cpu0
    peak = watch.stop()
    stmts = statements(cluster, bench.PG_DB)
    calls = sum(r["calls"] for r in stmts if r["toplevel"])
    nested = sum(r["calls"] for r in stmts if not r["toplevel"])
    exec_ms = sum(r["exec_ms"] for r in stmts)
    plan_ms = sum(r["plan_ms"] for r in stmts)
    out = {
        "phase": name, "ops": ops, "errors": errors, "first_error": first_error, "wall_s": round(wall, 2),
        "ops_per_s": round(ops / wall, 1), "statements_per_op": round(calls / max(ops, 1), 3),
        "nested_statements_per_op": round(nested / max(ops, 1), 3),
        "pg_exec_plus_plan_ms_per_op": round((exec_ms + plan_ms) / max(ops, 1), 4),
        "pg_plan_ms_per_op": round(plan_ms / max(ops, 1), 4),
        "pg_cpu_ms_per_op": round(cpu * 1000 / max(ops, 1), 4), "pg_cpu_cores": round(cpu / wall, 3),
        "peak_pophost_backends": peak, "active_backend_waits": dict(sorted(watch.waits.items(), key=lambda kv: -kv[1])),
        "statements": [{"per_op": round(r["calls"] / max(ops, 1), 3),
                        "ms_per_call": round((r["exec_ms"] + r["plan_ms"]) / max(r["calls"], 1), 4),
                        "toplevel": r["toplevel"], "query": r["query"][:160]} for r in stmts
                       if r["calls"] / max(ops, 1) >= 0.001],
    }
    if proxy:
        c = proxy.snapshot()
        out["round_trips_per_op"] = round((c.get("S", 0) + c.get("Q", 0)) / max(ops, 1), 3)
        out["protocol_messages_per_op"] = {k: round(v / max(ops, 1), 3) for k, v in sorted(c.items())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20, help="4 KB messages per mailbox, delivered first")
    ap.add_argument("--polls", type=int, default=4000)
    ap.add_argument("--deliveries", type=int, default=4000)
    ap.add_argument("--poll-clients", type=int, default=16)
    ap.add_argument("--lmtp-clients", type=int, default=16)
    ap.add_argument("--pool", type=int, default=20, help="database.max_connections of the frontend")
    ap.add_argument("--pg-max-connections", type=int, default=100)
    ap.add_argument("--pgbouncer", choices=["session", "transaction"], help="run through PgBouncer")
    ap.add_argument("--bouncer-pool", type=int, default=10, help="PgBouncer default_pool_size")
    ap.add_argument("--no-cpu-pass", action="store_true", help="only the pass through the counting proxy")
    ap.add_argument("--no-login-counter", action="store_true",
                    help="diagnostic: drop the per-domain hourly login count (a trigger) to show its cost")
    args = ap.parse_args()
    bench.raise_nofile()
    run_dir = tempfile.mkdtemp(prefix="pophost-pg-stats-")
    os.chmod(run_dir, 0o755)
    binary = os.path.join(run_dir, "pophost")
    shutil.copy2(os.environ.get("POPHOST_BIN") or os.path.join(bench.TARGET, "release", "pophost"), binary)
    args.loader = os.path.join(run_dir, "pop3-bench")
    shutil.copy2(os.path.join(bench.TARGET, "release", "pop3-bench"), args.loader)
    args.use_poll = loader_has(args, "poll")
    bench.log(f"run dir {run_dir}; load {os.getloadavg()}; poll driver "
              f"{'pop3-bench poll' if args.use_poll else 'python poplib'}")
    cluster = Cluster(run_dir, args.pg_max_connections)
    bouncer = proxy = s = None
    result = {"users": args.users, "messages": args.messages, "pool": args.pool, "pgbouncer": args.pgbouncer,
              "no_login_counter": args.no_login_counter,
              "poll_driver": "pop3-bench poll" if args.use_poll else "poplib", "passes": {}}
    try:
        bench.PG_SERVER = cluster.url
        upstream = cluster.port
        if args.pgbouncer:
            bouncer = PgBouncer(run_dir, cluster.port, args.pgbouncer, args.bouncer_pool)
            upstream = bouncer.port
        proxy = CountingProxy(upstream)
        s = bench.Pophost("pg", "postgres", free_port(), free_port(), run_dir, binary, pop3s_port=free_port())
        # Migrate and provision directly; then serve through the proxy (and PgBouncer).
        # m*: polled, --messages each; d*: where the measured deliveries go.
        s.provision([f"m{i}" for i in range(args.users)] + [f"d{i}" for i in range(args.users)])
        if args.no_login_counter:
            # Diagnostic: a trigger drops the per-domain hourly login count, the one row every
            # login of a domain writes, to show what that row costs.
            bench.psql(s.pg_url, """
                CREATE FUNCTION skip_login_count() RETURNS trigger LANGUAGE plpgsql AS
                  $$ BEGIN RETURN NULL; END $$;
                CREATE TRIGGER skip_login_count BEFORE INSERT ON hourly_stats
                  FOR EACH ROW WHEN (NEW.logins > 0) EXECUTE FUNCTION skip_login_count();""")
        base_cfg = s.write_config

        def write_config(cache):
            base_cfg(cache)
            with open(s.cfg, "a") as f:
                f.write(f"[database]\nmax_connections = {args.pool}\n")
        s.write_config = write_config
        passes = [("counted", f"postgres://postgres@127.0.0.1:{proxy.port}/{bench.PG_DB}?sslmode=disable")]
        if not args.no_cpu_pass:
            direct = bouncer.port if bouncer else cluster.port
            passes.append(("direct", f"postgres://postgres@127.0.0.1:{direct}/{bench.PG_DB}?sslmode=disable"))
        for i, (pname, url) in enumerate(passes):
            s.env["POPHOST_DATABASE_URL"] = url
            s.start(cache=True)
            try:
                if i == 0:
                    res = try_loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "m{}@" + bench.DOMAIN, "--rcpts",
                                     str(args.users), "--count", str(args.users * args.messages), "--size",
                                     "4096", "--clients", "4")
                    if res.get("errors"):
                        # Reported, not raised: this is what --pgbouncer transaction shows.
                        with open(os.path.join(s.data, "server.log")) as f:
                            errs = [line for line in f if "WARN" in line or "ERROR" in line]
                        result["failed"] = {"while": "delivering the mailboxes' first messages",
                                            "loader": res["first_error"], "server_log": errs[-10:]}
                        break
                # Warm the auth cache: one poll per mailbox (argon2 at the first login of each).
                poll_python(s.pop3, args.users, 4, args.users, args.messages)
                phases = []
                for name, n in (("lmtp1", args.deliveries // 4), ("lmtpN", args.deliveries), ("poll", args.polls)):
                    r = run_phase(args, cluster, s, proxy if pname == "counted" else None, name, n)
                    bench.log(f"{pname} {name}: " + json.dumps({k: v for k, v in r.items() if k != "statements"}))
                    phases.append(r)
                result["passes"][pname] = phases
            finally:
                s.stop()
        result["idle_pophost_backends_after"] = pophost_backends(cluster)
        if bouncer:
            result["pgbouncer_log"] = bouncer.log_tail()
    finally:
        if s:
            s.stop()
        if bouncer:
            bouncer.stop()
        cluster.stop()
        shutil.rmtree(cluster.data, ignore_errors=True)  # the logs stay in the run directory
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
