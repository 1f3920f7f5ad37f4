#!/usr/bin/env python3
"""CPU time of one argon2id hash (m=19456 KiB, t=2, p=1), three ways, taken in turn so machine noise
hits all alike: the argon2 crate (which pophost hashes new passwords with), pophost's verification
(libsodium built into it, working memory from malloc: see crates/tenancy/src/password.rs), and the
system's libsodium as Dovecot verifies with it (a fresh mapping of its working memory per hash).
User and system CPU apart: the system part is mostly faulting in fresh pages.

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p tenancy --example argon2_cpu
    python3 bench/argon2_cpu.py          # needs libsodium.so.23 (Debian: libsodium23, with Dovecot)
"""
import ctypes, os, resource, statistics, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                       "release", "examples", "argon2_cpu")
sodium = ctypes.CDLL("libsodium.so.23")
assert sodium.sodium_init() >= 0
OUT, PASS, SALT = ctypes.create_string_buffer(32), b"bench-pass-1", b"somesaltsomesalt"


def per_hash(start, end, n):
    user, sys = ((end.ru_utime - start.ru_utime) * 1000 / n, (end.ru_stime - start.ru_stime) * 1000 / n)
    return user + sys, user, sys


def dovecot(n):
    start = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        assert sodium.crypto_pwhash(OUT, ctypes.c_ulonglong(32), PASS, ctypes.c_ulonglong(len(PASS)), SALT,
                                    ctypes.c_ulonglong(2), ctypes.c_size_t(19456 * 1024), ctypes.c_int(2)) == 0
    return per_hash(start, resource.getrusage(resource.RUSAGE_SELF), n)


def example(mode, n):
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([EXAMPLE, mode, str(n)], check=True, capture_output=True)
    return per_hash(start, resource.getrusage(resource.RUSAGE_CHILDREN), n)


dovecot(1)
runs = {"argon2 crate": [], "pophost (libsodium)": [], "Dovecot (libsodium)": []}
for _ in range(5):
    runs["argon2 crate"].append(example("crate", 10))
    runs["pophost (libsodium)"].append(example("sodium", 10))
    runs["Dovecot (libsodium)"].append(dovecot(10))
for name, xs in runs.items():
    total, user, sys = (statistics.median(x[i] for x in xs) for i in range(3))
    print(f"{name:20} CPU ms per hash: median {total:.1f} (user {user:.1f}, system {sys:.1f})  "
          f"runs {[round(x[0], 1) for x in xs]}")
