//! Brute-force defence and the auth cache. Attempts are counted in the store before their
//! check, so attempts made at the same time see each other and every frontend sees the same
//! counts; an attempt that succeeds is forgotten, the others stay as failures for an hour. Each
//! attempt counts under its client network, its (network, account) pair and its account:
//!
//! - the pair waits first: none for the first five failures, then 1 s doubling every five more,
//!   up to `ip_penalty_max`. Guessing one account from one network is slowed without slowing
//!   the other users behind the same NAT;
//! - the network as a whole waits on the same curve only past `network_failures_per_hour`, so a
//!   guesser cannot escape the pair's penalty by trying many accounts;
//! - an account with `account_failures_per_hour` failures from anywhere is slowed by
//!   `account_penalty` — a delay, never a lockout of its owner.
//!
//! A failed login also waits `failure_delay` before its answer. The auth cache spares argon2
//! when a client polls again with the same password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use mailstore::UserId;

/// How logins are slowed down and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Every failed login waits this long before its `-ERR`.
    pub failure_delay: Duration,
    /// The growing per-pair and per-network delays stop here.
    pub ip_penalty_max: Duration,
    /// Failures in an hour from a network, all accounts together, before the whole network is
    /// slowed (its pairs are slowed from the fifth).
    pub network_failures_per_hour: u64,
    /// Past this many failures in an hour, logins to the account are slowed.
    pub account_failures_per_hour: u64,
    pub account_penalty: Duration,
    /// How long a verified (user, password) is remembered; zero turns the cache off.
    pub cache_ttl: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            failure_delay: Duration::from_secs(2),
            ip_penalty_max: Duration::from_secs(30),
            network_failures_per_hour: 100,
            account_failures_per_hour: 100,
            account_penalty: Duration::from_secs(10),
            cache_ttl: Duration::ZERO,
        }
    }
}

/// Failures of one (network, account) pair in an hour before its attempts wait.
pub const PAIR_FREE_FAILURES: u64 = 5;

/// What an attempt's counters held when it was counted, itself not included: attempts still
/// under way and failures, in the last hour. Zero for a counter the attempt does not have (no
/// client address, or a name that names no mailbox).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub network: u64,
    pub pair: u64,
    pub account: u64,
}

impl AuthPolicy {
    /// The wait before an attempt that found `before` on its counters: the pair's or the
    /// network's growing penalty, whichever is longer, plus the account's when it is over its
    /// limit.
    pub fn wait(&self, before: Counts) -> Duration {
        let pair = failure_penalty(before.pair, PAIR_FREE_FAILURES, self.ip_penalty_max);
        let network = failure_penalty(
            before.network,
            self.network_failures_per_hour,
            self.ip_penalty_max,
        );
        let account = if before.account >= self.account_failures_per_hour {
            self.account_penalty
        } else {
            Duration::ZERO
        };
        pair.max(network) + account
    }
}

/// Passwords longer than this are refused before any hashing (argon2 would take them all).
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// The failure-counter key of a client: its IPv4 address, or its IPv6 /64 (one customer's
/// network; an attacker gets many addresses inside it for free). Anything that limits clients
/// by address should key them with this.
pub fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

pub fn account_key(address: &mailstore::Address) -> String {
    format!("account:{address}")
}

/// The counter of one account guessed from one network.
pub fn pair_key(network: &str, account: &str) -> String {
    format!("{network} {account}")
}

/// The wait before an attempt after `failures` in the last hour: none for the first `free`,
/// then 1 s doubling every five more, capped at `max`.
pub fn failure_penalty(failures: u64, free: u64, max: Duration) -> Duration {
    let Some(over) = failures.checked_sub(free) else {
        return Duration::ZERO;
    };
    let doublings = u32::try_from(over / 5).unwrap_or(u32::MAX).min(16);
    Duration::from_secs(1u64 << doublings).min(max)
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Verified logins, keyed by a keyed hash of (mailbox, password): the memory holds no password
/// and nothing an attacker could test guesses against without the per-process key. An entry
/// also remembers the stored hash it was verified against, so a password change invalidates it.
pub struct AuthCache {
    ttl: Duration,
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (UserId, String, Instant)>>,
}

/// Entries kept at most; a full cache is emptied rather than grown (simple, and bounded).
const CACHE_CAP: usize = 100_000;

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn fingerprint(&self, mailbox: &str, password: &[u8]) -> Option<[u8; 32]> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(mailbox.as_bytes());
        mac.update(&[0]);
        mac.update(password);
        Some(mac.finalize().into_bytes().into())
    }

    /// The user, if `password` was verified for `mailbox` against `stored_hash` within the TTL.
    pub fn get(&self, mailbox: &str, password: &[u8], stored_hash: &str) -> Option<UserId> {
        if !self.enabled() {
            return None;
        }
        let fp = self.fingerprint(mailbox, password)?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&fp) {
            Some((id, hash, at)) if hash == stored_hash && at.elapsed() < self.ttl => Some(*id),
            _ => None,
        }
    }

    pub fn put(&self, mailbox: &str, password: &[u8], stored_hash: &str, user: UserId) {
        if !self.enabled() {
            return;
        }
        let Some(fp) = self.fingerprint(mailbox, password) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_CAP {
            entries.retain(|_, (_, _, at)| at.elapsed() < self.ttl);
            if entries.len() >= CACHE_CAP {
                entries.clear();
            }
        }
        entries.insert(fp, (user, stored_hash.to_string(), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(network_key(ip("192.0.2.7")), "ip:192.0.2.7");
        assert_eq!(network_key(ip("::ffff:192.0.2.7")), "ip:192.0.2.7");
        assert_eq!(
            network_key(ip("2001:db8:1:2:3:4:5:6")),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(
            network_key(ip("2001:db8:1:2::ffff")),
            network_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(
            network_key(ip("2001:db8:1:2::1")),
            network_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn penalty_grows_and_stops() {
        let max = Duration::from_secs(30);
        let p = |n| failure_penalty(n, 5, max);
        assert_eq!(p(0), Duration::ZERO);
        assert_eq!(p(4), Duration::ZERO);
        assert_eq!(p(5), Duration::from_secs(1));
        assert_eq!(p(10), Duration::from_secs(2));
        assert_eq!(p(15), Duration::from_secs(4));
        assert_eq!(p(1000), max);
        assert_eq!(p(u64::MAX), max);
        assert_eq!(failure_penalty(99, 100, max), Duration::ZERO);
        assert_eq!(failure_penalty(100, 100, max), Duration::from_secs(1));
        assert_eq!(
            failure_penalty(u64::MAX, u64::MAX, max),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_pair_waits_first_and_the_network_only_far_later() {
        let policy = AuthPolicy::default();
        let wait = |network, pair, account| {
            policy.wait(Counts {
                network,
                pair,
                account,
            })
        };
        assert_eq!(wait(4, 4, 4), Duration::ZERO);
        assert_eq!(
            wait(20, 20, 20),
            Duration::from_secs(8),
            "one account guessed"
        );
        // Another account behind the same address, while one is being guessed.
        assert_eq!(wait(99, 0, 0), Duration::ZERO, "a neighbour is not slowed");
        assert_eq!(
            wait(100, 0, 0),
            Duration::from_secs(1),
            "many accounts guessed"
        );
        assert_eq!(wait(200, 0, 0), policy.ip_penalty_max);
        // The longer of the pair's and the network's, not their sum.
        assert_eq!(wait(110, 15, 0), Duration::from_secs(4));
        assert_eq!(
            wait(0, 0, 100),
            policy.account_penalty,
            "guessed from elsewhere"
        );
        assert_eq!(
            wait(1000, 1000, 1000),
            policy.ip_penalty_max + policy.account_penalty
        );
    }

    #[test]
    fn cache_hits_expires_and_follows_password_changes() {
        let cache = AuthCache::new(Duration::from_millis(200));
        cache.put("john@example.com", b"pw", "hash1", UserId(7));
        assert_eq!(
            cache.get("john@example.com", b"pw", "hash1"),
            Some(UserId(7))
        );
        assert_eq!(cache.get("john@example.com", b"other", "hash1"), None);
        assert_eq!(cache.get("jane@example.com", b"pw", "hash1"), None);
        assert_eq!(
            cache.get("john@example.com", b"pw", "hash2"),
            None,
            "password changed"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            cache.get("john@example.com", b"pw", "hash1"),
            None,
            "expired"
        );
        let off = AuthCache::new(Duration::ZERO);
        off.put("john@example.com", b"pw", "hash1", UserId(7));
        assert_eq!(off.get("john@example.com", b"pw", "hash1"), None);
    }
}
