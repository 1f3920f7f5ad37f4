#!/usr/bin/env python3
"""Logins per second by credential (main password, app password, OAuth token), with and without
the auth cache, side by side in one run.

    cargo build --release -p pophost && python3 bench/login_rate.py [--logins 200] [--clients 4]

Starts two release servers on SQLite (one with `auth.cache_ttl_secs = 300`, one without). Each
user has its main password, one app password (`pophost user app-password add`) and a domain
whose OAuth settings name a JWKS file with an ES256 key made here (`openssl`); tokens are signed
here too. CLIENTS concurrent clients log in and QUIT LOGINS times in total per credential and
server: `USER`/`PASS` with the main password, `USER`/`PASS` with the app password, and
`AUTH XOAUTH2` with a token (as Thunderbird sends it: the base64 line after the `+`). Rounds
alternate so machine noise hits every column alike. Reports the best round of each, in logins/s.
"""
import argparse, base64, json, os, socket, subprocess, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS_MAX = 16
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "pophost")
DOMAIN = "bench.example"
PASSWORD = "bench-password-1"
ISSUER, AUDIENCE = "https://id.bench.example", "pophost-bench"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_int(buf, i):
    """One DER INTEGER at buf[i]: its value's bytes and the index after it."""
    assert buf[i] == 0x02
    n = buf[i + 1]
    return buf[i + 2:i + 2 + n], i + 2 + n


class Key:
    """An ES256 key from openssl: its JWKS and tokens signed with it."""

    def __init__(self, work):
        self.pem = os.path.join(work, "es256.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", self.pem], check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", self.pem, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        point = der[-65:]  # the uncompressed point 04 || x || y ends the SubjectPublicKeyInfo
        assert point[0] == 4
        self.jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
                               "x": b64url(point[1:33]), "y": b64url(point[33:])}]}

    def token(self, email):
        header = b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "bench"}).encode())
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "email": email, "iat": now, "exp": now + 3600}
        signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.pem], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        r, i = der_int(der, 2)
        s, _ = der_int(der, i)
        raw = r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")
        return f"{signing_input}.{b64url(raw)}"


def start(port, cache, key, work):
    data = tempfile.mkdtemp(dir=work)
    cfg = os.path.join(data, "pophost.toml")
    with open(cfg, "w") as f:
        f.write(f"[auth]\ncache_ttl_secs = {300 if cache else 0}\nfailure_delay_ms = 0\n")
    jwks = os.path.join(data, "jwks.json")
    with open(jwks, "w") as f:
        json.dump(key.jwks, f)
    cli = [BIN, "--data-dir", data, "--config", cfg]
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("POPHOST_DATABASE_URL", None)
    run = lambda *args: subprocess.run(cli + list(args), env=env, check=True, capture_output=True).stdout
    run("domain", "add", DOMAIN)
    run("domain", "oauth", "set", DOMAIN, "--issuer", ISSUER, "--jwks-file", jwks, "--audience", AUDIENCE,
        "--algorithms", "ES256")
    devices = {}
    for i in range(CLIENTS_MAX):
        user = f"u{i}@{DOMAIN}"
        run("user", "add", user, "--password", PASSWORD)
        devices[user] = run("user", "app-password", "add", user, "--label", "bench").decode().strip()
    p = subprocess.Popen(cli + ["serve", "--pop3-listen", f"127.0.0.1:{port}", "--pop3s-listen", "127.0.0.1:0",
                                "--lmtp-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if p.poll() is not None:
            raise SystemExit(f"server on port {port} exited (port taken?)")
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return p, devices
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def login(port, lines):
    """One session: the greeting, `lines` (each answered by one line, the last must be +OK), QUIT."""
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"".join(line + b"\r\n" for line in lines) + b"QUIT\r\n")
    for _ in lines:
        r = f.readline()
    assert r.startswith(b"+OK"), r
    f.readline()
    s.close()


def rate(port, n, clients, lines_of):
    per = n // clients
    t = time.time()
    # One mailbox per client: a mailbox takes one session at a time.
    threads = [threading.Thread(target=lambda u=f"u{c}@{DOMAIN}": [login(port, lines_of(u)) for _ in range(per)])
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
    work = tempfile.mkdtemp()
    key = Key(work)
    tokens = {f"u{i}@{DOMAIN}": key.token(f"u{i}@{DOMAIN}") for i in range(CLIENTS_MAX)}
    servers = {"cache off": (21210, *start(21210, False, key, work)),
               "cache on": (21211, *start(21211, True, key, work))}
    try:
        best = {}
        for _ in range(a.rounds):
            for name, (port, _, devices) in servers.items():
                credentials = {
                    "main password": lambda u: [f"USER {u}".encode(), f"PASS {PASSWORD}".encode()],
                    "app password": lambda u, d=devices: [f"USER {u}".encode(), f"PASS {d[u]}".encode()],
                    "XOAUTH2 token": lambda u: [b"AUTH XOAUTH2", base64.b64encode(
                        f"user={u}\x01auth=Bearer {tokens[u]}\x01\x01".encode())],
                }
                for credential, lines_of in credentials.items():
                    r = rate(port, a.logins, a.clients, lines_of)
                    best[(name, credential)] = max(best.get((name, credential), 0), r)
        print(f"logins/s, {a.clients} clients, {a.logins} logins x {a.rounds} rounds (best round):")
        for name in servers:
            row = ", ".join(f"{c} {best[(name, c)]:.0f}/s" for c in ("main password", "app password", "XOAUTH2 token"))
            print(f"  {name}: {row}")
    finally:
        for _, p, _ in servers.values():
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
