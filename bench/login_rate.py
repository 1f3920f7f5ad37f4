#!/usr/bin/env python3
"""Logins per second with and without the auth cache, side by side in one run.

    cargo build --release -p pophost && python3 bench/login_rate.py [--logins 200] [--clients 4]

Starts two release servers on SQLite (one with `auth.cache_ttl_secs = 300`, one without), and
has CLIENTS concurrent clients log in and QUIT LOGINS times in total against each, alternating
rounds so machine noise hits both alike. Reports logins/s and the ratio.
"""
import argparse, os, socket, subprocess, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS_MAX = 16
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "pophost")


def start(port, cache):
    data = tempfile.mkdtemp()
    cfg = os.path.join(data, "pophost.toml")
    with open(cfg, "w") as f:
        f.write(f"[auth]\ncache_ttl_secs = {300 if cache else 0}\nfailure_delay_ms = 0\n")
    cli = [BIN, "--data-dir", data, "--config", cfg]
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("POPHOST_DATABASE_URL", None)
    subprocess.run(cli + ["domain", "add", "bench.example"], env=env, check=True, capture_output=True)
    for i in range(CLIENTS_MAX):
        subprocess.run(cli + ["user", "add", f"u{i}@bench.example", "--password", "pw"], env=env, check=True, capture_output=True)
    p = subprocess.Popen(cli + ["serve", "--pop3-listen", f"127.0.0.1:{port}", "--pop3s-listen", "127.0.0.1:0",
                                "--lmtp-listen", "127.0.0.1:0"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return p
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def login(port, user):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"USER {user}\r\nPASS pw\r\nQUIT\r\n".encode())
    f.readline()
    r = f.readline()
    assert r.startswith(b"+OK"), r
    f.readline()
    s.close()


def rate(port, n, clients):
    per = n // clients
    t = time.time()
    # One mailbox per client: a mailbox takes one session at a time.
    threads = [threading.Thread(target=lambda u=f"u{c}@bench.example": [login(port, u) for _ in range(per)])
               for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per * clients / (time.time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    assert a.clients <= CLIENTS_MAX
    off, on = start(21210, False), start(21211, True)
    try:
        r_off, r_on = [], []
        for _ in range(a.rounds):
            r_off.append(rate(21210, a.logins, a.clients))
            r_on.append(rate(21211, a.logins, a.clients))
        off_best, on_best = max(r_off), max(r_on)
        print(f"logins/s, {a.clients} clients, {a.logins} logins x {a.rounds} rounds (best round): "
              f"cache off {off_best:.0f}/s, cache on {on_best:.0f}/s, ratio {on_best / off_best:.1f}x")
    finally:
        for p in (off, on):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
