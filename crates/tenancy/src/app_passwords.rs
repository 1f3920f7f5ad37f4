//! App passwords (issue 22, item 1): what a per-device password looks like, how its secrets are
//! derived, and how a login checks one. `mailstore::AppPasswords` keeps them.
//!
//! pophost generates every app password: 28 characters of lowercase base32 (140 bits from the
//! OS's random source), shown in groups of four joined by `-`. A typed password is normalised
//! (separators `-` and space dropped, letters lower-cased) before it is hashed or checked, so
//! `abcd-efgh-…`, `abcd efgh …` and `ABCDEFGH…` are the same password.
//!
//! Cost of a login: with up to `MAX_APP_PASSWORDS` per user, verifying each argon2id hash would
//! make one failed guess cost twenty. Each row therefore carries a tag, two bytes of a hash of
//! the normalised password: only rows whose tag matches are verified (one, almost always none).
//! The tag gives away 16 of 140 bits, which leaves a guesser nothing to work with. Passwords
//! that are not shaped like an app password are never checked against app passwords at all.
//!
//! SCRAM-SHA-256: the server sends one salt before it knows which password the client holds.
//! All of a user's app passwords are therefore derived with the salt and iteration count of the
//! user's main SCRAM verifier (or, when there is none, of their other app passwords), and the
//! exchange checks the client's proof against each StoredKey (an HMAC and a hash each, cheap).
//! Each app password stores two verifiers, for the password as shown and without separators,
//! since SCRAM clients send the password exactly as typed. A new main password (through
//! `provision::update_user`, or the upgrade of an imported hash) keeps the app passwords' salt,
//! so changing it does not cut the devices off from SCRAM.

use std::sync::Arc;

use mailstore::{AppPasswordSecret, AppPasswords, UserId};
use rand::TryRng;
use sha2::{Digest, Sha256};

use crate::{Authenticator, HashError, ScramVerifier, hash_password};

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Characters of an app password (5 bits each: 140 bits).
pub const APP_PASSWORD_CHARS: usize = 28;
const GROUP: usize = 4;

/// A new app password from the OS's random source, grouped for typing (`abcd-efgh-…`).
pub fn generate() -> Result<String, HashError> {
    let mut bytes = [0u8; APP_PASSWORD_CHARS];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| HashError::new(format!("no random bytes from the OS: {e}")))?;
    // 256 is a multiple of 32: each byte's low five bits are uniform.
    let plain: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    Ok(grouped(&plain))
}

fn grouped(plain: &str) -> String {
    plain
        .as_bytes()
        .chunks(GROUP)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The password without separators, lower-cased, if `typed` is shaped like an app password.
pub fn normalize(typed: &[u8]) -> Option<String> {
    let plain: String = typed
        .iter()
        .filter(|b| !matches!(b, b'-' | b' '))
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    (plain.len() == APP_PASSWORD_CHARS && plain.bytes().all(|b| ALPHABET.contains(&b)))
        .then_some(plain)
}

/// The row tag of a normalised app password (see the module docs).
pub fn tag(normalized: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"pophost app password tag\0")
        .chain_update(normalized.as_bytes())
        .finalize();
    format!("{:02x}{:02x}", digest[0], digest[1])
}

/// The SCRAM salt and iteration count a user's app passwords share: their main verifier's, else
/// their existing app passwords'. `None`: the first app password picks a new one.
/// `apps` are their stored verifiers (`AppPasswordSecret::scram`).
pub fn shared_scram_salt<S: AsRef<str>>(main: Option<&str>, apps: &[S]) -> Option<(Vec<u8>, u32)> {
    main.and_then(ScramVerifier::parse)
        .or_else(|| {
            apps.iter()
                .find_map(|a| a.as_ref().lines().next().and_then(ScramVerifier::parse))
        })
        .map(|v| (v.salt().to_vec(), v.iterations()))
}

/// What the store keeps of a new app password.
pub struct AppPasswordSecrets {
    pub tag: String,
    pub hash: String,
    /// Two verifiers, one per line.
    pub scram: String,
}

impl AppPasswordSecrets {
    /// argon2id and PBKDF2: tens of milliseconds of CPU, call it off the reactor. `password`
    /// is one `generate` made; `salt` the user's shared SCRAM salt, if they have one.
    pub fn derive(password: &str, salt: Option<(Vec<u8>, u32)>) -> Result<Self, HashError> {
        let plain = normalize(password.as_bytes())
            .ok_or_else(|| HashError::new("not an app password".to_string()))?;
        let (salt, iterations) = match salt {
            Some(s) => s,
            None => {
                let v = ScramVerifier::derive(plain.as_bytes());
                (v.salt().to_vec(), v.iterations())
            }
        };
        let scram = [grouped(&plain), plain.clone()]
            .iter()
            .map(|p| ScramVerifier::derive_with(p.as_bytes(), &salt, iterations).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            tag: tag(&plain),
            hash: hash_password(plain.as_bytes())?,
            scram,
        })
    }
}

impl Authenticator {
    /// Lets the user's app passwords log in (`mailstore::AppPasswords`).
    pub fn with_app_passwords(mut self, store: Arc<dyn AppPasswords>) -> Self {
        self.app_passwords = Some(store);
        self
    }

    /// The app password of `user` that `password` is, if any. The auth cache holds an app
    /// password's login under its own stored hash, which revoking deletes: a revoked password
    /// never hits it.
    pub(crate) async fn app_password_matching(
        &self,
        user: UserId,
        mailbox: &str,
        password: &[u8],
        cached_only: bool,
    ) -> Option<(i64, Arc<str>)> {
        let store = self.app_passwords.as_ref()?;
        let plain = normalize(password)?;
        let secrets = match store.app_password_secrets(user).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading app passwords failed");
                return None;
            }
        };
        let tag = tag(&plain);
        let candidates = secrets.into_iter().filter(|s| s.tag == tag);
        for candidate in candidates {
            let hash: Arc<str> = candidate.password_hash.into();
            if self.cache.get(mailbox, plain.as_bytes(), &hash).is_some() {
                return Some((candidate.id, hash));
            }
            if !cached_only
                && self
                    .hashers
                    .verify(plain.clone().into_bytes(), hash.clone())
                    .await
            {
                self.cache.put(mailbox, plain.as_bytes(), &hash, user);
                return Some((candidate.id, hash));
            }
        }
        None
    }

    /// Records that app password `id` logged in (a failure to record is only logged).
    pub(crate) async fn app_password_used(
        &self,
        id: i64,
        ip: Option<std::net::IpAddr>,
        mechanism: &str,
    ) {
        let Some(store) = &self.app_passwords else {
            return;
        };
        let ip = ip.map(|ip| ip.to_string());
        if let Err(e) = store
            .record_app_password_use(id, ip.as_deref(), mechanism)
            .await
        {
            tracing::warn!(error = %e, "recording an app password's use failed");
        }
    }

    /// Marks a POP3 session's maildrop lease with the app password it logged in with (see
    /// `AppPasswords::bind_lease_to_app_password`); false: the session must not go on.
    pub async fn bind_lease_to_app_password(
        &self,
        lease: &mailstore::Lease,
        device: i64,
    ) -> Result<bool, mailstore::StoreError> {
        match &self.app_passwords {
            Some(store) => store.bind_lease_to_app_password(lease, device).await,
            None => Ok(false),
        }
    }

    /// `secrets` of a new main password of `user`, its SCRAM verifier re-derived with the salt
    /// of the user's app passwords if they have any (SCRAM sends one salt per user).
    pub(crate) async fn keeping_app_password_salt(
        &self,
        user: UserId,
        password: &[u8],
        mut secrets: crate::Secrets,
    ) -> crate::Secrets {
        let Ok(apps) = self.app_password_verifiers(user).await else {
            return secrets;
        };
        let scram: Vec<&str> = apps.iter().map(|a| a.scram.as_str()).collect();
        if let Some((salt, iterations)) = shared_scram_salt(None, &scram) {
            let password = password.to_vec();
            let derived = tokio::task::spawn_blocking(move || {
                ScramVerifier::derive_with(&password, &salt, iterations).to_string()
            })
            .await;
            if let Ok(verifier) = derived {
                secrets.verifier = verifier;
            }
        }
        secrets
    }

    /// A user's app password verifiers for a SCRAM exchange: (app password id, verifier).
    pub(crate) async fn app_password_verifiers(
        &self,
        user: UserId,
    ) -> Result<Vec<AppPasswordSecret>, crate::AuthError> {
        match &self.app_passwords {
            Some(store) => store
                .app_password_secrets(user)
                .await
                .map_err(crate::AuthError::Unavailable),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthError, AuthPolicy, DefaultDomains, LoginContext};
    use mailstore::{
        Address, AppPasswords, Directory, DomainName, LockOptions, NewAppPassword, SqliteStore,
    };
    use std::time::Duration;

    /// With the login cache on, a cached login outlives neither a revocation nor the domain's
    /// switch to app passwords only; and the main password's login says no device.
    #[tokio::test]
    async fn the_login_cache_keeps_no_revoked_or_refused_password_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        let domain = DomainName::parse("example.com").unwrap();
        store.add_domain(&domain).await.unwrap();
        let john = Address::parse("john@example.com").unwrap();
        let main = crate::Secrets::derive(b"main pw").unwrap();
        store
            .add_user(&john, &main.hash, Some(&main.verifier))
            .await
            .unwrap();
        let pw = generate().unwrap();
        let s = AppPasswordSecrets::derive(&pw, None).unwrap();
        let new = NewAppPassword {
            label: "phone",
            tag: &s.tag,
            password_hash: &s.hash,
            scram: &s.scram,
        };
        store.add_app_password(&john, &new).await.unwrap();
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            cache_ttl: Duration::from_secs(600),
            ..AuthPolicy::default()
        };
        let auth = Authenticator::new(store.clone(), 1, DefaultDomains::default(), policy)
            .unwrap()
            .with_app_passwords(store.clone());
        let ctx = LoginContext::default();
        let login = "john@example.com";
        for _ in 0..2 {
            let (_, device) = auth
                .authenticate_device(login, b"main pw", &ctx)
                .await
                .unwrap();
            assert_eq!(device, None);
            let (_, device) = auth
                .authenticate_device(login, pw.as_bytes(), &ctx)
                .await
                .unwrap();
            assert!(device.is_some());
        }
        assert!(
            auth.cache.get(login, b"main pw", &main.hash).is_some(),
            "cached"
        );
        store.set_app_passwords_only(&domain, true).await.unwrap();
        assert!(matches!(
            auth.authenticate(login, b"main pw", &ctx).await,
            Err(AuthError::Rejected)
        ));
        auth.authenticate(login, pw.as_bytes(), &ctx).await.unwrap();
        store.revoke_app_password(&john, "phone").await.unwrap();
        assert!(matches!(
            auth.authenticate(login, pw.as_bytes(), &ctx).await,
            Err(AuthError::Rejected)
        ));
    }

    #[test]
    fn generated_passwords_are_grouped_long_and_normalise() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a.len(),
            APP_PASSWORD_CHARS + APP_PASSWORD_CHARS / GROUP - 1,
            "{a}"
        );
        assert!(a.split('-').all(|g| g.len() == GROUP), "{a}");
        let plain = normalize(a.as_bytes()).unwrap();
        assert_eq!(plain, a.replace('-', ""));
        assert_eq!(
            normalize(a.replace('-', " ").to_uppercase().as_bytes()),
            Some(plain.clone())
        );
        // One character short, or one outside the alphabet, is not an app password.
        assert_eq!(normalize(&plain.as_bytes()[1..]), None);
        assert_eq!(
            normalize(plain.replacen(&plain[..1], "1", 1).as_bytes()),
            None
        );
        assert_eq!(normalize(b"correct horse battery staple"), None);
    }

    #[test]
    fn secrets_verify_the_password_in_every_typed_form() {
        let pw = generate().unwrap();
        let s = AppPasswordSecrets::derive(&pw, None).unwrap();
        let plain = normalize(pw.as_bytes()).unwrap();
        assert!(crate::verify_password(plain.as_bytes(), &s.hash));
        assert!(!crate::verify_password(pw.as_bytes(), &s.hash) || pw == plain);
        assert_eq!(s.tag, tag(&plain));
        let verifiers: Vec<_> = s
            .scram
            .lines()
            .map(|l| ScramVerifier::parse(l).unwrap())
            .collect();
        assert_eq!(verifiers.len(), 2);
        assert_eq!(
            verifiers[0].salt(),
            verifiers[1].salt(),
            "one salt per user"
        );
        // A second app password of the user gets the same salt.
        let secret = AppPasswordSecret {
            id: 1,
            tag: s.tag.clone(),
            password_hash: s.hash.clone(),
            scram: s.scram.clone(),
        };
        let salt = shared_scram_salt(None, std::slice::from_ref(&secret.scram)).unwrap();
        assert_eq!(salt.0, verifiers[0].salt());
        let other = AppPasswordSecrets::derive(&generate().unwrap(), Some(salt)).unwrap();
        let first = ScramVerifier::parse(other.scram.lines().next().unwrap()).unwrap();
        assert_eq!(first.salt(), verifiers[0].salt());
        // The main verifier's salt wins over the app passwords'.
        let main = ScramVerifier::derive(b"main password").to_string();
        let main_salt = shared_scram_salt(Some(&main), &[secret.scram]).unwrap();
        assert_eq!(main_salt.0, ScramVerifier::parse(&main).unwrap().salt());
    }
}
