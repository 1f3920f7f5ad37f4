//! Bulletins (issue 21 item 4): a notice an admin writes once — maintenance, a security warning —
//! that pophost delivers as a normal message into every mailbox of one domain or of all domains,
//! now or at a scheduled time. Only mailboxes whose user existed at the due time get it. Each
//! mailbox that got a bulletin is recorded in the transaction that stores its copy, so delivery
//! is exactly once per mailbox however often it is run, by however many frontends, and resumes
//! where a crash left it.
//!
//! Bulletins ignore quotas: they are small and the user needs to read them, so a full mailbox
//! still gets one; its size is counted in the usage like any other message.

use async_trait::async_trait;

use crate::{DomainName, Result, Scope, StoreError};

/// The longest subject a bulletin may have, in characters.
pub const MAX_BULLETIN_SUBJECT: usize = 200;
/// The largest body a bulletin may have, in bytes: a notice, not a newsletter.
pub const MAX_BULLETIN_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BulletinId(pub i64);

impl std::fmt::Display for BulletinId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Whose mailboxes a bulletin goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulletinScope {
    /// Every mailbox of every domain.
    All,
    /// Every mailbox of one domain.
    Domain(DomainName),
}

impl BulletinScope {
    /// Whether an admin of `scope` may post (and see) such a bulletin: an all-domains one needs a
    /// super admin.
    pub fn allowed_for(&self, scope: &Scope) -> bool {
        match (self, scope) {
            (_, Scope::All) => true,
            (BulletinScope::All, Scope::Domains(_)) => false,
            (BulletinScope::Domain(d), scope) => scope.allows(d),
        }
    }

    pub fn domain(&self) -> Option<&DomainName> {
        match self {
            BulletinScope::All => None,
            BulletinScope::Domain(d) => Some(d),
        }
    }
}

impl std::fmt::Display for BulletinScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BulletinScope::All => f.write_str("all domains"),
            BulletinScope::Domain(d) => d.fmt(f),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulletinState {
    /// Not yet (completely) delivered: due in the future, or due and being delivered.
    Scheduled,
    Delivered,
    Cancelled,
}

impl BulletinState {
    pub fn as_str(self) -> &'static str {
        match self {
            BulletinState::Scheduled => "scheduled",
            BulletinState::Delivered => "delivered",
            BulletinState::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Self {
        match name {
            "delivered" => BulletinState::Delivered,
            "cancelled" => BulletinState::Cancelled,
            _ => BulletinState::Scheduled,
        }
    }
}

/// A bulletin to post. Build it with `NewBulletin::new`, which checks subject and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBulletin {
    pub scope: BulletinScope,
    pub subject: String,
    pub body: String,
    /// Unix milliseconds at which it is delivered (`now` or later; earlier means now).
    pub due_at: i64,
    /// The admin's e-mail, or `cli`.
    pub author: String,
}

impl NewBulletin {
    /// Refuses an empty subject, one with control characters (a line break would inject a
    /// header) or longer than `MAX_BULLETIN_SUBJECT`, and an empty or oversized body.
    pub fn new(
        scope: BulletinScope,
        subject: &str,
        body: &str,
        due_at: i64,
        author: &str,
    ) -> Result<Self> {
        let subject = subject.trim();
        if subject.is_empty() {
            return Err(StoreError::Invalid("a bulletin needs a subject".into()));
        }
        if subject.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "the subject must be one line without control characters".into(),
            ));
        }
        if subject.chars().count() > MAX_BULLETIN_SUBJECT {
            return Err(StoreError::Invalid(format!(
                "the subject is longer than {MAX_BULLETIN_SUBJECT} characters"
            )));
        }
        if body.trim().is_empty() {
            return Err(StoreError::Invalid("a bulletin needs a body".into()));
        }
        if body.len() > MAX_BULLETIN_BODY {
            return Err(StoreError::Invalid(format!(
                "the body is larger than {MAX_BULLETIN_BODY} bytes"
            )));
        }
        Ok(Self {
            scope,
            subject: subject.to_string(),
            body: body.to_string(),
            due_at,
            author: author.to_string(),
        })
    }
}

/// A posted bulletin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulletin {
    pub id: BulletinId,
    pub scope: BulletinScope,
    pub subject: String,
    pub body: String,
    /// Unix milliseconds.
    pub due_at: i64,
    pub author: String,
    pub created_at: i64,
    pub state: BulletinState,
    pub delivered_at: Option<i64>,
    /// How many mailboxes got it so far.
    pub recipients: u64,
}

/// Bulletins in the store. Times are Unix milliseconds passed in by the caller.
#[async_trait]
pub trait Bulletins: Send + Sync {
    /// Stores a bulletin to be delivered at its due time (`NotFound` for an unknown domain);
    /// nothing is delivered yet: see `deliver_bulletins`.
    async fn post_bulletin(&self, bulletin: &NewBulletin, now: i64) -> Result<BulletinId>;
    async fn bulletin(&self, id: BulletinId) -> Result<Option<Bulletin>>;
    /// Bulletins an admin of `scope` may see, newest first: a domain admin sees those of their
    /// domains (not the all-domains ones).
    async fn list_bulletins(&self, scope: &Scope, limit: u64) -> Result<Vec<Bulletin>>;
    /// Delivers every bulletin due at `now` that is not done yet, into each mailbox of its scope
    /// whose user was created at or before its due time and has not got it: exactly once per
    /// mailbox, also when frontends run this at the same time or a run was interrupted. Returns
    /// the bulletins this call finished.
    async fn deliver_bulletins(&self, now: i64) -> Result<Vec<BulletinId>>;
    /// Cancels a bulletin not yet delivered (`Conflict` once delivery finished or it was
    /// cancelled; `NotFound` for no such bulletin). Mailboxes it already reached keep it.
    async fn cancel_bulletin(&self, id: BulletinId) -> Result<()>;
}

/// The message a bulletin becomes in one mailbox.
pub fn bulletin_message(
    id: BulletinId,
    subject: &str,
    body: &str,
    to: &str,
    domain: &str,
    now_secs: i64,
) -> Vec<u8> {
    let date = time::OffsetDateTime::from_unix_timestamp(now_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
    let mut body = body.replace("\r\n", "\n").replace('\r', "\n");
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let body = body.replace('\n', "\r\n");
    format!(
        "From: Postmaster <postmaster@{domain}>\r\nTo: <{to}>\r\nSubject: {}\r\nDate: {date}\r\n\
         Message-ID: <bulletin.{id}.{now_secs}.{}@{domain}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: {encoding}\r\n\r\n{body}",
        encode_subject(subject),
        to.replace('@', "="),
    )
    .into_bytes()
}

/// An RFC 2047 `encoded-word` list for a non-ASCII subject (ASCII passes unchanged): base64 in
/// words of at most 45 bytes of UTF-8, split between characters, so each stays under the 75
/// characters RFC 2047 allows.
pub fn encode_subject(subject: &str) -> String {
    if subject.is_ascii() {
        return subject.to_string();
    }
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, c) in subject.char_indices() {
        if i + c.len_utf8() - start > 45 {
            words.push(&subject[start..end]);
            start = i;
        }
        end = i + c.len_utf8();
    }
    words.push(&subject[start..end]);
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn subject_encoding() {
        assert_eq!(encode_subject("Maintenance"), "Maintenance");
        assert_eq!(
            encode_subject("Wartung läuft"),
            "=?UTF-8?B?V2FydHVuZyBsw6R1ZnQ=?="
        );
        let long = "ä".repeat(40);
        let encoded = encode_subject(&long);
        assert_eq!(encoded.matches("=?UTF-8?B?").count(), 2);
        assert!(encoded.split("\r\n ").all(|w| w.len() <= 75));
    }

    #[test]
    fn refuses_header_injection() {
        let bad = NewBulletin::new(BulletinScope::All, "a\r\nBcc: x", "body", 0, "cli");
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
    }

    #[test]
    fn message_headers() {
        let m = bulletin_message(
            BulletinId(7),
            "Hi",
            "line\nnext",
            "john@example.com",
            "example.com",
            0,
        );
        let m = String::from_utf8(m).unwrap();
        assert!(m.starts_with(
            "From: Postmaster <postmaster@example.com>\r\nTo: <john@example.com>\r\n"
        ));
        assert!(m.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(m.ends_with("\r\n\r\nline\r\nnext\r\n"));
    }
}
