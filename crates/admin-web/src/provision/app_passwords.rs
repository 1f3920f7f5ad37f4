//! App passwords (issue 22, item 1) for the admin pages, the self-service page, the API and
//! `pophost user app-password`: listed in the actor's scope, made (pophost generates the
//! password, which is returned once and never stored or logged in clear) and revoked, each
//! audited (`user.app_password.add`, `user.app_password.revoke`, naming the label only). Whether
//! a domain requires them is part of its settings (`DomainChange::app_passwords_only`).

use mailstore::{Address, AppPassword, NewAppPassword, StoreError};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Actor, Audit, Error, Roles};

/// A user's app passwords by label, with their last use; `NotFound` for no such user or one
/// out of scope.
pub async fn list(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
) -> Result<Vec<AppPassword>, Error> {
    actor.reach(&address.domain)?;
    not_found(
        roles.app_passwords.list_app_passwords(address).await,
        address,
    )
}

/// Makes a new app password labelled `label` and returns it (grouped for typing): the only time
/// it is ever shown.
pub async fn add(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    label: &str,
) -> Result<String, Error> {
    actor.reach(&address.domain)?;
    let label = mailstore::parse_label(label).map_err(|e| match e {
        StoreError::Invalid(m) => Error::Invalid(m),
        other => other.into(),
    })?;
    // The user's SCRAM salt (see `tenancy::app_passwords`): their main verifier's, else their
    // other app passwords'.
    let (main, apps) = not_found(
        roles.app_passwords.scram_salt_sources(address).await,
        address,
    )?;
    let salt = tenancy::app_passwords::shared_scram_salt(main.as_deref(), &apps);
    let password =
        tenancy::app_passwords::generate().map_err(|e| Error::Internal(e.to_string()))?;
    let secrets = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            tenancy::app_passwords::AppPasswordSecrets::derive(&password, salt)
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing did not finish: {e}")))?
        .map_err(|e| Error::Internal(e.to_string()))?
    };
    let new = NewAppPassword {
        label: &label,
        tag: &secrets.tag,
        password_hash: &secrets.hash,
        scram: &secrets.scram,
    };
    not_found(
        roles.app_passwords.add_app_password(address, &new).await,
        address,
    )?;
    let object = address.to_string();
    let audit = Audit::new("user.app_password.add", &object, Some(&address.domain))
        .after(json!({ "label": label }));
    actor.audit(roles, audit).await;
    Ok(password)
}

/// Revokes the app password labelled `label`; a POP3 session logged in with it ends at its
/// next lease renewal (within a third of the lease TTL).
pub async fn revoke(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    label: &str,
) -> Result<(), Error> {
    actor.reach(&address.domain)?;
    let ended = match roles
        .app_passwords
        .revoke_app_password(address, label)
        .await
    {
        Err(StoreError::NotFound(_)) => {
            return Err(Error::NotFound(format!(
                "app password {:?} of {address}",
                label.trim()
            )));
        }
        other => other?,
    };
    let object = address.to_string();
    let audit = Audit::new("user.app_password.revoke", &object, Some(&address.domain))
        .before(json!({ "label": label.trim() }))
        .after(json!({ "sessions_ended": ended }));
    actor.audit(roles, audit).await;
    Ok(())
}

/// `mailbox_secrets` for a new main password of `address`: when the user has app passwords,
/// the new SCRAM verifier keeps the salt they were derived with (SCRAM sends one salt per user:
/// see `tenancy::app_passwords`), so a password change does not cut them off from SCRAM.
pub async fn main_secrets(
    roles: &Roles,
    address: &Address,
    credential: super::Credential,
) -> Result<super::MailboxSecrets, Error> {
    let typed = match &credential {
        super::Credential::Password(p) => Some(p.clone()),
        super::Credential::Hash(_) => None,
    };
    let mut secrets = super::mailbox_secrets(credential).await?;
    let salt = match &typed {
        Some(_) => {
            let (_, apps) = not_found(
                roles.app_passwords.scram_salt_sources(address).await,
                address,
            )?;
            tenancy::app_passwords::shared_scram_salt(None, &apps)
        }
        None => None,
    };
    if let (Some(password), Some((salt, iterations))) = (typed, salt) {
        let verifier = tokio::task::spawn_blocking(move || {
            tenancy::ScramVerifier::derive_with(password.as_bytes(), &salt, iterations).to_string()
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing did not finish: {e}")))?;
        secrets.verifier = Some(verifier);
    }
    Ok(secrets)
}

fn not_found<T>(r: mailstore::Result<T>, address: &Address) -> Result<T, Error> {
    match r {
        Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("user {address}"))),
        other => Ok(other?),
    }
}

/// One app password as the API shows it: never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = AppPassword)]
pub struct AppPasswordJson {
    pub label: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Its last successful login, Unix milliseconds; null if never used.
    pub last_used_at: Option<i64>,
    /// The client address of that login.
    pub last_ip: Option<String>,
    /// The mechanism of that login (`USER`, `PLAIN`, `LOGIN`, `SCRAM-SHA-256`, `MTA`).
    pub last_mechanism: Option<String>,
}

impl From<&AppPassword> for AppPasswordJson {
    fn from(a: &AppPassword) -> Self {
        Self {
            label: a.label.clone(),
            created_at: a.created_at,
            last_used_at: a.last_used_at,
            last_ip: a.last_ip.clone(),
            last_mechanism: a.last_mechanism.clone(),
        }
    }
}

/// What `POST …/app-passwords` returns: the new password, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewAppPasswordJson {
    pub label: String,
    /// The password, grouped for typing; separators and case do not matter when it is typed.
    pub password: String,
}
