//! Password hashes imported from another mail server (Dovecot, or Qpopper/popa3d with system or
//! PAM passwords), so an ISP's customers keep their passwords when they move to pophost.
//!
//! [`import`] checks a hash as an admin hands it over (Dovecot's `{SCHEME}…` or a bare crypt
//! string) and returns the normalised `{SCHEME}…` string to store; [`verify`] checks a login
//! against such a string. The caller rewrites the hash as argon2id after the first successful
//! login, so these are a bridge, not a place to keep passwords.
//!
//! What Dovecot writes was checked against its `doveadm pw` (2.3): the tests hold its output.
//! Where Dovecot is lenient we follow it: `{SHA256}` and the other fixed-length digests may be
//! hex or base64 (told apart by length, as Dovecot does), `.HEX`/`.B64` suffixes name the
//! encoding, `{MD5}` is MD5-CRYPT when it starts with `$1$` and hex MD5 otherwise, `{CRYPT}` is
//! whatever crypt string it holds. 13-character DES crypt is refused: it reads only the first 8
//! characters of a password and falls to brute force in hours.
//!
//! Every digest comparison is constant-time. Errors name the scheme and what is wrong, never the
//! hash or the password.

use std::fmt;

use argon2::{Params, PasswordHash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use md5::Md5;
use sha_crypt::PasswordVerifier;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::password::Scratch;

/// Iteration ceiling for `{PBKDF2}` and `{SCRAM-SHA-256}`, whose formats have none: far above
/// what Dovecot writes (5000 and 4096), low enough that a stray value cannot tie up a hashing
/// thread for minutes at every login.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Memory ceiling for imported argon2 hashes: libsodium's largest preset (`MEMLIMIT_SENSITIVE`,
/// 1 GiB). A hashing thread keeps the largest memory it has verified with (`Scratch`).
const MAX_ARGON2_KIB: u32 = 1 << 20;

/// The alphabet of crypt(3) salts and digests.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A scheme an old server stored, by Dovecot's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Argon2id,
    Argon2i,
    BlfCrypt,
    Sha512Crypt,
    Sha256Crypt,
    Md5Crypt,
    Ssha512,
    Ssha256,
    Ssha,
    Sha512,
    Sha256,
    Sha1,
    PlainMd5,
    Pbkdf2,
    ScramSha256,
}

impl Scheme {
    /// Dovecot's name for the scheme, as in the normalised `{NAME}…` form.
    pub fn name(self) -> &'static str {
        match self {
            Self::Argon2id => "ARGON2ID",
            Self::Argon2i => "ARGON2I",
            Self::BlfCrypt => "BLF-CRYPT",
            Self::Sha512Crypt => "SHA512-CRYPT",
            Self::Sha256Crypt => "SHA256-CRYPT",
            Self::Md5Crypt => "MD5-CRYPT",
            Self::Ssha512 => "SSHA512",
            Self::Ssha256 => "SSHA256",
            Self::Ssha => "SSHA",
            Self::Sha512 => "SHA512",
            Self::Sha256 => "SHA256",
            Self::Sha1 => "SHA1",
            Self::PlainMd5 => "PLAIN-MD5",
            Self::Pbkdf2 => "PBKDF2",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// For the digest schemes: the digest's length and whether a salt follows it.
    fn digest(self) -> Option<(usize, bool)> {
        match self {
            Self::Ssha512 => Some((64, true)),
            Self::Ssha256 => Some((32, true)),
            Self::Ssha => Some((20, true)),
            Self::Sha512 => Some((64, false)),
            Self::Sha256 => Some((32, false)),
            Self::Sha1 => Some((20, false)),
            Self::PlainMd5 => Some((16, false)),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to store for an imported hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Imported {
    /// Keep `hash` (the normalised `{SCHEME}rest`) as the account's password hash, and `scram`
    /// (when Some) as its SCRAM-SHA-256 verifier in [`crate::ScramVerifier`]'s format.
    Stored {
        hash: String,
        scheme: Scheme,
        scram: Option<String>,
    },
    /// `{PLAIN}`/`{CLEAR}`: the caller hashes this password itself and never stores it as is.
    Plain(String),
}

impl fmt::Debug for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stored { scheme, scram, .. } => f
                .debug_struct("Stored")
                .field("scheme", scheme)
                .field("scram", &scram.is_some())
                .finish_non_exhaustive(),
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
        }
    }
}

/// Why a hash cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// Neither `{SCHEME}…` nor a crypt string.
    #[error(
        "not a password hash pophost can import: expected {{SCHEME}}… or a crypt string \
         ($1$, $5$, $6$, $2a$/$2b$/$2y$, $argon2id$/$argon2i$)"
    )]
    Unrecognised,
    /// A `{NAME}` no server we know writes (or not a scheme name at all).
    #[error("unknown password scheme \"{0}\"")]
    UnknownScheme(String),
    /// A scheme Dovecot knows that pophost does not verify.
    #[error(
        "password scheme {{{0}}} is not supported for import; the user must set a new password"
    )]
    Unsupported(&'static str),
    /// 13-character DES crypt.
    #[error(
        "{{DES-CRYPT}}/{{CRYPT}} (13-character DES crypt) is too weak to import: it reads only \
         the first 8 characters of a password and falls to brute force in hours; the user must \
         set a new password"
    )]
    TooWeak,
    /// The scheme is known but the hash is not well formed.
    #[error("malformed {{{scheme}}} hash: {why}")]
    Malformed { scheme: &'static str, why: String },
}

fn malformed(scheme: Scheme, why: impl Into<String>) -> LegacyError {
    LegacyError::Malformed {
        scheme: scheme.name(),
        why: why.into(),
    }
}

/// Parses and checks (format only, no password) a hash as an admin hands it over: Dovecot's
/// `{SCHEME}…` form or a bare crypt string. Scheme names are case-insensitive.
pub fn import(hash: &str) -> Result<Imported, LegacyError> {
    let parsed = match identify(hash)? {
        Claim::Plain { encoding, body } => return plain(encoding, body).map(Imported::Plain),
        Claim::Hash {
            scheme,
            encoding,
            body,
        } => parse(scheme, encoding, body)?,
    };
    let scram = match &parsed {
        Parsed::Scram(scram) => Some(scram.verifier()?),
        _ => None,
    };
    Ok(Imported::Stored {
        hash: parsed.to_string(),
        scheme: parsed.scheme(),
        scram,
    })
}

/// The scheme of a stored password hash: Some for a legacy one (starts with '{'), None for
/// pophost's own argon2id PHC string. Reads the scheme name (and for `{MD5}`/`{CRYPT}` the
/// crypt prefix), not the rest: a malformed legacy hash still has a scheme, and fails [`verify`].
pub fn stored_scheme(stored: &str) -> Option<Scheme> {
    if !stored.starts_with('{') {
        return None;
    }
    match identify(stored) {
        Ok(Claim::Hash { scheme, .. }) => Some(scheme),
        _ => None,
    }
}

/// Whether `password` matches a stored legacy hash (the normalised form [`import`] returns).
/// False for anything malformed. Digests are compared in constant time.
pub fn verify(password: &[u8], stored: &str) -> bool {
    verify_in(password, stored, &mut Scratch::default())
}

/// [`verify`], with `scratch` as argon2's working memory for imported argon2 hashes.
pub(crate) fn verify_in(password: &[u8], stored: &str, scratch: &mut Scratch) -> bool {
    if !stored.starts_with('{') {
        return false;
    }
    let Ok(Claim::Hash {
        scheme,
        encoding,
        body,
    }) = identify(stored)
    else {
        return false;
    };
    let Ok(parsed) = parse(scheme, encoding, body) else {
        return false;
    };
    match parsed {
        // A PHC string never starts with '{', so this does not come back here.
        Parsed::Phc(_, phc) => crate::password::verify_password_in(password, phc, scratch),
        Parsed::Crypt(Scheme::BlfCrypt, crypt) => bcrypt::verify(password, crypt).unwrap_or(false),
        Parsed::Crypt(Scheme::Md5Crypt, crypt) => md5_crypt_verify(password, crypt),
        Parsed::Crypt(_, crypt) => sha_crypt::ShaCrypt::default()
            .verify_password(password, crypt)
            .is_ok(),
        Parsed::Digest {
            scheme,
            digest,
            salt,
        } => digest_of(scheme, &[password, &salt]).ct_eq(&digest).into(),
        Parsed::Pbkdf2 { salt, rounds, key } => {
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(password, salt.as_bytes(), rounds, &mut out);
            out.ct_eq(&key).into()
        }
        Parsed::Scram(scram) => scram.verify(password),
    }
}

/// How a digest scheme's bytes are written: the scheme's own default, or a `.HEX`/`.B64` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Default,
    Hex,
    Base64,
}

/// What a hash says it is, before its body is checked.
enum Claim<'a> {
    Hash {
        scheme: Scheme,
        encoding: Encoding,
        body: &'a str,
    },
    Plain {
        encoding: Encoding,
        body: &'a str,
    },
}

/// Dovecot schemes pophost does not take (no password can be checked against them the way
/// pophost logs in, or nobody is known to store them for POP users).
const UNSUPPORTED: &[&str] = &[
    "SMD5",
    "PLAIN-MD4",
    "PLAIN-TRUNC",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "HMAC-MD5",
    "DIGEST-MD5",
    "OTP",
    "SKEY",
    "RPA",
    "LANMAN",
    "NTLM",
];

/// The scheme a hash claims, from its `{NAME}` (and the crypt prefix where the name leaves it
/// open), or from the crypt prefix of a bare string.
fn identify(hash: &str) -> Result<Claim<'_>, LegacyError> {
    let Some(rest) = hash.strip_prefix('{') else {
        return match crypt_scheme(hash) {
            Some(scheme) => Ok(Claim::Hash {
                scheme,
                encoding: Encoding::Default,
                body: hash,
            }),
            None if is_des(hash) => Err(LegacyError::TooWeak),
            None => Err(LegacyError::Unrecognised),
        };
    };
    let (name, body) = rest.split_once('}').ok_or(LegacyError::Unrecognised)?;
    let upper = name.to_ascii_uppercase();
    let (base, encoding) = match upper.split_once('.') {
        None => (upper.as_str(), Encoding::Default),
        Some((base, "HEX")) => (base, Encoding::Hex),
        Some((base, "B64" | "BASE64")) => (base, Encoding::Base64),
        Some(_) => return Err(unknown(name)),
    };
    let scheme = match base {
        "ARGON2ID" => Scheme::Argon2id,
        "ARGON2I" => Scheme::Argon2i,
        "BLF-CRYPT" => Scheme::BlfCrypt,
        "SHA512-CRYPT" => Scheme::Sha512Crypt,
        "SHA256-CRYPT" => Scheme::Sha256Crypt,
        "MD5-CRYPT" => Scheme::Md5Crypt,
        "SSHA512" => Scheme::Ssha512,
        "SSHA256" => Scheme::Ssha256,
        "SSHA" => Scheme::Ssha,
        "SHA512" => Scheme::Sha512,
        "SHA256" => Scheme::Sha256,
        "SHA" | "SHA1" => Scheme::Sha1,
        // LDAP-MD5 is the same digest, base64 by default; the length tells them apart.
        "PLAIN-MD5" | "LDAP-MD5" => Scheme::PlainMd5,
        "MD5" if encoding == Encoding::Default && body.starts_with("$1$") => Scheme::Md5Crypt,
        "MD5" => Scheme::PlainMd5,
        "PBKDF2" => Scheme::Pbkdf2,
        "SCRAM-SHA-256" => Scheme::ScramSha256,
        // crypt(3) with whatever the system wrote: the string says which.
        "CRYPT" if encoding == Encoding::Default => match crypt_scheme(body) {
            Some(scheme) => scheme,
            None if is_des(body) => return Err(LegacyError::TooWeak),
            None => {
                return Err(LegacyError::Malformed {
                    scheme: "CRYPT",
                    why: "not a crypt string pophost verifies ($1$, $5$, $6$, $2a$/$2b$/$2y$)"
                        .into(),
                });
            }
        },
        "DES-CRYPT" => return Err(LegacyError::TooWeak),
        "PLAIN" | "CLEAR" | "CLEARTEXT" => return Ok(Claim::Plain { encoding, body }),
        other => {
            return Err(match UNSUPPORTED.iter().find(|&&u| u == other) {
                Some(known) => LegacyError::Unsupported(known),
                None => unknown(name),
            });
        }
    };
    if encoding != Encoding::Default && scheme.digest().is_none() {
        return Err(malformed(
            scheme,
            "an encoding suffix (.HEX, .B64) applies only to the SHA and MD5 digest schemes",
        ));
    }
    Ok(Claim::Hash {
        scheme,
        encoding,
        body,
    })
}

/// The error for an unknown scheme, naming it only when it looks like a scheme name (what sits
/// between the braces could be anything an admin pasted).
fn unknown(name: &str) -> LegacyError {
    let plausible = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    LegacyError::UnknownScheme(if plausible {
        name.to_ascii_uppercase()
    } else {
        "<not a scheme name>".to_owned()
    })
}

/// The scheme of a crypt string, by its prefix.
fn crypt_scheme(crypt: &str) -> Option<Scheme> {
    const PREFIXES: [(&str, Scheme); 8] = [
        ("$1$", Scheme::Md5Crypt),
        ("$5$", Scheme::Sha256Crypt),
        ("$6$", Scheme::Sha512Crypt),
        ("$2a$", Scheme::BlfCrypt),
        ("$2b$", Scheme::BlfCrypt),
        ("$2y$", Scheme::BlfCrypt),
        ("$argon2id$", Scheme::Argon2id),
        ("$argon2i$", Scheme::Argon2i),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| crypt.starts_with(prefix))
        .map(|&(_, scheme)| scheme)
}

/// Traditional DES crypt: 2 salt characters and 11 of digest, all from the crypt alphabet.
fn is_des(crypt: &str) -> bool {
    crypt.len() == 13 && crypt.bytes().all(|b| CRYPT64.contains(&b))
}

fn plain(encoding: Encoding, body: &str) -> Result<String, LegacyError> {
    let bad = |why: &str| LegacyError::Malformed {
        scheme: "PLAIN",
        why: why.to_owned(),
    };
    let password = match encoding {
        Encoding::Default => body.to_owned(),
        Encoding::Hex => String::from_utf8(hex_decode(body).ok_or_else(|| bad("invalid hex"))?)
            .map_err(|_| bad("the decoded password is not UTF-8"))?,
        Encoding::Base64 => {
            String::from_utf8(STANDARD.decode(body).map_err(|_| bad("invalid base64"))?)
                .map_err(|_| bad("the decoded password is not UTF-8"))?
        }
    };
    // An empty password would let anyone who knows the address in.
    if password.is_empty() {
        return Err(bad("the password is empty"));
    }
    Ok(password)
}

/// A legacy hash, checked, in the parts it is verified with.
enum Parsed<'a> {
    /// An argon2 PHC string.
    Phc(Scheme, &'a str),
    /// A crypt string: bcrypt, SHA-crypt or MD5-crypt.
    Crypt(Scheme, &'a str),
    /// digest(password ‖ salt); the salt is empty for the unsalted schemes.
    Digest {
        scheme: Scheme,
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
    /// Dovecot's `$1$salt$rounds$hex`: PBKDF2-HMAC-SHA1 over the salt's text.
    Pbkdf2 {
        salt: &'a str,
        rounds: u32,
        key: [u8; 20],
    },
    Scram(Scram),
}

impl Parsed<'_> {
    fn scheme(&self) -> Scheme {
        match self {
            Self::Phc(scheme, _) | Self::Crypt(scheme, _) | Self::Digest { scheme, .. } => *scheme,
            Self::Pbkdf2 { .. } => Scheme::Pbkdf2,
            Self::Scram(_) => Scheme::ScramSha256,
        }
    }
}

/// The normalised form: `{NAME}` and the body in the encoding Dovecot writes.
impl fmt::Display for Parsed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.scheme().name())?;
        match self {
            Self::Phc(_, body) | Self::Crypt(_, body) => f.write_str(body),
            Self::Digest {
                scheme: Scheme::PlainMd5,
                digest,
                ..
            } => f.write_str(&hex_encode(digest)),
            Self::Digest { digest, salt, .. } => {
                f.write_str(&STANDARD.encode([&digest[..], salt].concat()))
            }
            Self::Pbkdf2 { salt, rounds, key } => {
                write!(f, "$1${salt}${rounds}${}", hex_encode(key))
            }
            Self::Scram(s) => write!(
                f,
                "{},{},{},{}",
                s.iterations,
                STANDARD.encode(&s.salt),
                STANDARD.encode(s.stored_key),
                STANDARD.encode(s.server_key)
            ),
        }
    }
}

/// Checks the body of a hash claiming `scheme`.
fn parse(scheme: Scheme, encoding: Encoding, body: &str) -> Result<Parsed<'_>, LegacyError> {
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => parse_phc(scheme, body),
        Scheme::BlfCrypt => parse_bcrypt(body),
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => parse_sha_crypt(scheme, body),
        Scheme::Md5Crypt => md5_crypt_parts(body)
            .map(|_| Parsed::Crypt(scheme, body))
            .ok_or_else(|| {
                malformed(
                    scheme,
                    "expected $1$salt$digest (salt of 1 to 8 and digest of 22 crypt characters)",
                )
            }),
        Scheme::Pbkdf2 => parse_pbkdf2(body),
        Scheme::ScramSha256 => Scram::parse(body).map(Parsed::Scram),
        Scheme::Ssha512
        | Scheme::Ssha256
        | Scheme::Ssha
        | Scheme::Sha512
        | Scheme::Sha256
        | Scheme::Sha1
        | Scheme::PlainMd5 => parse_digest(scheme, encoding, body),
    }
}

fn parse_phc(scheme: Scheme, body: &str) -> Result<Parsed<'_>, LegacyError> {
    let phc = PasswordHash::new(body).map_err(|_| malformed(scheme, "not a PHC string"))?;
    let algorithm = if scheme == Scheme::Argon2id {
        "argon2id"
    } else {
        "argon2i"
    };
    if phc.algorithm.as_str() != algorithm {
        return Err(malformed(
            scheme,
            format!("expected an ${algorithm}$ string"),
        ));
    }
    if phc.salt.is_none() {
        return Err(malformed(scheme, "salt missing"));
    }
    if phc.hash.is_none() {
        return Err(malformed(scheme, "hash missing"));
    }
    if !matches!(phc.version, None | Some(0x10 | 0x13)) {
        return Err(malformed(scheme, "unknown argon2 version"));
    }
    let params = Params::try_from(&phc).map_err(|_| malformed(scheme, "invalid parameters"))?;
    if params.m_cost() > MAX_ARGON2_KIB {
        return Err(malformed(scheme, "memory cost above 1 GiB (m=1048576)"));
    }
    Ok(Parsed::Phc(scheme, body))
}

fn parse_bcrypt(body: &str) -> Result<Parsed<'_>, LegacyError> {
    let scheme = Scheme::BlfCrypt;
    // $2x$ marks hashes from the sign-extension bug of old crypt_blowfish: not computable here.
    if !["$2a$", "$2b$", "$2y$"].iter().any(|p| body.starts_with(p)) {
        return Err(malformed(scheme, "expected a $2a$, $2b$ or $2y$ string"));
    }
    let cost = body
        .get(4..6)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
    match cost.and_then(|c| c.parse::<u32>().ok()) {
        Some(4..=31) => {}
        Some(_) => return Err(malformed(scheme, "cost out of range (04 to 31)")),
        None => return Err(malformed(scheme, "cost missing")),
    }
    body.parse::<bcrypt::HashParts>().map_err(|_| {
        malformed(
            scheme,
            "expected $2y$NN$ and 53 characters of salt and digest",
        )
    })?;
    Ok(Parsed::Crypt(scheme, body))
}

fn parse_sha_crypt(scheme: Scheme, body: &str) -> Result<Parsed<'_>, LegacyError> {
    let (prefix, digest_len) = if scheme == Scheme::Sha512Crypt {
        ("$6$", 86)
    } else {
        ("$5$", 43)
    };
    let rest = body
        .strip_prefix(prefix)
        .ok_or_else(|| malformed(scheme, format!("expected a {prefix} string")))?;
    let rest = match rest.strip_prefix("rounds=") {
        None => rest,
        Some(rounds) => {
            let (rounds, rest) = rounds
                .split_once('$')
                .ok_or_else(|| malformed(scheme, "salt missing"))?;
            // glibc writes the rounds it used, always within the algorithm's range.
            let range = sha_crypt::Params::ROUNDS_MIN..=sha_crypt::Params::ROUNDS_MAX;
            if !is_decimal(rounds) || !rounds.parse().is_ok_and(|r| range.contains(&r)) {
                return Err(malformed(scheme, "rounds out of range (1000 to 999999999)"));
            }
            rest
        }
    };
    let (salt, digest) = rest
        .split_once('$')
        .ok_or_else(|| malformed(scheme, "salt missing"))?;
    if salt.is_empty() || salt.len() > 16 || !is_crypt64(salt) {
        return Err(malformed(scheme, "salt is not 1 to 16 crypt characters"));
    }
    if digest.len() != digest_len || !is_crypt64(digest) {
        return Err(malformed(
            scheme,
            format!("digest is not {digest_len} crypt characters"),
        ));
    }
    Ok(Parsed::Crypt(scheme, body))
}

fn parse_pbkdf2(body: &str) -> Result<Parsed<'_>, LegacyError> {
    let scheme = Scheme::Pbkdf2;
    let fields: Vec<&str> = body
        .strip_prefix("$1$")
        .ok_or_else(|| malformed(scheme, "expected $1$salt$rounds$hex"))?
        .split('$')
        .collect();
    let [salt, rounds, key] = fields[..] else {
        return Err(malformed(scheme, "expected $1$salt$rounds$hex"));
    };
    if salt.is_empty() {
        return Err(malformed(scheme, "salt missing"));
    }
    let rounds = Some(rounds)
        .filter(|r| is_decimal(r))
        .and_then(|r| r.parse().ok())
        .filter(|r| (1..=MAX_ITERATIONS).contains(r))
        .ok_or_else(|| malformed(scheme, "rounds out of range (1 to 10000000)"))?;
    let key = hex_decode(key)
        .and_then(|k| <[u8; 20]>::try_from(k).ok())
        .ok_or_else(|| malformed(scheme, "key is not 40 hex digits"))?;
    Ok(Parsed::Pbkdf2 { salt, rounds, key })
}

fn parse_digest(
    scheme: Scheme,
    encoding: Encoding,
    body: &str,
) -> Result<Parsed<'static>, LegacyError> {
    let Some((digest_len, salted)) = scheme.digest() else {
        return Err(malformed(scheme, "not a digest scheme"));
    };
    // Dovecot's rule: with no suffix, a fixed-length digest written as twice its length in
    // characters is hex, anything else base64.
    let hex = match encoding {
        Encoding::Hex => true,
        Encoding::Base64 => false,
        Encoding::Default => !salted && body.len() == digest_len * 2,
    };
    let bytes = if hex {
        hex_decode(body).ok_or_else(|| malformed(scheme, "invalid hex"))?
    } else {
        STANDARD
            .decode(body)
            .map_err(|_| malformed(scheme, "invalid base64"))?
    };
    if !salted && bytes.len() != digest_len {
        return Err(malformed(
            scheme,
            format!("digest is {} bytes, expected {digest_len}", bytes.len()),
        ));
    }
    if salted && bytes.len() <= digest_len {
        return Err(malformed(scheme, "salt missing"));
    }
    let (digest, salt) = bytes.split_at(digest_len);
    Ok(Parsed::Digest {
        scheme,
        digest: digest.to_vec(),
        salt: salt.to_vec(),
    })
}

/// The digest of `parts` concatenated, with the scheme's hash function.
fn digest_of(scheme: Scheme, parts: &[&[u8]]) -> Vec<u8> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut hasher = D::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().to_vec()
    }
    match scheme {
        Scheme::Ssha512 | Scheme::Sha512 => run::<Sha512>(parts),
        Scheme::Ssha256 | Scheme::Sha256 => run::<Sha256>(parts),
        Scheme::Ssha | Scheme::Sha1 => run::<Sha1>(parts),
        _ => run::<Md5>(parts),
    }
}

/// Dovecot's `{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey` (base64).
struct Scram {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Scram {
    fn parse(body: &str) -> Result<Self, LegacyError> {
        let bad = |why: &str| malformed(Scheme::ScramSha256, why);
        let fields: Vec<&str> = body.split(',').collect();
        let [iterations, salt, stored_key, server_key] = fields[..] else {
            return Err(bad("expected iterations,salt,StoredKey,ServerKey"));
        };
        let iterations = Some(iterations)
            .filter(|i| is_decimal(i))
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| bad("iterations out of range (1 to 10000000)"))?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("salt missing"));
        }
        let key = |text: &str, what: &str| {
            STANDARD
                .decode(text)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| bad(&format!("{what} is not 32 bytes of base64")))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored_key, "StoredKey")?,
            server_key: key(server_key, "ServerKey")?,
        })
    }

    /// pophost's verifier string for the same keys, so SCRAM logins work from the start.
    fn verifier(&self) -> Result<String, LegacyError> {
        let text = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        );
        // Parsed back so that what is stored is exactly ScramVerifier's own format.
        crate::ScramVerifier::parse(&text)
            .map(|v| v.to_string())
            .ok_or_else(|| malformed(Scheme::ScramSha256, "not convertible to a verifier"))
    }

    /// A PLAIN login against the verifier: H(HMAC(SaltedPassword, "Client Key")) = StoredKey.
    /// Over the password's raw bytes, not SASLprepped as `ScramVerifier::derive_with` does:
    /// Dovecot 2.3 derives its keys from the raw bytes (checked with `doveadm pw`), so only
    /// this matches its users whose passwords SASLprep would change.
    fn verify(&self, password: &[u8]) -> bool {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &self.salt, self.iterations, &mut salted);
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&salted) else {
            return false;
        };
        mac.update(b"Client Key");
        let stored = Sha256::digest(mac.finalize().into_bytes());
        stored.as_slice().ct_eq(&self.stored_key).into()
    }
}

/// FreeBSD MD5-crypt (`$1$`), as Dovecot and glibc compute it: checks `password` against the
/// 22-character digest in constant time.
fn md5_crypt_verify(password: &[u8], crypt: &str) -> bool {
    let Some((salt, expected)) = md5_crypt_parts(crypt) else {
        return false;
    };
    md5_crypt(password, salt.as_bytes())
        .as_slice()
        .ct_eq(expected.as_bytes())
        .into()
}

/// Salt and digest of `$1$salt$digest`, if well formed.
fn md5_crypt_parts(crypt: &str) -> Option<(&str, &str)> {
    let (salt, digest) = crypt.strip_prefix("$1$")?.split_once('$')?;
    let ok = (1..=8).contains(&salt.len())
        && is_crypt64(salt)
        && digest.len() == 22
        && is_crypt64(digest);
    ok.then_some((salt, digest))
}

/// The 22-character MD5-crypt digest of `password` with `salt` (at most 8 bytes).
fn md5_crypt(password: &[u8], salt: &[u8]) -> [u8; 22] {
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // The original's quirk: for each bit of the length, a NUL byte or the first password byte.
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(password.get(..1).unwrap_or_default());
        }
        bits >>= 1;
    }
    let mut state: [u8; 16] = ctx.finalize().into();

    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(state);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(state);
        } else {
            ctx.update(password);
        }
        state = ctx.finalize().into();
    }

    // Bytes regrouped in threes, each group written least significant 6 bits first.
    let mut out = [0u8; 22];
    let groups = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)];
    let mut at = 0;
    for (a, b, c) in groups {
        let mut v = u32::from(state[a]) << 16 | u32::from(state[b]) << 8 | u32::from(state[c]);
        for _ in 0..4 {
            out[at] = CRYPT64[(v & 0x3f) as usize];
            v >>= 6;
            at += 1;
        }
    }
    let mut v = u32::from(state[11]);
    for _ in 0..2 {
        out[at] = CRYPT64[(v & 0x3f) as usize];
        v >>= 6;
        at += 1;
    }
    out
}

fn is_crypt64(text: &str) -> bool {
    text.bytes().all(|b| CRYPT64.contains(&b))
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| char::from(b).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password of most fixtures: non-ASCII, so the bytes (UTF-8) matter.
    const PW: &str = "p\u{e4}ssword";
    const HORSE: &str = "correct horse battery staple";

    /// `doveadm pw -s SCHEME -p PASSWORD` (Dovecot 2.3), as printed, with the password used.
    const DOVEADM: &[(&str, &str)] = &[
        // doveadm pw -s ARGON2ID -p 'pässword'
        (
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$AkS4rvUstPNGMRaAb6EuoQ$5uCK9IQbtc/sKK4nLA27gnRu+8rhC0O8RrO7vVnEgiA",
            PW,
        ),
        // doveadm pw -s ARGON2I -p 'pässword'
        (
            "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$7odO2hePtcGs7vMSoKzXxg$1rUrXo57M4lW5nQzwROe9JtQVPAQvx7Wsjys0A1rH98",
            PW,
        ),
        // doveadm pw -s BLF-CRYPT -p 'pässword'
        (
            "{BLF-CRYPT}$2y$05$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
            PW,
        ),
        // doveadm pw -s BLF-CRYPT -r 4 -p 'pässword'
        (
            "{BLF-CRYPT}$2y$04$uhg/DyULvwMJ26UHGBicZeHH2k./M49lVf8whvNZqXMVfdi5bIg76",
            PW,
        ),
        // doveadm pw -s SHA512-CRYPT -p 'pässword'
        (
            "{SHA512-CRYPT}$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
            PW,
        ),
        // doveadm pw -s SHA512-CRYPT -r 10000 -p 'pässword'
        (
            "{SHA512-CRYPT}$6$rounds=10000$SI/W7msK59k9skYx$LeaCo56kEqAMG./y3SAxqyGPigZdB4bEN2kSPdil5sysVKyiyDFE6bLHtI4R8RpliUjpgYKG91hTwfv8f7zrZ/",
            PW,
        ),
        // doveadm pw -s SHA256-CRYPT -p 'pässword'
        (
            "{SHA256-CRYPT}$5$5cX9C.TelcuUZVqB$tuRouPv8p89DTZgGz5sEVIL0raZXeQKixsCjDN4lKL5",
            PW,
        ),
        // doveadm pw -s SHA256-CRYPT -r 12345 -p 'pässword'
        (
            "{SHA256-CRYPT}$5$rounds=12345$Ks/bSBF/YejbIfhP$uQP7d/6RtQo/CoMc/we5NNcvzFFIodif6gGuBXVXaIC",
            PW,
        ),
        // doveadm pw -s MD5-CRYPT -p 'pässword'
        ("{MD5-CRYPT}$1$jUi178th$OESneuIpCrt65gG8UjXh1.", PW),
        // doveadm pw -s MD5-CRYPT -p ''
        ("{MD5-CRYPT}$1$hirmhkTV$NOHVoGW9PLAa2/QVnRzmO/", ""),
        // doveadm pw -s SSHA512 -p 'pässword'
        (
            "{SSHA512}7tht8ltYWFpaxvLsgumlmB7UDvhkiLZO1w/YT1+/99G1Che4S2uN1o0WFNCgt5Wm94mGDbrmWShJPuO04lZprOI3c7Y=",
            PW,
        ),
        // doveadm pw -s SSHA256 -p 'pässword'
        (
            "{SSHA256}KZ21bqvcrByahnT0kB6S9jlsE0BOUlFqkKve9voObyJKMCwG",
            PW,
        ),
        // doveadm pw -s SSHA256 -p 'correct horse battery staple'
        (
            "{SSHA256}uRRHpTyN1DFjS9hyDsoXI/VnrPXx2Q7nbuy4DWoQJAiMvARE",
            HORSE,
        ),
        // doveadm pw -s SSHA -p 'pässword'
        ("{SSHA}z9xMpnUfB/NEh5YocvPFg/geeONfjGyQ", PW),
        // doveadm pw -s SHA512 -p 'pässword'
        (
            "{SHA512}KF3icbSeAO9oGc8Ku/AxXpfCXLo2FhZ8dw78Umxki03hH0sA3HH67TOjEse6g2kNPtFKqq32tiKqSJlv8H7IpA==",
            PW,
        ),
        // doveadm pw -s SHA256 -p 'pässword'
        ("{SHA256}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=", PW),
        // doveadm pw -s SHA1 -p 'pässword'
        ("{SHA1}I7dElEdfX4dJgLdnbVEeI9iG2mQ=", PW),
        // doveadm pw -s PLAIN-MD5 -p 'pässword'
        ("{PLAIN-MD5}8e1843033a0f6ee52e2f618aa8ebbef4", PW),
        // doveadm pw -s PBKDF2 -p 'pässword'
        (
            "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$5000$e3450db209f5518c0ebb635123182c319fe545dd",
            PW,
        ),
        // doveadm pw -s PBKDF2 -p 'correct horse battery staple'
        (
            "{PBKDF2}$1$yryA2uBWRRC96hxW$5000$bf666e06687c65e34eabcd3f2a1e934e3a720826",
            HORSE,
        ),
        // doveadm pw -s SCRAM-SHA-256 -p 'pässword'
        (
            "{SCRAM-SHA-256}4096,V/FVHeQqWmtNGZC8v5gF6A==,1b41qX5ZAgleRP7Ve3sv5/yUYKWlvxnWFwOmkBiPChA=,uWetD5BfxcKf1OkJegq50nMJJYorMsqATMx7GnMskqs=",
            PW,
        ),
        // doveadm pw -s SCRAM-SHA-256 -p pencil
        (
            "{SCRAM-SHA-256}4096,HEBBRe6dKS5PdwsTuzq4eQ==,URj9buXlSMXDj+i27E6C/OZDn93iC5b2avwVzdHP0aE=,iLsQiX9nk1NId3GMTx4p8QRar4SFRxDsVvwZKXBsH5g=",
            "pencil",
        ),
    ];

    /// Forms other than the normalised one, and what `import` makes of each.
    const NORMALISED: &[(&str, &str)] = &[
        // doveadm pw -s SHA -p 'pässword'
        (
            "{SHA}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            "{SHA1}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
        ),
        // doveadm pw -s SHA.HEX -p 'pässword'
        (
            "{SHA.HEX}23b74494475f5f874980b7676d511e23d886da64",
            "{SHA1}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
        ),
        // doveadm pw -s SHA1.HEX -p 'pässword'
        (
            "{SHA1.HEX}23b74494475f5f874980b7676d511e23d886da64",
            "{SHA1}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
        ),
        // Hex without a suffix: Dovecot takes it (doveadm pw -t verifies it).
        (
            "{SHA256}3478267b5612791b40988906b3a7897eb6ab501e04b95ed32f99d0afdf669d9c",
            "{SHA256}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
        ),
        // doveadm pw -s SHA256.HEX -p 'pässword'
        (
            "{SHA256.HEX}3478267b5612791b40988906b3a7897eb6ab501e04b95ed32f99d0afdf669d9c",
            "{SHA256}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
        ),
        (
            "{sha256.b64}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
            "{SHA256}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
        ),
        // doveadm pw -s SSHA512.HEX -p 'pässword'
        (
            "{SSHA512.HEX}417b343e5c4b49934c9f2fecea25d5aaeab49d636bee1f725eea13200a25633028d84e12335d22d56c77e6c716ebd25efd5fa157f0020d59209a198a5c91152b4f099008",
            "{SSHA512}QXs0PlxLSZNMny/s6iXVquq0nWNr7h9yXuoTIAolYzAo2E4SM10i1Wx35scW69Je/V+hV/ACDVkgmhmKXJEVK08JkAg=",
        ),
        // doveadm pw -s MD5 -p 'pässword' (Dovecot 2.3's {MD5} is MD5-CRYPT)
        (
            "{MD5}$1$mk7C7EbE$yZRTC09pvg0ZCQXtlrczL.",
            "{MD5-CRYPT}$1$mk7C7EbE$yZRTC09pvg0ZCQXtlrczL.",
        ),
        (
            "{MD5}8E1843033A0F6EE52E2F618AA8EBBEF4",
            "{PLAIN-MD5}8e1843033a0f6ee52e2f618aa8ebbef4",
        ),
        // doveadm pw -s LDAP-MD5 -p 'pässword'
        (
            "{LDAP-MD5}jhhDAzoPbuUuL2GKqOu+9A==",
            "{PLAIN-MD5}8e1843033a0f6ee52e2f618aa8ebbef4",
        ),
        // doveadm pw -s PLAIN-MD5.B64 -p 'pässword'
        (
            "{PLAIN-MD5.B64}jhhDAzoPbuUuL2GKqOu+9A==",
            "{PLAIN-MD5}8e1843033a0f6ee52e2f618aa8ebbef4",
        ),
        // doveadm pw -s CRYPT -p 'pässword' (this system's crypt writes bcrypt)
        (
            "{CRYPT}$2y$05$2KkWs1kV5SKtIUdIkCl8autELkiGEKCF0FEVZAQAVBD9YOOCr5xN2",
            "{BLF-CRYPT}$2y$05$2KkWs1kV5SKtIUdIkCl8autELkiGEKCF0FEVZAQAVBD9YOOCr5xN2",
        ),
        (
            "{crypt}$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
            "{SHA512-CRYPT}$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
        ),
        (
            "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$5000$E3450DB209F5518C0EBB635123182C319FE545DD",
            "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$5000$e3450db209f5518c0ebb635123182c319fe545dd",
        ),
        (
            "{blf-crypt}$2y$04$uhg/DyULvwMJ26UHGBicZeHH2k./M49lVf8whvNZqXMVfdi5bIg76",
            "{BLF-CRYPT}$2y$04$uhg/DyULvwMJ26UHGBicZeHH2k./M49lVf8whvNZqXMVfdi5bIg76",
        ),
        // Bare crypt strings, as /etc/shadow holds them for Qpopper/PAM users.
        (
            "$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
            "{SHA512-CRYPT}$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
        ),
        (
            "$5$rounds=12345$Ks/bSBF/YejbIfhP$uQP7d/6RtQo/CoMc/we5NNcvzFFIodif6gGuBXVXaIC",
            "{SHA256-CRYPT}$5$rounds=12345$Ks/bSBF/YejbIfhP$uQP7d/6RtQo/CoMc/we5NNcvzFFIodif6gGuBXVXaIC",
        ),
        (
            "$1$jUi178th$OESneuIpCrt65gG8UjXh1.",
            "{MD5-CRYPT}$1$jUi178th$OESneuIpCrt65gG8UjXh1.",
        ),
        (
            "$2y$05$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
            "{BLF-CRYPT}$2y$05$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
        ),
        (
            "$argon2id$v=19$m=65536,t=3,p=1$AkS4rvUstPNGMRaAb6EuoQ$5uCK9IQbtc/sKK4nLA27gnRu+8rhC0O8RrO7vVnEgiA",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$AkS4rvUstPNGMRaAb6EuoQ$5uCK9IQbtc/sKK4nLA27gnRu+8rhC0O8RrO7vVnEgiA",
        ),
        (
            "$argon2i$v=19$m=32768,t=4,p=1$7odO2hePtcGs7vMSoKzXxg$1rUrXo57M4lW5nQzwROe9JtQVPAQvx7Wsjys0A1rH98",
            "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$7odO2hePtcGs7vMSoKzXxg$1rUrXo57M4lW5nQzwROe9JtQVPAQvx7Wsjys0A1rH98",
        ),
    ];

    fn stored(imported: Imported) -> (String, Scheme, Option<String>) {
        match imported {
            Imported::Stored {
                hash,
                scheme,
                scram,
            } => (hash, scheme, scram),
            Imported::Plain(_) => panic!("expected a stored hash"),
        }
    }

    fn err(hash: &str) -> String {
        import(hash).expect_err(hash).to_string()
    }

    /// Near misses: the last byte changed, one more byte, upper case, another password.
    fn wrong(password: &str) -> Vec<Vec<u8>> {
        let mut flipped = password.as_bytes().to_vec();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        vec![
            flipped,
            format!("{password}x").into_bytes(),
            password.to_uppercase().into_bytes(),
            b"x".to_vec(),
        ]
        .into_iter()
        .filter(|c| c != password.as_bytes())
        .collect()
    }

    #[test]
    fn doveadm_hashes_import_unchanged_and_verify() {
        for &(hash, password) in DOVEADM {
            let (normal, scheme, _) = stored(import(hash).expect(hash));
            assert_eq!(normal, hash, "Dovecot's form is already the normalised one");
            assert!(
                hash.starts_with(&format!("{{{}}}", scheme.name())),
                "{hash}"
            );
            assert_eq!(stored_scheme(hash), Some(scheme), "{hash}");
            assert!(verify(password.as_bytes(), hash), "{hash}");
            for candidate in wrong(password) {
                assert!(!verify(&candidate, hash), "{hash}");
            }
            // The login path: `verify_password` hands legacy hashes to `verify`.
            assert!(crate::verify_password(password.as_bytes(), hash), "{hash}");
            assert!(!crate::verify_password(b"wrong", hash), "{hash}");
        }
        // Every scheme has a fixture.
        let mut schemes: Vec<&str> = DOVEADM
            .iter()
            .map(|(h, _)| stored_scheme(h).expect(h).name())
            .collect();
        schemes.sort_unstable();
        schemes.dedup();
        assert_eq!(schemes.len(), 15, "{schemes:?}");
    }

    #[test]
    fn other_forms_are_normalised() {
        for &(hash, normal) in NORMALISED {
            let (got, scheme, scram) = stored(import(hash).expect(hash));
            assert_eq!(got, normal, "{hash}");
            assert!(normal.starts_with(&format!("{{{}}}", scheme.name())));
            assert!(scram.is_none());
            // Normalising is idempotent, and both forms verify the same.
            assert_eq!(stored(import(normal).expect(normal)).0, normal);
            assert!(verify(PW.as_bytes(), normal), "{normal}");
            assert!(!verify(b"passw\xc3\xb6rd", normal), "{normal}");
        }
    }

    #[test]
    fn bcrypt_versions_and_other_crypt_implementations() {
        // doveadm pw -s BLF-CRYPT -p 'correct horse battery staple'; $2a$/$2b$ are the same hash
        // with the prefix changed, which `doveadm pw -t` verifies too.
        for version in ["2y", "2b", "2a"] {
            let hash = format!(
                "{{BLF-CRYPT}}${version}$05$lzuRAYjowpCb7e0QpUSYqOf9pEm4u8d4oC8fStysi77zMGopHX7uy"
            );
            assert_eq!(stored(import(&hash).expect(&hash)).0, hash);
            assert!(verify(HORSE.as_bytes(), &hash), "{hash}");
            assert!(!verify(b"correct horse battery stapler", &hash), "{hash}");
        }
        // `openssl passwd -1 -salt abcdefgh 'correct horse battery staple'` and
        // `openssl passwd -6 -salt 0123456789abcdef 'pässword'` (bare, as in /etc/shadow).
        for (bare, password) in [
            ("$1$abcdefgh$4/U5.w6NPtLkJ2WyrTwm91", HORSE),
            (
                "$6$0123456789abcdef$s9I74ZXk3feGZV/rChUgmgEl4QK9/3Octz9zj77x4eC9tlTgpXNif5yWkq6bgcZZU91DW7ZY6QTjPaM460tRj0",
                PW,
            ),
        ] {
            let (hash, ..) = stored(import(bare).expect(bare));
            assert_eq!(
                hash.strip_suffix(bare).map(|p| p.ends_with('}')),
                Some(true)
            );
            assert!(verify(password.as_bytes(), &hash), "{hash}");
            assert!(!verify(b"x", &hash), "{hash}");
            // Only the normalised form is a stored legacy hash.
            assert!(!verify(password.as_bytes(), bare));
            assert_eq!(stored_scheme(bare), None);
        }
        // Long passwords: MD5-crypt's loop over 16-byte chunks and length bits.
        assert_eq!(
            &md5_crypt(HORSE.as_bytes(), b"abcdefgh"),
            b"4/U5.w6NPtLkJ2WyrTwm91"
        );
    }

    #[test]
    fn scram_import_gives_a_pophost_verifier() {
        for &(hash, password) in DOVEADM {
            if stored_scheme(hash) != Some(Scheme::ScramSha256) {
                continue;
            }
            let (_, _, scram) = stored(import(hash).expect(hash));
            let verifier = scram.expect("a SCRAM verifier");
            let parsed = crate::ScramVerifier::parse(&verifier).expect("pophost's format");
            assert_eq!(parsed.to_string(), verifier);
            // The same keys as pophost derives for the password, with Dovecot's salt.
            let body = hash.split_once('}').expect("prefix").1;
            let fields: Vec<&str> = body.split(',').collect();
            let salt = STANDARD.decode(fields[1]).expect("salt");
            let derived = crate::ScramVerifier::derive_with(password.as_bytes(), &salt, 4096);
            assert_eq!(derived.to_string(), verifier);
            let other = crate::ScramVerifier::derive_with(b"pencil2", &salt, 4096);
            assert_ne!(other.to_string(), verifier);
        }
        // Dovecot does not SASLprep: its keys are over the raw bytes, so a password SASLprep
        // changes (a no-break space, a ligature) verifies as typed, not as prepped.
        // doveadm pw -s SCRAM-SHA-256 -p "$(printf 'a\xc2\xa0b\xef\xac\x81')"
        let hash = "{SCRAM-SHA-256}4096,T1bZhUuMTmxZiGEvPaN+JQ==,GVrcYOkf2+uudS+kq2WlwqO46uTTJ2t9vpf+UBoDc24=,8G9kKOFdkq1n9kDoi+yUAYC2Q8V/QwN401QdZfsQa0s=";
        assert!(verify("a\u{a0}b\u{fb01}".as_bytes(), hash));
        assert!(!verify(b"a bfi", hash));
    }

    #[test]
    fn plain_passwords_are_handed_back() {
        for hash in [
            "{PLAIN}p\u{e4}ssword",
            "{CLEAR}p\u{e4}ssword",
            "{cleartext}p\u{e4}ssword",
            "{PLAIN.B64}cMOkc3N3b3Jk",
            "{PLAIN.HEX}70c3a47373776f7264",
        ] {
            assert_eq!(import(hash), Ok(Imported::Plain(PW.to_owned())), "{hash}");
            assert_eq!(stored_scheme(hash), None);
            assert!(!verify(PW.as_bytes(), hash), "never a stored hash");
            assert!(!crate::verify_password(PW.as_bytes(), hash));
        }
        // With a '}' and spaces in the password, kept as they are.
        assert_eq!(
            import("{PLAIN}a}b c "),
            Ok(Imported::Plain("a}b c ".to_owned()))
        );
        assert_eq!(
            err("{PLAIN}"),
            "malformed {PLAIN} hash: the password is empty"
        );
        assert_eq!(
            format!("{:?}", import("{PLAIN}hunter2")),
            "Ok(Plain(<redacted>))"
        );
    }

    #[test]
    fn refusals_name_the_scheme() {
        let cases: &[(&str, &str)] = &[
            ("{FOO}abc", "unknown password scheme \"FOO\""),
            (
                "{SHA256.ROT13}abc",
                "unknown password scheme \"SHA256.ROT13\"",
            ),
            (
                "{my secret pw}x",
                "unknown password scheme \"<not a scheme name>\"",
            ),
            (
                "{SMD5}6TOxeMLvsvewOOY2qjbpivzLuuA=",
                "password scheme {SMD5} is not supported for import; the user must set a new password",
            ),
            (
                "{SCRAM-SHA-1}4096,RczdnsdB6njfyR3papZ1/w==,OLwuiOmlHeRQJOzYx/D8T9DxjLI=,yUFooN88AM2auEKd2uP+H39Spmg=",
                "password scheme {SCRAM-SHA-1} is not supported for import; the user must set a new password",
            ),
            (
                "{SSHA512}7tht8ltYWFpaxvLsgumlmB7UDvhkiLZO1w/YT1+/99G1Che4S2uN1o0WFNCgt5Wm94mGDbrmWShJPuO04lZprOI3c7Y",
                "malformed {SSHA512} hash: invalid base64",
            ),
            // The 64-byte digest alone.
            (
                "{SSHA512}KF3icbSeAO9oGc8Ku/AxXpfCXLo2FhZ8dw78Umxki03hH0sA3HH67TOjEse6g2kNPtFKqq32tiKqSJlv8H7IpA==",
                "malformed {SSHA512} hash: salt missing",
            ),
            (
                "{SSHA}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
                "malformed {SSHA} hash: salt missing",
            ),
            (
                "{SHA256}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
                "malformed {SHA256} hash: digest is 20 bytes, expected 32",
            ),
            (
                "{SHA}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
                "malformed {SHA1} hash: digest is 32 bytes, expected 20",
            ),
            (
                "{SHA.HEX}23b74494475f5f874980b7676d511e23d886da6z",
                "malformed {SHA1} hash: invalid hex",
            ),
            (
                "{PLAIN-MD5}8e1843033a0f6ee52e2f618aa8ebbef",
                "malformed {PLAIN-MD5} hash: invalid base64",
            ),
            (
                "{DES-CRYPT}.0u1F21xNkIuE",
                "{DES-CRYPT}/{CRYPT} (13-character DES crypt) is too weak to import",
            ),
            (
                "{CRYPT}.0u1F21xNkIuE",
                "{DES-CRYPT}/{CRYPT} (13-character DES crypt) is too weak to import",
            ),
            (
                ".0u1F21xNkIuE",
                "{DES-CRYPT}/{CRYPT} (13-character DES crypt) is too weak to import",
            ),
            (
                "{CRYPT}_J9..CCCCXBrJUJV154M",
                "malformed {CRYPT} hash: not a crypt string",
            ),
            (
                "{BLF-CRYPT}$2y$03$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
                "malformed {BLF-CRYPT} hash: cost out of range (04 to 31)",
            ),
            (
                "{BLF-CRYPT}$2y$32$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
                "malformed {BLF-CRYPT} hash: cost out of range (04 to 31)",
            ),
            (
                "{BLF-CRYPT}$2x$05$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAVS",
                "malformed {BLF-CRYPT} hash: expected a $2a$, $2b$ or $2y$ string",
            ),
            (
                "{BLF-CRYPT}$2y$05$YOQDlUJb1Y0wDHJo/C5lKuU7iKJDUh8LxCFTJ2u3JaAVW.xvmSAV",
                "malformed {BLF-CRYPT} hash: expected $2y$NN$",
            ),
            (
                "{SHA512-CRYPT}$6$rounds=999$SI/W7msK59k9skYx$LeaCo56kEqAMG./y3SAxqyGPigZdB4bEN2kSPdil5sysVKyiyDFE6bLHtI4R8RpliUjpgYKG91hTwfv8f7zrZ/",
                "malformed {SHA512-CRYPT} hash: rounds out of range",
            ),
            (
                "{SHA512-CRYPT}$6$rounds=1000000000$SI/W7msK59k9skYx$LeaCo56kEqAMG./y3SAxqyGPigZdB4bEN2kSPdil5sysVKyiyDFE6bLHtI4R8RpliUjpgYKG91hTwfv8f7zrZ/",
                "malformed {SHA512-CRYPT} hash: rounds out of range",
            ),
            (
                "{SHA512-CRYPT}$5$5cX9C.TelcuUZVqB$tuRouPv8p89DTZgGz5sEVIL0raZXeQKixsCjDN4lKL5",
                "malformed {SHA512-CRYPT} hash: expected a $6$ string",
            ),
            (
                "{SHA256-CRYPT}$5$5cX9C.TelcuUZVqB$tuRouPv8p89DTZgGz5sEVIL0raZXeQKixsCjDN4lKL",
                "malformed {SHA256-CRYPT} hash: digest is not 43 crypt characters",
            ),
            (
                "{SHA256-CRYPT}$5$$tuRouPv8p89DTZgGz5sEVIL0raZXeQKixsCjDN4lKL5",
                "malformed {SHA256-CRYPT} hash: salt is not 1 to 16 crypt characters",
            ),
            (
                "$6$DqjO3Ip6Lg/hUJmq",
                "malformed {SHA512-CRYPT} hash: salt missing",
            ),
            (
                "{MD5-CRYPT}$1$jUi178th$OESneuIpCrt65gG8UjXh1",
                "malformed {MD5-CRYPT} hash: expected $1$salt$digest",
            ),
            (
                "{MD5-CRYPT}$1$jUi178th0$OESneuIpCrt65gG8UjXh1.",
                "malformed {MD5-CRYPT} hash: expected $1$salt$digest",
            ),
            (
                "{PBKDF2}$1$$5000$e3450db209f5518c0ebb635123182c319fe545dd",
                "malformed {PBKDF2} hash: salt missing",
            ),
            (
                "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$0$e3450db209f5518c0ebb635123182c319fe545dd",
                "malformed {PBKDF2} hash: rounds out of range",
            ),
            (
                "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$10000001$e3450db209f5518c0ebb635123182c319fe545dd",
                "malformed {PBKDF2} hash: rounds out of range",
            ),
            (
                "{PBKDF2}$1$UOJW6G4sFAz.hvuQ$5000$e3450db209f5518c0ebb635123182c319fe545",
                "malformed {PBKDF2} hash: key is not 40 hex digits",
            ),
            (
                "{PBKDF2}UOJW6G4sFAz.hvuQ$5000$e3450db209f5518c0ebb635123182c319fe545dd",
                "malformed {PBKDF2} hash: expected $1$salt$rounds$hex",
            ),
            (
                "{SCRAM-SHA-256}4096,V/FVHeQqWmtNGZC8v5gF6A==,1b41qX5ZAgleRP7Ve3sv5/yUYKWlvxnWFwOmkBiPChA=",
                "malformed {SCRAM-SHA-256} hash: expected iterations,salt,StoredKey,ServerKey",
            ),
            (
                "{SCRAM-SHA-256}0,V/FVHeQqWmtNGZC8v5gF6A==,1b41qX5ZAgleRP7Ve3sv5/yUYKWlvxnWFwOmkBiPChA=,uWetD5BfxcKf1OkJegq50nMJJYorMsqATMx7GnMskqs=",
                "malformed {SCRAM-SHA-256} hash: iterations out of range",
            ),
            (
                "{SCRAM-SHA-256}4096,,1b41qX5ZAgleRP7Ve3sv5/yUYKWlvxnWFwOmkBiPChA=,uWetD5BfxcKf1OkJegq50nMJJYorMsqATMx7GnMskqs=",
                "malformed {SCRAM-SHA-256} hash: salt missing",
            ),
            (
                "{SCRAM-SHA-256}4096,V/FVHeQqWmtNGZC8v5gF6A==,I7dElEdfX4dJgLdnbVEeI9iG2mQ=,uWetD5BfxcKf1OkJegq50nMJJYorMsqATMx7GnMskqs=",
                "malformed {SCRAM-SHA-256} hash: StoredKey is not 32 bytes of base64",
            ),
            (
                "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$7odO2hePtcGs7vMSoKzXxg$1rUrXo57M4lW5nQzwROe9JtQVPAQvx7Wsjys0A1rH98",
                "malformed {ARGON2ID} hash: expected an $argon2id$ string",
            ),
            (
                "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$AkS4rvUstPNGMRaAb6EuoQ",
                "malformed {ARGON2ID} hash: hash missing",
            ),
            (
                "{ARGON2ID}$argon2id$v=19$m=2097152,t=3,p=1$AkS4rvUstPNGMRaAb6EuoQ$5uCK9IQbtc/sKK4nLA27gnRu+8rhC0O8RrO7vVnEgiA",
                "malformed {ARGON2ID} hash: memory cost above 1 GiB",
            ),
            (
                "{ARGON2I}argon2i",
                "malformed {ARGON2I} hash: not a PHC string",
            ),
            (
                "{SHA512-CRYPT.HEX}$6$DqjO3Ip6Lg/hUJmq$7XQEgIR4DMW738rGfFG/Q.ujecdY3tA4kT/Vt7Ghin93Y9pVCLm2Rv3pT3960JWTQtH8EoP6A9evkuKX.XepS1",
                "malformed {SHA512-CRYPT} hash: an encoding suffix",
            ),
            ("hunter2", "not a password hash pophost can import"),
            ("{SHA256", "not a password hash pophost can import"),
            ("", "not a password hash pophost can import"),
        ];
        for &(hash, want) in cases {
            let got = err(hash);
            assert!(got.starts_with(want), "{hash}: {got}");
            // No piece of the hash (beyond the scheme's name) in the message.
            let body = hash.split_once('}').map_or(hash, |(_, b)| b);
            for piece in body.split(['$', ',', '.']).filter(|p| p.len() >= 8) {
                assert!(!got.contains(piece), "{hash}: {got}");
            }
            assert!(!verify(b"p\xc3\xa4ssword", hash), "{hash}");
            assert!(!crate::verify_password(b"p\xc3\xa4ssword", hash), "{hash}");
        }
    }

    #[test]
    fn stored_scheme_tells_legacy_from_pophost() {
        let ours = crate::hash_password(b"password").expect("hash");
        assert_eq!(stored_scheme(&ours), None);
        assert!(
            !verify(b"password", &ours),
            "pophost's own hash is not legacy"
        );
        assert!(crate::verify_password(b"password", &ours));
        assert_eq!(
            stored_scheme("{SHA}I7dElEdfX4dJgLdnbVEeI9iG2mQ="),
            Some(Scheme::Sha1)
        );
        assert_eq!(
            stored_scheme("{MD5}$1$mk7C7EbE$yZRTC09pvg0ZCQXtlrczL."),
            Some(Scheme::Md5Crypt)
        );
        assert_eq!(
            stored_scheme("{md5}8e1843033a0f6ee52e2f618aa8ebbef4"),
            Some(Scheme::PlainMd5)
        );
        // A damaged legacy hash still reads as legacy (and fails to verify).
        assert_eq!(stored_scheme("{SSHA256}!!"), Some(Scheme::Ssha256));
        assert!(!verify(b"", "{SSHA256}!!"));
        assert_eq!(stored_scheme("{DES-CRYPT}.0u1F21xNkIuE"), None);
        assert_eq!(stored_scheme("{FOO}x"), None);
        for scheme in [
            "ARGON2ID",
            "BLF-CRYPT",
            "SCRAM-SHA-256",
            "PLAIN-MD5",
            "SHA1",
        ] {
            let hash = format!("{{{scheme}}}");
            assert_eq!(stored_scheme(&hash).map(Scheme::name), Some(scheme));
        }
    }

    #[test]
    fn argon2_legacy_hashes_share_the_scratch() {
        // The argon2i fixture goes to the argon2 crate, in the caller's scratch.
        let (hash, _) = DOVEADM[1];
        let mut scratch = Scratch::default();
        assert!(crate::verify_password_in(PW.as_bytes(), hash, &mut scratch));
        assert!(!crate::verify_password_in(b"password", hash, &mut scratch));
        assert!(verify_in(PW.as_bytes(), hash, &mut scratch));
    }
}
