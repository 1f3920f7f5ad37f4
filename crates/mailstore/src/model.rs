//! The store's vocabulary: validated names and the ids and records that cross the trait boundary.

use std::fmt;

use crate::StoreError;

/// A domain name, lower-cased, validated as LDH labels. Parse, don't validate twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Accepts internationalised names and stores their ASCII (IDNA/punycode) form, lower-cased.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let s = s.trim().trim_end_matches('.');
        let s = idna::domain_to_ascii(s)
            .map_err(|_| StoreError::Invalid(format!("invalid domain name {s:?}")))?
            .to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
            return Err(StoreError::Invalid(format!("invalid domain name {s:?}")));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The local part of a mailbox address, lower-cased: ISPs treat `John` and `john` as one mailbox.
/// Non-ASCII local parts (RFC 6531) are kept in NFC with Unicode lower case, so every way of
/// typing `Jöhn` (precomposed or with a combining diaeresis, any case) names one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);

impl LocalPart {
    /// RFC 5322 dot-atom text, plus (RFC 6531) letters, marks and digits of any script. Refused,
    /// because they make one name look like another or hide in a log line: controls, format
    /// characters (bidi overrides, zero-width joiners), any space, symbols and punctuation outside
    /// ASCII (a fullwidth `＠` or `．`), compatibility characters (fullwidth `ｊｏｈｎ` would be a
    /// second `john`), a combining mark that does not follow a letter or digit (leading, or on a
    /// `.`), and Latin letters mixed with Cyrillic or Greek
    /// ones (`pаypal` with a Cyrillic `а`). At most 64 octets of UTF-8 (RFC 5321 §4.5.3.1.1).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        use unicode_normalization::UnicodeNormalization;
        // RFC 5322 dot-atom characters; quoted local parts are not offered for hosted mailboxes.
        const SPECIALS: &[u8] = b".!#$%&'*+/=?^_`{|}~-";
        let invalid = || StoreError::Invalid(format!("invalid mailbox name {s:?}"));
        if s.is_ascii() {
            let s = s.to_ascii_lowercase();
            let ok = dot_atom_shape(&s)
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b));
            return if ok { Ok(Self(s)) } else { Err(invalid()) };
        }
        let nfc: String = s.nfc().collect();
        // A compatibility character changes under NFKC; a canonical one does not.
        if nfc.nfkc().ne(nfc.chars()) {
            return Err(invalid());
        }
        let lower: String = nfc.to_lowercase().nfc().collect();
        let ok = dot_atom_shape(&lower)
            && lower.chars().all(|c| {
                if c.is_ascii() {
                    c.is_ascii_alphanumeric() || SPECIALS.contains(&(c as u8))
                } else {
                    international_char(c)
                }
            })
            && marks_follow_letters(&lower)
            && !mixes_confusable_scripts(&lower);
        if ok { Ok(Self(lower)) } else { Err(invalid()) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length and dot rules every local part keeps, ASCII or not.
fn dot_atom_shape(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.starts_with('.') && !s.ends_with('.') && !s.contains("..")
}

/// A non-ASCII character a local part may hold: a letter, a combining mark or a digit.
fn international_char(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup as G, UnicodeGeneralCategory};
    matches!(c.general_category_group(), G::Letter | G::Mark | G::Number)
}

/// Whether every combining mark sits on a letter or digit (through any marks before it), not at
/// the start or on ASCII punctuation, where it would decorate a `.` or `+` into a look-alike.
fn marks_follow_letters(s: &str) -> bool {
    let mut base_ok = false;
    s.chars().all(|c| {
        if is_mark(c) {
            base_ok
        } else {
            base_ok = c.is_alphanumeric();
            true
        }
    })
}

fn is_mark(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup as G, UnicodeGeneralCategory};
    c.general_category_group() == G::Mark
}

/// Latin next to Cyrillic or Greek letters: the scripts whose look-alikes (`а`/`a`, `ο`/`o`)
/// make the classic spoofed name. Each script alone is fine (`иван`, `jöhn`).
fn mixes_confusable_scripts(s: &str) -> bool {
    let latin = s.chars().any(|c| {
        c.is_ascii_alphabetic() || matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}')
    });
    let cyrillic = s.chars().any(|c| matches!(c, '\u{0400}'..='\u{052F}'));
    let greek = s
        .chars()
        .any(|c| matches!(c, '\u{0370}'..='\u{03FF}' | '\u{1F00}'..='\u{1FFF}'));
    usize::from(latin) + usize::from(cyrillic) + usize::from(greek) > 1
}

/// `local@domain`, both halves validated and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: LocalPart,
    pub domain: DomainName,
}

impl Address {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| StoreError::Invalid(format!("{s:?} is not of the form user@domain")))?;
        Ok(Self {
            local: LocalPart::parse(local)?,
            domain: DomainName::parse(domain)?,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub i64);

/// A message body being delivered or stored; shared by every recipient of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId(pub i64);

/// Limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub bytes: Option<u64>,
    pub messages: Option<u64>,
}

/// A change to a quota: a field left `None` keeps its value; `Some(None)` makes it unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaChange {
    pub bytes: Option<Option<u64>>,
    pub messages: Option<Option<u64>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: DomainName,
    pub quota: Quota,
    pub usage: Usage,
    pub users: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub address: Address,
    pub quota: Quota,
    pub usage: Usage,
}

/// The scheme a stored password hash names, for a hash imported from another server: `NAME` of
/// `{NAME}…` (Dovecot's form; `tenancy::legacy` writes it). `None` for pophost's own argon2id
/// PHC strings, which start with `$`.
pub fn password_scheme(hash: &str) -> Option<&str> {
    hash.strip_prefix('{')?
        .split_once('}')
        .map(|(name, _)| name)
}

/// What authentication needs to know about a user.
#[derive(Clone)]
pub struct UserAuth {
    pub id: UserId,
    pub password_hash: String,
    /// SCRAM-SHA-256 verifier (`SCRAM-SHA-256$i:salt$StoredKey:ServerKey`); `None` for users
    /// whose password was set before verifiers were stored.
    pub scram: Option<String>,
    /// Whether the user's mail has been pulled from their domain's old server (always true
    /// outside migration mode: see `DomainPolicy::migrate_from`).
    pub migrated: bool,
    /// The user's domain lets only app passwords log in over POP3 and the MTA's auth service:
    /// the main password (and its SCRAM verifier) does not.
    pub app_passwords_only: bool,
}

impl fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAuth")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What APOP (RFC 1939 §7) needs to know about a user: the secret as stored (encrypted under the
/// server's APOP key; `None` when the user has none) and whether the user's domain allows APOP.
#[derive(Clone)]
pub struct ApopUser {
    pub id: UserId,
    pub secret: Option<String>,
    pub domain_allows: bool,
}

impl fmt::Debug for ApopUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApopUser")
            .field("id", &self.id)
            .field("has_secret", &self.secret.is_some())
            .field("domain_allows", &self.domain_allows)
            .finish()
    }
}

/// A login attempt counted before its check (`Directory::count_auth_attempt`): its rows stay
/// as a failure unless `Directory::forget_auth_attempt` is told it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// The counters it was counted under.
    pub keys: Vec<String>,
    /// Tells its rows from those of another attempt counted in the same millisecond.
    pub(crate) id: i64,
    /// When it was counted, in ms since the epoch (finds its rows by the `(key, at)` index).
    pub(crate) at: i64,
}

/// One message of a maildrop as a session sees it: enough for STAT, LIST and UIDL without touching bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub id: MessageId,
    /// RFC 1939 unique-id, assigned at delivery and stored as data.
    pub uid: String,
    /// Octets as sent by RETR, before dot-stuffing: the delivery headers plus the CRLF-normalised body.
    pub size: u64,
    pub blob: BlobId,
}

/// The exclusive right to a maildrop. `token` fences: UPDATE applies only while the row still carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub user: UserId,
    pub token: i64,
}

/// One recipient of a delivery: the per-recipient header block (Return-Path, Delivered-To, Received)
/// is stored with the recipient's message; the body is the shared blob.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user: UserId,
    pub prefix: Vec<u8>,
}

/// A message on its way to its recipients: what `Delivery::deliver` stores in one transaction.
///
/// A small body travels whole in `tail` and is written in the delivery's own transaction (one
/// commit for everything). A large one was streamed with `begin_blob`/`append_chunk` into
/// `blob` as it arrived (so no delivery holds a whole large message in memory), and `tail` is
/// its last part, appended as chunk number `chunks`.
#[derive(Debug, Clone, Default)]
pub struct Parcel {
    pub blob: Option<BlobId>,
    /// Chunks already appended to `blob`.
    pub chunks: u32,
    pub tail: Vec<u8>,
    /// The whole body's size in octets (chunks and tail).
    pub size: u64,
    pub recipients: Vec<Recipient>,
    /// Names the message for deduplication (see `crate::dedup`); `None` never deduplicates.
    pub dedup: Option<crate::DedupKey>,
}

/// A way of writing a login (see tenancy's `Login::parse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginForm {
    /// `john@example.com`
    At,
    /// `john%example.com` (SDPS)
    Percent,
    /// `john+example.com` (SDPS)
    Plus,
    /// `john`, with the domain from the listener or the TLS server name
    Bare,
}

impl LoginForm {
    pub const ALL: [LoginForm; 4] = [
        LoginForm::At,
        LoginForm::Percent,
        LoginForm::Plus,
        LoginForm::Bare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LoginForm::At => "at",
            LoginForm::Percent => "percent",
            LoginForm::Plus => "plus",
            LoginForm::Bare => "bare",
        }
    }
}

/// The login forms a domain accepts; a new domain accepts all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginForms(u8);

impl LoginForms {
    pub fn all() -> Self {
        Self(0b1111)
    }

    pub fn allows(self, form: LoginForm) -> bool {
        self.0 & (1 << form as u8) != 0
    }

    /// Parses a comma-separated list such as `at,plus` (or `all`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Self::all());
        }
        let mut bits = 0u8;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let form = LoginForm::ALL
                .into_iter()
                .find(|f| f.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "unknown login form {name:?}: expected at, percent, plus, bare or all"
                    ))
                })?;
            bits |= 1 << form as u8;
        }
        if bits == 0 {
            return Err(StoreError::Invalid(
                "at least one login form is needed".into(),
            ));
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for LoginForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = LoginForm::ALL
            .into_iter()
            .filter(|form| self.allows(*form))
            .map(LoginForm::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What login needs to know about a domain reached by name or alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    /// The domain itself, when the name given was an alias.
    pub name: DomainName,
    pub login_forms: LoginForms,
    /// The old POP3 server of a domain in migration mode (`pop3s://host[:port]`).
    pub migrate_from: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_idna_normalised() {
        assert_eq!(
            DomainName::parse("Bücher.Example")
                .map(|d| d.to_string())
                .ok()
                .as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            DomainName::parse("EXAMPLE.com.")
                .map(|d| d.to_string())
                .ok()
                .as_deref(),
            Some("example.com")
        );
        assert!(DomainName::parse("exa mple.com").is_err());
        assert!(DomainName::parse("").is_err());
    }

    #[test]
    fn international_local_parts_are_nfc_and_lower_case() {
        let parse = |s: &str| LocalPart::parse(s).map(|l| l.to_string()).ok();
        // Precomposed, decomposed (o + U+0308) and upper case all name one mailbox.
        assert_eq!(parse("jöhn").as_deref(), Some("jöhn"));
        assert_eq!(parse("jo\u{0308}hn").as_deref(), Some("jöhn"));
        assert_eq!(parse("JÖHN").as_deref(), Some("jöhn"));
        assert_eq!(parse("Иван").as_deref(), Some("иван"));
        assert_eq!(parse("δοκιμή").as_deref(), Some("δοκιμή"));
        assert_eq!(parse("用户").as_deref(), Some("用户"));
        assert_eq!(parse("उपयोगकर्ता").as_deref(), Some("उपयोगकर्ता"));
        assert_eq!(parse("jöhn.doe+tag").as_deref(), Some("jöhn.doe+tag"));
        assert_eq!(parse("John.Doe").as_deref(), Some("john.doe"));
        // 64 octets, not 64 characters: 32 two-byte letters fit, 33 do not.
        assert!(parse(&"ö".repeat(32)).is_some());
        assert!(parse(&"ö".repeat(33)).is_none());
    }

    #[test]
    fn dangerous_or_confusable_local_parts_are_refused() {
        let refused = [
            "jo hn",             // space
            "jo\u{00A0}hn",      // no-break space
            "jo\u{3000}hn",      // ideographic space
            "jo\u{0007}hn",      // control
            "jo\u{0085}hn",      // C1 control (next line)
            "jo\u{200B}hn",      // zero-width space
            "jo\u{200D}hn",      // zero-width joiner
            "jo\u{202E}nh",      // right-to-left override
            "jo\u{2028}hn",      // line separator
            "\u{FEFF}john",      // byte order mark
            "ｊｏｈｎ",          // fullwidth: a second "john"
            "ﬁle",               // ligature
            "john\u{FF20}x",     // fullwidth @
            "jöhn\u{FF0E}x",     // fullwidth full stop
            "x\u{00B2}",         // superscript two
            "\u{0308}john",      // leading combining mark
            "jöhn.\u{0301}x",    // a mark on a dot
            "jöhn+\u{0308}",     // a mark on a plus
            "p\u{0430}ypal",     // Cyrillic а among Latin letters
            "\u{03BF}mega-jöhn", // Greek ο among Latin letters
            "jöhn™",             // symbol
            "jöhn«",             // punctuation outside ASCII
            "\u{E000}x",         // private use
            ".jöhn",
            "jöhn.",
            "jö..hn",
            "",
        ];
        for s in refused {
            assert!(LocalPart::parse(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn login_forms_round_trip() {
        let f = LoginForms::parse("plus, AT").expect("parse");
        assert!(f.allows(LoginForm::At) && f.allows(LoginForm::Plus));
        assert!(!f.allows(LoginForm::Percent) && !f.allows(LoginForm::Bare));
        assert_eq!(f.to_string(), "at,plus");
        assert_eq!(LoginForms::parse("all").expect("all"), LoginForms::all());
        assert_eq!(LoginForms::all().to_string(), "at,percent,plus,bare");
        assert!(LoginForms::parse("").is_err());
        assert!(LoginForms::parse("at,email").is_err());
    }
}
