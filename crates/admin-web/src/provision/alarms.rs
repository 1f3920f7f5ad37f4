//! Re-download alarms (issue 21, item 3; see `mailstore::alarm`) for the user page, the
//! dashboard and `GET /api/v1/alarms`, `GET .../users/{local}/alarms`: read in the actor's
//! scope. A read: nothing is audited.

use mailstore::{Address, Alarm, RECENT_ALARMS};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Actor, Error, Roles};

/// How far back the dashboard and `GET /api/v1/alarms` look.
pub const RECENT_DAYS: i64 = 7;

/// A user's newest alarms, or `NotFound` for no such user and for one outside the scope.
pub async fn user_alarms(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
) -> Result<Vec<Alarm>, Error> {
    actor.reach(&address.domain)?;
    if roles.admin.user_detail(address).await?.is_none() {
        return Err(Error::NotFound(format!("user {address}")));
    }
    Ok(roles.alarms.user_alarms(address, RECENT_ALARMS).await?)
}

/// The newest alarms of the last `RECENT_DAYS` days in the actor's scope.
pub async fn recent_alarms(roles: &Roles, actor: &Actor, now_ms: i64) -> Result<Vec<Alarm>, Error> {
    let since = now_ms - RECENT_DAYS * 86_400_000;
    Ok(roles
        .alarms
        .recent_alarms(&actor.scope, since, RECENT_ALARMS)
        .await?)
}

/// A session that re-downloaded a mailbox, or a second client deleting mail on arrival.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Alarm)]
pub struct AlarmJson {
    pub address: String,
    /// `redownload` or `quick_delete`.
    pub kind: String,
    /// Unix milliseconds of the session's end.
    pub at: i64,
    /// Messages retrieved again (`redownload`) or deleted (`quick_delete`) by the session.
    pub count: u64,
    /// The session's client address; null when unknown.
    #[schema(required = true)]
    pub client: Option<String>,
    /// The session's login mechanism; null when unknown.
    #[schema(required = true)]
    pub mechanism: Option<String>,
    /// `quick_delete`: the other client address that deleted mail on arrival; else null.
    #[schema(required = true)]
    pub previous_client: Option<String>,
    /// What happened, in words.
    pub text: String,
}

impl From<&Alarm> for AlarmJson {
    fn from(a: &Alarm) -> Self {
        Self {
            address: a.address.to_string(),
            kind: a.kind.as_str().to_string(),
            at: a.at,
            count: a.count,
            client: a.ip.clone(),
            mechanism: a.mechanism.clone(),
            previous_client: a.previous_ip.clone(),
            text: a.describe(),
        }
    }
}
