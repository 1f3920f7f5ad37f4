#!/usr/bin/env python3
"""(j) Postgres failovers under load, many in a row: a primary and a synchronous streaming standby
on loopback (initdb, `pg_basebackup -R -X stream`, `synchronous_standby_names = '*'`), one pophost
reaching the primary through HAProxy (TCP mode; repointed over its runtime API on the stats socket,
`set server pg/db addr 127.0.0.1 port N`, no reload: sqlx has no multi-host connection string).

    cargo build --release -p pophost            # or: cargo build -p pophost, and --debug
    python3 bench/failover.py [--failovers 20] [--debug] [--mailboxes 12] [--load-secs 4]

Each failover: load runs (2 POP3 sessions per mailbox contending for it, each login, UIDL, TOP and
DELE of the first two messages, QUIT; 2 LMTP clients delivering round the mailboxes), then kill -9
of the primary's postmaster and all its children, --outage-ms without a primary, `pg_ctl promote`
of the standby, HAProxy repointed (its sessions to the old primary shut down), load on for
--load-secs, then a new standby built from the new primary and made synchronous again (the new
primary runs alone until then). pophost is never restarted. After each failover it checks, from
what the clients saw:

    lost      deliveries that got a 250 and are neither in the store nor deleted by a session (what
              the clients cannot account for is looked up in `messages` and `binned_messages`,
              the recycle bin every POP3 deletion moves a message to)
    half      sessions whose DELEs were applied in part (the next session's UIDL listing, or the
              final one, holds some but not all of them); only messages whose delivery was
              acknowledged count (one committed on the old primary alone was never acknowledged)
    unapplied QUITs answered +OK whose DELEs are not all applied
    double    a mailbox held by two sessions at once: a later session's login +OK received before
              an earlier one sent its QUIT, both QUITs deleting something and answered +OK
    login     time from the kill to the first successful login after the promotion

and prints one line per failover and the totals. Needs: haproxy, the Postgres server binaries
(/usr/lib/postgresql/*/bin), psql; runs the Postgres servers as the `postgres` user when root.
Postgres runs with fsync=off (a kill -9 of processes loses nothing the OS has; the machine does
not crash here).
"""
import argparse, glob, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
DOMAIN = "example.com"
PASSWORD = "failover-pass-1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_postgres(args):
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stdout}{r.stderr}")
    return r.stdout.strip()


def psql(url, sql):
    return run(["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])


class Pair:
    """A primary and a synchronous standby (as pgtest::ReplicatedPair)."""

    def __init__(self, root):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1].rsplit("/", 1)[0]
        self.root, self.n = root, 0
        self.primary = self.node()
        run(as_postgres([f"{self.bin}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D",
                         self.primary["data"]]))
        self.pg_ctl(self.primary, "start", "-w", "-t", "60")
        self.standby = None
        self.add_standby()

    def node(self):
        d = os.path.join(self.root, f"n{self.n}")
        self.n += 1
        os.mkdir(d)
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
        return {"dir": d, "data": os.path.join(d, "data"), "port": free_port()}

    def url(self, node=None, db="postgres"):
        return f"postgres://postgres@127.0.0.1:{(node or self.primary)['port']}/{db}"

    def pg_ctl(self, node, *args):
        opts = f"-p {node['port']} -c listen_addresses=127.0.0.1 -k {node['dir']} -c fsync=off"
        run(as_postgres([f"{self.bin}/pg_ctl", "-D", node["data"], "-l", os.path.join(node["dir"], "log"),
                         "-o", opts, *args]))

    def add_standby(self):
        s = self.node()
        run(as_postgres([f"{self.bin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary["port"]),
                         "-U", "postgres", "-X", "stream", "-R", "-c", "fast", "--no-sync", "-D", s["data"]]))
        self.pg_ctl(s, "start", "-w", "-t", "60")
        self.standby = s
        psql(self.url(), "ALTER SYSTEM SET synchronous_standby_names = '*'")
        psql(self.url(), "SELECT pg_reload_conf()")
        t = time.time()
        while psql(self.url(), "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1":
            if time.time() - t > 60:
                raise RuntimeError("standby not synchronous after 60 s")
            time.sleep(0.05)

    def postmaster_pid(self, node):
        try:
            with open(os.path.join(node["data"], "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def kill_primary(self):
        pid = self.postmaster_pid(self.primary)
        kids = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            kids.append(int(p))
                except (OSError, IndexError, ValueError):
                    pass
        for p in [pid, *kids]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def promote(self):
        old, self.primary, self.standby = self.primary, self.standby, None
        self.pg_ctl(self.primary, "promote", "-w", "-t", "60")
        psql(self.url(), "ALTER SYSTEM RESET synchronous_standby_names")
        psql(self.url(), "SELECT pg_reload_conf()")
        shutil.rmtree(old["dir"], ignore_errors=True)

    def stop(self):
        for node in (self.primary, self.standby):
            if node and os.path.exists(node["data"]):
                subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", node["data"], "stop", "-m", "immediate"]),
                               capture_output=True)


class Haproxy:
    def __init__(self, root, backend_port):
        self.sock = os.path.join(root, "haproxy.sock")
        self.port = free_port()
        cfg = os.path.join(root, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  stats socket {self.sock} mode 600 level admin
  maxconn 2000
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  retries 1
frontend fe
  bind 127.0.0.1:{self.port}
  default_backend pg
backend pg
  server db 127.0.0.1:{backend_port}
""")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(f"127.0.0.1:{self.port}")

    def command(self, line):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(line.encode() + b"\n")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        s.close()
        return out.decode().strip()

    def repoint(self, port):
        self.command("shutdown sessions server pg/db")
        answer = self.command(f"set server pg/db addr 127.0.0.1 port {port}")
        if "changed" not in answer and "no need" not in answer:
            raise RuntimeError(f"haproxy: {answer}")

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def wait_port(addr, limit=30):
    host, port = addr.rsplit(":", 1)
    t = time.time()
    while True:
        try:
            socket.create_connection((host, int(port)), 1).close()
            return
        except OSError:
            if time.time() - t > limit:
                raise RuntimeError(f"nothing listens on {addr}")
            time.sleep(0.05)


class Conn:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), 5)
        self.s.settimeout(30)
        self.f = self.s.makefile("rb")

    def line(self):
        b = self.f.readline()
        if not b:
            raise OSError("closed")
        return b.decode("utf-8", "replace").rstrip("\r\n")

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.line()

    def reply(self, line):
        """An SMTP/LMTP command's reply, multi-line or not: its last line."""
        self.s.sendall(line.encode() + b"\r\n")
        while (l := self.line())[3:4] == "-":
            pass
        return l

    def multi(self, line):
        if not self.cmd(line).startswith("+OK"):
            return None
        out = []
        while (l := self.line()) != ".":
            out.append(l)
        return out

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def mailbox(i):
    return f"user{i}@{DOMAIN}"


def message(subject):
    return f"From: a@example.net\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


class Load:
    """POP3 and LMTP clients; what they saw, with monotonic times."""

    def __init__(self, pop3, lmtp, mailboxes):
        self.pop3, self.lmtp, self.mailboxes = pop3, lmtp, mailboxes
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sessions, self.acked = [], []
        self.threads = [threading.Thread(target=self.pop3_worker, args=(m,)) for m in range(mailboxes)
                        for _ in range(2)]
        self.threads += [threading.Thread(target=self.lmtp_worker, args=(w,)) for w in range(2)]
        self.seq = 0

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def pop3_worker(self, m):
        while not self.stop.is_set():
            try:
                c = Conn(self.pop3)
                c.line()
                c.cmd(f"USER {mailbox(m)}")
                r = c.cmd(f"PASS {PASSWORD}")
            except OSError:
                time.sleep(0.02)
                continue
            if not r.startswith("+OK"):
                c.close()
                time.sleep(0.02)
                continue
            h = {"m": m, "login": time.monotonic(), "listing": [], "deleted": [], "quit_ok": False}
            try:
                lines = c.multi("UIDL") or []
                h["listing"] = [l.split(" ", 1)[1] for l in lines]
                for n, uidl in enumerate(h["listing"][:2], 1):
                    # A message whose subject could not be read (TOP failed while the database
                    # was away) is not deleted: its deletion could not be accounted for.
                    top = c.multi(f"TOP {n} 0")
                    subject = next((x[9:] for x in top or [] if x.startswith("Subject: ")), None)
                    if subject is None or not c.cmd(f"DELE {n}").startswith("+OK"):
                        break
                    h["deleted"].append((uidl, subject))
                else:
                    h["quit_sent"] = time.monotonic()
                    h["quit_ok"] = c.cmd("QUIT").startswith("+OK")
            except OSError:
                pass
            h["end"] = time.monotonic()
            c.close()
            with self.lock:
                self.sessions.append(h)

    def lmtp_worker(self, w):
        n = 0
        while not self.stop.is_set():
            try:
                c = Conn(self.lmtp)
                c.line()
                c.reply("LHLO bench")
            except OSError:
                time.sleep(0.02)
                continue
            try:
                while not self.stop.is_set():
                    m = (w + n) % self.mailboxes
                    subject = f"w{w}-{n}-{self.seq}"
                    n += 1
                    if not c.reply("MAIL FROM:<a@b.example>").startswith("250"):
                        break
                    if not c.reply(f"RCPT TO:<{mailbox(m)}>").startswith("250"):
                        break
                    if not c.reply("DATA").startswith("354"):
                        break
                    c.s.sendall(message(subject) + b".\r\n")
                    if c.line().startswith("250"):
                        with self.lock:
                            self.acked.append((m, subject))
                    else:
                        break
            except OSError:
                pass
            c.close()


def final_state(pop3, mailboxes, limit=30):
    finals = []
    for m in range(mailboxes):
        t = time.time()
        while True:
            try:
                c = Conn(pop3)
                c.line()
                c.cmd(f"USER {mailbox(m)}")
                if c.cmd(f"PASS {PASSWORD}").startswith("+OK"):
                    break
                c.close()
            except OSError:
                pass
            if time.time() - t > limit:
                raise RuntimeError(f"cannot log in to {mailbox(m)} after {limit} s")
            time.sleep(0.1)
        state = []
        for l in c.multi("UIDL") or []:
            n, uidl = l.split(" ", 1)
            top = c.multi(f"TOP {n} 0") or []
            state.append((uidl, next((x[9:] for x in top if x.startswith("Subject: ")), "")))
        c.cmd("QUIT")
        c.close()
        finals.append(state)
    return finals


def check(sessions, acked, finals, known_extra, mailboxes, db_url):
    acked_subjects = {s for _, s in acked} | known_extra
    half = unapplied = double = 0
    removed = set()
    for m in range(mailboxes):
        mine = sorted((h for h in sessions if h["m"] == m), key=lambda h: h["login"])
        # [login +OK received, QUIT sent] lies inside a session's true hold; two of these
        # overlapping, both QUITs that deleted something answered +OK (their fencing tokens were
        # still current), is a double hold.
        held = [h for h in mine if h["quit_ok"] and h["deleted"]]
        for i, h in enumerate(held):
            for later in held[i + 1:]:
                if later["login"] < h["quit_sent"]:
                    double += 1
        for i, h in enumerate(mine):
            nxt = mine[i + 1] if i + 1 < len(mine) else None
            after = set(nxt["listing"]) if nxt else {u for u, _ in finals[m]}
            counted = [u for u, s in h["deleted"] if s in acked_subjects]
            left = sum(1 for u in counted if u in after)
            if left not in (0, len(counted)):
                half += 1
            if h["quit_ok"] and left:
                unapplied += 1
            removed |= {s for u, s in h["deleted"] if u not in after}
    present = {s for f in finals for _, s in f} | removed
    # What the clients could not account for is looked up in the store itself: a message is
    # there, or in the recycle bin (every POP3 deletion moves it there, with its session's token).
    unaccounted = {s for _, s in acked if s not in present}
    lost = sorted(unaccounted - stored_subjects(db_url)) if unaccounted else []
    return lost, half, unapplied, double


def stored_subjects(db_url):
    """The subjects of every message in the store and in its recycle bin."""
    pick = r"substring(convert_from(prefix, 'UTF8') from 'Subject: ([^\r\n]*)')"
    out = psql(db_url, f"SELECT {pick} FROM messages UNION ALL SELECT {pick} FROM binned_messages")
    return set(out.split("\n"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--failovers", type=int, default=20)
    ap.add_argument("--debug", action="store_true", help="target/debug/pophost instead of target/release")
    ap.add_argument("--mailboxes", type=int, default=12)
    ap.add_argument("--seed", type=int, default=6, help="messages per mailbox at the start")
    ap.add_argument("--load-secs", type=float, default=4, help="load before the kill and after the repoint")
    ap.add_argument("--outage-ms", type=int, default=500, help="time without a primary before the promotion")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    args = ap.parse_args()
    binary = os.path.join(TARGET, "debug" if args.debug else "release", "pophost")
    root = tempfile.mkdtemp(prefix="pophost-failover-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pair = proxy = server = None
    try:
        pair = Pair(root)
        proxy = Haproxy(root, pair.primary["port"])
        db_url = proxy.url("failover")
        psql(proxy.url("postgres"), "CREATE DATABASE failover")
        data = os.path.join(root, "pophost")
        os.mkdir(data)
        cfg = os.path.join(data, "pophost.toml")
        with open(cfg, "w") as f:
            f.write('node_id = "fe1"\n[database]\nacquire_timeout_secs = 3\n[locks]\nttl_secs = 3\n'
                    '[auth]\nfailure_delay_ms = 0\nip_penalty_max_secs = 0\n[log]\nfilter = "warn"\n')
        env = dict(os.environ, POPHOST_DATABASE_URL=db_url, RUST_LOG="warn")
        env.pop("POPHOST_CONFIG", None)
        cli = [binary, "--data-dir", data, "--config", cfg]
        pop3, lmtp = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        server = subprocess.Popen(cli + ["serve", "--pop3-listen", pop3, "--pop3s-listen", "127.0.0.1:0",
                                         "--lmtp-listen", lmtp, "--admin-listen", "127.0.0.1:0"],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(root, "pophost.log"), "w"))
        wait_port(pop3)
        wait_port(lmtp)
        run(cli + ["domain", "add", DOMAIN], env=env)
        for m in range(args.mailboxes):
            subprocess.run(cli + ["user", "add", mailbox(m), "--password-stdin"], env=env, input=PASSWORD + "\n",
                           text=True, check=True, capture_output=True)
        seeded = set()
        c = Conn(lmtp)
        c.line()
        c.reply("LHLO bench")
        for m in range(args.mailboxes):
            for s in range(args.seed):
                subject = f"seed{m}-{s}"
                assert c.reply("MAIL FROM:<a@b.example>").startswith("250")
                assert c.reply(f"RCPT TO:<{mailbox(m)}>").startswith("250")
                assert c.reply("DATA").startswith("354")
                c.s.sendall(message(subject) + b".\r\n")
                assert c.line().startswith("250")
                seeded.add(subject)
        c.close()
        print(f"pophost {binary}; {args.mailboxes} mailboxes; load {args.load_secs} s each side; "
              f"outage {args.outage_ms} ms before promotion; run dir {root}")
        print(f"{'#':>3} {'sessions':>8} {'quit+OK':>7} {'acked':>6} {'lost':>5} {'half':>5} {'unappl':>6} "
              f"{'double':>6} {'login_s':>8} {'after_promote_s':>15}")
        totals = dict(sessions=0, quits=0, acked=0, lost=0, half=0, unapplied=0, double=0)
        logins = []
        known = set(seeded)
        for k in range(1, args.failovers + 1):
            load = Load(pop3, lmtp, args.mailboxes)
            load.seq = k
            load.start()
            time.sleep(args.load_secs)
            killed = time.monotonic()
            pair.kill_primary()
            time.sleep(args.outage_ms / 1000)
            pair.promote()
            proxy.repoint(pair.primary["port"])
            promoted = time.monotonic()
            time.sleep(args.load_secs)
            load.finish()
            if server.poll() is not None:
                raise RuntimeError(f"pophost exited ({server.returncode}); see {root}/pophost.log")
            finals = final_state(pop3, args.mailboxes)
            lost, half, unapplied, double = check(load.sessions, load.acked, finals, known, args.mailboxes, db_url)
            first = min((h["login"] for h in load.sessions if h["login"] > promoted), default=None)
            login = first - killed if first else float("nan")
            logins.append(login)
            quits = sum(h["quit_ok"] for h in load.sessions)
            print(f"{k:>3} {len(load.sessions):>8} {quits:>7} {len(load.acked):>6} {len(lost):>5} {half:>5} "
                  f"{unapplied:>6} {double:>6} {login:>8.2f} {(first or promoted) - promoted:>15.2f}", flush=True)
            if lost:
                print(f"    lost: {sorted(lost)[:20]}", flush=True)
            for key, v in (("sessions", len(load.sessions)), ("quits", quits), ("acked", len(load.acked)),
                           ("lost", len(lost)), ("half", half), ("unapplied", unapplied), ("double", double)):
                totals[key] += v
            # What is in the store now is the next round's known state.
            known = {s for f in finals for _, s in f}
            pair.add_standby()
        ok = sorted(x for x in logins if x == x)
        print(f"total: {args.failovers} failovers, {totals['sessions']} sessions ({totals['quits']} QUIT +OK), "
              f"{totals['acked']} deliveries acknowledged; lost {totals['lost']}, QUITs applied by half "
              f"{totals['half']}, +OK QUITs not applied {totals['unapplied']}, double-held {totals['double']}; "
              f"kill to first login: median {ok[len(ok) // 2]:.2f} s, max {ok[-1]:.2f} s")
        bad = totals["lost"] + totals["half"] + totals["unapplied"] + totals["double"]
        sys.exit(1 if bad or len(ok) < len(logins) else 0)
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(40)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if proxy:
            proxy.stop()
        if pair:
            pair.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
