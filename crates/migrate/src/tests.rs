//! The client and the pull against a scripted POP3 server on loopback, into a real SQLite store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailstore::{Address, Directory, Maildrops, SqliteStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::source::Limits;

const PASSWORD: &str = "old secret";

/// What the scripted server does.
#[derive(Clone, Default)]
struct Script {
    /// `(UIDL, RETR body as sent: stuffed, without the final ".\r\n")`.
    messages: Vec<(String, Vec<u8>)>,
    /// USER gets -ERR (so the client must use AUTH PLAIN).
    refuse_user: bool,
    /// TLS from the first byte.
    implicit_tls: Option<tokio_rustls::TlsAcceptor>,
    /// STLS offered.
    stls: Option<tokio_rustls::TlsAcceptor>,
    /// Bytes sent right after STLS's +OK, before the handshake.
    after_stls: Vec<u8>,
    /// Sizes LIST shows instead of the real ones.
    list_size: Option<u64>,
    /// A line sent instead of UIDL's listing.
    uidl_line: Option<Vec<u8>>,
    /// Say nothing after the greeting.
    stall: bool,
}

/// Every command the server received, passwords included (it is the test's own server).
type Log = Arc<Mutex<Vec<String>>>;

fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// Starts the server; it serves connections until the test ends.
async fn serve(script: Script) -> (std::net::SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: Log = Arc::default();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, log) = (script.clone(), sink.clone());
            tokio::spawn(async move {
                if let Some(acceptor) = &script.implicit_tls {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    session(BufReader::new(tls), &script, &log, true).await;
                    return;
                }
                let mut tcp = tcp;
                let _ = tcp.write_all(b"+OK ready\r\n").await;
                if let Some(acceptor) = &script.stls {
                    // Byte by byte: nothing of the handshake may be read as a command.
                    let mut line = Vec::new();
                    while !line.ends_with(b"\n") {
                        let mut b = [0u8];
                        if tcp.read(&mut b).await.unwrap_or(0) == 0 {
                            return;
                        }
                        line.push(b[0]);
                    }
                    log.lock()
                        .expect("log")
                        .push(String::from_utf8_lossy(&line).trim().into());
                    let mut reply = b"+OK begin TLS\r\n".to_vec();
                    reply.extend_from_slice(&script.after_stls);
                    let _ = tcp.write_all(&reply).await;
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    session(BufReader::new(tls), &script, &log, false).await;
                    return;
                }
                session(BufReader::new(tcp), &script, &log, false).await;
            });
        }
    });
    (addr, log)
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufReader<S>,
    script: &Script,
    log: &Log,
    greet: bool,
) {
    if greet {
        let _ = s.write_all(b"+OK ready\r\n").await;
    }
    if script.stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    let mut user = false;
    let mut authed = false;
    let mut auth_plain = false;
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_string();
        log.lock().expect("log").push(line.clone());
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let mut out: Vec<u8> = Vec::new();
        if auth_plain {
            auth_plain = false;
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&line)
                .unwrap_or_default();
            authed = decoded == format!("\0john\0{PASSWORD}").into_bytes();
            out.extend_from_slice(if authed {
                b"+OK in\r\n"
            } else {
                b"-ERR [AUTH] no\r\n"
            });
            let _ = s.write_all(&out).await;
            continue;
        }
        match (cmd.to_ascii_uppercase().as_str(), authed) {
            ("USER", false) if script.refuse_user => {
                out.extend_from_slice(b"-ERR [AUTH] use AUTH\r\n")
            }
            ("USER", false) => {
                user = arg == "john";
                out.extend_from_slice(b"+OK\r\n");
            }
            ("PASS", false) => {
                authed = user && arg == PASSWORD;
                out.extend_from_slice(if authed {
                    b"+OK in\r\n"
                } else {
                    b"-ERR [AUTH] Authentication failed.\r\n"
                });
            }
            ("AUTH", false) if arg == "PLAIN" => {
                auth_plain = true;
                out.extend_from_slice(b"+ \r\n");
            }
            ("UIDL", true) => match &script.uidl_line {
                Some(l) => {
                    out.extend_from_slice(b"+OK\r\n");
                    out.extend_from_slice(l);
                }
                None => {
                    out.extend_from_slice(b"+OK\r\n");
                    for (i, (uid, _)) in script.messages.iter().enumerate() {
                        out.extend_from_slice(format!("{} {uid}\r\n", i + 1).as_bytes());
                    }
                    out.extend_from_slice(b".\r\n");
                }
            },
            ("LIST", true) => {
                out.extend_from_slice(b"+OK\r\n");
                for (i, (_, m)) in script.messages.iter().enumerate() {
                    let size = script.list_size.unwrap_or(m.len() as u64);
                    out.extend_from_slice(format!("{} {size}\r\n", i + 1).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            ("RETR", true) => match arg
                .parse::<usize>()
                .ok()
                .and_then(|n| script.messages.get(n - 1))
            {
                Some((_, m)) => {
                    out.extend_from_slice(b"+OK\r\n");
                    out.extend_from_slice(m);
                    out.extend_from_slice(b".\r\n");
                }
                None => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            ("QUIT", _) => {
                let _ = s.write_all(b"+OK bye\r\n").await;
                return;
            }
            _ => out.extend_from_slice(b"-ERR what\r\n"),
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn plain(addr: std::net::SocketAddr) -> Source {
    Source::parse(
        &format!("pop3://{addr}"),
        TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        },
    )
    .expect("source")
}

fn small(source: Source, message: usize, io: Duration) -> Source {
    source.with_limits(Limits {
        line: 200,
        message,
        messages: 10,
        connect: Duration::from_secs(5),
        io,
    })
}

async fn store() -> (tempfile::TempDir, SqliteStore, UserId) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(&dir.path().join("db"), Default::default(), true)
        .await
        .expect("store");
    let address = Address::parse("john@example.com").expect("address");
    store.add_domain(&address.domain).await.expect("domain");
    let user = store
        .add_user(&address, "not-a-hash", None)
        .await
        .expect("user");
    (dir, store, user)
}

async fn uids(store: &SqliteStore, user: UserId) -> Vec<String> {
    store
        .list(user)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.uid)
        .collect()
}

async fn body(store: &SqliteStore, user: UserId, i: usize) -> Vec<u8> {
    let meta = store.list(user).await.expect("list").remove(i);
    let mut out = Vec::new();
    let mut part = 0;
    while let Some(p) = store.read_part(&meta, part).await.expect("read") {
        out.extend_from_slice(&p);
        part += 1;
    }
    out
}

fn script(n: usize) -> Script {
    Script {
        messages: (0..n)
            .map(|i| {
                let m = format!(
                    "Subject: {i}\r\n\r\nbody {i}\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
                );
                (format!("uid-{i:04}"), stuff(m.as_bytes()))
            })
            .collect(),
        ..Script::default()
    }
}

#[tokio::test]
async fn pull_keeps_uidls_unstuffs_and_resumes() {
    let mut s = script(3);
    let (addr, log) = serve(s.clone()).await;
    let (_dir, store, user) = store().await;
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull");
    assert_eq!(
        (r.listed, r.added, r.present, r.fetched, r.renumbered),
        (3, 3, 0, 3, 0)
    );
    assert_eq!(
        uids(&store, user).await,
        ["uid-0000", "uid-0001", "uid-0002"]
    );
    let want = b"Subject: 1\r\n\r\nbody 1\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n";
    assert_eq!(body(&store, user, 1).await, want);
    assert_eq!(r.octets, 3 * want.len() as u64);

    // A second run reads the listing and nothing else.
    log.lock().expect("log").clear();
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull again");
    assert_eq!((r.added, r.present, r.fetched), (0, 3, 0));
    let commands = log.lock().expect("log").clone();
    assert!(
        !commands.iter().any(|c| c.starts_with("RETR")),
        "{commands:?}"
    );

    // Mail that arrived meanwhile: only it is read.
    s.messages
        .push(("uid-new".into(), stuff(b"Subject: new\r\n\r\nx\r\n")));
    let (addr, log) = serve(s).await;
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull new");
    assert_eq!((r.added, r.present, r.fetched), (1, 3, 1));
    let commands = log.lock().expect("log").clone();
    let retrs: Vec<&String> = commands.iter().filter(|c| c.starts_with("RETR")).collect();
    assert_eq!(retrs, ["RETR 4"]);
    assert!(
        !commands.iter().any(|c| c.starts_with("DELE")),
        "{commands:?}"
    );
    assert_eq!(commands.last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn bare_line_feeds_are_stored_as_crlf() {
    let mut s = script(0);
    s.messages
        .push(("lf".into(), b"Subject: lf\n\nline\n..dot\n".to_vec()));
    let (addr, _) = serve(s).await;
    let (_dir, store, user) = store().await;
    pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull");
    assert_eq!(
        body(&store, user, 0).await,
        b"Subject: lf\r\n\r\nline\r\n.dot\r\n"
    );
}

#[tokio::test]
async fn uidls_rfc_1939_forbids_are_renumbered_and_not_stored_twice() {
    let mut s = script(1);
    s.messages
        .push(("has space".into(), stuff(b"Subject: s\r\n\r\nx\r\n")));
    s.messages
        .push(("uid-0000".into(), stuff(b"Subject: dup\r\n\r\nx\r\n")));
    let (addr, _) = serve(s).await;
    let (_dir, store, user) = store().await;
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull");
    assert_eq!((r.added, r.renumbered), (3, 2));
    // The bad UIDL is not in the mailbox, so it is read again, but not stored again.
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull");
    assert_eq!((r.added, r.present, r.fetched), (0, 3, 1));
    assert_eq!(uids(&store, user).await.len(), 3);
}

#[tokio::test]
async fn logins() {
    let (addr, _) = serve(script(0)).await;
    assert!(
        check_login(&plain(addr), "john", PASSWORD)
            .await
            .expect("ask")
    );
    assert!(
        !check_login(&plain(addr), "john", "wrong")
            .await
            .expect("ask")
    );
    let (_dir, store, user) = store().await;
    let e = pull(&store, &store, user, &plain(addr), "john", "wrong")
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::LoginRefused(_)), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password is not shown: {e}"
    );
    // A line break would smuggle a command in.
    let e = check_login(&plain(addr), "john", "x\r\nDELE 1")
        .await
        .expect_err("invalid");
    assert!(matches!(e, Error::Invalid(_)), "{e}");

    // USER refused: AUTH PLAIN.
    let (addr, log) = serve(Script {
        refuse_user: true,
        ..script(1)
    })
    .await;
    assert!(
        check_login(&plain(addr), "john", PASSWORD)
            .await
            .expect("ask")
    );
    assert!(
        !check_login(&plain(addr), "john", "wrong")
            .await
            .expect("ask")
    );
    assert!(log.lock().expect("log").iter().any(|c| c == "AUTH PLAIN"));
    let r = pull(&store, &store, user, &plain(addr), "john", PASSWORD)
        .await
        .expect("pull over AUTH PLAIN");
    assert_eq!(r.added, 1);

    // Nobody there.
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = free.local_addr().expect("addr");
    drop(free);
    assert!(matches!(
        check_login(&plain(gone), "john", PASSWORD).await,
        Err(Error::Connect { .. })
    ));
}

#[tokio::test]
async fn limits_hold_against_a_hostile_server() {
    let (_dir, store, user) = store().await;
    // A listing line over the line limit.
    let (addr, _) = serve(Script {
        uidl_line: Some(format!("1 {}\r\n.\r\n", "x".repeat(300)).into_bytes()),
        ..script(1)
    })
    .await;
    let source = small(plain(addr), 1000, Duration::from_secs(5));
    let e = pull(&store, &store, user, &source, "john", PASSWORD)
        .await
        .expect_err("long line");
    assert!(e.to_string().contains("over 200 octets"), "{e}");

    // More messages than the limit.
    let (addr, _) = serve(script(11)).await;
    let source = small(plain(addr), 1000, Duration::from_secs(5));
    let e = pull(&store, &store, user, &source, "john", PASSWORD)
        .await
        .expect_err("too many");
    assert!(e.to_string().contains("more than 10 messages"), "{e}");

    // A message over the cap that LIST admits: not read, reported.
    let mut big = script(2);
    big.messages[1].1 = stuff(&vec![b'x'; 2000]);
    big.list_size = None;
    let (addr, log) = serve(big.clone()).await;
    let source = small(plain(addr), 1000, Duration::from_secs(5));
    let r = pull(&store, &store, user, &source, "john", PASSWORD)
        .await
        .expect("pull");
    assert_eq!((r.added, r.too_large.len()), (1, 1));
    assert_eq!(r.too_large[0].0, "uid-0001");
    assert!(!log.lock().expect("log").iter().any(|c| c == "RETR 2"));

    // One LIST understates: reading stops at the cap.
    big.list_size = Some(10);
    big.messages[0].0 = "other".into();
    let (addr, _) = serve(big).await;
    let source = small(plain(addr), 1000, Duration::from_secs(5));
    let e = pull(&store, &store, user, &source, "john", PASSWORD)
        .await
        .expect_err("too large");
    assert!(matches!(e, Error::TooLarge { number: 2, .. }), "{e}");
    // The message read before it is kept, for the next run not to read it again.
    assert!(uids(&store, user).await.contains(&"other".to_string()));

    // Silence after the greeting: a timeout, not a hang.
    let (addr, _) = serve(Script {
        stall: true,
        ..script(0)
    })
    .await;
    let source = small(plain(addr), 1000, Duration::from_millis(300));
    let e = check_login(&source, "john", PASSWORD)
        .await
        .expect_err("stall");
    assert!(matches!(e, Error::Timeout(..)), "{e}");
}

/// A self-signed certificate for `name`, and an acceptor serving it.
fn certificate(name: &str) -> (String, tokio_rustls::TlsAcceptor) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![made.cert.der().clone()], key)
    .expect("config");
    (
        made.cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn tls_is_verified() {
    let (pem, acceptor) = certificate("127.0.0.1");
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write");
    let (other, _) = certificate("127.0.0.1");
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other).expect("write");
    let with_ca = |file: &std::path::Path, starttls| TlsOptions {
        starttls,
        ca_file: Some(file.to_path_buf()),
        insecure: false,
    };

    let (addr, _) = serve(Script {
        implicit_tls: Some(acceptor.clone()),
        ..script(1)
    })
    .await;
    let url = format!("pop3s://{addr}");
    let source = Source::parse(&url, with_ca(&ca, false)).expect("source");
    assert!(check_login(&source, "john", PASSWORD).await.expect("pop3s"));
    let source = Source::parse(&url, with_ca(&wrong, false)).expect("source");
    let e = check_login(&source, "john", PASSWORD)
        .await
        .expect_err("untrusted");
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    let insecure = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    };
    let source = Source::parse(&url, insecure).expect("source");
    assert!(
        check_login(&source, "john", PASSWORD)
            .await
            .expect("insecure")
    );
    // The name is checked too.
    let (localhost, for_localhost) = certificate("localhost");
    let named = dir.path().join("localhost.pem");
    std::fs::write(&named, localhost).expect("write");
    let (addr, _) = serve(Script {
        implicit_tls: Some(for_localhost),
        ..script(1)
    })
    .await;
    let source = Source::parse(&format!("pop3s://{addr}"), with_ca(&named, false)).expect("source");
    let e = check_login(&source, "john", PASSWORD)
        .await
        .expect_err("wrong name");
    assert!(e.to_string().contains("not valid for name"), "{e}");

    let (addr, log) = serve(Script {
        stls: Some(acceptor.clone()),
        ..script(1)
    })
    .await;
    let url = format!("pop3://{addr}");
    let source = Source::parse(&url, with_ca(&ca, true)).expect("source");
    let (_dir, store, user) = store().await;
    let r = pull(&store, &store, user, &source, "john", PASSWORD)
        .await
        .expect("over STLS");
    assert_eq!(r.added, 1);
    assert_eq!(
        log.lock().expect("log").first().map(String::as_str),
        Some("STLS")
    );

    // Bytes after STLS's +OK would be read as if they came over TLS: refused.
    let (addr, _) = serve(Script {
        stls: Some(acceptor),
        after_stls: b"+OK injected\r\n".to_vec(),
        ..script(1)
    })
    .await;
    let source = Source::parse(&format!("pop3://{addr}"), with_ca(&ca, true)).expect("source");
    let e = check_login(&source, "john", PASSWORD)
        .await
        .expect_err("injection");
    assert!(e.to_string().contains("after its STLS reply"), "{e}");

    // A server without STLS.
    let (addr, _) = serve(script(0)).await;
    let source = Source::parse(&format!("pop3://{addr}"), with_ca(&ca, true)).expect("source");
    let e = check_login(&source, "john", PASSWORD)
        .await
        .expect_err("no STLS");
    assert!(matches!(e, Error::NoStls(_)), "{e}");
}
