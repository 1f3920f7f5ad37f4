//! An identity provider for tests: signing keys (RSA made by `openssl genpkey`, ES256 and
//! Ed25519 by ring), their JWKS, and tokens signed with them. Never used by pophost itself.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

/// Runs openssl with `input` on its standard input; its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

impl TestKey {
    /// A 2048-bit RSA key for RS256.
    pub fn rsa(kid: &str) -> Self {
        let pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            b"",
        );
        let der = openssl(&["rsa", "-traditional", "-outform", "DER"], &pem);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], &pem)).expect("modulus text");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(&n), "e": "AQAB"}),
        }
    }

    /// A P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .expect("EC key pair");
        // Uncompressed point: 0x04 || x || y.
        let public = pair.public_key().as_ref();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                        "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
        }
    }

    /// An Ed25519 key for EdDSA.
    pub fn ed(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
        let pair =
            ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 pair");
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA",
                        "x": b64(pair.public_key().as_ref())}),
        }
    }

    /// A token with these claims, signed with this key under its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document of these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Claims of a good token for `email` from `issuer` to `audience`, valid for an hour.
pub fn claims(issuer: &str, audience: &str, email: &str) -> Value {
    json!({"iss": issuer, "aud": audience, "email": email, "sub": "1234",
           "iat": now(), "nbf": now() - 5, "exp": now() + 3600})
}

/// An unsigned token (`alg: none`), as an attacker would send one.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// A token "signed" with HS256 using `secret` (an attacker's try with the provider's public
/// key as the HMAC secret), under `kid`.
pub fn hmac(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// OAUTHBEARER's client message (RFC 7628 §3.1) for `login` and `token`.
pub fn oauthbearer(login: &str, token: &str) -> Vec<u8> {
    let login = login.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={login},\x01host=localhost\x01port=110\x01auth=Bearer {token}\x01\x01")
        .into_bytes()
}

/// XOAUTH2's client message for `login` and `token`.
pub fn xoauth2(login: &str, token: &str) -> Vec<u8> {
    format!("user={login}\x01auth=Bearer {token}\x01\x01").into_bytes()
}
