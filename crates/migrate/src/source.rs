//! Where the old server is: a `pop3s://` or `pop3://` URL and how to secure the connection.
//! The rustls client config is built here, once per `Source`, so a bad `--ca-file` fails before
//! any account is tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Error;

/// How to secure the connection to the old server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `pop3://` only: upgrade the connection with STLS (RFC 2595) before logging in.
    pub starttls: bool,
    /// Trust the certificates in this PEM file instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Allow `pop3://` without STLS (the password in the clear), and do not verify certificates.
    pub insecure: bool,
}

impl TlsOptions {
    /// How a domain in migration mode reaches its old server (`--migrate-from`): `pop3s://`
    /// with TLS from the first byte, `pop3://` always upgraded with STLS, certificates always
    /// checked — customers' passwords never cross in the clear.
    pub fn for_migration(url: &str, ca_file: Option<PathBuf>) -> TlsOptions {
        TlsOptions {
            starttls: url.starts_with("pop3://"),
            ca_file,
            insecure: false,
        }
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (`pop3s://`).
    Implicit,
    /// STLS after the greeting (`pop3://` with `starttls`).
    StartTls,
    /// None (`pop3://` with `insecure`).
    Plain,
}

/// The sizes and times a hostile or broken old server is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A status or listing line, line ending included.
    pub line: usize,
    /// One message, unstuffed, CRLF line endings.
    pub message: usize,
    /// Entries of a UIDL or LIST listing.
    pub messages: usize,
    pub connect: Duration,
    /// Each read and each write (a slow message may take many).
    pub io: Duration,
}

/// What a message may be at most: larger ones are not copied and are reported.
pub const MAX_MESSAGE_OCTETS: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // RFC 2449 allows replies of 512 octets; some servers send longer ones.
            line: 8192,
            message: MAX_MESSAGE_OCTETS,
            messages: 1_000_000,
            connect: Duration::from_secs(30),
            io: Duration::from_secs(60),
        }
    }
}

/// The old server: where it is and how to talk to it securely.
#[derive(Clone)]
pub struct Source {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.security {
            Security::Implicit => "pop3s",
            _ => "pop3",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Source {
    /// `pop3s://host[:port]` (TLS from the first byte, port 995) or `pop3://host[:port]` (port
    /// 110), which needs `tls.starttls`, or `tls.insecure` to send the password in the clear.
    pub fn parse(url: &str, tls: TlsOptions) -> Result<Source, Error> {
        let bad = |why: &str| Error::Url(format!("{url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected pop3s://HOST[:PORT] or pop3://HOST[:PORT]"))?;
        let (security, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "pop3s" if tls.starttls => {
                return Err(bad(
                    "--starttls is for pop3:// URLs (pop3s:// is TLS from the start)",
                ));
            }
            "pop3s" => (Security::Implicit, 995),
            "pop3" if tls.starttls => (Security::StartTls, 110),
            "pop3" if tls.insecure => (Security::Plain, 110),
            "pop3" => {
                return Err(bad(
                    "pop3:// without TLS would send the password in the clear: use pop3s://, add \
                     --starttls, or allow it with --insecure",
                ));
            }
            _ => return Err(bad("the scheme must be pop3s or pop3")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a path, query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL (give --user/--login and --password-stdin)",
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|_| bad("bad host name"))?;
        Ok(Source {
            host: host.to_string(),
            port,
            security,
            server_name,
            tls: Arc::new(client_config(&tls)?),
            limits: Limits::default(),
        })
    }

    /// The same source with other limits (tests use small ones).
    #[cfg(test)]
    pub(crate) fn with_limits(mut self, limits: Limits) -> Source {
        self.limits = limits;
        self
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2+ with ring (as the `tls` crate's server side); trust from `ca_file` or the system.
fn client_config(tls: &TlsOptions) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    if tls.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = read_pem(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Config(format!(
                    "--ca-file {}: no usable certificate in it",
                    path.display()
                )));
            }
        }
        None => {
            let path = system_bundle().ok_or_else(|| {
                Error::Config(
                    "no system CA certificates found (/etc/ssl/certs/ca-certificates.crt): \
                     give --ca-file"
                        .into(),
                )
            })?;
            roots.add_parsable_certificates(read_pem(&path)?);
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let data = std::fs::read(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// The system's CA bundle: `SSL_CERT_FILE`, else where Debian, Fedora and Alpine keep it.
fn system_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
}

/// `--insecure`: any certificate is accepted, but the handshake's signatures are still checked
/// (so the connection is at least encrypted to whoever holds the presented key).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure() -> TlsOptions {
        TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        }
    }

    #[test]
    fn urls() {
        let s = Source::parse("pop3s://old.example.net", TlsOptions::default()).expect("parse");
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("old.example.net", 995, Security::Implicit)
        );
        let s = Source::parse("POP3S://127.0.0.1:1995/", TlsOptions::default()).expect("parse");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1995));
        let s = Source::parse("pop3s://[::1]:2000", TlsOptions::default()).expect("parse");
        assert_eq!((s.host.as_str(), s.port), ("::1", 2000));
        assert_eq!(s.to_string(), "pop3s://[::1]:2000");
        let starttls = TlsOptions {
            starttls: true,
            ..TlsOptions::default()
        };
        let s = Source::parse("pop3://mail.example.net", starttls.clone()).expect("parse");
        assert_eq!((s.port, s.security), (110, Security::StartTls));
        let s = Source::parse("pop3://mail.example.net:1110", insecure()).expect("parse");
        assert_eq!((s.port, s.security), (1110, Security::Plain));
        for bad in [
            "mail.example.net",
            "imap://mail.example.net",
            "pop3s://",
            "pop3s://host:0",
            "pop3s://host:99999",
            "pop3s://host:x",
            "pop3s://user:pw@host",
            "pop3s://host/INBOX",
            "pop3s://[::1",
            "pop3s://a:b:c",
        ] {
            assert!(
                matches!(
                    Source::parse(bad, TlsOptions::default()),
                    Err(Error::Url(_))
                ),
                "{bad}"
            );
        }
        assert!(Source::parse("pop3s://host", starttls).is_err());
    }

    #[test]
    fn first_login_options_never_send_a_password_in_the_clear() {
        let url = "pop3://old.example.net";
        let s = Source::parse(url, TlsOptions::for_migration(url, None)).expect("parse");
        assert_eq!((s.security, s.port), (Security::StartTls, 110));
        let url = "pop3s://old.example.net";
        let s = Source::parse(url, TlsOptions::for_migration(url, None)).expect("parse");
        assert_eq!((s.security, s.port), (Security::Implicit, 995));
        // Whatever the spelling, never plain text.
        let url = "POP3://old.example.net";
        assert!(Source::parse(url, TlsOptions::for_migration(url, None)).is_err());
    }

    #[test]
    fn plain_pop3_needs_starttls_or_insecure() {
        let e =
            Source::parse("pop3://mail.example.net", TlsOptions::default()).expect_err("refused");
        assert!(e.to_string().contains("--starttls"), "{e}");
        assert!(e.to_string().contains("in the clear"), "{e}");
    }

    #[test]
    fn ca_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = TlsOptions {
            ca_file: Some(dir.path().join("none.pem")),
            ..TlsOptions::default()
        };
        assert!(matches!(
            Source::parse("pop3s://h", missing),
            Err(Error::Config(_))
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = Source::parse(
            "pop3s://h",
            TlsOptions {
                ca_file: Some(empty),
                ..TlsOptions::default()
            },
        )
        .expect_err("no certificate");
        assert!(e.to_string().contains("no usable certificate"), "{e}");
    }
}
