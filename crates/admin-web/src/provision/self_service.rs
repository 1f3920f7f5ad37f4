//! The self-service page's operations (issue 22, item 2): a user, signed in with their own
//! address and main password, changes that password, reads their logins and their recycle bin,
//! restores from it and manages their app passwords.
//!
//! Every operation takes the signed-in `Me` and acts on `Me::address` only: no operation here
//! takes an address from its caller, so no form field or URL can reach another mailbox. They run
//! through the same provisioning operations the admin UI uses (the same password policy and
//! hashing, the same audit records), with an `Actor` named `user:<address>`.

use std::net::IpAddr;
use std::sync::OnceLock;

use mailstore::{
    Address, AppPassword, BinSelection, BinnedMessage, Page, RestoreReport, Scope, SelfServiceUser,
    UserActivity, UserId,
};

use super::{Actor, Credential, Error, Roles, UserChange};

/// The signed-in user, as their session names them.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: UserId,
    /// The mailbox (canonical domain): the only one these operations touch.
    pub address: Address,
    /// The client's address, for the audit log.
    pub ip: Option<IpAddr>,
}

impl Me {
    /// How the provisioning operations and the audit log see the user: `user:<address>`, with
    /// their own domain as the scope. The scope is a second fence only: what keeps a user to
    /// their own mailbox is that every call below passes `self.address`.
    pub fn actor(&self) -> Actor {
        Actor {
            id: None,
            name: format!("user:{}", self.address),
            scope: Scope::Domains(vec![self.address.domain.clone()]),
            csrf: None,
            ip: self.ip,
            flash: None,
        }
    }
}

/// Verified when the login names no one who may sign in, so that answer takes as long.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        tenancy::hash_password(b"pophost self-service dummy password").unwrap_or_default()
    })
}

/// The mailbox `login` names, as POP3 resolves it (any form the domain accepts, aliases, IDN);
/// `None` when it names none. A bare login names none: the page has no default domain.
pub async fn mailbox(roles: &Roles, login: &str) -> Result<Option<Address>, Error> {
    let resolution = tenancy::resolve(
        &*roles.directory,
        login,
        &tenancy::DefaultDomains::default(),
        &tenancy::LoginContext::default(),
    )
    .await?;
    Ok(match resolution {
        tenancy::Resolution::Mailbox { address, .. } => Some(address),
        _ => None,
    })
}

/// Whether `password` is the main password of `address`, who may use the page (an enabled
/// user of an enabled domain with the page on). Everything else — no such user, the page off,
/// a wrong password — is `None` after the same argon2 work, so the answer tells a prober
/// nothing. The same verification as a POP3 login (`tenancy::verify_password`).
pub async fn check_password(
    roles: &Roles,
    address: Option<&Address>,
    password: String,
) -> Result<Option<SelfServiceUser>, Error> {
    let user = match address {
        Some(a) => roles.self_service.self_service_user(a).await?,
        None => None,
    };
    // What POP3 refuses unhashed is refused here too (after the same wait as any failure).
    let too_long = password.len() > tenancy::MAX_PASSWORD_BYTES;
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    let valid = super::admins::password_matches(hash, password).await? && !too_long;
    Ok(user.filter(|_| valid))
}

/// Changes the user's main password, held to the mailbox password policy and hashed as the
/// admin UI does (`provision::update_user`, audited `user.password`). The current password is
/// asked for, so a session left open is not enough to take the mailbox over; a wrong one is
/// `Invalid`. Ends every self-service session of the user, this one too (`update_user`): the
/// caller starts a new one.
pub async fn change_password(
    roles: &Roles,
    me: &Me,
    current: String,
    new: String,
) -> Result<(), Error> {
    if check_password(roles, Some(&me.address), current)
        .await?
        .is_none_or(|u| u.id != me.user)
    {
        return Err(Error::Invalid("the current password is not right".into()));
    }
    let change = UserChange {
        password: Some(Credential::Password(new)),
        ..UserChange::default()
    };
    super::update_user(roles, &me.actor(), &me.address, change).await?;
    Ok(())
}

/// The user's recent logins and what they retrieved and deleted.
pub async fn activity(roles: &Roles, me: &Me) -> Result<UserActivity, Error> {
    super::activity::user_activity(roles, &me.actor(), &me.address).await
}

/// A page of the user's recycle bin, newest first.
pub async fn bin_page(
    roles: &Roles,
    me: &Me,
    offset: u64,
    limit: u64,
) -> Result<Page<BinnedMessage>, Error> {
    super::bin::bin_page(roles, &me.actor(), &me.address, offset, limit).await
}

/// Restores entries of the user's own bin (ids of another user's entries restore nothing:
/// the store selects within this user's bin), audited `user.bin.restore`.
pub async fn restore(
    roles: &Roles,
    me: &Me,
    which: &BinSelection,
    as_new: bool,
) -> Result<RestoreReport, Error> {
    super::bin::restore(roles, &me.actor(), &me.address, which, as_new).await
}

/// The user's app passwords, with their last use (never the secrets).
pub async fn app_passwords(roles: &Roles, me: &Me) -> Result<Vec<AppPassword>, Error> {
    super::app_passwords::list(roles, &me.actor(), &me.address).await
}

/// A new app password for the user, labelled `label`: returned this once.
pub async fn add_app_password(roles: &Roles, me: &Me, label: &str) -> Result<String, Error> {
    super::app_passwords::add(roles, &me.actor(), &me.address, label).await
}

/// Revokes the user's app password `label`, ending a POP3 session logged in with it.
pub async fn revoke_app_password(roles: &Roles, me: &Me, label: &str) -> Result<(), Error> {
    super::app_passwords::revoke(roles, &me.actor(), &me.address, label).await
}
