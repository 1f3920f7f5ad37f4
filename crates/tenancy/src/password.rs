//! Stored passwords: argon2id PHC strings with the argon2 crate's defaults, which are the OWASP
//! parameters (m=19456 KiB, t=2, p=1). Verification compares in constant time.
//!
//! Verifying is most of a login's CPU, so the common case (argon2id, version 0x13, one lane,
//! every hash pophost writes) goes to libsodium, whose hand-vectorised argon2 (AVX2, AVX-512
//! where the CPU has it) computes a hash in about two thirds of the argon2 crate's time
//! (`bench/argon2_cpu.py`, docs/BENCHMARKS.md). Anything else (argon2i/d, more lanes) stays
//! with the argon2 crate. Both read the same PHC strings. Hashes imported from another server
//! (`{SCHEME}…`) are verified by `legacy`.
//!
//! libsodium is built to take its 19 MiB of working memory from plain `malloc`, not a fresh
//! `mmap` per hash (`.cargo/config.toml`): a fresh mapping is 4,864 page faults, each page zeroed
//! by the kernel, which on a VM cost as much again as the hash itself. From `malloc` a hashing
//! thread gets the same block back each time (glibc stops mapping blocks this large once one has
//! been freed), as the crate's `Scratch` does. Not `posix_memalign` either: its trimmed block is
//! a little short of the next aligned request, so the heap grew by fresh pages every time.

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

/// The one rule for which bytes of a password are hashed, here and for SCRAM's verifier: the
/// SASLprep (RFC 4013) form when the password is UTF-8 and SASLprep accepts it, so `Ａnna` typed
/// as `Anna`'s fullwidth twin, a no-break space for a space, or a decomposed `ö` for `ö` is the
/// same password (RFC 6856 asks this of USER/PASS); otherwise the raw bytes, as Postgres does,
/// so a password SASLprep refuses (a control character, an unassigned code point) still works
/// when typed the same way again.
pub fn prepare_password(password: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(Cow::Owned(prepared))) => Cow::Owned(prepared.into_bytes()),
        _ => Cow::Borrowed(password),
    }
}

/// Hashes a password for storage (its `prepare_password` form). Takes tens of milliseconds:
/// call it off the reactor.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(&prepare_password(password))
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

/// `verify_password` using `scratch` as argon2's memory where the argon2 crate verifies. The
/// comparison is constant-time.
///
/// The `prepare_password` form is tried first; when it differs from the bytes typed, the bytes
/// themselves next, because hashes stored before passwords were SASLprep'd were made from the
/// raw bytes. The second try depends only on what was typed, never on the account, so an
/// unknown user (checked against the dummy hash) costs the same.
pub fn verify_password_in(password: &[u8], hash: &str, scratch: &mut Scratch) -> bool {
    // A hash imported from another server (`{SCHEME}…`) until its first login rewrites it: the
    // other server hashed the raw bytes.
    if crate::legacy::stored_scheme(hash).is_some() {
        return crate::legacy::verify_in(password, hash, scratch);
    }
    let prepared = prepare_password(password);
    verify_exact(&prepared, hash, scratch)
        || (*prepared != *password && verify_exact(password, hash, scratch))
}

/// `hash` against exactly these bytes.
fn verify_exact(password: &[u8], hash: &str, scratch: &mut Scratch) -> bool {
    if for_sodium(hash)
        && let Some(verdict) = sodium_verify(password, hash)
    {
        return verdict;
    }
    crate_verify(password, hash, scratch)
}

/// Whether libsodium reads `hash` as the argon2 crate does: argon2id, an explicit version 0x13
/// (the two disagree on what a missing version means), one lane (all libsodium computes).
fn for_sodium(hash: &str) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    phc.algorithm.as_str() == "argon2id"
        && phc.version == Some(0x13)
        && Params::try_from(&phc).is_ok_and(|p| p.p_cost() == 1)
}

/// The argon2 crate's verification, in `scratch`.
fn crate_verify(password: &[u8], hash: &str, scratch: &mut Scratch) -> bool {
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

/// libsodium's verdict on `password` against the argon2id PHC string `hash`, or `None` when
/// libsodium cannot take it (it failed to initialise, or the string is longer than it reads).
/// libsodium compares in constant time; it allocates its working memory per call (see the top).
fn sodium_verify(password: &[u8], hash: &str) -> Option<bool> {
    use libsodium_sys as sodium;
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: sodium_init may be called from any thread, any number of times.
    if !*READY.get_or_init(|| unsafe { sodium::sodium_init() } >= 0) {
        return None;
    }
    if hash.len() >= sodium::crypto_pwhash_argon2id_STRBYTES as usize {
        return None;
    }
    let hash = std::ffi::CString::new(hash).ok()?;
    let len = u64::try_from(password.len()).ok()?;
    // SAFETY: `hash` is NUL-terminated and shorter than crypto_pwhash_argon2id_STRBYTES, as
    // libsodium requires; `password` is read for `len` bytes and may hold any bytes.
    let verdict = unsafe {
        sodium::crypto_pwhash_argon2id_str_verify(
            hash.as_ptr(),
            password.as_ptr().cast::<std::ffi::c_char>(),
            len,
        )
    };
    Some(verdict == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslprep_equivalent_passwords_verify() {
        // Set with a precomposed ö and a no-break space.
        let hash = hash_password("jö\u{00A0}pw".as_bytes()).expect("hash");
        for typed in [
            "jö pw",
            "jo\u{0308}\u{00A0}pw",
            "jo\u{0308} pw",
            "jö\u{2002}pw",
        ] {
            assert!(verify_password(typed.as_bytes(), &hash), "{typed:?}");
        }
        for wrong in ["jo pw", "JÖ pw", "jöpw", "jö  pw"] {
            assert!(!verify_password(wrong.as_bytes(), &hash), "{wrong:?}");
        }
        // A soft hyphen is mapped to nothing (RFC 4013 §2.2).
        let hash = hash_password("pass\u{00AD}word".as_bytes()).expect("hash");
        assert!(verify_password(b"password", &hash));
    }

    #[test]
    fn hashes_of_raw_bytes_keep_working() {
        // Stored before SASLprep: the argon2id hash of the decomposed bytes themselves.
        let raw = "jo\u{0308}hn".as_bytes();
        let old = Argon2::default()
            .hash_password(raw)
            .expect("hash")
            .to_string();
        assert!(verify_password(raw, &old));
        assert!(!verify_password("jöhn".as_bytes(), &old));
        // Not UTF-8, or refused by SASLprep (a control): hashed and verified as typed.
        for odd in [&b"\xff\xfe pw"[..], "a\u{0007}b".as_bytes()] {
            assert_eq!(&*prepare_password(odd), odd);
            let hash = hash_password(odd).expect("hash");
            assert!(verify_password(odd, &hash));
        }
        assert_eq!(&*prepare_password("a\u{00A0}b".as_bytes()), b"a b");
        assert!(matches!(
            prepare_password(b"plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

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

    /// The two verifiers agree: on pophost's own hashes, on a hash from the reference `argon2`
    /// CLI (as imported Dovecot users' are), whatever the password's bytes; and the shapes
    /// libsodium is not given (two lanes, argon2i, no version) still verify, with the crate.
    #[test]
    fn libsodium_and_the_argon2_crate_agree() {
        let password = b"p\xc3\xa4ss\0word with a NUL";
        let ours = hash_password(password).expect("hash");
        // `echo -n password | argon2 somesaltsomesalt -id -m 15 -t 2 -p 1 -e`
        let reference = "$argon2id$v=19$m=32768,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$IX8rTqp0d9Pu37QS7l1Ix06hxksaav9Ey5Ztp+RIRS8";
        for (hash, right) in [(&ours[..], &password[..]), (reference, b"password")] {
            assert!(for_sodium(hash), "{hash}");
            for (candidate, want) in [(right, true), (b"p".as_slice(), false), (b"", false)] {
                assert_eq!(sodium_verify(candidate, hash), Some(want), "{hash}");
                assert_eq!(
                    crate_verify(candidate, hash, &mut Scratch::default()),
                    want,
                    "{hash}"
                );
            }
        }
        let argon = |algorithm, lanes| {
            let params = Params::new(64, 1, lanes, None).expect("params");
            Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"password")
                .expect("hash")
                .to_string()
        };
        let no_version = argon(Algorithm::Argon2id, 1).replace("$v=19", "");
        for hash in [
            argon(Algorithm::Argon2id, 2),
            argon(Algorithm::Argon2i, 1),
            no_version,
        ] {
            assert!(!for_sodium(&hash), "{hash}");
            assert!(verify_password(b"password", &hash), "{hash}");
            assert!(!verify_password(b"passwore", &hash), "{hash}");
        }
    }

    /// A hashing thread verifies in the same memory each time, without faulting in 19 MiB of
    /// fresh pages per login. Fails when libsodium was built to `mmap` its memory (a target dir
    /// built without `.cargo/config.toml`'s setting: `cargo clean -p libsodium-sys-stable`).
    #[test]
    fn verification_reuses_its_working_memory() {
        // Field 10 of /proc/thread-self/stat: this thread's minor page faults.
        fn faults() -> u64 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
            after_name
                .split(' ')
                .nth(7)
                .expect("minflt")
                .parse()
                .expect("number")
        }
        let hash = hash_password(b"password").expect("hash");
        assert!(for_sodium(&hash));
        std::thread::spawn(move || {
            let mut scratch = Scratch::default();
            // The first block this large is mapped; freeing it moves glibc's threshold for
            // mapping past it, and the next ones come from the heap.
            for _ in 0..2 {
                assert!(verify_password_in(b"password", &hash, &mut scratch));
            }
            let before = faults();
            for _ in 0..4 {
                assert!(verify_password_in(b"password", &hash, &mut scratch));
            }
            let pages = 19456 / 4;
            let per_hash = (faults() - before) / 4;
            assert!(
                per_hash < pages / 4,
                "{per_hash} page faults per verification (a fresh mapping is {pages})"
            );
        })
        .join()
        .expect("hashing thread");
    }
}
