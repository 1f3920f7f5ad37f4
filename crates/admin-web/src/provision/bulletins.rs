//! Bulletins (issue 21 item 4): posting, listing and cancelling, for the Bulletins page,
//! `/api/v1/bulletins` and `pophost bulletin`. A super admin posts to all domains or any one; a
//! domain admin only to their own domains, and sees only those bulletins. A bulletin due now is
//! delivered before `post` returns, so no running server is needed for it; scheduled ones are
//! delivered by `pophost serve`'s bulletin job. Posting and cancelling are audited
//! (`bulletin.post`, `bulletin.cancel`).

use mailstore::{Bulletin, BulletinId, BulletinScope, BulletinState, NewBulletin, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::when::parse_time;
use super::{Actor, Audit, Error, Roles};

/// How many bulletins a listing shows.
pub const LIST_LIMIT: u64 = 200;

/// A bulletin to post, as the frontends collect it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct BulletinRequest {
    /// The domain whose mailboxes get it; null or absent for every domain (super admins only).
    #[serde(default)]
    pub domain: Option<String>,
    pub subject: String,
    /// Plain text; sent as text/plain in UTF-8.
    pub body: String,
    /// When to deliver it, RFC 3339 (`2026-12-24T22:00:00Z`; without an offset, UTC); absent or
    /// past: now.
    #[serde(default)]
    pub at: Option<String>,
}

/// A posted bulletin.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Bulletin)]
pub struct BulletinJson {
    pub id: i64,
    /// The domain it goes to; null for every domain.
    #[schema(required = true)]
    pub domain: Option<String>,
    pub subject: String,
    pub body: String,
    /// Unix milliseconds it is (or was) due.
    pub at: i64,
    /// The admin's e-mail, or `cli`.
    pub author: String,
    pub created_at: i64,
    /// `scheduled`, `delivered` or `cancelled`.
    pub state: String,
    /// Unix milliseconds delivery finished; null until then.
    #[schema(required = true)]
    pub delivered_at: Option<i64>,
    /// Mailboxes it has been delivered to.
    pub recipients: u64,
}

impl From<&Bulletin> for BulletinJson {
    fn from(b: &Bulletin) -> Self {
        Self {
            id: b.id.0,
            domain: b.scope.domain().map(ToString::to_string),
            subject: b.subject.clone(),
            body: b.body.clone(),
            at: b.due_at,
            author: b.author.clone(),
            created_at: b.created_at,
            state: b.state.as_str().into(),
            delivered_at: b.delivered_at,
            recipients: b.recipients,
        }
    }
}

/// Posts a bulletin and, when it is due now, delivers it; returns it as stored afterwards.
pub async fn post(
    roles: &Roles,
    actor: &Actor,
    request: &BulletinRequest,
    now: i64,
) -> Result<Bulletin, Error> {
    let scope = match request.domain.as_deref().map(str::trim) {
        None | Some("") => {
            actor.require_super()?;
            BulletinScope::All
        }
        Some(raw) => BulletinScope::Domain(actor.domain(raw)?),
    };
    let due_at = match request.at.as_deref().map(str::trim) {
        None | Some("") => now,
        Some(raw) => parse_time(raw)?,
    };
    let new = match NewBulletin::new(scope, &request.subject, &request.body, due_at, &actor.name) {
        Ok(new) => new,
        Err(StoreError::Invalid(why)) => return Err(Error::Invalid(why)),
        Err(e) => return Err(e.into()),
    };
    let id = match roles.bulletins.post_bulletin(&new, now).await {
        Err(StoreError::NotFound(what)) => return Err(Error::NotFound(what)),
        other => other?,
    };
    let object = format!("bulletin {id}");
    let mut audited = BulletinJson::from(&stored(roles, id).await?);
    // The body can be long; the audit log keeps what identifies the notice.
    audited.body = String::new();
    actor
        .audit(
            roles,
            Audit::new("bulletin.post", &object, new.scope.domain()).after(&audited),
        )
        .await;
    if new.due_at <= now {
        roles.bulletins.deliver_bulletins(now).await?;
    }
    stored(roles, id).await
}

async fn stored(roles: &Roles, id: BulletinId) -> Result<Bulletin, Error> {
    roles
        .bulletins
        .bulletin(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("bulletin {id}")))
}

/// The bulletins the actor may see, newest first.
pub async fn list(roles: &Roles, actor: &Actor) -> Result<Vec<Bulletin>, Error> {
    Ok(roles
        .bulletins
        .list_bulletins(&actor.scope, LIST_LIMIT)
        .await?)
}

/// Cancels a scheduled bulletin the actor may see (`NotFound` otherwise).
pub async fn cancel(roles: &Roles, actor: &Actor, id: BulletinId) -> Result<(), Error> {
    let bulletin = roles
        .bulletins
        .bulletin(id)
        .await?
        .filter(|b| b.scope.allowed_for(&actor.scope))
        .ok_or_else(|| Error::NotFound(format!("bulletin {id}")))?;
    if bulletin.state != BulletinState::Scheduled {
        return Err(Error::Invalid(format!(
            "bulletin {id} is already {}",
            bulletin.state.as_str()
        )));
    }
    roles.bulletins.cancel_bulletin(id).await?;
    let object = format!("bulletin {id}");
    actor
        .audit(
            roles,
            Audit::new("bulletin.cancel", &object, bulletin.scope.domain()),
        )
        .await;
    Ok(())
}
