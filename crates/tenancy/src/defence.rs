//! Brute-force defence and the auth cache. Failures are counted in the store, so every frontend
//! sees the same counts: a failed login waits `failure_delay` before its answer; a client
//! network with many recent failures waits longer before each attempt (doubling every five
//! failures, up to `ip_penalty_max`); an account with more than `account_failures_per_hour`
//! failures is slowed by `account_penalty` — a delay, never a lockout of its owner. The auth
//! cache spares argon2 when a client polls again with the same password.

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
    /// The growing per-network delay stops here.
    pub ip_penalty_max: Duration,
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
            account_failures_per_hour: 100,
            account_penalty: Duration::from_secs(10),
            cache_ttl: Duration::ZERO,
        }
    }
}

/// Passwords longer than this are refused before any hashing (argon2 would take them all).
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// The failure-counter key of a client: its IPv4 address, or its IPv6 /64 (one customer's
/// network; an attacker gets many addresses inside it for free).
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

/// The wait before an attempt from a network with `failures` in the last hour: none for the
/// first five, then 1 s doubling every five more, capped at `max`.
pub fn ip_penalty(failures: u64, max: Duration) -> Duration {
    if failures < 5 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from((failures - 5) / 5)
        .unwrap_or(u32::MAX)
        .min(16);
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
        assert_eq!(ip_penalty(0, max), Duration::ZERO);
        assert_eq!(ip_penalty(4, max), Duration::ZERO);
        assert_eq!(ip_penalty(5, max), Duration::from_secs(1));
        assert_eq!(ip_penalty(10, max), Duration::from_secs(2));
        assert_eq!(ip_penalty(15, max), Duration::from_secs(4));
        assert_eq!(ip_penalty(1000, max), max);
        assert_eq!(ip_penalty(u64::MAX, max), max);
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
