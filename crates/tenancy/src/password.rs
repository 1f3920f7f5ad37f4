//! Stored passwords: argon2id PHC strings with the argon2 crate's defaults, which are the OWASP
//! parameters (m=19456 KiB, t=2, p=1). Verification compares in constant time inside argon2.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes a password for storage. Takes tens of milliseconds: call it off the reactor.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// True when `password` matches the PHC string `hash`; false for a malformed hash.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    Argon2::default().verify_password(password, hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_owasp_parameters() {
        let hash = hash_password(b"correct horse battery staple").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(b"correct horse battery staple", &hash));
        assert!(!verify_password(b"correct horse battery stapl", &hash));
        assert!(!verify_password(b"x", "not a hash"));
        assert_ne!(
            hash,
            hash_password(b"correct horse battery staple").expect("hash"),
            "salted"
        );
    }
}
