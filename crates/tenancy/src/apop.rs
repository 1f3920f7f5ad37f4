//! APOP (RFC 1939 §7): the greeting's `<timestamp>`, the digest MD5(timestamp || secret), and
//! the per-user secret kept encrypted at rest under a server key.
//!
//! APOP is weak and is here only for old clients: the server must be able to recover each
//! secret (it is plaintext-equivalent), MD5 of a captured exchange allows offline guessing, and
//! nothing protects the session itself. Secrets are therefore sealed with XChaCha20-Poly1305
//! under a 32-byte server key, with the user id as associated data so a sealed secret copied
//! onto another user does not open; the stored form is base64(nonce || ciphertext).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use mailstore::{FailureReason, UserId};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::login::LoginContext;
use crate::{AuthError, Authenticated, Authenticator};

/// Length of the server's APOP key file, in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Bound into every sealed secret with the user id, so the ciphertext means nothing elsewhere.
const AD_PREFIX: &[u8] = b"pophost apop secret v1\0";

/// The server key APOP secrets are sealed under. Every frontend sharing a database needs the
/// same key.
#[derive(Clone)]
pub struct ApopKey([u8; KEY_LEN]);

impl std::fmt::Debug for ApopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApopKey(<redacted>)")
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or created.
    #[error("APOP key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold exactly 32 bytes.
    #[error("APOP key file {path}: must hold exactly {KEY_LEN} bytes, has {len}")]
    BadLength { path: String, len: usize },
}

impl ApopKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads the key file, or creates it (32 random bytes, mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let len = bytes.len();
                let key = <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| KeyError::BadLength {
                    path: shown.clone(),
                    len,
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let key: [u8; KEY_LEN] = rand::random();
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path);
                match created {
                    Ok(mut file) => {
                        file.write_all(&key).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Ok(Self(key))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Seals `secret` for `user`: base64(nonce || ciphertext).
    pub fn seal(&self, user: UserId, secret: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = associated_data(user);
        let payload = Payload {
            msg: secret,
            aad: &aad,
        };
        // Encryption into a Vec fails only for messages beyond the cipher's length limit
        // (256 GiB); an APOP secret is a line typed by an administrator.
        let sealed = self
            .cipher()
            .encrypt(&XNonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// The secret sealed for `user`, or `None` when `sealed` is malformed, was sealed under
    /// another key, or for another user.
    pub fn open(&self, user: UserId, sealed: &str) -> Option<Vec<u8>> {
        let bytes = BASE64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).ok()?;
        let aad = associated_data(user);
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }
}

fn associated_data(user: UserId) -> Vec<u8> {
    let mut aad = AD_PREFIX.to_vec();
    aad.extend_from_slice(&user.0.to_be_bytes());
    aad
}

/// The RFC 1939 digest: MD5 of the timestamp (brackets included) followed by the secret, as 32
/// lower-case hex digits.
pub fn digest_hex(timestamp: &str, secret: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret);
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `digest` (hex, either case) is the APOP digest of `timestamp` and `secret`; the
/// comparisons are constant-time. RFC 6856 §2 has client and server SASLprep a UTF-8 secret
/// before the digest (`password::prepare_password`, the rule passwords follow); a client from
/// before RFC 6856 digests the secret as it is, so both are accepted, both always computed.
pub fn digest_matches(timestamp: &str, secret: &[u8], digest: &str) -> bool {
    let given = digest.to_ascii_lowercase();
    let matches = |secret: &[u8]| {
        bool::from(
            digest_hex(timestamp, secret)
                .as_bytes()
                .ct_eq(given.as_bytes()),
        )
    };
    let prepared = crate::password::prepare_password(secret);
    matches(&prepared) | matches(secret)
}

/// A greeting timestamp in RFC 1939's `<process-ID.clock@hostname>` shape, made unique per
/// connection with 64 random bits.
pub fn new_timestamp(hostname: &str) -> String {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let unique: u64 = rand::random();
    format!("<{}.{unique:016x}.{clock}@{hostname}>", std::process::id())
}

/// Verifies APOP logins against the directory. Every failure (unknown user, domain without
/// APOP, no secret, wrong digest) is the same [`AuthError::Rejected`] at comparable cost: a
/// dummy sealed secret is opened and hashed when there is no real one. The password
/// [`Authenticator`]'s brute-force defence applies unchanged: the same waits before an attempt,
/// and a failure is recorded against the client's network and the account and answered late.
pub struct ApopVerifier {
    auth: Arc<Authenticator>,
    key: ApopKey,
    hostname: String,
    dummy: String,
}

/// Stands in for a missing user: no real user has a negative id.
const DUMMY_USER: UserId = UserId(-1);

impl ApopVerifier {
    pub fn new(auth: Arc<Authenticator>, key: ApopKey, hostname: String) -> Self {
        let dummy = key.seal(DUMMY_USER, b"pophost dummy apop secret");
        Self {
            auth,
            key,
            hostname,
            dummy,
        }
    }

    /// A fresh timestamp for a greeting.
    pub fn timestamp(&self) -> String {
        new_timestamp(&self.hostname)
    }

    /// `APOP name digest` against the greeting's `timestamp`. `name` is resolved like a USER
    /// login (login forms, aliases, bare names).
    pub async fn authenticate(
        &self,
        name: &str,
        timestamp: &str,
        digest: &str,
        ctx: &LoginContext,
    ) -> Result<Authenticated, AuthError> {
        let directory = &*self.auth.directory;
        let attempt = self.auth.begin(name, ctx).await?;
        let user = match &attempt.address {
            Some(address) => directory
                .find_apop_user(address)
                .await
                .map_err(AuthError::Unavailable)?,
            None => None,
        };
        let (id, sealed, usable) = match &user {
            Some(u) => match &u.secret {
                Some(secret) => (u.id, secret.as_str(), u.domain_allows),
                None => (DUMMY_USER, self.dummy.as_str(), false),
            },
            None => (DUMMY_USER, self.dummy.as_str(), false),
        };
        let matches = match self.key.open(id, sealed) {
            Some(secret) => digest_matches(timestamp, &secret, digest),
            None => {
                tracing::warn!("an APOP secret does not open under this server's key");
                false
            }
        };
        let known = user.is_some();
        match (user, attempt.address.clone()) {
            (Some(u), Some(address)) if usable && matches => {
                self.auth.succeeded(&attempt).await;
                Ok(Authenticated {
                    user: u.id,
                    address,
                })
            }
            _ => {
                // A good digest is impossible without a secret: an account with none, or of a
                // domain without APOP, cannot log in this way whatever it sends.
                let reason = if known && !usable {
                    FailureReason::MechanismNotAllowed
                } else {
                    FailureReason::WrongPassword
                };
                self.auth.failed(&attempt, reason).await;
                Err(AuthError::Rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_TIMESTAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";
    const RFC_DIGEST: &str = "c4c9334bac560ecc979e58001b3e22fb";

    fn key() -> ApopKey {
        ApopKey::from_bytes([7; KEY_LEN])
    }

    #[test]
    fn rfc1939_example() {
        assert_eq!(digest_hex(RFC_TIMESTAMP, b"tanstaaf"), RFC_DIGEST);
        assert!(digest_matches(RFC_TIMESTAMP, b"tanstaaf", RFC_DIGEST));
        assert!(digest_matches(
            RFC_TIMESTAMP,
            b"tanstaaf",
            &RFC_DIGEST.to_ascii_uppercase()
        ));
        assert!(!digest_matches(RFC_TIMESTAMP, b"tanstaaF", RFC_DIGEST));
        assert!(!digest_matches(
            "<1896.697170953@dbc.mtview.ca.us>",
            b"tanstaaf",
            RFC_DIGEST
        ));
        assert!(!digest_matches(
            RFC_TIMESTAMP,
            b"tanstaaf",
            &RFC_DIGEST[..31]
        ));
    }

    #[test]
    fn a_utf8_secret_matches_its_saslprep_form_and_itself() {
        // Stored with a no-break space; an RFC 6856 client digests the SASLprep'd form (a
        // plain space), an older one the bytes as stored.
        let secret = "gehe\u{00A0}im".as_bytes();
        for digested in [&b"gehe im"[..], secret] {
            let digest = digest_hex(RFC_TIMESTAMP, digested);
            assert!(digest_matches(RFC_TIMESTAMP, secret, &digest));
        }
        let other = digest_hex(RFC_TIMESTAMP, b"geheim");
        assert!(!digest_matches(RFC_TIMESTAMP, secret, &other));
    }

    #[test]
    fn sealing_round_trips_and_hides_the_secret() {
        let sealed = key().seal(UserId(42), b"tanstaaf");
        assert!(!sealed.contains("tanstaaf"));
        assert_eq!(
            key().open(UserId(42), &sealed).as_deref(),
            Some(&b"tanstaaf"[..])
        );
        assert_ne!(
            sealed,
            key().seal(UserId(42), b"tanstaaf"),
            "a fresh nonce every time"
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_and_key() {
        let sealed = key().seal(UserId(42), b"tanstaaf");
        assert_eq!(
            key().open(UserId(43), &sealed),
            None,
            "copied to another user"
        );
        assert_eq!(
            ApopKey::from_bytes([8; KEY_LEN]).open(UserId(42), &sealed),
            None,
            "another server key"
        );
        assert_eq!(key().open(UserId(42), "not base64!"), None);
        assert_eq!(key().open(UserId(42), "AAAA"), None, "shorter than a nonce");
        let mut tampered = BASE64.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key().open(UserId(42), &BASE64.encode(tampered)), None);
    }

    #[test]
    fn timestamps_have_the_rfc_shape_and_differ() {
        let a = new_timestamp("mail.example.com");
        let b = new_timestamp("mail.example.com");
        assert!(
            a.starts_with('<') && a.ends_with("@mail.example.com>"),
            "{a}"
        );
        assert!(!a[1..a.len() - 1].contains(['<', '>']));
        assert_ne!(a, b);
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("apop.key");
        let first = ApopKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        let again = ApopKey::load_or_create(&path).unwrap();
        let sealed = first.seal(UserId(1), b"s");
        assert_eq!(again.open(UserId(1), &sealed).as_deref(), Some(&b"s"[..]));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            ApopKey::load_or_create(&path),
            Err(KeyError::BadLength { len: 5, .. })
        ));
    }
}
