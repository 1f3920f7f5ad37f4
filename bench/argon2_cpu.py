#!/usr/bin/env python3
"""CPU time of one argon2id hash (m=19456 KiB, t=2, p=1): the argon2 crate (which pophost hashes new
passwords with, and used to verify with) against libsodium (which Dovecot verifies with, and
pophost now too: see crates/tenancy/src/password.rs), taken in turn so machine noise hits both
alike.

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


def libsodium(n):
    start = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        assert sodium.crypto_pwhash(OUT, ctypes.c_ulonglong(32), PASS, ctypes.c_ulonglong(len(PASS)), SALT,
                                    ctypes.c_ulonglong(2), ctypes.c_size_t(19456 * 1024), ctypes.c_int(2)) == 0
    end = resource.getrusage(resource.RUSAGE_SELF)
    return (end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime) * 1000 / n


def crate(n):
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([EXAMPLE, str(n)], check=True, capture_output=True)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime) * 1000 / n


libsodium(1)
ours, theirs = [], []
for _ in range(5):
    ours.append(crate(10))
    theirs.append(libsodium(10))
for name, xs in (("argon2 crate (pophost)", ours), ("libsodium (Dovecot)", theirs)):
    print(f"{name:24} CPU ms per hash: median {statistics.median(xs):.1f}  runs {[round(x, 1) for x in xs]}")
