//! What the POP3 frontend tells operators besides its replies: Prometheus metrics through the
//! `metrics` facade (a no-op until the binary installs a recorder, so library users and tests
//! pay nothing), per-session tallies for the logout summary line, and the per-address
//! connection limit before login. Label values are always from small fixed sets: a client can
//! never create a new time series by what it types.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop3_proto::{Command, Reply, RespCode};

/// The metric names, in one place so the README table and the code agree.
pub mod names {
    pub const COMMANDS: &str = "pophost_pop3_commands_total";
    pub const LOGINS: &str = "pophost_pop3_logins_total";
    pub const BYTES_SENT: &str = "pophost_pop3_bytes_sent_total";
    pub const RETRIEVED: &str = "pophost_messages_retrieved_total";
    pub const DELETED: &str = "pophost_messages_deleted_total";
    pub const LOCK_CONFLICTS: &str = "pophost_lock_conflicts_total";
    pub const STORE_SECONDS: &str = "pophost_store_seconds";
    pub const LIMITED: &str = "pophost_pop3_limited_total";
    /// Maildrops this frontend's sessions hold locked now (read from `lease::Kicks`).
    pub const MAILDROPS_HELD: &str = "pophost_maildrops_held";
}

/// The command's keyword, for the per-command counter.
pub(crate) fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::User(_) => "USER",
        Command::Pass(_) => "PASS",
        Command::Quit => "QUIT",
        Command::Stat => "STAT",
        Command::List(_) => "LIST",
        Command::Retr(_) => "RETR",
        Command::Dele(_) => "DELE",
        Command::Noop => "NOOP",
        Command::Rset => "RSET",
        Command::Top(..) => "TOP",
        Command::Uidl(_) => "UIDL",
        Command::Capa => "CAPA",
        Command::Stls => "STLS",
        Command::Apop { .. } => "APOP",
        Command::Auth { .. } => "AUTH",
        Command::Utf8 => "UTF8",
        Command::Lang(_) => "LANG",
    }
}

/// The login mechanism a command starts, as a metric label (`None`: not a login attempt).
pub(crate) fn login_mechanism(cmd: &Command) -> Option<&'static str> {
    match cmd {
        Command::Pass(_) => Some("USER"),
        Command::Apop { .. } => Some("APOP"),
        Command::Auth {
            mechanism: Some(m), ..
        } => Some(match m.as_str() {
            "PLAIN" => "PLAIN",
            "LOGIN" => "LOGIN",
            "SCRAM-SHA-256" => "SCRAM-SHA-256",
            _ => "other",
        }),
        _ => None,
    }
}

/// Counts a finished login attempt by the reply that ends it; a SASL challenge is not an end.
/// `logged_in` is whether the session is now in TRANSACTION.
pub(crate) fn login_result(mechanism: &'static str, reply: &Reply, logged_in: bool) {
    let result = match reply {
        Reply::Challenge(_) => return,
        _ if logged_in => "ok",
        Reply::Err(Some(RespCode::Auth), _) => "rejected",
        Reply::Err(Some(RespCode::InUse), _) => "in_use",
        Reply::Err(Some(RespCode::LoginDelay), _) => "login_delay",
        Reply::Err(Some(RespCode::SysTemp | RespCode::SysPerm), _) => "unavailable",
        // Malformed exchanges, cancelled ones, cleartext refused, mechanism unknown.
        _ => "refused",
    };
    metrics::counter!(names::LOGINS, "result" => result, "mechanism" => mechanism).increment(1);
}

/// Runs one store call and records how long it took under `op`.
pub(crate) async fn timed<T>(op: &'static str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    metrics::histogram!(names::STORE_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    out
}

/// One session's tallies, for the summary line at its end (like Dovecot's
/// `pop3_logout_format`).
#[derive(Debug)]
pub(crate) struct Tally {
    pub started: Instant,
    pub commands: u64,
    pub retrieved: u64,
    pub retrieved_bytes: u64,
    pub top: u64,
    pub deleted: u64,
    pub bytes_out: u64,
    /// Bad commands so far in the current state (see `Limits`).
    pub bad_commands: u32,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            commands: 0,
            retrieved: 0,
            retrieved_bytes: 0,
            top: 0,
            deleted: 0,
            bytes_out: 0,
            bad_commands: 0,
        }
    }
}

impl Tally {
    pub fn duration(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Connections per client network that have not logged in yet, shared by the POP3 and POP3S
/// listeners of this process. A network is what the brute-force counters count as one client
/// (`tenancy::network_key`: an IPv4 address, an IPv6 /64), so a client that owns a /64 cannot
/// take a slot per address. A network at its limit gets `-ERR [SYS/TEMP]` before the
/// greeting; a login frees its slot, so a NAT full of logged-in users is not held back.
#[derive(Clone, Default)]
pub struct PreLogin {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// A held pre-login slot; dropping it gives the slot back.
pub(crate) struct PreLoginSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    network: String,
}

impl PreLogin {
    /// Takes a slot for `ip`'s network, or `None` when it already has `max` connections
    /// before login.
    pub(crate) fn enter(&self, ip: IpAddr, max: usize) -> Option<PreLoginSlot> {
        let network = tenancy::network_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(network.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PreLoginSlot {
            counts: self.counts.clone(),
            network,
        })
    }
}

impl Drop for PreLoginSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.network) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_login_slots_are_counted_per_address_and_given_back() {
        let pre = PreLogin::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let one = pre.enter(a, 2).expect("first");
        let two = pre.enter(a, 2).expect("second");
        assert!(pre.enter(a, 2).is_none(), "third from the same address");
        assert!(pre.enter(b, 2).is_some(), "another address is not affected");
        // IPv6: one /64 is one client, whichever of its addresses it connects from.
        let v6 = |s: &str| s.parse::<IpAddr>().expect("ip");
        let held = pre
            .enter(v6("2001:db8:1:2::1"), 1)
            .expect("first of the /64");
        assert!(
            pre.enter(v6("2001:db8:1:2:ffff::9"), 1).is_none(),
            "same /64"
        );
        assert!(
            pre.enter(v6("2001:db8:1:3::1"), 1).is_some(),
            "the next /64"
        );
        drop(held);
        drop(one);
        let three = pre.enter(a, 2).expect("a slot was given back");
        drop((two, three));
        assert!(pre.counts.lock().expect("lock").is_empty());
    }
}
