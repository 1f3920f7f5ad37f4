#!/usr/bin/env python3
"""Memory per idle logged-in POP3 session, on Postgres.

Starts a release `pophost serve` on a fresh Postgres database, provisions N users (one argon2
hash, copied in SQL), logs N sessions in and leaves them idle, then reports the server's RSS
growth per session and how many database connections the idle sessions hold.

    cargo build --release -p pophost && python3 bench/idle_sessions.py [--sessions 1000]

Needs a Postgres server (POPHOST_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres).
"""
import argparse, os, re, resource, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "pophost")


def psql(url, sql):
    return subprocess.run(["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def login(addr, user):
    s = socket.create_connection(addr)
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    s.sendall(f"USER {user}\r\nPASS pw\r\n".encode())
    assert f.readline().startswith(b"+OK")
    reply = f.readline()
    assert reply.startswith(b"+OK"), reply
    return s, f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    n = ap.parse_args().sessions
    resource.setrlimit(resource.RLIMIT_NOFILE, (n * 2 + 256, n * 2 + 256))
    server_url = os.environ.get("POPHOST_TEST_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db = "pophost_bench_idle"
    psql(server_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(server_url, f"CREATE DATABASE {db}")
    url = re.sub(r"/[^/?]*(\?|$)", f"/{db}\\1", server_url.split("://", 1)[1], count=1)
    url = server_url.split("://", 1)[0] + "://" + url
    env = dict(os.environ, POPHOST_DATABASE_URL=url, RUST_LOG="warn")
    data = tempfile.mkdtemp()
    cli = [BIN, "--data-dir", data]
    subprocess.run(cli + ["migrate"], env=env, check=True, capture_output=True)
    subprocess.run(cli + ["domain", "add", "bench.example"], env=env, check=True, capture_output=True)
    subprocess.run(cli + ["user", "add", "u0@bench.example", "--password", "pw"], env=env, check=True, capture_output=True)
    psql(url, f"INSERT INTO users (domain_id, localpart, password_hash) "
              f"SELECT domain_id, 'u' || g, password_hash FROM users, generate_series(1, {n}) g WHERE localpart = 'u0'")
    port = 21110
    server = subprocess.Popen(cli + ["serve", "--pop3-listen", f"127.0.0.1:{port}", "--lmtp-listen", "127.0.0.1:0"],
                              env=env, stderr=subprocess.DEVNULL)
    addr = ("127.0.0.1", port)
    try:
        for _ in range(100):
            try:
                socket.create_connection(addr).close()
                break
            except OSError:
                time.sleep(0.1)
        # Warm up: the first logins size the allocator's arenas for argon2 (~19 MiB each).
        warm = [login(addr, f"u{n}@bench.example") for _ in range(1)]
        for s, _ in warm:
            s.sendall(b"QUIT\r\n")
        time.sleep(1)
        before = rss_kb(server.pid)
        t = time.time()
        sessions = [login(addr, f"u{i}@bench.example") for i in range(n)]
        took = time.time() - t
        time.sleep(2)
        after = rss_kb(server.pid)
        conns = psql(url, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'pophost'")
        active = psql(url, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'pophost' AND state <> 'idle'")
        print(f"{n} idle logged-in sessions: RSS {before} kB -> {after} kB, "
              f"{(after - before) / n:.1f} kB per session; "
              f"{conns} pooled Postgres connections open ({active} busy); logins took {took:.1f} s "
              f"({n / took:.0f}/s, argon2id m=19456 t=2 p=1)")
        for s, _ in sessions:
            s.close()
    finally:
        server.terminate()
        server.wait()
        psql(server_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
