//! Serving the MTA services on TCP (loopback and trusted networks only) and UNIX sockets, with
//! one connection cap per service.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use listener::{Conn, Network, ProxyPolicy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A service's connection handler, whatever the transport.
pub trait Handler: Send + Sync + 'static {
    fn handle<S>(&self, stream: S, abort: CancellationToken) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}

impl Handler for crate::auth::AuthService {
    fn handle<S>(&self, stream: S, abort: CancellationToken) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::auth::AuthService::handle(self, stream, abort)
    }
}

impl Handler for crate::socketmap::Socketmap {
    fn handle<S>(&self, stream: S, abort: CancellationToken) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::socketmap::Socketmap::handle(self, stream, abort)
    }
}

impl Handler for crate::policy::PolicyService {
    fn handle<S>(&self, stream: S, abort: CancellationToken) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::policy::PolicyService::handle(self, stream, abort)
    }
}

/// Where and to whom a service answers.
#[derive(Debug, Clone)]
pub struct Access {
    /// The protocol's name in logs and metrics (`sasl`, `socketmap`, `policy`).
    pub name: &'static str,
    /// Connections handled at once, TCP and UNIX socket together; more are closed at once.
    pub max_connections: usize,
    /// TCP peers besides loopback that may connect: these services answer questions about
    /// accounts (and check passwords), so only the MTA's hosts may ask.
    pub trusted_networks: Vec<Network>,
    /// How long connections may go on after shutdown starts.
    pub grace: Duration,
}

impl Access {
    fn admits(&self, ip: IpAddr) -> bool {
        listener::is_loopback_or_in(ip, &self.trusted_networks)
    }
}

/// Serves `handler` on a TCP listener and/or a UNIX socket until `shutdown`, then gives the
/// connections `access.grace` to finish and ends the rest.
pub async fn serve<H: Handler>(
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    access: Access,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    // One cap for both transports: the UNIX socket takes its slots from the same pool.
    let slots = Arc::new(Semaphore::new(access.max_connections.max(1)));
    let tcp_side = async {
        let Some(tcp) = tcp else { return };
        let options = listener::Options {
            name: access.name,
            // The UNIX side shares `slots`; this cap only keeps `listener::serve` from
            // admitting more than the whole service may hold.
            max_connections: access.max_connections.max(1),
            grace: access.grace,
            busy_reply: b"",
            proxy: ProxyPolicy::Off,
        };
        let handler = handler.clone();
        let access = access.clone();
        let slots = slots.clone();
        listener::serve(tcp, options, shutdown.clone(), move |conn: Conn, abort| {
            let handler = handler.clone();
            let admitted = access.admits(conn.peer.ip());
            let slot = slots.clone().try_acquire_owned();
            let name = access.name;
            let span = tracing::info_span!("mta", service = name, peer = %conn.peer);
            async move {
                if !admitted {
                    tracing::warn!("connection from an address not in the trusted networks refused");
                    metrics::counter!("pophost_connections_refused_total", "listener" => name, "reason" => "untrusted")
                        .increment(1);
                    return;
                }
                let Ok(_slot) = slot else {
                    metrics::counter!("pophost_connections_refused_total", "listener" => name, "reason" => "busy")
                        .increment(1);
                    return;
                };
                handler.handle(conn.stream, abort).await;
            }
            .instrument(span)
        })
        .await;
    };
    let unix_side = async {
        let Some(unix) = unix else { return };
        let tracker = TaskTracker::new();
        let abort = CancellationToken::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = unix.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(listener = access.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            metrics::counter!("pophost_connections_total", "listener" => access.name).increment(1);
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics::counter!("pophost_connections_refused_total", "listener" => access.name, "reason" => "busy")
                    .increment(1);
                continue;
            };
            let handler = handler.clone();
            let abort = abort.clone();
            let span = tracing::info_span!("mta", service = access.name, peer = "unix");
            tracker.spawn(
                async move {
                    let _slot = slot;
                    handler.handle(stream, abort).await;
                }
                .instrument(span),
            );
        }
        tracker.close();
        if tokio::time::timeout(access.grace, tracker.wait())
            .await
            .is_err()
        {
            abort.cancel();
            tracker.wait().await;
        }
    };
    tokio::join!(tcp_side, unix_side);
}

/// Who may use a UNIX socket: its mode and owner, so that e.g. Postfix's chrooted smtpd (user
/// `postfix`) can reach `/var/spool/postfix/private/pophost-auth` and nobody else can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAccess {
    pub mode: u32,
    /// A user name from /etc/passwd or a numeric uid.
    pub owner: Option<String>,
    /// A group name from /etc/group or a numeric gid.
    pub group: Option<String>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        Self {
            mode: 0o660,
            owner: None,
            group: None,
        }
    }
}

/// Binds a UNIX socket at `path` with `access`. A socket left there by an earlier run is
/// replaced; one another process still listens on is not (removing it would cut that server
/// off silently), nor is any other file.
pub fn bind_unix(path: &Path, access: &SocketAccess) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let uid = access
        .owner
        .as_deref()
        .map(|o| id_of(o, Path::new("/etc/passwd")))
        .transpose()?;
    let gid = access
        .group
        .as_deref()
        .map(|g| id_of(g, Path::new("/etc/group")))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))?;
    Ok(listener)
}

/// A numeric id, or the id of `name` in a passwd/group file (name:x:id:…).
fn id_of(name: &str, file: &Path) -> io::Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {name:?} in {}", file.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Says "hi" and holds the connection until the client closes it.
    struct Hold;

    impl Handler for Hold {
        async fn handle<S>(&self, mut stream: S, _: CancellationToken)
        where
            S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let _ = stream.write_all(b"hi\n").await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    }

    fn access(max_connections: usize, trusted: &[&str]) -> Access {
        Access {
            name: "test",
            max_connections,
            trusted_networks: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            grace: Duration::from_millis(100),
        }
    }

    #[test]
    fn only_loopback_and_trusted_networks_are_admitted() {
        let a = access(1, &["192.0.2.0/24"]);
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "192.0.2.7"] {
            assert!(a.admits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.1", "10.0.0.1", "2001:db8::1"] {
            assert!(!a.admits(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Reads what the server says before it closes (or 500 ms of nothing).
    async fn greeting(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut buf = vec![0; 16];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(n)) => buf[..n].to_vec(),
            _ => b"(nothing)".to_vec(),
        }
    }

    /// One cap for TCP and the UNIX socket together: while one connection holds the only slot,
    /// the next is closed on either transport; once it ends, the next is served.
    #[tokio::test]
    async fn one_connection_cap_for_both_transports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let unix = bind_unix(&path, &SocketAccess::default()).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            Some(tcp),
            Some(unix),
            access(1, &[]),
            Arc::new(Hold),
            shutdown.clone(),
        ));
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(greeting(&mut first).await, b"hi\n");
        let mut second = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert_eq!(greeting(&mut second).await, b"", "closed: no slot");
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(greeting(&mut third).await, b"", "closed: no slot");
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert_eq!(greeting(&mut fourth).await, b"hi\n");
        drop(fourth);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }

    #[test]
    fn ids_by_number_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\npostfix:x:105:110::/var/spool/postfix:/usr/sbin/nologin\n",
        )
        .unwrap();
        assert_eq!(id_of("postfix", &passwd).unwrap(), 105);
        assert_eq!(id_of("1234", &passwd).unwrap(), 1234);
        assert!(id_of("nobody-here", &passwd).is_err());
    }

    #[tokio::test]
    async fn a_unix_socket_gets_its_mode_and_replaces_only_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let access = SocketAccess {
            mode: 0o600,
            owner: None,
            group: None,
        };
        let live = bind_unix(&path, &access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A socket another server still listens on is left to it.
        let err = bind_unix(&path, &access).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
        drop(live);
        // A stale socket from an earlier run is replaced.
        drop(bind_unix(&path, &access).unwrap());
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "data").unwrap();
        assert!(bind_unix(&file, &access).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    }
}
