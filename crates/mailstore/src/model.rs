//! The store's vocabulary: validated names and the ids and records that cross the trait boundary.

use std::fmt;

use crate::StoreError;

/// A domain name, lower-cased, validated as LDH labels. Parse, don't validate twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);

impl LocalPart {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        // RFC 5322 dot-atom characters; quoted local parts are not offered for hosted mailboxes.
        const SPECIALS: &[u8] = b".!#$%&'*+/=?^_`{|}~-";
        let s = s.to_ascii_lowercase();
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b));
        if !ok {
            return Err(StoreError::Invalid(format!("invalid mailbox name {s:?}")));
        }
        Ok(Self(s))
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

/// What authentication needs to know about a user.
#[derive(Clone)]
pub struct UserAuth {
    pub id: UserId,
    pub password_hash: String,
}

impl fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAuth")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
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
