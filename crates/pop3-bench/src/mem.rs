//! The server's memory as Linux reports it: the sum of PSS (proportional set size, from
//! `/proc/PID/smaps_rollup`) over a process and all its descendants. One process (pophost) is
//! counted whole; a forking server (Dovecot: one `pop3` process per session) is counted with its
//! shared pages split between the processes that share them, which is what it really costs.

use std::collections::HashMap;
use std::fs;

/// `pid` and every descendant, read from `/proc/*/stat`.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u32>().ok())
            {
                parent.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        if let Some(kids) = parent.get(&p) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

fn field_kb(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Summed PSS of the tree in KiB, and how many processes it has.
pub fn pss_kb(pid: u32) -> (u64, usize) {
    let t = tree(pid);
    let sum = t
        .iter()
        .map(|p| field_kb(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
        .sum();
    (sum, t.len())
}

/// The loader's own CPU time (user + system) in seconds, from `/proc/self/stat`.
pub fn self_cpu_secs() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12), in clock ticks (USER_HZ = 100 on Linux).
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measured() {
        let me = std::process::id();
        assert_eq!(tree(me).first(), Some(&me));
        let (pss, n) = pss_kb(me);
        assert!(pss > 0 && n >= 1);
    }
}
