//! TLS certificates for pophost's listeners. `Certificates` loads a default certificate and
//! per-domain ones (PEM files) and hands them to rustls through a resolver that chooses by SNI
//! and falls back to the default, so clients that send no SNI (or an unknown name) still get a
//! certificate. `Certificates::reload` re-reads the files (SIGHUP) and swaps them in atomically;
//! a bad file keeps the old set. `self_signed` makes (once) and reuses a certificate for
//! `localhost`, for installations without one. Only the ring provider and TLS 1.2+ are used.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

/// One certificate chain and its key, as files, with the config keys that named them (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The config key of `cert` (`tls.cert`, `tls.sni[0].cert`).
    pub cert_setting: String,
    /// The config key of `key`.
    pub key_setting: String,
}

/// What to serve: the default certificate, and certificates chosen by SNI name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub default: CertFiles,
    /// (server name, files); names are matched case-insensitively.
    pub sni: Vec<(String, CertFiles)>,
}

/// Why certificates could not be loaded or made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        setting: String,
        path: PathBuf,
        source: io::Error,
    },
    /// A configured file held no usable PEM certificate or key.
    #[error("{setting}: {} holds no valid {what}: {detail}", path.display())]
    Pem {
        setting: String,
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    /// The key does not fit the certificate, or rustls refused it.
    #[error("{setting}: {} does not go with {}: {detail}", key.display(), cert.display())]
    Mismatch {
        setting: String,
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    /// Making or storing the self-signed certificate failed.
    #[error("self-signed certificate in {}: {detail}", dir.display())]
    SelfSigned { dir: PathBuf, detail: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in use, replaceable while sessions run.
pub struct Certificates {
    files: TlsFiles,
    current: ArcSwap<Loaded>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// One loaded set: what the resolver chooses from.
struct Loaded {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl Certificates {
    /// Loads every file; an error names the config key of the bad one.
    pub fn load(files: TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let loaded = load_set(&files)?;
        Ok(Arc::new(Certificates {
            files,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Re-reads the files and swaps them in; on error the old certificates stay. Sessions
    /// already running keep the certificate they were given.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_set(&self.files)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// A rustls server config (TLS 1.2 and 1.3, ring) resolving through these certificates.
    ///
    /// Session resumption by stateless tickets (RFC 8446 §4.6.1, RFC 5077 for TLS 1.2): the
    /// ticket keys live only in this process's memory (never on disk), a new key every 6 hours
    /// with the previous one still accepted (rustls's ring `Ticketer`), so a ticket resumes for
    /// up to 12 hours and only on the frontend that issued it. Stateless tickets cost no server
    /// memory per client, unlike the session-ID cache (kept too, at rustls's default of 256
    /// entries, for TLS 1.2 clients without ticket support). Two tickets per TLS 1.3 handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Arc::new(config))
    }

    /// An acceptor for tokio streams.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }

    /// The certificate for `server_name` (SNI), or the default one.
    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let set = self.current.load();
        server_name
            .map(normalise)
            .and_then(|n| set.by_name.get(&n).cloned())
            .unwrap_or_else(|| set.default.clone())
    }
}

/// Chooses by SNI with a fallback to the default certificate (rustls's own
/// `ResolvesServerCertUsingSni` has no fallback: clients without SNI would fail).
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.choose(hello.server_name()))
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn load_set(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let default = Arc::new(load_pair(&files.default)?);
    let mut by_name = HashMap::new();
    for (name, pair) in &files.sni {
        by_name.insert(normalise(name), Arc::new(load_pair(pair)?));
    }
    Ok(Loaded { default, by_name })
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn load_pair(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert, &files.cert_setting)?;
    let key_pem = read(&files.key, &files.key_setting)?;
    let pem_error = |setting: &str, path: &Path, what, detail: String| TlsError::Pem {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        what,
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_error(
                &files.cert_setting,
                &files.cert,
                "certificate",
                e.to_string(),
            )
        })?;
    if chain.is_empty() {
        return Err(pem_error(
            &files.cert_setting,
            &files.cert,
            "certificate",
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_error(&files.key_setting, &files.key, "private key", e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        setting: files.key_setting.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        detail: e.to_string(),
    })
}

/// The files of the self-signed `localhost` certificate in `dir` (`cert.pem`, `key.pem`),
/// made on first use and reused afterwards; the key file is mode 0600.
pub fn self_signed(dir: &Path) -> Result<TlsFiles, TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let failed = |detail: String| TlsError::SelfSigned {
        dir: dir.to_path_buf(),
        detail,
    };
    if !cert.exists() || !key.exists() {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(|e| failed(e.to_string()))?;
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        write_private(&key, made.signing_key.serialize_pem().as_bytes())
            .map_err(|e| failed(format!("{}: {e}", key.display())))?;
        std::fs::write(&cert, made.cert.pem())
            .map_err(|e| failed(format!("{}: {e}", cert.display())))?;
        tracing::info!(cert = %cert.display(), "generated a self-signed certificate for localhost");
    }
    let setting = |file: &Path| format!("self-signed {}", file.display());
    Ok(TlsFiles {
        default: CertFiles {
            cert_setting: setting(&cert),
            key_setting: setting(&key),
            cert,
            key,
        },
        sni: Vec::new(),
    })
}

/// Writes `bytes` to a new file readable only by its owner (via a temporary file and rename, so
/// a crash leaves no half-written key).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fresh self-signed certificate for `name` into `dir` and returns its files.
    fn make(dir: &Path, name: &str) -> CertFiles {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).expect("write");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write");
        CertFiles {
            cert,
            key,
            cert_setting: "tls.cert".into(),
            key_setting: "tls.key".into(),
        }
    }

    fn der(c: &Arc<CertifiedKey>) -> Vec<u8> {
        c.cert[0].as_ref().to_vec()
    }

    #[test]
    fn chooses_by_sni_and_falls_back_to_the_default() {
        let tmp = tempfile::tempdir().expect("tmp");
        let default = make(tmp.path(), "localhost");
        let a = make(tmp.path(), "a.example");
        let b = make(tmp.path(), "b.example");
        let certs = Certificates::load(TlsFiles {
            default: default.clone(),
            sni: vec![("A.example".into(), a.clone()), ("b.example".into(), b)],
        })
        .expect("load");
        let d = der(&certs.choose(None));
        assert_eq!(
            der(&certs.choose(Some("a.example"))),
            der(&certs.choose(Some("A.EXAMPLE.")))
        );
        assert_ne!(der(&certs.choose(Some("a.example"))), d);
        assert_ne!(der(&certs.choose(Some("b.example"))), d);
        assert_ne!(
            der(&certs.choose(Some("a.example"))),
            der(&certs.choose(Some("b.example")))
        );
        assert_eq!(der(&certs.choose(Some("unknown.example"))), d);
        assert!(certs.server_config().is_ok());
    }

    #[test]
    fn reload_swaps_and_a_bad_file_keeps_the_old_set() {
        let tmp = tempfile::tempdir().expect("tmp");
        let files = make(tmp.path(), "localhost");
        let certs = Certificates::load(TlsFiles {
            default: files.clone(),
            sni: vec![],
        })
        .expect("load");
        let first = der(&certs.choose(None));
        make(tmp.path(), "localhost");
        certs.reload().expect("reload");
        let second = der(&certs.choose(None));
        assert_ne!(first, second);
        std::fs::write(&files.cert, "garbage").expect("write");
        let e = certs.reload().expect_err("bad cert");
        assert!(e.to_string().starts_with("tls.cert: "), "{e}");
        assert!(e.to_string().contains("localhost.crt"), "{e}");
        assert_eq!(der(&certs.choose(None)), second);
    }

    #[test]
    fn errors_name_the_setting() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut files = make(tmp.path(), "localhost");
        files.cert = tmp.path().join("missing.crt");
        let e = Certificates::load(TlsFiles {
            default: files,
            sni: vec![],
        })
        .expect_err("missing");
        assert!(e.to_string().starts_with("tls.cert: cannot read "), "{e}");
        // A key that belongs to another certificate.
        let mut files = make(tmp.path(), "localhost");
        files.key = make(tmp.path(), "other").key;
        let e = Certificates::load(TlsFiles {
            default: files,
            sni: vec![],
        })
        .expect_err("mismatch");
        assert!(e.to_string().starts_with("tls.key: "), "{e}");
    }

    /// A client reconnecting with the ticket of its first connection resumes (TLS 1.3 and
    /// TLS 1.2), and only with this server's ticket keys: another config's server does a
    /// full handshake.
    #[test]
    fn a_second_connection_resumes_by_ticket() {
        use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConnection};
        let tmp = tempfile::tempdir().expect("tmp");
        let certs =
            Certificates::load(self_signed(&tmp.path().join("tls")).expect("cert")).expect("load");
        let server = certs.server_config().expect("config");
        let other = certs.server_config().expect("config");
        // Stateless tickets (no per-client server memory), not only the session-ID cache.
        assert!(server.ticketer.enabled());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(tmp.path().join("tls/cert.pem")).expect("read cert")
        {
            roots.add(c.expect("pem")).expect("root");
        }
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[version])
                    .expect("versions")
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
            );
            let handshake = |server: &Arc<ServerConfig>| {
                let name = "localhost".try_into().expect("name");
                let mut c = ClientConnection::new(client.clone(), name).expect("client");
                let mut s = ServerConnection::new(server.clone()).expect("server");
                // Shuttle records both ways until neither side has more to say (the TLS 1.3
                // tickets come after the handshake).
                for _ in 0..20 {
                    let mut buf = Vec::new();
                    while c.wants_write() {
                        c.write_tls(&mut buf).expect("client write");
                    }
                    let mut rd = &buf[..];
                    while !rd.is_empty() {
                        s.read_tls(&mut rd).expect("server read");
                        s.process_new_packets().expect("server process");
                    }
                    let mut buf = Vec::new();
                    while s.wants_write() {
                        s.write_tls(&mut buf).expect("server write");
                    }
                    let mut rd = &buf[..];
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).expect("client read");
                        c.process_new_packets().expect("client process");
                    }
                }
                assert!(!c.is_handshaking() && !s.is_handshaking());
                (c.handshake_kind(), s.handshake_kind())
            };
            let full = Some(HandshakeKind::Full);
            let resumed = Some(HandshakeKind::Resumed);
            assert_eq!(handshake(&server), (full, full), "{version:?}");
            assert_eq!(handshake(&server), (resumed, resumed), "{version:?}");
            assert_eq!(handshake(&other), (full, full), "{version:?}");
        }
    }

    #[test]
    fn self_signed_is_made_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("tls");
        let files = self_signed(&dir).expect("make");
        let first = std::fs::read(&files.default.cert).expect("read");
        let mode = std::fs::metadata(&files.default.key)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = self_signed(&dir).expect("reuse");
        assert_eq!(std::fs::read(&again.default.cert).expect("read"), first);
        Certificates::load(again).expect("loads");
    }
}
