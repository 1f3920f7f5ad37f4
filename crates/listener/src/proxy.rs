//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), version 1 (text) and 2 (binary): telling
//! a header from client bytes by its first bytes, reading exactly one header off a stream and
//! never a byte past it (whatever follows belongs to the protocol session), and turning it into
//! addresses. Parsing the framed bytes is the `ppp` crate's job; framing, limits and what the
//! addresses mean are ours.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How a version 1 header starts.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// How a version 2 header starts.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (the spec's worst case, TCP6 with full addresses).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a version 2 header: signature, version/command, family/protocol, length.
pub const V2_FIXED_LEN: usize = 16;
/// The longest version 2 payload (addresses and TLVs) we accept. Addresses take at most 36
/// bytes for TCP over IPv6; the rest leaves room for the TLVs a proxy may add (unique id up to
/// 128 bytes, authority, SSL details) while keeping what a stranger can make us read small.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The proxy relays a client: `client` connected to the proxy's `server` address.
    Proxied {
        client: SocketAddr,
        server: SocketAddr,
    },
    /// The proxy speaks for itself (v2 `LOCAL`, e.g. a health check; v1 `UNKNOWN`; v2 with no
    /// or a UNIX address family): the connection's own addresses apply.
    Local,
}

/// Why no usable header was read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The first bytes are not a PROXY signature: the peer is not speaking the protocol.
    #[error("no PROXY header (the first bytes are not a PROXY signature)")]
    NotAHeader,
    /// The peer closed the connection before the header was complete.
    #[error("connection closed before the PROXY header was complete")]
    Closed,
    /// A v1 header without CRLF within 107 bytes, or a v2 header declaring a longer payload
    /// than `V2_MAX_PAYLOAD`.
    #[error("PROXY header too long")]
    TooLong,
    /// The header is malformed (bad address, bad version, bad command, ...).
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    /// A well-formed header for something a TCP listener cannot relay (UDP).
    #[error("unsupported PROXY header: {0}")]
    Unsupported(&'static str),
    /// The header did not arrive in time.
    #[error("no complete PROXY header within the time limit")]
    Timeout,
    /// Reading from the connection failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(std::io::Error),
}

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A complete v1 prefix (`PROXY `) or v2 signature.
    Header,
    /// Bytes that cannot start a header.
    NotHeader,
    /// Nothing yet, or a proper beginning of a prefix or signature.
    Undecided,
}

/// Classifies the first bytes a peer sent.
pub fn sniff(first: &[u8]) -> Sniff {
    let mut undecided = first.is_empty();
    for signature in [V1_PREFIX, V2_SIGNATURE] {
        let n = first.len().min(signature.len());
        if first[..n] == signature[..n] {
            if n == signature.len() {
                return Sniff::Header;
            }
            undecided = true;
        }
    }
    if undecided {
        Sniff::Undecided
    } else {
        Sniff::NotHeader
    }
}

/// Reads one PROXY header (v1 or v2, told apart by the first bytes) from `r` and nothing more.
/// The signature and a v1 header are read byte by byte (a v1 header ends at its CRLF and its
/// length is not known before); a v2 header as its fixed part, then exactly the declared length.
/// A peer whose first bytes are not a signature is refused as soon as they arrive.
/// The caller sets the time limit.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, HeaderError> {
    let mut buf = Vec::with_capacity(V2_FIXED_LEN + 36);
    loop {
        buf.push(read_byte(r).await?);
        match sniff(&buf) {
            Sniff::Header => break,
            Sniff::NotHeader => return Err(HeaderError::NotAHeader),
            Sniff::Undecided => {}
        }
    }
    if buf.starts_with(V1_PREFIX) {
        while buf.last() != Some(&b'\n') {
            if buf.len() == V1_MAX_LEN {
                return Err(HeaderError::TooLong);
            }
            buf.push(read_byte(r).await?);
        }
    } else {
        let mut fixed = [0u8; V2_FIXED_LEN - V2_SIGNATURE.len()];
        read_exact(r, &mut fixed).await?;
        buf.extend_from_slice(&fixed);
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > V2_MAX_PAYLOAD {
            return Err(HeaderError::TooLong);
        }
        buf.resize(V2_FIXED_LEN + len, 0);
        read_exact(r, &mut buf[V2_FIXED_LEN..]).await?;
    }
    parse(&buf)
}

async fn read_byte<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, HeaderError> {
    let mut b = [0u8; 1];
    read_exact(r, &mut b).await?;
    Ok(b[0])
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), HeaderError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Closed),
        Err(e) => Err(HeaderError::Io(e)),
    }
}

/// Parses exactly one complete header, v1 or v2; `bytes` must hold nothing else.
pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.starts_with(V2_SIGNATURE) {
        parse_v2(bytes)
    } else if bytes.starts_with(V1_PREFIX) {
        parse_v1(bytes)
    } else {
        Err(HeaderError::NotAHeader)
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Header, HeaderError> {
    use ppp::v1::Addresses;
    if bytes.len() > V1_MAX_LEN {
        return Err(HeaderError::TooLong);
    }
    if !bytes.ends_with(b"\r\n") {
        return Err(HeaderError::Invalid(
            "v1 header does not end with CRLF".into(),
        ));
    }
    let header =
        ppp::v1::Header::try_from(bytes).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if header.header.len() != bytes.len() {
        return Err(HeaderError::Invalid("v1 header has a stray CR".into()));
    }
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            server: (a.destination_address, a.destination_port).into(),
        },
        Addresses::Tcp6(a) => Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            server: (a.destination_address, a.destination_port).into(),
        },
        Addresses::Unknown => Header::Local,
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Header, HeaderError> {
    use ppp::v2::{Addresses, Command, Protocol};
    let header =
        ppp::v2::Header::try_from(bytes).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if header.header.len() != bytes.len() {
        return Err(HeaderError::Invalid("v2 header length mismatch".into()));
    }
    if header.command == Command::Local {
        return Ok(Header::Local);
    }
    if header.protocol == Protocol::Datagram {
        return Err(HeaderError::Unsupported(
            "v2 header for a datagram (UDP) connection",
        ));
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            server: (a.destination_address, a.destination_port).into(),
        },
        Addresses::IPv6(a) => Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            server: (a.destination_address, a.destination_port).into(),
        },
        // The spec: with an unspecified family, use the connection's own addresses; a UNIX
        // socket address means nothing to a TCP service either.
        Addresses::Unspecified | Addresses::Unix(_) => Header::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect(s)
    }

    /// A v2 header built by hand: version 2 with `command`, then family/protocol and payload.
    fn v2(command: u8, family_protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family_protocol);
        h.extend_from_slice(&u16::try_from(payload.len()).expect("len").to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn tcp4_payload() -> Vec<u8> {
        let mut p = vec![192, 0, 2, 1, 198, 51, 100, 2];
        p.extend_from_slice(&56324u16.to_be_bytes());
        p.extend_from_slice(&110u16.to_be_bytes());
        p
    }

    /// Reads a header from `input` and returns it with the bytes left unread.
    async fn read_from(input: &[u8]) -> (Result<Header, HeaderError>, Vec<u8>) {
        let mut rest = input;
        let header = read_header(&mut rest).await;
        (header, rest.to_vec())
    }

    fn proxied(client: &str, server: &str) -> Header {
        Header::Proxied {
            client: addr(client),
            server: addr(server),
        }
    }

    #[test]
    fn sniffs_first_bytes() {
        assert_eq!(sniff(b""), Sniff::Undecided);
        assert_eq!(sniff(b"PRO"), Sniff::Undecided);
        assert_eq!(sniff(b"PROXY"), Sniff::Undecided);
        assert_eq!(sniff(b"PROXY "), Sniff::Header);
        assert_eq!(sniff(b"PROXY TCP4 1.2.3.4"), Sniff::Header);
        assert_eq!(sniff(b"\r\n\r\n"), Sniff::Undecided);
        assert_eq!(sniff(V2_SIGNATURE), Sniff::Header);
        assert_eq!(sniff(b"\r\n\r\n\0\r\nQUIT\n\x21\x11"), Sniff::Header);
        assert_eq!(sniff(b"USER john\r\n"), Sniff::NotHeader);
        assert_eq!(sniff(b"PROXYX"), Sniff::NotHeader);
        assert_eq!(sniff(b"\r\n\r\nQUIT"), Sniff::NotHeader);
        assert_eq!(sniff(b"LHLO"), Sniff::NotHeader);
    }

    #[tokio::test]
    async fn v1_tcp4_and_the_bytes_after_it() {
        let (h, rest) =
            read_from(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\nUSER john\r\n").await;
        assert_eq!(
            h.expect("header"),
            proxied("192.0.2.1:56324", "198.51.100.2:110")
        );
        assert_eq!(rest, b"USER john\r\n");
    }

    #[tokio::test]
    async fn v1_tcp6() {
        let (h, rest) =
            read_from(b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 24\r\nLHLO x\r\n").await;
        assert_eq!(
            h.expect("header"),
            proxied("[2001:db8::1]:40000", "[2001:db8::2]:24")
        );
        assert_eq!(rest, b"LHLO x\r\n");
    }

    #[tokio::test]
    async fn v1_unknown_is_local() {
        let (h, rest) = read_from(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(h.expect("header"), Header::Local);
        assert!(rest.is_empty());
        // The worst case the spec allows is exactly 107 bytes.
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX_LEN);
        let (h, _) = read_from(longest).await;
        assert_eq!(h.expect("longest header"), Header::Local);
    }

    #[tokio::test]
    async fn v1_over_long_stops_at_the_limit() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(500, b'1');
        let (h, rest) = read_from(&long).await;
        assert!(matches!(h, Err(HeaderError::TooLong)), "{h:?}");
        // Never more than the longest valid header was read.
        assert_eq!(rest.len(), long.len() - V1_MAX_LEN);
    }

    #[tokio::test]
    async fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 70000\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 110\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r2\r\n",
            b"PROXY \xff\r\n",
        ] {
            let (h, _) = read_from(bad).await;
            assert!(
                matches!(h, Err(HeaderError::Invalid(_))),
                "{:?}: {h:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn v2_tcp4_and_the_bytes_after_it() {
        let mut input = v2(1, 0x11, &tcp4_payload());
        input.extend_from_slice(b"USER john\r\n");
        let (h, rest) = read_from(&input).await;
        assert_eq!(
            h.expect("header"),
            proxied("192.0.2.1:56324", "198.51.100.2:110")
        );
        assert_eq!(rest, b"USER john\r\n");
    }

    #[tokio::test]
    async fn v2_tcp6_with_tlvs() {
        let mut payload = Vec::new();
        payload.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        payload.extend_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        payload.extend_from_slice(&40000u16.to_be_bytes());
        payload.extend_from_slice(&995u16.to_be_bytes());
        // PP2_TYPE_UNIQUE_ID (0x05), 4 bytes; PP2_TYPE_NOOP (0x04), 2 bytes.
        payload.extend_from_slice(&[0x05, 0, 4, 1, 2, 3, 4, 0x04, 0, 2, 0, 0]);
        let mut input = v2(1, 0x21, &payload);
        input.extend_from_slice(b"+");
        let (h, rest) = read_from(&input).await;
        assert_eq!(
            h.expect("header"),
            proxied("[2001:db8::1]:40000", "[2001:db8::2]:995")
        );
        assert_eq!(rest, b"+");
    }

    #[tokio::test]
    async fn v2_local_is_local() {
        // What HAProxy's health checks send: LOCAL, no addresses.
        let (h, rest) = read_from(&v2(0, 0x00, &[])).await;
        assert_eq!(h.expect("header"), Header::Local);
        assert!(rest.is_empty());
        // LOCAL with addresses: still the connection's own.
        let (h, _) = read_from(&v2(0, 0x11, &tcp4_payload())).await;
        assert_eq!(h.expect("header"), Header::Local);
        // PROXY with an unspecified family: the spec says to use the connection's addresses.
        let (h, _) = read_from(&v2(1, 0x00, &[])).await;
        assert_eq!(h.expect("header"), Header::Local);
    }

    #[tokio::test]
    async fn v2_rejects() {
        let (h, _) = read_from(&v2(1, 0x12, &tcp4_payload())).await;
        assert!(matches!(h, Err(HeaderError::Unsupported(_))), "UDP: {h:?}");
        // Version 1 in the binary format.
        let mut bad_version = v2(1, 0x11, &tcp4_payload());
        bad_version[12] = 0x11;
        let (h, _) = read_from(&bad_version).await;
        assert!(matches!(h, Err(HeaderError::Invalid(_))), "version: {h:?}");
        let (h, _) = read_from(&v2(2, 0x11, &tcp4_payload())).await;
        assert!(matches!(h, Err(HeaderError::Invalid(_))), "command: {h:?}");
        // A TCP4 family with fewer bytes than its addresses take.
        let (h, _) = read_from(&v2(1, 0x11, &tcp4_payload()[..8])).await;
        assert!(
            matches!(h, Err(HeaderError::Invalid(_))),
            "short addresses: {h:?}"
        );
    }

    #[tokio::test]
    async fn v2_over_long_is_refused_before_reading_it() {
        let mut input = V2_SIGNATURE.to_vec();
        input.extend_from_slice(&[0x21, 0x11]);
        input.extend_from_slice(
            &u16::try_from(V2_MAX_PAYLOAD + 1)
                .expect("len")
                .to_be_bytes(),
        );
        input.resize(input.len() + V2_MAX_PAYLOAD + 1, 0);
        let (h, rest) = read_from(&input).await;
        assert!(matches!(h, Err(HeaderError::TooLong)), "{h:?}");
        assert_eq!(rest.len(), V2_MAX_PAYLOAD + 1);
        // The largest allowed payload (addresses and padding TLVs) is read.
        let mut payload = tcp4_payload();
        let pad = V2_MAX_PAYLOAD - payload.len() - 3;
        payload.extend_from_slice(&[0x04]);
        payload.extend_from_slice(&u16::try_from(pad).expect("pad").to_be_bytes());
        payload.resize(V2_MAX_PAYLOAD, 0);
        let (h, rest) = read_from(&v2(1, 0x11, &payload)).await;
        assert_eq!(
            h.expect("largest header"),
            proxied("192.0.2.1:56324", "198.51.100.2:110")
        );
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn truncated_headers() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\n";
        let v2 = v2(1, 0x11, &tcp4_payload());
        for input in [
            &v1[..3],
            &v1[..20],
            &v1[..v1.len() - 1],
            &v2[..5],
            &v2[..14],
            &v2[..v2.len() - 1],
        ] {
            let (h, _) = read_from(input).await;
            assert!(matches!(h, Err(HeaderError::Closed)), "{input:?}: {h:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_refused_at_the_first_wrong_byte() {
        let (h, rest) = read_from(b"USER john\r\n").await;
        assert!(matches!(h, Err(HeaderError::NotAHeader)), "{h:?}");
        assert_eq!(rest, b"SER john\r\n");
        let (h, rest) = read_from(b"PROXZ TCP4\r\n").await;
        assert!(matches!(h, Err(HeaderError::NotAHeader)), "{h:?}");
        assert_eq!(rest, b" TCP4\r\n");
        let (h, _) = read_from(b"\r\n\r\n\0\r\nQUIT\r").await;
        assert!(matches!(h, Err(HeaderError::NotAHeader)), "{h:?}");
        assert!(matches!(
            parse(b"GET / HTTP/1.0\r\n"),
            Err(HeaderError::NotAHeader)
        ));
    }

    /// The header arrives in pieces (one byte, then a few, ...) with client bytes in the last
    /// piece: it is still read whole and the client bytes stay on the stream.
    #[tokio::test]
    async fn headers_split_across_writes() {
        let mut v2_input = v2(1, 0x11, &tcp4_payload());
        v2_input.extend_from_slice(b"USER john\r\n");
        let v1_input = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\nUSER john\r\n".to_vec();
        for input in [v1_input, v2_input] {
            for chunk in [1, 2, 3, 7, 13] {
                let (mut client, mut server) = tokio::io::duplex(64);
                let pieces = input.clone();
                let writer = tokio::spawn(async move {
                    for piece in pieces.chunks(chunk) {
                        client.write_all(piece).await.expect("write");
                        client.flush().await.expect("flush");
                        tokio::task::yield_now().await;
                    }
                    client
                });
                let h = read_header(&mut server).await.expect("header");
                assert_eq!(h, proxied("192.0.2.1:56324", "198.51.100.2:110"));
                drop(writer.await.expect("writer"));
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.expect("rest");
                assert_eq!(rest, b"USER john\r\n", "chunk {chunk}");
            }
        }
    }
}
