//! Bulk loading: many users and their mail in few statements, for staging systems of realistic
//! size and for benchmarks (`pophost domain generate`). Users share one password hash and SCRAM
//! verifier and are inserted many to a statement; mail is stored by the same writer LMTP's
//! deliveries go through (quotas, usage counters, UIDs, bodies and header blocks exactly as a
//! delivery leaves them), in one transaction per call instead of one per group commit.

use async_trait::async_trait;

use crate::{DomainName, LocalPart, Recipient, Result, UserId};

/// One message as LMTP would have received it: its body (stored once) and, per recipient, the
/// header block delivery prepends (`Return-Path`, `Delivered-To`, `Received`).
#[derive(Debug, Clone)]
pub struct BulkMessage {
    pub body: Vec<u8>,
    pub recipients: Vec<Recipient>,
}

/// What a bulk delivery stored: messages stored and refused (a full mailbox or domain, or a
/// recipient that no longer exists), one per recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkReport {
    pub stored: u64,
    pub refused: u64,
}

/// Loads many users and messages at once.
#[async_trait]
pub trait BulkLoad: Send + Sync {
    /// Adds users of `domain` that share one password hash and SCRAM verifier, in one
    /// transaction; their ids in the order of `locals`. Nothing is added when one of them
    /// exists already (`Conflict`) or the domain's user limit would be passed (`Conflict`).
    async fn add_users_bulk(
        &self,
        domain: &DomainName,
        locals: &[LocalPart],
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<Vec<UserId>>;
    /// Stores messages as `Delivery::deliver` does (quota checks and warnings, usage, UIDs,
    /// the hour's delivery count), all in one transaction. A body longer than `CHUNK_SIZE` is
    /// streamed into its blob first, as LMTP streams it.
    async fn deliver_bulk(&self, messages: Vec<BulkMessage>) -> Result<BulkReport>;
}
