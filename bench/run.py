#!/usr/bin/env python3
"""pophost against Dovecot, side by side in one run: scenarios (a)-(g) of docs/BENCHMARKS.md.

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p pophost -p pop3-bench
    python3 bench/run.py                 # everything, default sizes (see --help)
    python3 bench/run.py --quick         # a dry run at small sizes
    python3 bench/run.py --only fg       # POP3S sessions (f) and the poll storm (g) only

Starts three servers on loopback, all configured alike (argon2id m=19456 KiB t=2 p=1 hashes, the
maildrop/session lock on, no failure delay, auth cache off, then on for the second (a) phase):

    pophost on SQLite     POP3 127.0.0.1:21310  LMTP :21324   (data in a temporary directory)
    pophost on Postgres   POP3 127.0.0.1:21410  LMTP :21424   (database pophost_bench on
                          POPHOST_BENCH_PG, default postgres://postgres@127.0.0.1:5432, dropped after)
    Dovecot 2.3           POP3 127.0.0.1:21110  LMTP :22424   (bench/dovecot scripts,
                          ANCHOR=/tmp/dovecot-bench)

(POP3S for (f) and (g): pophost :21395 / :21495, Dovecot :21995, one ECDSA P-256 certificate made
with openssl for the run, signed by a CA of the run that the loader trusts)

provisions the same users and mail on each, then runs every scenario in rounds, the three servers
one after the other in a rotating order inside each round, so machine noise hits all alike. It
prints one table: the median of the rounds per server and the pophost/Dovecot ratio, and writes
every raw result (JSON lines from pop3-bench) to --out.

Measured binaries are copied (POPHOST_BIN overrides which pophost, for an A/B of two builds) to the run directory first, so a rebuild during the run changes
nothing. Needs: Dovecot (`apt-get install -y dovecot-pop3d dovecot-lmtpd argon2`), psql, root (the
Dovecot scripts chown its mail to uid 5000; the memory scenarios read other processes' smaps).
"""
import argparse, fcntl, json, os, re, resource, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PEER = os.environ.get("DOVECOT_PEER") or next(
    p for p in (os.path.join(ROOT, "bench", "dovecot"), os.path.join(ROOT, "..", "shared", "peers", "dovecot"))
    if os.path.exists(os.path.join(p, "dovecot-up.sh")) or p.endswith("peers/dovecot"))
DOVECOT_ENV = dict(ANCHOR="/tmp/dovecot-bench", POP3_PORT="21110", POP3S_PORT="21995", LMTP_PORT="22424")
DOMAIN = "bench.example"
PASSWORD = "bench-pass-1"
PG_SERVER = os.environ.get("POPHOST_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
PG_DB = "pophost_bench"

LOG = None  # raw results file


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, env=None, **kw):
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, **kw).stdout


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Pophost:
    def __init__(self, name, backend, pop3_port, lmtp_port, run_dir, binary, pop3s_port, cert=None):
        self.name, self.backend = name, backend
        self.pop3 = f"127.0.0.1:{pop3_port}"
        self.pop3s = f"127.0.0.1:{pop3s_port}"
        self.lmtp = f"127.0.0.1:{lmtp_port}"
        self.cert = cert  # (cert.pem, key.pem) for POP3S, or None: the self-signed one
        self.data = os.path.join(run_dir, name)
        os.makedirs(self.data, exist_ok=True)
        self.bin = binary
        self.proc = None
        self.env = dict(os.environ, RUST_LOG="warn")
        self.env.pop("POPHOST_DATABASE_URL", None)
        if backend == "postgres":
            self.pg_url = f"{PG_SERVER}/{PG_DB}"
            psql(f"{PG_SERVER}/postgres", f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            psql(f"{PG_SERVER}/postgres", f"CREATE DATABASE {PG_DB}")
            self.env["POPHOST_DATABASE_URL"] = self.pg_url
        self.write_config(cache=False)

    def cli(self, *args, stdin=None):
        return subprocess.run([self.bin, "--data-dir", self.data, "--config", self.cfg, *args], env=self.env,
                              check=True, capture_output=True, text=True, input=stdin).stdout

    def write_config(self, cache):
        self.cfg = os.path.join(self.data, "bench.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""node_id = "bench-{self.name}"
[pop3]
max_connections = 20000
max_connections_per_ip = 20000
[lmtp]
max_connections = 1000
[auth]
failure_delay_ms = 0
cache_ttl_secs = {300 if cache is True else int(cache or 0)}
[log]
filter = "warn"
""")
            if self.cert:
                f.write(f'[tls]\ncert = "{self.cert[0]}"\nkey = "{self.cert[1]}"\n')

    def provision(self, users):
        """users: list of local parts, all with PASSWORD. One argon2id hash, copied in SQL."""
        self.cli("domain", "add", DOMAIN)
        first, rest = users[0], users[1:]
        self.cli("user", "add", f"{first}@{DOMAIN}", "--password-stdin", stdin=PASSWORD + "\n")
        if not rest:
            return
        values = ",".join(f"('{u}')" for u in rest)
        sql = (f"INSERT INTO users (domain_id, localpart, password_hash, scram_verifier, created_at) "
               f"SELECT u.domain_id, n.name, u.password_hash, u.scram_verifier, u.created_at "
               f"FROM users u, (VALUES {values}) AS n(name) WHERE u.localpart = '{first}'")
        if self.backend == "postgres":
            psql(self.pg_url, sql)
        else:
            import sqlite3
            db = sqlite3.connect(os.path.join(self.data, "pophost.db"))
            # SQLite names VALUES columns column1..: select from a CTE instead.
            db.execute(f"WITH n(name) AS (VALUES {values}) "
                       f"INSERT INTO users (domain_id, localpart, password_hash, scram_verifier, created_at) "
                       f"SELECT u.domain_id, n.name, u.password_hash, u.scram_verifier, u.created_at "
                       f"FROM users u, n WHERE u.localpart = '{first}'")
            db.commit()
            db.close()

    def start(self, cache):
        self.write_config(cache)
        self.proc = subprocess.Popen(
            [self.bin, "--data-dir", self.data, "--config", self.cfg, "serve", "--pop3-listen", self.pop3,
             "--pop3s-listen", self.pop3s, "--lmtp-listen", self.lmtp, "--admin-listen", "127.0.0.1:0"],
            env=self.env, stderr=open(os.path.join(self.data, "server.log"), "a"), preexec_fn=raise_nofile)
        wait_port(self.pop3)
        wait_port(self.pop3s)
        wait_port(self.lmtp)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def cleanup(self):
        self.stop()
        if self.backend == "postgres":
            psql(f"{PG_SERVER}/postgres", f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


class Dovecot:
    name = "dovecot"
    pop3 = f"127.0.0.1:{DOVECOT_ENV['POP3_PORT']}"
    lmtp = f"127.0.0.1:{DOVECOT_ENV['LMTP_PORT']}"
    pop3s = f"127.0.0.1:{DOVECOT_ENV['POP3S_PORT']}"

    def __init__(self, cert=None):
        self.cert = cert  # (cert.pem, key.pem), copied where dovecot-up.sh looks (it then makes none)
        self.env = dict(os.environ, **DOVECOT_ENV)
        self.anchor = DOVECOT_ENV["ANCHOR"]
        self.conf = os.path.join(self.anchor, "etc", "dovecot.conf")
        self.script("dovecot-down.sh")
        shutil.rmtree(self.anchor, ignore_errors=True)

    def script(self, name, *args):
        # Through a file, not a pipe: the Dovecot daemon that dovecot-up.sh starts keeps its
        # stdout open, and a pipe would never reach EOF.
        with tempfile.TemporaryFile("w+") as out:
            subprocess.run([os.path.join(PEER, name), *args], env=self.env, check=True, stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            out.seek(0)
            return out.read()

    def provision(self, users, plain=False):
        """plain: the users' passwords stored as {PLAIN} (no hashing cost at login), for (f)/(g)."""
        self.script("dovecot-provision.sh", "add-domain", DOMAIN)
        path = os.path.join(tempfile.mkdtemp(), "users")
        with open(path, "w") as f:
            for u in users:
                f.write(f"{u}@{DOMAIN} {PASSWORD}\n")
        if not plain:
            self.script("dovecot-provision.sh", "add-users", path)
            return
        # The script forks a few processes per user (about 45 ms each: 8 minutes for (g)'s
        # 10,000); the same passwd-files written here instead, as its write_user does with
        # PW_SCHEME=PLAIN.
        import grp
        gid = grp.getgrnam("dovecot").gr_gid
        uid, vgid = self.env.get("VMAIL_UID", "5000"), self.env.get("VMAIL_GID", "5000")
        d = os.path.join(self.anchor, "etc", "passwd.d", DOMAIN)
        os.makedirs(d, exist_ok=True)
        os.chown(d, -1, gid)
        os.chmod(d, 0o750)
        mail = os.path.join(self.anchor, "mail")
        for u in users:
            f = os.path.join(d, u)
            with open(f, "w") as out:
                out.write(f"{u}@{DOMAIN}:{{PLAIN}}{PASSWORD}:{uid}:{vgid}::{mail}/{DOMAIN}/{u}::\n")
            os.chown(f, -1, gid)
            os.chmod(f, 0o640)

    def write_maildirs(self, users, count, size):
        """Mail for (g) written straight into each user's Maildir (cur/, as Dovecot's own LMTP
        would leave it after a POP3 session has seen it), owned by the mail uid. Dovecot builds
        its dovecot-uidlist and index at the first login (the untimed warm-up pass)."""
        base = os.path.join(self.anchor, "mail", DOMAIN)
        uid = int(self.env.get("VMAIL_UID", "5000"))
        gid = int(self.env.get("VMAIL_GID", "5000"))
        now = int(time.time())
        for u in users:
            home = os.path.join(base, u)
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(home, sub), exist_ok=True)
                os.chown(os.path.join(home, sub), uid, gid)
            os.chown(home, uid, gid)
            for i in range(count):
                body = message(size, i, u)
                name = os.path.join(home, "cur", f"{now + i}.M{i}P1.bench,S={len(body)},W={len(body)}:2,")
                with open(name, "wb") as f:
                    f.write(body)
                os.chown(name, uid, gid)

    def start(self, cache):
        if self.cert:
            ssl = os.path.join(self.anchor, "ssl")
            os.makedirs(ssl, exist_ok=True)
            shutil.copy(self.cert[0], os.path.join(ssl, "cert.pem"))
            shutil.copy(self.cert[1], os.path.join(ssl, "key.pem"))
            os.chmod(os.path.join(ssl, "key.pem"), 0o600)
        self.script("dovecot-up.sh")
        self.set_cache(cache)

    def set_cache(self, cache):
        """Auth cache as in the compared pophost run: off (the peer's default) or 10 MB, 300 s.
        Dovecot's cache saves the passdb lookup but still verifies the password against the cached
        hash at every login; `auth_cache_verify_password_with_worker` spreads those verifications
        over auth-worker processes (all cores) instead of the single auth process: its fastest
        setting, so the comparison is the conservative one."""
        with open(self.conf) as f:
            conf = f.read()
        extra = "\nauth_cache_ttl = 300 s\nauth_cache_verify_password_with_worker = yes"
        want = "auth_cache_size = 10M" + extra if cache else "auth_cache_size = 0"
        new = re.sub(r"auth_cache_size = \S+(" + re.escape(extra) + ")?", want, conf, count=1)
        if new != conf:
            with open(self.conf, "w") as f:
                f.write(new)
            os.kill(self.pid, signal.SIGHUP)  # the master re-reads its config and restarts auth
            time.sleep(2)
            wait_port(self.pop3)
        got = sh(["doveconf", "-c", self.conf, "-h", "auth_cache_size"]).strip()
        log(f"dovecot auth_cache_size = {got}")

    @property
    def pid(self):
        with open(os.path.join(self.anchor, "run", "master.pid")) as f:
            return int(f.read().strip())

    def stop(self):
        self.script("dovecot-down.sh")

    def cleanup(self):
        self.stop()


def message(size, seq, user):
    """A message of `size` octets (CRLF lines), unique by (user, seq); as pop3-bench's."""
    head = (f"From: Bench <bench@pop3-bench.example>\r\nTo: <{user}@{DOMAIN}>\r\nSubject: bench message {seq}\r\n"
            f"Message-ID: <{seq}.{user}@pop3-bench.example>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n"
    n = max(0, (size - len(head)) // len(line))
    return head + line * n


def make_cert(run_dir):
    """One ECDSA P-256 certificate for localhost/127.0.0.1, signed by a CA made for the run (a
    self-signed server certificate is CA:TRUE, which rustls refuses). Returns (ca, cert, key)."""
    d = os.path.join(run_dir, "ssl")
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh(["openssl", "req", "-x509", *ec, "-days", "30", "-keyout", "ca.key", "-out", "ca.pem", "-subj",
        "/CN=pophost-bench CA"], cwd=d)
    sh(["openssl", "req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"], cwd=d)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh(["openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-extfile", "leaf.ext", "-out", "cert.pem"], cwd=d)
    os.chmod(os.path.join(d, "key.pem"), 0o600)
    return tuple(os.path.join(d, n) for n in ("ca.pem", "cert.pem", "key.pem"))


def tree_cpu(pid):
    """CPU seconds (user + system) of `pid` and all its descendants, including the children they
    have reaped (cutime/cstime): Dovecot's master with every login, auth and pop3 process, those
    that ended included (the master reaps them)."""
    kids, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        # fields[1] = ppid; [11..14] = utime stime cutime cstime (stat fields 14-17)
        kids.setdefault(int(fields[1]), []).append(int(d))
        cpu[int(d)] = sum(int(x) for x in fields[11:15])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0)
        todo.extend(kids.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


def with_cpu(s, run):
    """Runs `run()` and adds the server's CPU use to its result: `server_cpu` (cores, i.e. CPU
    seconds per wall second) and, for polls, `polls_per_core_s` and `mailboxes_per_core_5min`."""
    c0, t0 = tree_cpu(s.pid), time.time()
    res = run()
    cores = (tree_cpu(s.pid) - c0) / (time.time() - t0)
    res["server_cpu"] = round(cores, 3)
    rate = res.get("polls_per_s")
    if rate and cores > 0:
        res["polls_per_core_s"] = round(rate / cores, 1)
        res["mailboxes_per_core_5min"] = round(rate / cores * 300)
    return res


def one_run_at_a_time():
    """Waits for any other bench/ run on this machine (they share ports, Dovecot's directory and
    the CPU); the returned file holds the lock until the process ends."""
    lock = open("/tmp/pophost-bench.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another benchmark run is active; waiting for it to finish")
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def psql(url, sql):
    return sh(["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql]).strip()


def wait_port(addr):
    import socket
    host, port = addr.rsplit(":", 1)
    for _ in range(200):
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {addr}")


def loader(args, *scenario):
    """Runs pop3-bench; returns its JSON result."""
    cmd = [args.loader, *scenario]
    p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=raise_nofile)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def record(system, key, res, rnd):
    res = dict(res, system=system, key=key, round=rnd, load=os.getloadavg()[0])
    LOG.write(json.dumps(res) + "\n")
    LOG.flush()
    log(f"{key:14} {system:16} {json.dumps({k: v for k, v in res.items() if k not in ('system', 'key', 'round')})}")
    return res


PROFILE = None  # --profile DIR: perf recordings of the first round of each scenario


def perf_start(name, key, s):
    """Two recordings: the whole machine, flat (which process used the CPU: server, loader, the
    rest of the machine), and for pophost its own process with DWARF call graphs (the release
    binary has .eh_frame and symbols; no debug info needed)."""
    base = os.path.join(PROFILE, f"{key}-{name}")
    procs = [subprocess.Popen(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "499", "-o", base + "-all.data"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    if isinstance(s, Pophost):
        procs.append(subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "299", "--call-graph",
                                       "dwarf,16384", "-p", str(s.pid), "-o", base + "-pophost.data"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)
    return procs


def perf_stop(procs):
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait()


def rounds(servers, n, key, run_one):
    """n rounds; inside each the servers in a rotating order. Returns {system: [results]}."""
    out = {s.name: [] for s in servers}
    for r in range(n):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for s in order:
            procs = perf_start(s.name, key, s) if PROFILE and r == 0 else []
            try:
                res = run_one(s)
            finally:
                perf_stop(procs)
            out[s.name].append(record(s.name, key, res, r))
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def main():
    global LOG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a dry run: small sizes, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4, help="(a) concurrent clients, one mailbox each")
    ap.add_argument("--duration", type=float, default=15, help="(a) seconds per round and server")
    ap.add_argument("--big-mb", type=int, default=50, help="(b) message size, MB")
    ap.add_argument("--big-repeat", type=int, default=3, help="(b) RETRs per round and server; the round counts their median")
    ap.add_argument("--idle", type=int, default=10000, help="(c) connections idle at the greeting")
    ap.add_argument("--idle-login", type=int, default=1000, help="(c) logged-in idle sessions")
    ap.add_argument("--lmtp-count", type=int, default=2000, help="(d) messages per round and server")
    ap.add_argument("--bigbox", type=int, default=50000, help="(e) messages in the big mailbox")
    ap.add_argument("--tls-clients", type=int, default=16, help="(f) concurrent POP3S clients")
    ap.add_argument("--tls-mailboxes", type=int, default=200, help="(f) mailboxes of 20 x 4 KB they take in turn")
    ap.add_argument("--poll-mailboxes", type=int, default=10000, help="(g) mailboxes of 20 messages")
    ap.add_argument("--poll-size", type=int, default=4096, help="(g) message size, octets")
    ap.add_argument("--poll-clients", type=int, default=32, help="(g) clients polling back to back (peak)")
    ap.add_argument("--poll-cap", type=int, default=512, help="(g) most polls in flight at half the peak rate")
    ap.add_argument("--poll-duration", type=float, default=20, help="(g) seconds per round and server")
    ap.add_argument("--loader-threads", type=int, default=1, help="(f)/(g) pop3-bench threads (TLS costs the loader too)")
    ap.add_argument("--only", default="abcde", help="scenarios to run, e.g. 'ad', 'fg'")
    ap.add_argument("--systems", default="sqlite,postgres,dovecot")
    ap.add_argument("--out", default=None, help="raw JSON lines (default: RUN_DIR/results.jsonl)")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="perf-record the first round of each scenario into DIR (not for the measured run)")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    if PROFILE:
        os.makedirs(PROFILE, exist_ok=True)
    if args.quick:
        args.rounds, args.duration, args.big_mb, args.idle, args.idle_login = 1, 3, 5, 300, 30
        args.lmtp_count, args.bigbox = 200, 2000
        args.tls_mailboxes, args.poll_mailboxes, args.poll_duration = 40, 300, 3
    raise_nofile()
    lock = one_run_at_a_time()  # noqa: F841 (held until exit)

    run_dir = tempfile.mkdtemp(prefix="pophost-bench-")
    binary = os.path.join(run_dir, "pophost")
    shutil.copy2(os.environ.get("POPHOST_BIN") or os.path.join(TARGET, "release", "pophost"), binary)
    args.loader = os.path.join(run_dir, "pop3-bench")
    shutil.copy2(os.path.join(TARGET, "release", "pop3-bench"), args.loader)
    LOG = open(args.out or os.path.join(run_dir, "results.jsonl"), "w")
    log(f"run dir {run_dir}; load {os.getloadavg()}; {sh(['uname', '-srm']).strip()}")

    want = args.systems.split(",")
    tls = "f" in args.only or "g" in args.only
    ca, cert, key = make_cert(run_dir) if tls else (None, None, None)
    pair = (cert, key) if tls else None
    servers = []
    if "sqlite" in want:
        servers.append(Pophost("sqlite", "sqlite", 21310, 21324, run_dir, binary, 21395, pair))
    if "postgres" in want:
        servers.append(Pophost("postgres", "postgres", 21410, 21424, run_dir, binary, 21495, pair))
    if "dovecot" in want:
        servers.append(Dovecot(pair))
    A = [f"a{i}" for i in range(args.clients)]
    D = [f"d{i}" for i in range(10)]
    I = [f"i{i}" for i in range(args.idle_login)]
    users = A + D + I + ["big", "huge"]
    # (f) and (g): their own users; Dovecot stores their passwords {PLAIN} (password cost out; on
    # pophost the auth cache takes it out).
    F = [f"f{i}" for i in range(args.tls_mailboxes)] if "f" in args.only else []
    G = [f"g{i}" for i in range(args.poll_mailboxes)] if "g" in args.only else []
    results = {}
    try:
        for s in servers:
            log(f"provisioning {len(users) + len(F) + len(G)} users on {s.name}")
            if isinstance(s, Dovecot):
                s.provision(users)
                if F or G:
                    s.provision(F + G, plain=True)
            else:
                s.provision(users + F + G)
            s.start(cache=False)
        # Mail for (a): 20 messages of ~4 KB in each (a) mailbox; (b): one big message; (e): the
        # big mailbox. Delivered over LMTP like any mail (not timed).
        for s in servers:
            t = time.time()
            if "a" in args.only:
                loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "a{}@" + DOMAIN, "--rcpts", str(len(A)),
                       "--count", str(20 * len(A)), "--size", "4096", "--clients", "4")
            if "b" in args.only:
                loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "big@" + DOMAIN, "--count", "1",
                       "--size", str(args.big_mb * 1000 * 1000), "--clients", "1")
            if "e" in args.only:
                r = loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "huge@" + DOMAIN, "--count", str(args.bigbox),
                           "--size", "300", "--clients", "10")
                log(f"{s.name}: {args.bigbox} messages into the big mailbox at {r['msgs_per_s']}/s")
            if F:
                loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "f{}@" + DOMAIN, "--rcpts", str(len(F)),
                       "--count", str(20 * len(F)), "--size", "4096", "--clients", "4")
            if G:
                t1 = time.time()
                if isinstance(s, Dovecot):
                    s.write_maildirs(G, 20, args.poll_size)
                    how = "written into the Maildirs"
                else:
                    r = loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "g{}@" + DOMAIN, "--rcpts", str(len(G)),
                               "--count", str(20 * len(G)), "--size", str(args.poll_size), "--clients", "16")
                    how = f"over LMTP at {r['msgs_per_s']}/s"
                log(f"{s.name}: (g) {20 * len(G)} messages {how} in {time.time() - t1:.0f} s")
            log(f"{s.name}: mail delivered in {time.time() - t:.0f} s")

        def sessions(s):
            return loader(args, "sessions", "--addr", s.pop3, "--user", "a{}@" + DOMAIN, "--users", str(len(A)),
                          "--pass", PASSWORD, "--clients", str(args.clients), "--duration", str(args.duration),
                          "--expect", "20")

        if "a" in args.only:
            results["a_nocache"] = rounds(servers, args.rounds, "a_nocache", sessions)
        if "b" in args.only:
            results["b"] = rounds(servers, args.rounds, "b", lambda s: loader(
                args, "retr", "--addr", s.pop3, "--user", "big@" + DOMAIN, "--pass", PASSWORD,
                "--repeat", str(args.big_repeat), "--server-pid", str(s.pid)))
        if "d" in args.only:
            results["d"] = rounds(servers, args.rounds, "d", lambda s: loader(
                args, "lmtp", "--addr", s.lmtp, "--rcpt", "d{}@" + DOMAIN, "--rcpts", "10", "--clients", "10",
                "--count", str(args.lmtp_count), "--size", "4096"))
        if "e" in args.only:
            # One untimed login first: Dovecot builds its index of a Maildir on first open.
            for s in servers:
                loader(args, "bigbox", "--addr", s.pop3, "--user", "huge@" + DOMAIN, "--pass", PASSWORD, "--repeat", "1")
            results["e"] = rounds(servers, args.rounds, "e", lambda s: loader(
                args, "bigbox", "--addr", s.pop3, "--user", "huge@" + DOMAIN, "--pass", PASSWORD, "--repeat", "3"))
        if F or G:
            # POP3S with the auth cache on both (pophost: for the whole run, so no entry expires
            # during it; Dovecot: its cache as in (a)), then one untimed poll of every mailbox:
            # it fills both auth caches and lets Dovecot index each Maildir.
            for s in servers:
                if isinstance(s, Pophost):
                    s.stop()
                    s.start(cache=86400)
                else:
                    s.set_cache(True)
            tls_args = ["--tls", "--ca", ca]
            for s in servers:
                t = time.time()
                for group in (F, G):
                    if group:
                        loader(args, "poll", "--addr", s.pop3s, "--user", group[0][0] + "{}@" + DOMAIN,
                               "--users", str(len(group)), "--pass", PASSWORD, "--clients", "16",
                               "--polls", str(len(group)), "--expect", "20", *tls_args)
                log(f"{s.name}: warm-up poll of {len(F) + len(G)} mailboxes in {time.time() - t:.0f} s")
            lt = ["--threads", str(args.loader_threads)]

            def tls_sessions(resume):
                return lambda s: with_cpu(s, lambda: loader(
                    args, *lt, "sessions", "--addr", s.pop3s, "--user", "f{}@" + DOMAIN, "--users", str(len(F)),
                    "--rotate", "--pass", PASSWORD, "--clients", str(args.tls_clients), "--duration",
                    str(args.duration), "--expect", "20", *tls_args, *(["--resume"] if resume else [])))

            if F:
                results["f_full"] = rounds(servers, args.rounds, "f_full", tls_sessions(False))
                results["f_resume"] = rounds(servers, args.rounds, "f_resume", tls_sessions(True))
            if G:
                def poll(s, *extra):
                    return with_cpu(s, lambda: loader(
                        args, *lt, "poll", "--addr", s.pop3s, "--user", "g{}@" + DOMAIN, "--users", str(len(G)),
                        "--pass", PASSWORD, "--duration", str(args.poll_duration), "--expect", "20", *tls_args,
                        *extra))

                results["g_peak"] = rounds(servers, args.rounds, "g_peak",
                                           lambda s: poll(s, "--clients", str(args.poll_clients)))
                peak = {n: median([r["polls_per_s"] for r in rs]) for n, rs in results["g_peak"].items()}
                log(f"(g) peak polls/s {peak}; p99 at half of each")
                results["g_half"] = rounds(servers, args.rounds, "g_half", lambda s: poll(
                    s, "--rate", str(round(peak[s.name] / 2, 1)), "--clients", str(args.poll_cap)))
        if "c" in args.only:
            def fresh(s):
                """pophost restarted, so the memory earlier scenarios left in its allocator does not
                hide the growth; then 4 logins (closed again) so the argon2 working memory (19 MiB
                per hash in flight) is not counted as the sessions'. Dovecot forks per session:
                its long-lived processes are warmed the same way."""
                if isinstance(s, Pophost):
                    s.stop()
                    s.start(cache=False)
                elif F or G:
                    s.set_cache(False)
                loader(args, "idle", "--addr", s.pop3, "--count", "4", "--user", "a{}@" + DOMAIN, "--pass", PASSWORD,
                       "--server-pid", str(s.pid), "--concurrency", "4", "--settle", "0")
                time.sleep(1)

            def idle_login(s):
                fresh(s)
                return loader(args, "idle", "--addr", s.pop3, "--count", str(args.idle_login), "--user",
                              "i{}@" + DOMAIN, "--pass", PASSWORD, "--server-pid", str(s.pid), "--concurrency", "4",
                              "--settle", "3")

            def idle_greeting(s):
                fresh(s)
                return loader(args, "idle", "--addr", s.pop3, "--count", str(args.idle), "--server-pid", str(s.pid),
                              "--concurrency", "16")

            results["c_login"] = rounds(servers, 1, "c_login", idle_login)
            results["c_greeting"] = rounds(servers, 1, "c_greeting", idle_greeting)
        if "a" in args.only:
            for s in servers:
                if isinstance(s, Pophost):
                    s.stop()
                    s.start(cache=True)
                else:
                    s.set_cache(True)
            results["a_cache"] = rounds(servers, args.rounds, "a_cache", sessions)
    finally:
        for s in servers:
            try:
                s.cleanup()
            except Exception as e:  # keep cleaning up the others
                log(f"cleanup {s.name}: {e}")
    report(results, servers, args, run_dir)


METRICS = [
    # key, field, label, better ("hi": pophost/dovecot >= target, "lo": dovecot/pophost >= target), target
    ("a_nocache", "sessions_per_s", "(a) sessions/s, auth cache off", "hi", 1.8),
    ("a_nocache", "p99_ms", "(a) session p99 ms, cache off", None, None),
    ("a_cache", "sessions_per_s", "(a) sessions/s, auth cache on", "hi", 3.0),
    ("a_cache", "p99_ms", "(a) session p99 ms, cache on", None, None),
    ("b", "mb_per_s", "(b) RETR 50 MB, MB/s", "hi", 2.0),
    ("b", "peak_growth_kb", "(b) server PSS growth, KiB", None, None),
    ("c_greeting", "kb_per_conn", "(c) KiB per idle conn, greeting", None, None),
    ("c_login", "kb_per_conn", "(c) KiB per idle session, logged in", "lo", 20.0),
    ("d", "msgs_per_s", "(d) LMTP msgs/s, 10 deliverers", "hi", 2.0),
    ("d", "p99_ms", "(d) LMTP p99 ms", None, None),
    ("e", "median_ms", "(e) login+STAT+UIDL ms", "lo", 2.0),
    ("f_full", "sessions_per_s", "(f) POP3S sessions/s, full handshakes", "hi", 3.0),
    ("f_full", "p99_ms", "(f) POP3S session p99 ms", None, None),
    ("f_full", "server_cpu", "(f) server cores, full handshakes", None, None),
    ("f_resume", "sessions_per_s", "(f) POP3S sessions/s, resumption", "hi", 4.0),
    ("f_resume", "resumed_frac", "(f) share of handshakes resumed", None, None),
    ("f_resume", "server_cpu", "(f) server cores, resumption", None, None),
    ("g_peak", "polls_per_s", "(g) POP3S polls/s, peak", "hi", 4.0),
    ("g_peak", "p99_ms", "(g) poll p99 ms at peak", None, None),
    ("g_peak", "server_cpu", "(g) server cores at peak", None, None),
    ("g_peak", "mailboxes_per_core_5min", "(g) mailboxes/core, 5-min polls", "hi", None),
    ("g_half", "polls_per_s", "(g) polls/s offered: half each peak", None, None),
    ("g_half", "p99_ms", "(g) poll p99 ms at half peak", "lo", None),
]


def report(results, servers, args, run_dir):
    names = [s.name for s in servers]
    print()
    print(f"rounds={args.rounds} clients={args.clients} duration={args.duration}s big={args.big_mb}MB "
          f"idle={args.idle}/{args.idle_login} lmtp={args.lmtp_count} bigbox={args.bigbox}; "
          f"load at end {os.getloadavg()}; raw results in {LOG.name}")
    head = f"| {'metric':38} | " + " | ".join(f"{n:>9}" for n in names)
    if "dovecot" in names:
        head += " | " + " | ".join(f"{n + '/dov':>12}" for n in names if n != "dovecot") + " | target"
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    loader_cpu = []
    for key, field, label, better, target in METRICS:
        if key not in results:
            continue
        vals = {n: median([r[field] for r in results[key][n] if r.get(field) is not None]) for n in names}
        for n in names:
            loader_cpu += [r["loader_cpu"] for r in results[key][n]]
        row = f"| {label:38} | " + " | ".join(f"{vals[n]:>9.1f}" for n in names)
        if "dovecot" in names:
            cells = []
            for n in names:
                if n == "dovecot":
                    continue
                if better == "lo":
                    if vals[n] <= 0:  # below what PSS can resolve at this count
                        cells.append("n/a (<=0)")
                        continue
                    ratio = vals["dovecot"] / vals[n]
                    cells.append(f"{ratio:>11.2f}x")
                else:
                    ratio = vals[n] / vals["dovecot"] if vals["dovecot"] else float("inf")
                    cells.append(f"{ratio:>11.2f}x")
            tgt = "" if target is None else (f">= {target}x" + (" (dov/pophost)" if better == "lo" else ""))
            if target is not None:
                ok = []
                for n in names:
                    if n == "dovecot":
                        continue
                    if better == "lo":
                        r = vals["dovecot"] / vals[n] if vals[n] > 0 else float("inf")
                    else:
                        r = vals[n] / vals["dovecot"] if vals["dovecot"] else float("inf")
                    ok.append(f"{n}:{'met' if r >= target else 'NOT met'}")
                tgt += " " + ", ".join(ok)
            row += " | " + " | ".join(f"{c:>12}" for c in cells) + " | " + tgt
        print(row + " |")
    if loader_cpu:
        print(f"loader CPU share (core-seconds per second): median {median(loader_cpu):.2f}, max {max(loader_cpu):.2f}")


if __name__ == "__main__":
    main()
