//! Admin accounts and API tokens, for the admins page, `/api/v1/admins`, the token page and
//! `pophost admin …`: create, scope, password, disable/enable, remove; create and revoke tokens.
//!
//! Only super admins manage admins; any admin may change their own password (knowing the
//! current one) and manage their own tokens. A password change, disabling or removal ends every
//! session of that admin and revokes their tokens at once, so a leaked password or a departed
//! employee stops working the moment the change is made. The store refuses to remove, disable or
//! demote the last enabled super admin.

use std::net::IpAddr;

use mailstore::{
    AdminAccount, AdminId, AdminListing, ApiToken, DomainName, NewApiToken, Scope, StoreError,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Actor, Audit, Error, Result, Roles};
use crate::auth::{hash_secret, random_token};
use crate::password::{PasswordFor, password_problem};

/// An admin account as the API returns it and the audit log records it (never password
/// material).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Admin)]
pub struct AdminJson {
    pub email: String,
    /// A super admin reaches every domain and manages admins.
    pub super_admin: bool,
    /// The domains of a domain admin; empty for a super admin.
    pub domains: Vec<String>,
    /// A disabled admin can neither sign in nor use API tokens.
    pub disabled: bool,
    /// The last successful sign-in, Unix milliseconds; null if never.
    #[schema(required = true)]
    pub last_signin_at: Option<i64>,
    /// The client address of that sign-in.
    #[schema(required = true)]
    pub last_signin_ip: Option<String>,
    /// API tokens the admin holds.
    pub tokens: u64,
}

impl AdminJson {
    fn of(a: &AdminAccount, tokens: u64) -> Self {
        let (super_admin, domains) = match &a.scope {
            Scope::All => (true, vec![]),
            Scope::Domains(d) => (false, d.iter().map(DomainName::to_string).collect()),
        };
        Self {
            email: a.email.clone(),
            super_admin,
            domains,
            disabled: a.disabled,
            last_signin_at: a.last_signin_at,
            last_signin_ip: a.last_signin_ip.clone(),
            tokens,
        }
    }
}

impl From<&AdminListing> for AdminJson {
    fn from(a: &AdminListing) -> Self {
        Self::of(&a.account, a.tokens)
    }
}

/// The scope a form, a JSON body or the CLI names: super, or at least one existing domain.
pub fn scope_of<S: AsRef<str>>(super_admin: bool, domains: &[S]) -> Result<Scope> {
    if super_admin {
        return Ok(Scope::All);
    }
    let mut list = Vec::new();
    for raw in domains.iter().map(|d| d.as_ref().trim()) {
        if raw.is_empty() {
            continue;
        }
        let name = DomainName::parse(raw)
            .map_err(|_| Error::Invalid(format!("{raw} is not a domain name")))?;
        if !list.contains(&name) {
            list.push(name);
        }
    }
    if list.is_empty() {
        return Err(Error::Invalid(
            "Name at least one domain, or make the admin a super admin.".into(),
        ));
    }
    list.sort();
    Ok(Scope::Domains(list))
}

/// "super admin" or "admin of a.example, b.example", for messages.
pub fn describe_scope(scope: &Scope) -> String {
    match scope {
        Scope::All => "super admin".into(),
        Scope::Domains(d) => format!(
            "admin of {}",
            d.iter()
                .map(DomainName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn scope_json(scope: &Scope) -> serde_json::Value {
    match scope {
        Scope::All => serde_json::json!({ "super_admin": true }),
        Scope::Domains(d) => serde_json::json!({
            "super_admin": false,
            "domains": d.iter().map(DomainName::as_str).collect::<Vec<_>>(),
        }),
    }
}

/// The argon2 hash of an admin's password (admins sign in to the UI only: no SCRAM).
pub(super) async fn admin_hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || tenancy::hash_password(password.as_bytes()))
        .await
        .map_err(|e| Error::Internal(format!("password hashing did not finish: {e}")))?
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Whether `password` matches the argon2 `hash` (on the blocking pool): sign-in and a change
/// of one's own password.
pub async fn password_matches(hash: String, password: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || tenancy::verify_password(password.as_bytes(), &hash))
        .await
        .map_err(|e| Error::Internal(format!("password check did not finish: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Every admin account (super admins only).
pub async fn list_admins(roles: &Roles, actor: &Actor) -> Result<Vec<AdminListing>> {
    actor.require_super()?;
    Ok(roles.admin.list_admins().await?)
}

/// The admin account `email` (super admins only).
pub async fn admin(roles: &Roles, actor: &Actor, email: &str) -> Result<AdminListing> {
    actor.require_super()?;
    find(roles, email).await
}

async fn find(roles: &Roles, email: &str) -> Result<AdminListing> {
    let email = email.trim().to_ascii_lowercase();
    // The list is short (staff accounts), and it carries the token counts.
    roles
        .admin
        .list_admins()
        .await?
        .into_iter()
        .find(|a| a.account.email == email)
        .ok_or_else(|| Error::NotFound(format!("admin {email}")))
}

// ---------------------------------------------------------------------------------------------
// Changes.

/// The admin account `email` with `password` in `scope`, checked and hashed.
async fn add_admin(roles: &Roles, email: &str, password: String, scope: &Scope) -> Result<AdminId> {
    if mailstore::Address::parse(email).is_err() {
        return Err(Error::Invalid(
            "Enter an e-mail address, like admin@example.net.".into(),
        ));
    }
    password_problem(&password, PasswordFor::Admin)?;
    let hash = admin_hash(password).await?;
    Ok(roles.admin.add_admin(email, &hash, scope).await?)
}

/// Adds an admin account (super admins only): a super admin, or the admin of some domains.
pub async fn create_admin(
    roles: &Roles,
    actor: &Actor,
    email: &str,
    password: String,
    scope: &Scope,
) -> Result<AdminId> {
    actor.require_super()?;
    let email = email.trim().to_ascii_lowercase();
    let id = add_admin(roles, &email, password, scope).await?;
    let audit = Audit::new("admin.create", &email, None).after(scope_json(scope));
    actor.audit(roles, audit).await;
    Ok(id)
}

/// Creates the first super admin through the one-time bootstrap link: there is no actor yet, so
/// the audit log names the new admin.
pub async fn bootstrap_admin(
    roles: &Roles,
    email: &str,
    password: String,
    ip: Option<IpAddr>,
) -> Result<AdminId> {
    let email = email.trim().to_ascii_lowercase();
    let id = add_admin(roles, &email, password, &Scope::All).await?;
    let actor = Actor {
        id: Some(id),
        name: email,
        scope: Scope::All,
        csrf: None,
        ip,
        flash: None,
    };
    actor
        .audit(roles, Audit::new("admin.bootstrap", "admin", None))
        .await;
    Ok(id)
}

/// Makes `email` a super admin or the admin of some domains (super admins only).
pub async fn set_scope(
    roles: &Roles,
    actor: &Actor,
    email: &str,
    scope: &Scope,
) -> Result<AdminListing> {
    let before = admin(roles, actor, email).await?;
    let id = before.account.id;
    roles.admin.set_admin_scope(id, scope).await?;
    let after = find(roles, &before.account.email).await?;
    let audit = Audit::new("admin.scope", &before.account.email, None)
        .before(AdminJson::from(&before))
        .after(AdminJson::from(&after));
    actor.audit(roles, audit).await;
    Ok(after)
}

/// Ends every session of an admin and revokes their tokens: what a password change, disabling
/// and removal all do.
async fn cut_off(roles: &Roles, id: AdminId) -> Result<(u64, u64)> {
    let sessions = roles.admin.delete_admin_sessions(id).await?;
    let tokens = roles.admin.revoke_admin_tokens(id).await?;
    Ok((sessions, tokens))
}

fn cut_json(sessions: u64, tokens: u64) -> serde_json::Value {
    serde_json::json!({ "sessions_ended": sessions, "tokens_revoked": tokens })
}

/// Sets another admin's password (super admins), ending their sessions and revoking their
/// tokens. An admin changing their own goes through `change_own_password`.
pub async fn set_password(
    roles: &Roles,
    actor: &Actor,
    email: &str,
    password: String,
) -> Result<()> {
    let target = admin(roles, actor, email).await?;
    if actor.id == Some(target.account.id) {
        return Err(Error::Invalid(
            "Change your own password under My account: it asks for the current one.".into(),
        ));
    }
    password_problem(&password, PasswordFor::Admin)?;
    let hash = admin_hash(password).await?;
    let id = target.account.id;
    roles.admin.set_admin_password(id, &hash).await?;
    let (sessions, tokens) = cut_off(roles, id).await?;
    let audit =
        Audit::new("admin.password", &target.account.email, None).after(cut_json(sessions, tokens));
    actor.audit(roles, audit).await;
    Ok(())
}

/// An admin changes their own password, proving they know the current one. Every session ends
/// and every token is revoked, except the session `keep` (the hash of the cookie the change was
/// made from), so the browser that made the change stays signed in.
pub async fn change_own_password(
    roles: &Roles,
    actor: &Actor,
    current: String,
    new: String,
    keep: Option<&str>,
) -> Result<()> {
    let id = actor.admin_id()?;
    let account = roles
        .admin
        .admin_by_id(id)
        .await?
        .ok_or_else(|| Error::NotFound("admin".into()))?;
    if !password_matches(account.password_hash.clone(), current).await? {
        return Err(Error::Invalid("That is not your current password.".into()));
    }
    password_problem(&new, PasswordFor::Admin)?;
    let hash = admin_hash(new).await?;
    let kept = match keep {
        Some(h) => roles.admin.admin_session(h).await?.map(|s| (h, s)),
        None => None,
    };
    roles.admin.set_admin_password(id, &hash).await?;
    let (sessions, tokens) = cut_off(roles, id).await?;
    if let Some((h, s)) = kept {
        // Put back as it was (its age still counts towards the absolute lifetime).
        roles
            .admin
            .create_admin_session(h, id, &s.csrf, s.created_at)
            .await?;
        roles.admin.touch_admin_session(h, s.last_seen).await?;
    }
    let ended = sessions.saturating_sub(u64::from(keep.is_some()));
    let audit = Audit::new("admin.password", &account.email, None).after(cut_json(ended, tokens));
    actor.audit(roles, audit).await;
    Ok(())
}

fn not_yourself(actor: &Actor, target: &AdminAccount, what: &str) -> Result<()> {
    if actor.id == Some(target.id) {
        return Err(Error::Invalid(format!(
            "You cannot {what} your own account; another super admin can."
        )));
    }
    Ok(())
}

/// Disables (ending their sessions and revoking their tokens) or enables an admin (super
/// admins only; not themselves, not the last enabled super admin).
pub async fn set_disabled(
    roles: &Roles,
    actor: &Actor,
    email: &str,
    disabled: bool,
) -> Result<AdminListing> {
    let before = admin(roles, actor, email).await?;
    if disabled {
        not_yourself(actor, &before.account, "disable")?;
    }
    let id = before.account.id;
    roles.admin.set_admin_disabled(id, disabled).await?;
    let mut audit = Audit::new(
        if disabled {
            "admin.disable"
        } else {
            "admin.enable"
        },
        &before.account.email,
        None,
    )
    .before(AdminJson::from(&before));
    if disabled {
        let (sessions, tokens) = cut_off(roles, id).await?;
        audit = audit.after(cut_json(sessions, tokens));
    }
    let after = find(roles, &before.account.email).await?;
    if !disabled {
        audit = audit.after(AdminJson::from(&after));
    }
    actor.audit(roles, audit).await;
    Ok(after)
}

/// Removes an admin with their sessions and tokens (super admins only; not themselves, not the
/// last enabled super admin). Their past actions stay in the audit log.
pub async fn remove(roles: &Roles, actor: &Actor, email: &str) -> Result<()> {
    let before = admin(roles, actor, email).await?;
    not_yourself(actor, &before.account, "remove")?;
    roles.admin.remove_admin(before.account.id).await?;
    let audit =
        Audit::new("admin.remove", &before.account.email, None).before(AdminJson::from(&before));
    actor.audit(roles, audit).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// API tokens: each admin manages their own.

/// The most characters of a token's name.
pub const TOKEN_NAME_MAX: usize = 100;

/// A new token's secret (shown once) and id.
pub struct CreatedToken {
    pub id: i64,
    pub secret: String,
}

/// Creates one of the actor's own tokens: expiring `expires_at` (Unix ms; `None` never), and
/// read-only if asked.
pub async fn create_token(
    roles: &Roles,
    actor: &Actor,
    name: &str,
    expires_at: Option<i64>,
    read_only: bool,
    now: i64,
) -> Result<CreatedToken> {
    let admin = actor.admin_id()?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > TOKEN_NAME_MAX {
        return Err(Error::Invalid(format!(
            "Give the token a name of 1 to {TOKEN_NAME_MAX} characters."
        )));
    }
    let secret = format!("ph_{}", random_token());
    let token = NewApiToken {
        name,
        token_hash: &hash_secret(&secret),
        expires_at,
        read_only,
    };
    let id = roles.admin.create_api_token(admin, &token, now).await?;
    let object = format!("token {id}");
    let audit = Audit::new("token.create", &object, None).after(serde_json::json!({
        "id": id, "name": name, "expires_at": expires_at, "read_only": read_only,
    }));
    actor.audit(roles, audit).await;
    Ok(CreatedToken { id, secret })
}

/// The actor's own tokens.
pub async fn tokens(roles: &Roles, actor: &Actor) -> Result<Vec<ApiToken>> {
    Ok(roles.admin.list_api_tokens(actor.admin_id()?).await?)
}

/// Revokes one of the actor's own tokens; returns its name.
pub async fn revoke_token(roles: &Roles, actor: &Actor, id: i64) -> Result<String> {
    let token = tokens(roles, actor)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
    match roles.admin.revoke_api_token(actor.admin_id()?, id).await {
        Err(StoreError::NotFound(_)) => return Err(Error::NotFound(format!("token {id}"))),
        other => other?,
    }
    let object = format!("token {id}");
    let audit = Audit::new("token.revoke", &object, None)
        .before(serde_json::json!({ "id": id, "name": token.name }));
    actor.audit(roles, audit).await;
    Ok(token.name)
}
