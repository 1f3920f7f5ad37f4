//! Deduplication of deliveries (issue 21, item 2). An MTA whose delivery was committed but never
//! acknowledged (the connection or the server died before the 250) delivers the same message
//! again. A parcel may carry a `DedupKey` naming the message; a mailbox that stored a parcel with
//! that key within its window takes the next one as already delivered (`StoreError::Duplicate`
//! for that recipient, nothing stored). The check and the record are part of the delivery's own
//! transaction (`sql::dedup`), so a crash between commit and acknowledgement leaves the record
//! behind, and two concurrent deliveries of one message to one mailbox store it once.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// What makes two deliveries the same message to the store: an opaque hash (LMTP's is SHA-256
/// over the Message-ID, the envelope sender and the digest of the DATA) and how long a mailbox
/// that stored it refuses it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub hash: [u8; 32],
    /// Counted from the delivery that stored the message; a duplicate does not extend it.
    pub window: Duration,
}

/// Upkeep of the deduplication records.
#[async_trait]
pub trait Deduplication: Send + Sync {
    /// Forgets records whose window has passed (by the store's clock); returns how many went.
    /// The retention job calls it: deliveries only ever replace an expired record of their own
    /// key.
    async fn prune_delivery_keys(&self) -> Result<u64>;
}
