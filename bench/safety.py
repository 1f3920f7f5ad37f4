#!/usr/bin/env python3
"""What the mailbox-safety features cost on the paths they touch: one pophost build, side by side in
one run on SQLite, with the recycle bin and LMTP deduplication on (the defaults: `bin_days` 7,
`lmtp.dedup_window_secs` 600) and with both off (`bin_days` 0, `dedup_window_secs` 0).

    CARGO_TARGET_DIR=$PWD/target cargo build --release -p pophost -p pop3-bench
    python3 bench/safety.py [--rounds 3] [--duration 15]

Two scenarios, the two servers alternating inside each round (as in bench/run.py):

    dele   full sessions that delete: 4 clients over 40 mailboxes of 20 x 4 KB, each session
           USER/PASS, STAT, UIDL, RETR of every message, DELE 1, QUIT, then a replacement message
           over LMTP (so mailboxes keep their size): every QUIT bins a message (on) or deletes it
           (off), every replacement is checked for a duplicate (on) or not (off).
    lmtp   10 LMTP clients delivering 4 KB messages to 10 recipients each (scenario (d)): a
           delivery key per recipient is written (on) or not (off).

Prints the median of the rounds per server and the on/off ratio. The re-download alarm and the
trace hooks cannot be turned off: both servers pay for them.
"""
import argparse, os, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: the servers, the loader, rounds and medians)


class Variant(run.Pophost):
    def __init__(self, name, pop3_port, lmtp_port, run_dir, binary, on):
        self.on = on
        super().__init__(name, "sqlite", pop3_port, lmtp_port, run_dir, binary)

    def write_config(self, cache):
        super().write_config(cache)
        if not self.on:
            with open(self.cfg) as f:
                text = f.read()
            with open(self.cfg, "w") as f:
                f.write(text.replace("[lmtp]\n", "[lmtp]\ndedup_window_secs = 0\n"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=15, help="dele: seconds per round and server")
    ap.add_argument("--lmtp-count", type=int, default=3000, help="lmtp: messages per round and server")
    args = ap.parse_args()
    args.loader = os.path.join(run.TARGET, "release", "pop3-bench")
    binary = os.path.join(run.TARGET, "release", "pophost")
    run_dir = tempfile.mkdtemp(prefix="pophost-safety-")
    run.LOG = open(os.path.join(run_dir, "results.jsonl"), "w")
    servers = [Variant("on", 21510, 21524, run_dir, binary, True),
               Variant("off", 21610, 21624, run_dir, binary, False)]
    users = [f"a{i}" for i in range(40)] + [f"d{i}" for i in range(10)]
    try:
        for s in servers:
            s.provision(users)
            s.cli("domain", "set", run.DOMAIN, "--bin-days", "7" if s.on else "0")
            s.start(cache=False)
            run.loader(args, "lmtp", "--addr", s.lmtp, "--rcpt", "a{}@" + run.DOMAIN, "--rcpts", "40",
                       "--clients", "4", "--count", "20", "--size", "4096")
        dele = run.rounds(servers, args.rounds, "dele", lambda s: run.loader(
            args, "sessions", "--addr", s.pop3, "--user", "a{}@" + run.DOMAIN, "--users", "40",
            "--pass", run.PASSWORD, "--clients", "4", "--duration", str(args.duration),
            "--dele-every", "1", "--lmtp", s.lmtp))
        lmtp = run.rounds(servers, args.rounds, "lmtp", lambda s: run.loader(
            args, "lmtp", "--addr", s.lmtp, "--rcpt", "d{}@" + run.DOMAIN, "--rcpts", "10",
            "--clients", "10", "--count", str(args.lmtp_count), "--size", "4096"))
    finally:
        for s in servers:
            s.cleanup()
    print(f"{'scenario':10} {'on':>12} {'off':>12} {'on/off':>8}")
    for key, results, field in (("dele", dele, "sessions_per_s"), ("lmtp", lmtp, "msgs_per_s")):
        on = run.median([r[field] for r in results["on"]])
        off = run.median([r[field] for r in results["off"]])
        print(f"{key + ' ' + field:28} {on:>10.1f} {off:>10.1f} {on / off:>8.2f}")
    print(f"raw results: {run_dir}/results.jsonl")


if __name__ == "__main__":
    main()
