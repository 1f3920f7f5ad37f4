//! What a customer did (the user page's Activity, `GET .../users/{local}/activity`, `pophost
//! user show`): read in the actor's scope, like the user it belongs to. A read: nothing is
//! audited.

use mailstore::{ACTIVITY_DAYS, Address, LoginEvent, UserActivity};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Actor, Error, Roles};

/// A user's activity, or `NotFound` for no such user and for one outside the actor's scope.
pub async fn user_activity(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
) -> Result<UserActivity, Error> {
    actor.reach(&address.domain)?;
    roles
        .admin
        .user_activity(address)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {address}")))
}

/// One login, successful or not.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = LoginEvent)]
pub struct LoginJson {
    /// Unix milliseconds.
    pub at: i64,
    /// The client's address; null when unknown.
    #[schema(required = true)]
    pub client: Option<String>,
    /// `USER`, `APOP`, `PLAIN`, `LOGIN` or `SCRAM-SHA-256`.
    pub mechanism: String,
    pub tls: bool,
    pub success: bool,
    /// Why a failure failed: `wrong_password`, `disabled`, `login_form`, `login_delay`,
    /// `in_use`, `unknown_user`, `mechanism_not_allowed`; null for a success.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The reason in words; null for a success.
    #[schema(required = true)]
    pub reason_text: Option<String>,
}

impl From<&LoginEvent> for LoginJson {
    fn from(e: &LoginEvent) -> Self {
        Self {
            at: e.at,
            client: e.ip.clone(),
            mechanism: e.mechanism.clone(),
            tls: e.tls,
            success: e.failure.is_none(),
            reason: e.failure.as_ref().map(|r| r.as_str().to_string()),
            reason_text: e.failure.as_ref().map(|r| r.describe().to_string()),
        }
    }
}

/// What a user did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = UserActivity)]
pub struct ActivityJson {
    pub address: String,
    /// The last successful login; null if none is kept.
    #[schema(required = true)]
    pub last_login: Option<LoginJson>,
    /// Unix milliseconds of the last delivery; null if none.
    #[schema(required = true)]
    pub last_delivery: Option<i64>,
    /// The days the four counts below add up (today included).
    pub days: i64,
    /// Messages sent in full with RETR (TOP is not counted), and their octets.
    pub retrieved_messages: u64,
    pub retrieved_bytes: u64,
    /// Messages deleted with DELE and QUIT, and their octets.
    pub deleted_messages: u64,
    pub deleted_bytes: u64,
    /// The last 20 logins, successful or not, newest first.
    pub logins: Vec<LoginJson>,
}

impl ActivityJson {
    pub fn new(address: &Address, a: &UserActivity) -> Self {
        Self {
            address: address.to_string(),
            last_login: a.last_login.as_ref().map(LoginJson::from),
            last_delivery: a.last_delivery,
            days: ACTIVITY_DAYS,
            retrieved_messages: a.retrieved.messages,
            retrieved_bytes: a.retrieved.octets,
            deleted_messages: a.deleted.messages,
            deleted_bytes: a.deleted.octets,
            logins: a.logins.iter().map(LoginJson::from).collect(),
        }
    }
}
