//! Stored passwords: argon2id PHC strings with the argon2 crate's defaults, which are the OWASP
//! parameters (m=19456 KiB, t=2, p=1). Verification compares in constant time inside argon2.

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl HashError {
    pub(crate) fn new(why: String) -> Self {
        Self(why)
    }
}

/// Hashes a password for storage. Takes tens of milliseconds: call it off the reactor.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// True when `password` matches the PHC string `hash`; false for a malformed hash.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    verify_password_in(password, hash, &mut Scratch::default())
}

/// argon2 working memory (~19 MiB with our parameters), kept by a hashing thread and reused for
/// every verification it runs. Allocating it per login fragments the allocator's heap: a
/// long-running server measured ~200-350 KiB of RSS growth per login that way.
#[derive(Default)]
pub struct Scratch(Vec<Block>);

/// `verify_password` using `scratch` as argon2's memory. The comparison is constant-time.
pub fn verify_password_in(password: &[u8], hash: &str, scratch: &mut Scratch) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let blocks = params.block_count();
    if scratch.0.len() < blocks {
        scratch.0.resize(blocks, Block::default());
    }
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let Some(memory) = scratch.0.get_mut(..blocks) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt.as_ref(), out, memory)
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
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
        // One scratch reused across hashes with different parameters.
        let mut scratch = Scratch::default();
        let small =
            "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$rjsM/wfkCHMWkAjIXlbqT1FVU3qZ+UjahZgkuQpJuDE";
        assert!(!verify_password_in(b"password", small, &mut scratch));
        assert!(verify_password_in(
            b"correct horse battery staple",
            &hash,
            &mut scratch
        ));
        assert!(!verify_password_in(b"wrong", &hash, &mut scratch));
        assert_ne!(
            hash,
            hash_password(b"correct horse battery staple").expect("hash"),
            "salted"
        );
    }
}
