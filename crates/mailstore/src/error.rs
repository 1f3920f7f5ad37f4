//! The store's one error type; frontends map it to protocol replies in one place each.

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The maildrop is locked by another session.
    #[error("maildrop is in use by another session")]
    InUse,
    /// Accepting the message would exceed the user's or the domain's quota.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// As `QuotaExceeded`, for a domain that asks senders to retry later (`452 4.2.2`).
    #[error("quota exceeded (temporary)")]
    QuotaExceededTemporary,
    /// The user logged in successfully less than the domain's LOGIN-DELAY ago.
    #[error("logged in too recently; wait {0} s")]
    LoginDelay(u32),
    /// The named domain or user does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named domain or user already exists, or still has dependants.
    #[error("{0}")]
    Conflict(String),
    /// The session's maildrop lease was lost (expired and taken over); nothing was changed.
    #[error("maildrop lock was lost")]
    LeaseLost,
    /// The caller passed a value the store cannot accept.
    #[error("{0}")]
    Invalid(String),
    /// A quota change would leave `users` user(s) with a limit larger than their domain's: the
    /// storage limit (`bytes`), the message limit (`messages`) or both. An unlimited user limit
    /// is bounded by the domain's and never outside it. The one statement of the rule is the
    /// store's check under the domain's lock; frontends show this under the field it names.
    #[error("{}", outside_message(*.users, *.bytes, *.messages))]
    QuotaOutsideDomain {
        users: u64,
        bytes: bool,
        messages: bool,
    },
    /// This recipient already got a delivery with the parcel's `DedupKey` within its window:
    /// nothing was stored, and the sender is to be told it was delivered.
    #[error("already delivered")]
    Duplicate,
    /// The database failed or is unreachable; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return StoreError::Conflict("already exists".into());
        }
        StoreError::Unavailable(e)
    }
}

fn outside_message(users: u64, bytes: bool, messages: bool) -> String {
    let which = match (bytes, messages) {
        (true, true) => "storage and message",
        (true, false) => "storage",
        _ => "message",
    };
    format!(
        "a user's quota must lie inside the domain's: {users} user(s) would have a larger \
         {which} quota than their domain"
    )
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
