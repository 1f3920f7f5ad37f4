//! Which address a request comes from. Connected directly, it is the TCP peer. Behind a reverse
//! proxy every peer is the proxy, which would put every client under one address (one sign-in
//! throttle for all); so when the peer is one of `admin.trusted_proxies`, the address is read
//! from what the proxies appended to `X-Forwarded-For` or `Forwarded` (RFC 7239).
//!
//! Each proxy appends the address it saw, so the list is read from the right: entries written by
//! trusted proxies are believed, and the first address that is not a trusted proxy is the client.
//! Everything left of it came from the client and is ignored.

use std::net::IpAddr;

use axum::http::HeaderMap;
use listener::Network;

/// The client's address, given the TCP `peer`, the request's headers and the trusted proxies.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let from = |chain: Option<Vec<Option<IpAddr>>>| chain.map(|c| walk(peer, &c, is_trusted));
    match (
        from(list(headers, "x-forwarded-for", x_forwarded_for_node)),
        from(list(headers, "forwarded", forwarded_node)),
    ) {
        (Some(ip), None) | (None, Some(ip)) => ip,
        (Some(a), Some(b)) if a == b => a,
        // A proxy wrote one of the two and the client the other, as it liked; which is which
        // cannot be told, so neither is believed.
        (Some(_), Some(_)) => peer,
        (None, None) => peer,
    }
}

/// The right-most entry that is not a trusted proxy. Where an entry cannot be read (`unknown`,
/// an obfuscated name), the last trusted hop is as far as anything is known.
fn walk(peer: IpAddr, chain: &[Option<IpAddr>], is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut nearest = peer;
    for entry in chain.iter().rev() {
        match entry {
            Some(ip) if is_trusted(*ip) => nearest = *ip,
            Some(ip) => return *ip,
            None => return nearest,
        }
    }
    nearest
}

/// Every comma-separated entry of every `name` header, in order; `None` without the header.
fn list(
    headers: &HeaderMap,
    name: &str,
    node: fn(&str) -> Option<IpAddr>,
) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(node)
            .collect(),
    )
}

/// One `X-Forwarded-For` entry: an address, sometimes with a port.
fn x_forwarded_for_node(entry: &str) -> Option<IpAddr> {
    address(entry.trim())
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=https`,
/// `for="[2001:db8::1]:4711"`).
fn forwarded_node(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    address(value)
}

/// `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn address(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    s.parse::<IpAddr>().ok().or_else(|| {
        s.parse::<std::net::SocketAddrV4>()
            .ok()
            .map(|a| (*a.ip()).into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn resolve(peer: &str, headers: &[(&'static str, &str)]) -> IpAddr {
        let trusted: Vec<Network> = ["127.0.0.1", "10.0.0.0/8", "2001:db8:ffff::/48"]
            .iter()
            .map(|n| n.parse().expect("network"))
            .collect();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, v.parse().expect("header value"));
        }
        client_address(ip(peer), &map, &trusted)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        for h in [
            ("x-forwarded-for", "192.0.2.9"),
            ("forwarded", "for=192.0.2.9"),
        ] {
            assert_eq!(resolve("198.51.100.7", &[h]), ip("198.51.100.7"));
        }
        assert_eq!(resolve("127.0.0.1", &[]), ip("127.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let xff = |v| resolve("127.0.0.1", &[("x-forwarded-for", v)]);
        assert_eq!(xff("192.0.2.9"), ip("192.0.2.9"));
        // The client wrote "203.0.113.1" itself; the proxy appended what it saw.
        assert_eq!(xff("203.0.113.1, 192.0.2.9"), ip("192.0.2.9"));
        // Through two proxies of ours.
        assert_eq!(xff("203.0.113.1, 192.0.2.9, 10.1.2.3"), ip("192.0.2.9"));
        assert_eq!(xff("192.0.2.9:5555"), ip("192.0.2.9"));
        assert_eq!(xff("[2001:db8::1]:5555"), ip("2001:db8::1"));
        // Nothing but our own proxies: the furthest of them.
        assert_eq!(xff("10.9.9.9, 10.1.2.3"), ip("10.9.9.9"));
        // Unreadable before any client address: as far as is known.
        assert_eq!(xff("192.0.2.9, unknown, 10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(xff("garbage"), ip("127.0.0.1"));
        // Several header lines are one list.
        assert_eq!(
            resolve(
                "127.0.0.1",
                &[
                    ("x-forwarded-for", "203.0.113.1"),
                    ("x-forwarded-for", "192.0.2.9")
                ]
            ),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn forwarded_for_with_quotes_ports_and_ipv6() {
        let fwd = |v| resolve("127.0.0.1", &[("forwarded", v)]);
        assert_eq!(fwd("for=192.0.2.60;proto=https"), ip("192.0.2.60"));
        assert_eq!(fwd("For=\"[2001:db8::1]:4711\""), ip("2001:db8::1"));
        assert_eq!(fwd("for=\"[2001:db8::1]\""), ip("2001:db8::1"));
        assert_eq!(
            fwd("for=203.0.113.1, proto=http;for=\"192.0.2.60:80\""),
            ip("192.0.2.60")
        );
        assert_eq!(
            fwd("for=192.0.2.60, for=\"[2001:db8:ffff::5]\""),
            ip("192.0.2.60")
        );
        assert_eq!(fwd("for=_hidden"), ip("127.0.0.1"));
        assert_eq!(fwd("proto=https"), ip("127.0.0.1"));
    }

    #[test]
    fn the_two_headers_count_only_when_they_agree() {
        let both = |x, f| resolve("127.0.0.1", &[("x-forwarded-for", x), ("forwarded", f)]);
        assert_eq!(both("192.0.2.9", "for=192.0.2.9"), ip("192.0.2.9"));
        assert_eq!(both("192.0.2.9", "for=203.0.113.1"), ip("127.0.0.1"));
    }
}
