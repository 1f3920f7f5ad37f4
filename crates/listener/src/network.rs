//! `Network`: an IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address
//! meaning just that host), as used for the trusted proxy sources.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Whether `ip` is loopback (also as an IPv4-mapped IPv6 address) or in one of `networks`: the
/// one rule for who may send a password in the clear (POP3, SMTP AUTH) and who may use the MTA
/// services.
pub fn is_loopback_or_in(ip: IpAddr, networks: &[Network]) -> bool {
    ip.is_loopback() || ip.to_canonical().is_loopback() || networks.iter().any(|n| n.contains(ip))
}

/// An IPv4 or IPv6 network: an address whose host bits are zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address or network (expected e.g. 10.0.0.0/8)")]
    Address(String),
    /// The prefix length is not a number up to 32 (IPv4) or 128 (IPv6).
    #[error("{0:?} has a bad prefix length (0-32 for IPv4, 0-128 for IPv6)")]
    Prefix(String),
    /// The address has bits set beyond the prefix, which usually means a typo.
    #[error("{given:?} has host bits set; the network is {network}")]
    HostBits { given: String, network: Network },
}

impl Network {
    /// The network of `addr` with `prefix` bits, or `None` if the prefix is too long.
    /// Host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Network> {
        let max = max_prefix(addr);
        (prefix <= max).then(|| Network {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// True if `ip` is inside this network. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, as
    /// a dual-stack socket reports IPv4 peers) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let within = |ip: IpAddr| {
            max_prefix(ip) == max_prefix(self.addr) && mask(ip, self.prefix) == self.addr
        };
        within(ip) || within(ip.to_canonical())
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| NetworkError::Address(s.into()))?;
        let prefix = match prefix {
            None => max_prefix(addr),
            // Digits only: `u8::from_str` would also take "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| NetworkError::Prefix(s.into()))?
            }
            Some(_) => return Err(NetworkError::Prefix(s.into())),
        };
        let network = Network::new(addr, prefix).ok_or_else(|| NetworkError::Prefix(s.into()))?;
        if network.addr != addr {
            return Err(NetworkError::HostBits {
                given: s.into(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().expect(s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect(s)
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0 /8",
            "example.com/8",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "10.1.2.3/8".parse::<Network>(),
            Err(NetworkError::HostBits {
                given: "10.1.2.3/8".into(),
                network: net("10.0.0.0/8"),
            })
        );
    }

    #[test]
    fn contains() {
        let n = net("192.168.0.0/16");
        assert!(n.contains(ip("192.168.0.1")));
        assert!(n.contains(ip("192.168.255.255")));
        assert!(!n.contains(ip("192.169.0.1")));
        assert!(!n.contains(ip("::1")));
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
        assert!(n.contains(ip("::ffff:192.168.1.2")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        let host = net("127.0.0.1");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }
}
