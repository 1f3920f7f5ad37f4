//! What a customer did (issue "Admin UI", item 4): every POP3 login, successful or not, with
//! where it came from and how; what each user retrieved and deleted per day; when mail last
//! arrived. The POP3 frontend writes it (`Maildrops::lock_for_login`, `Directory::record_failed_login`,
//! `Maildrops::end_session` and the delivery writer), the admin UI, API and CLI read it
//! (`Admin::user_activity`), and the retention job prunes it (`Admin::prune_activity`).

use std::net::IpAddr;

use crate::{Address, DomainName, MessageId};

/// How many login events `Admin::user_activity` returns.
pub const RECENT_LOGINS: u64 = 20;

/// The days `UserActivity::retrieved`/`deleted` add up.
pub const ACTIVITY_DAYS: i64 = 30;

/// How a client logged in (or tried to): where from, with which mechanism, over TLS or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The client's address (from the PROXY header when proxied).
    pub ip: Option<IpAddr>,
    /// `USER`, `APOP`, `PLAIN`, `LOGIN`, `SCRAM-SHA-256`, … as the session names it.
    pub mechanism: String,
    pub tls: bool,
}

/// Why a login failed. Stored by its `as_str` name; names read back that this version does not
/// know become `Other`, so an older frontend never fails to show a newer one's history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// The account exists and is enabled; the password (or digest, or proof) was wrong.
    WrongPassword,
    /// The account or its domain is disabled (whatever the password was).
    Disabled,
    /// The domain does not accept the login form the client typed (`john+example.com`, …).
    LoginForm,
    /// The right password, too soon after the last login (RFC 2449 LOGIN-DELAY).
    LoginDelay,
    /// The right password, but another session holds the maildrop.
    InUse,
    /// No such user (the domain may exist: then the event is the domain's).
    UnknownUser,
    /// The account cannot log in this way (APOP without a secret, or not allowed).
    MechanismNotAllowed,
    Other(String),
}

impl FailureReason {
    pub fn as_str(&self) -> &str {
        match self {
            FailureReason::WrongPassword => "wrong_password",
            FailureReason::Disabled => "disabled",
            FailureReason::LoginForm => "login_form",
            FailureReason::LoginDelay => "login_delay",
            FailureReason::InUse => "in_use",
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::MechanismNotAllowed => "mechanism_not_allowed",
            FailureReason::Other(other) => other,
        }
    }

    pub fn parse(name: &str) -> Self {
        match name {
            "wrong_password" => FailureReason::WrongPassword,
            "disabled" => FailureReason::Disabled,
            "login_form" => FailureReason::LoginForm,
            "login_delay" => FailureReason::LoginDelay,
            "in_use" => FailureReason::InUse,
            "unknown_user" => FailureReason::UnknownUser,
            "mechanism_not_allowed" => FailureReason::MechanismNotAllowed,
            other => FailureReason::Other(other.to_string()),
        }
    }

    /// In words, for the admin pages and the CLI.
    pub fn describe(&self) -> &str {
        match self {
            FailureReason::WrongPassword => "wrong password",
            FailureReason::Disabled => "account disabled",
            FailureReason::LoginForm => "login form not allowed",
            FailureReason::LoginDelay => "LOGIN-DELAY: too soon after the last login",
            FailureReason::InUse => "mailbox in use by another session",
            FailureReason::UnknownUser => "no such user",
            FailureReason::MechanismNotAllowed => "login mechanism not allowed",
            FailureReason::Other(other) => other,
        }
    }
}

/// A failed login as the frontend saw it. The store refines `WrongPassword` by what it holds:
/// a mailbox that does not exist is `UnknownUser` (recorded for its domain when that exists),
/// a disabled account or domain is `Disabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedLogin {
    pub login: LoginRecord,
    /// The mailbox the login named, when it named one.
    pub address: Option<Address>,
    /// The domain the login named when it named no mailbox (a login form the domain refuses).
    pub domain: Option<DomainName>,
    pub reason: FailureReason,
}

/// One login event, newest first in `UserActivity::logins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// Unix milliseconds.
    pub at: i64,
    pub ip: Option<String>,
    pub mechanism: String,
    pub tls: bool,
    /// `None` for a success.
    pub failure: Option<FailureReason>,
}

/// How a POP3 session ended, for `Maildrops::end_session`.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnd<'a> {
    /// `Some(marked)` after QUIT: the UPDATE deletes them; `None` when the session ended
    /// without QUIT (nothing is deleted).
    pub update: Option<&'a [MessageId]>,
    /// What the session retrieved with RETR, for the user's daily stats.
    pub retrieved: Transfer,
    /// The messages the session retrieved in full (RETR), each once, in the order first
    /// retrieved.
    pub retrieved_ids: &'a [MessageId],
    /// The session's login: where it came from and how (kept with what it deleted). `None`
    /// only where no login is known (tests of the store alone).
    pub login: Option<&'a LoginRecord>,
}

impl<'a> SessionEnd<'a> {
    /// An end with only the deletions and the totals (no per-message record, no login).
    pub fn new(update: Option<&'a [MessageId]>, retrieved: Transfer) -> Self {
        Self {
            update,
            retrieved,
            retrieved_ids: &[],
            login: None,
        }
    }
}

/// Messages and octets moved, summed over days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub messages: u64,
    pub octets: u64,
}

/// What a user did, for the user page, the API and `pophost user show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserActivity {
    /// The last successful login.
    pub last_login: Option<LoginEvent>,
    /// Unix milliseconds of the last delivery.
    pub last_delivery: Option<i64>,
    /// Retrieved with RETR, and deleted with DELE and QUIT, in the last `ACTIVITY_DAYS` days
    /// (today included).
    pub retrieved: Transfer,
    pub deleted: Transfer,
    /// The last `RECENT_LOGINS` logins, successful or not, newest first.
    pub logins: Vec<LoginEvent>,
}

/// The day a user-stats row counts in: Unix days (UTC).
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_its_name() {
        for reason in [
            FailureReason::WrongPassword,
            FailureReason::Disabled,
            FailureReason::LoginForm,
            FailureReason::LoginDelay,
            FailureReason::InUse,
            FailureReason::UnknownUser,
            FailureReason::MechanismNotAllowed,
            FailureReason::Other("throttled".into()),
        ] {
            assert_eq!(FailureReason::parse(reason.as_str()), reason);
        }
    }

    #[test]
    fn days_are_utc_days() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_399_999), 0);
        assert_eq!(day_of(86_400_000), 1);
        assert_eq!(day_of(-1), -1);
    }
}
