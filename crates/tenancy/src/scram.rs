//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side: the stored verifier, and the exchange as a
//! small pure state machine (client-first → server-first → client-final → server-final) with
//! the server nonce injectable for tests. `Authenticator::scram_start`/`scram_finish` put it
//! together with the directory.
//!
//! Verifiers are derived when the password is set (`pophost user add`/`user passwd`), in
//! Postgres' format `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), with
//! 4096 iterations (RFC 7677's minimum) and a 16-byte random salt. The password is SASLprepped
//! (RFC 4013) first; a password that is not UTF-8 or that SASLprep refuses (prohibited or
//! unassigned characters) is used as its raw bytes instead, as Postgres does, so such a user
//! can still log in with a client that sends the same raw bytes.
//!
//! No channel binding: the gs2 header must be `n,,` or `y,,` (`y`: the client could bind but
//! we offer no `-PLUS`); `p=…` and an authorization identity are refused. Unknown users, and
//! users whose verifier is missing (created before verifiers existed), get a server-first like
//! everyone else (a salt derived from the user name under a per-process random key, the same
//! iteration count) and fail at client-final, so SCRAM does not tell which users exist.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use mailstore::{FailureReason, UserId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AuthError, Authenticator, LoginContext};

type HmacSha256 = hmac::Hmac<Sha256>;

/// PBKDF2 iterations for new verifiers (RFC 7677 §4: at least 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const PREFIX: &str = "SCRAM-SHA-256$";

/// Why a SCRAM exchange failed. Only logged; the client gets `-ERR [AUTH]`.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ScramError {
    /// The client sent a message that is not SCRAM syntax, or asked for something we refuse
    /// (channel binding, an authorization identity, a mandatory extension).
    #[error("malformed or unsupported SCRAM message")]
    Malformed,
    /// The nonce or the channel-binding echo did not match.
    #[error("SCRAM nonce or channel binding mismatch")]
    Mismatch,
    /// The proof was wrong (wrong password, unknown user, or no verifier).
    #[error("SCRAM proof rejected")]
    Rejected,
}

/// What the server stores for SCRAM-SHA-256: enough to verify a proof, not to log in elsewhere
/// with plain text.
#[derive(Clone)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

impl ScramVerifier {
    /// A verifier for `password` with a new random salt and [`SCRAM_ITERATIONS`]. Runs PBKDF2
    /// (a few ms): call it off the reactor.
    pub fn derive(password: &[u8]) -> Self {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::derive_with(password, &salt, SCRAM_ITERATIONS)
    }

    /// A verifier with a given salt and iteration count (tests, RFC vectors).
    pub fn derive_with(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let prepared = prepare(password);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(&prepared, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Parses the stored form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(PREFIX)?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// A verifier nobody can log in with, whose salt depends only on `name` (and this process):
    /// what unknown users and users without a verifier are answered with.
    fn fake(name: &str) -> Self {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let salt = hmac(key, &[b"salt", name.as_bytes()]);
        Self {
            iterations: SCRAM_ITERATIONS,
            salt: salt.get(..SALT_LEN).unwrap_or_default().to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// SASLprep (RFC 4013) when it applies; the raw bytes otherwise: the rule the argon2id hash
/// follows too (`password::prepare_password`).
fn prepare(password: &[u8]) -> Vec<u8> {
    crate::password::prepare_password(password).into_owned()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; this never fails.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, with `=2C`/`=3D` decoded.
    pub username: String,
    nonce: String,
    gs2_header: String,
    bare: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare` (RFC 5802 §7).
    pub fn parse(message: &[u8]) -> Result<Self, ScramError> {
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
        let mut gs2 = message.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (gs2.next(), gs2.next(), gs2.next()) else {
            return Err(ScramError::Malformed);
        };
        if !matches!(flag, "n" | "y") || !authzid.is_empty() {
            return Err(ScramError::Malformed);
        }
        let mut fields = bare.split(',');
        let username = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .and_then(decode_saslname)
            .ok_or(ScramError::Malformed)?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| valid_nonce(n))
            .ok_or(ScramError::Malformed)?;
        Ok(Self {
            username,
            nonce: nonce.to_owned(),
            gs2_header: format!("{flag},,"),
            bare: bare.to_owned(),
        })
    }
}

fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// `saslname` (RFC 5802 §7): `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i)?);
        let tail = rest.get(i..)?;
        if let Some(r) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = r;
        } else if let Some(r) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = r;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

/// The server after sending server-first, waiting for client-final.
pub struct ScramServer {
    auth_message_start: String,
    nonce: String,
    channel_binding: String,
    verifier: ScramVerifier,
    /// False for a fake verifier: the exchange fails whatever the proof.
    genuine: bool,
    /// The user's app passwords' verifiers with the same salt and iteration count, by app
    /// password id (see `crate::app_passwords`): a proof matching one logs in as that device.
    devices: Vec<(ScramVerifier, i64)>,
}

impl ScramServer {
    /// Answers `client` with server-first, using `server_nonce` (random in [`Self::start`]).
    pub fn start_with(
        client: &ClientFirst,
        verifier: ScramVerifier,
        genuine: bool,
        server_nonce: &str,
    ) -> (Self, String) {
        let nonce = format!("{}{server_nonce}", client.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let server = Self {
            auth_message_start: format!("{},{server_first}", client.bare),
            nonce,
            channel_binding: STANDARD.encode(&client.gs2_header),
            verifier,
            genuine,
            devices: Vec::new(),
        };
        (server, server_first)
    }

    /// [`Self::start_with`] with a random nonce.
    pub fn start(client: &ClientFirst, verifier: ScramVerifier, genuine: bool) -> (Self, String) {
        let nonce: [u8; 18] = rand::random();
        Self::start_with(client, verifier, genuine, &STANDARD.encode(nonce))
    }

    /// Also accepts a proof made with one of these app passwords' verifiers; those whose salt
    /// or iteration count differ from the one sent are left out (they cannot match).
    pub fn with_devices(mut self, devices: Vec<(ScramVerifier, i64)>) -> Self {
        let (salt, iterations) = (&self.verifier.salt, self.verifier.iterations);
        self.devices = devices
            .into_iter()
            .filter(|(v, _)| v.salt == *salt && v.iterations == iterations)
            .collect();
        self
    }

    /// Checks client-final; on success returns server-final (`v=…`).
    #[cfg(test)]
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        self.finish_which(client_final)
            .map(|(server_final, _)| server_final)
    }

    /// `finish`, also saying which app password's proof it was (`None`: the main password).
    /// Every candidate is checked, in constant time each, whichever matches.
    pub fn finish_which(self, client_final: &[u8]) -> Result<(String, Option<i64>), ScramError> {
        let message = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed)?;
        let mut fields = without_proof.split(',');
        let cbind = fields.next().and_then(|f| f.strip_prefix("c="));
        let nonce = fields.next().and_then(|f| f.strip_prefix("r="));
        if cbind != Some(self.channel_binding.as_str()) || nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Mismatch);
        }
        let auth_message = format!("{},{without_proof}", self.auth_message_start);
        let proves = |v: &ScramVerifier| -> bool {
            let signature = hmac(&v.stored_key, &[auth_message.as_bytes()]);
            let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
            let stored: [u8; 32] = Sha256::digest(&client_key).into();
            stored.ct_eq(&v.stored_key).into()
        };
        let mut found: Option<(&ScramVerifier, Option<i64>)> = None;
        if proves(&self.verifier) && self.genuine {
            found = Some((&self.verifier, None));
        }
        for (v, id) in &self.devices {
            if proves(v) && found.is_none() {
                found = Some((v, Some(*id)));
            }
        }
        let Some((verifier, device)) = found else {
            return Err(ScramError::Rejected);
        };
        let server_signature = hmac(&verifier.server_key, &[auth_message.as_bytes()]);
        Ok((format!("v={}", STANDARD.encode(server_signature)), device))
    }
}

/// A SCRAM exchange in progress for a session: the state machine and who it is for.
pub struct ScramExchange {
    server: ScramServer,
    user: Option<UserId>,
    login: String,
    /// Counted as a failure (as for password logins) unless it succeeds.
    attempt: crate::Attempt,
}

impl ScramExchange {
    /// The user name the client gave.
    pub fn login(&self) -> &str {
        &self.login
    }
}

impl Authenticator {
    /// SCRAM-SHA-256 step one: resolves the user named in `client_first` like any login and
    /// returns the exchange and the server-first message. Unknown users and users without a
    /// verifier get a fake one (see the module docs). Malformed messages are `Rejected`.
    pub async fn scram_start(
        &self,
        client_first: &[u8],
        ctx: &LoginContext,
    ) -> Result<(ScramExchange, String), AuthError> {
        let client = ClientFirst::parse(client_first).map_err(|e| {
            tracing::debug!(error = %e, "SCRAM client-first refused");
            AuthError::Rejected
        })?;
        // The brute-force defence applies as to password logins: counted and slowed here; an
        // exchange that does not succeed (abandoned too) stays counted as a failure.
        let attempt = self.begin(&client.username, ctx).await?;
        let user = match &attempt.address {
            Some(address) => self
                .directory
                .find_user(address)
                .await
                .map_err(AuthError::Unavailable)?,
            None => None,
        };
        let id = user.as_ref().map(|u| u.id);
        // A domain that requires app passwords keeps the main verifier's salt (it is what the
        // app passwords were derived with) but not its key.
        let main_allowed = user.as_ref().is_some_and(|u| !u.app_passwords_only);
        let real = user
            .and_then(|u| u.scram)
            .and_then(|v| ScramVerifier::parse(&v));
        let devices: Vec<(ScramVerifier, i64)> = match id {
            Some(id) => self
                .app_password_verifiers(id)
                .await?
                .iter()
                .flat_map(|s| {
                    s.scram
                        .lines()
                        .filter_map(ScramVerifier::parse)
                        .map(|v| (v, s.id))
                        .collect::<Vec<_>>()
                })
                .collect(),
            None => Vec::new(),
        };
        let genuine = real.is_some() && main_allowed;
        // No main verifier: the app passwords' shared salt is sent, with a key nobody holds.
        let verifier = match (real, devices.first()) {
            (Some(v), _) => v,
            (None, Some((app, _))) => ScramVerifier {
                stored_key: rand::random(),
                server_key: rand::random(),
                ..app.clone()
            },
            (None, None) => ScramVerifier::fake(&client.username),
        };
        let (server, server_first) = ScramServer::start(&client, verifier, genuine);
        let server = server.with_devices(devices);
        let exchange = ScramExchange {
            server,
            user: id,
            login: client.username,
            attempt,
        };
        Ok((exchange, server_first))
    }

    /// SCRAM-SHA-256 step two: checks client-final; on success who logged in and server-final.
    pub async fn scram_finish(
        &self,
        exchange: ScramExchange,
        client_final: &[u8],
    ) -> Result<(crate::Authenticated, String), AuthError> {
        self.scram_finish_device(exchange, client_final)
            .await
            .map(|(who, server_final, _)| (who, server_final))
    }

    /// `scram_finish`, also saying which app password logged in (`None`: the main password).
    pub async fn scram_finish_device(
        &self,
        exchange: ScramExchange,
        client_final: &[u8],
    ) -> Result<(crate::Authenticated, String, Option<i64>), AuthError> {
        let address = exchange.attempt.address.clone();
        match (
            exchange.server.finish_which(client_final),
            exchange.user,
            address,
        ) {
            (Ok((server_final, device)), Some(user), Some(address)) => {
                self.succeeded(&exchange.attempt).await;
                if let Some(device) = device {
                    let ip = exchange.attempt.login.as_ref().and_then(|l| l.ip);
                    self.app_password_used(device, ip, "SCRAM-SHA-256").await;
                }
                Ok((crate::Authenticated { user, address }, server_final, device))
            }
            (result, ..) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "SCRAM client-final refused");
                }
                self.failed(&exchange.attempt, FailureReason::WrongPassword)
                    .await;
                Err(AuthError::Rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_verifier() -> ScramVerifier {
        ScramVerifier::derive_with(b"pencil", &STANDARD.decode(SALT).unwrap(), 4096)
    }

    /// RFC 7677 §3, byte for byte.
    #[test]
    fn rfc7677_example() {
        let client = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(client.username, "user");
        let (server, server_first) =
            ScramServer::start_with(&client, rfc_verifier(), true, SERVER_NONCE);
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = server
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn wrong_proof_nonce_or_binding_fails() {
        let client = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let run = |verifier: ScramVerifier, genuine: bool, last: &[u8]| {
            let (server, _) = ScramServer::start_with(&client, verifier, genuine, SERVER_NONCE);
            server.finish(last)
        };
        let good: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert!(run(rfc_verifier(), true, good).is_ok());
        // The right proof against a fake verifier (or one marked not genuine) still fails.
        assert_eq!(run(rfc_verifier(), false, good), Err(ScramError::Rejected));
        let other = ScramVerifier::derive_with(b"pencil2", &STANDARD.decode(SALT).unwrap(), 4096);
        assert_eq!(run(other, true, good), Err(ScramError::Rejected));
        assert_eq!(
            run(
                rfc_verifier(),
                true,
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            Err(ScramError::Mismatch)
        );
        assert_eq!(
            run(rfc_verifier(), true, b"c=cD10bHMtdW5pcXVlLCw=,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
            Err(ScramError::Mismatch)
        );
        assert_eq!(
            run(rfc_verifier(), true, b"garbage"),
            Err(ScramError::Malformed)
        );
    }

    #[test]
    fn client_first_messages() {
        let ok = ClientFirst::parse(b"y,,n=a=2Cb=3Dc,r=abc").unwrap();
        assert_eq!(ok.username, "a,b=c");
        for bad in [
            &b"p=tls-unique,,n=user,r=abc"[..],
            b"n,a=admin,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,n=user,r=abc",
            b"\xff,,n=user,r=abc",
        ] {
            assert_eq!(
                ClientFirst::parse(bad),
                Err(ScramError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn verifier_round_trip_and_format() {
        let v = rfc_verifier();
        let text = v.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        let back = ScramVerifier::parse(&text).unwrap();
        assert_eq!(back.to_string(), text);
        assert!(ScramVerifier::parse("SCRAM-SHA-256$x:abc$def:ghi").is_none());
        assert!(ScramVerifier::parse("$argon2id$v=19$m=8").is_none());
        let fresh = ScramVerifier::derive(b"pencil").to_string();
        assert_ne!(
            fresh,
            ScramVerifier::derive(b"pencil").to_string(),
            "salted"
        );
        // SASLprep: a non-ASCII space maps to a space; an unassigned-prohibited password
        // falls back to its raw bytes.
        assert_eq!(prepare("a\u{00A0}b".as_bytes()), b"a b");
        assert_eq!(prepare(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(prepare("a\u{0007}b".as_bytes()), "a\u{0007}b".as_bytes());
    }

    #[test]
    fn fake_salt_is_stable_per_name() {
        let a = ScramVerifier::fake("nobody@example.com");
        let b = ScramVerifier::fake("nobody@example.com");
        let c = ScramVerifier::fake("other@example.com");
        assert_eq!(a.salt, b.salt);
        assert_ne!(a.salt, c.salt);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.iterations, SCRAM_ITERATIONS);
    }
}
