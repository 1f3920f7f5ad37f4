//! App passwords in the admin UI: the section of the user page (each device's label, creation
//! and last use, a form to make one), the page that shows a new password once, and revoking with
//! a confirmation; over `provision::app_passwords` like the API and `pophost user app-password`.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{Address, AppPassword, LocalPart};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::ConfirmPage;
use crate::pages::human_time;
use crate::pages::users::user_href;
use crate::provision::app_passwords as ops;
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain}/users/{local}/app-passwords", post(add))
        .route(
            "/domains/{domain}/users/{local}/app-passwords/{label}/revoke",
            get(confirm_revoke).post(revoke),
        )
}

/// One app password on the user page.
pub struct AppPasswordRow {
    pub label: String,
    pub created: String,
    /// "never" or the time of its last login.
    pub last_used: String,
    pub last_from: String,
    pub revoke_href: String,
}

/// The user page's rows, by label.
pub async fn rows(
    state: &AppState,
    actor: &Actor,
    address: &Address,
) -> Result<Vec<AppPasswordRow>, AppError> {
    let listed = ops::list(&state.roles, actor, address).await?;
    Ok(listed.iter().map(|a| row(address, a)).collect())
}

fn row(address: &Address, a: &AppPassword) -> AppPasswordRow {
    AppPasswordRow {
        label: a.label.clone(),
        created: human_time(a.created_at),
        last_used: a.last_used_at.map_or_else(|| "never".into(), human_time),
        last_from: match (&a.last_ip, &a.last_mechanism) {
            (Some(ip), Some(m)) => format!("{ip} ({m})"),
            (Some(ip), None) => ip.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        },
        revoke_href: format!("{}/revoke", label_href(address, &a.label)),
    }
}

/// A label as one path segment: everything but unreserved characters percent-encoded (a form
/// encoding's `+` for a space would not come back as a space from the path).
fn label_href(address: &Address, label: &str) -> String {
    let mut seg = String::new();
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            seg.push(char::from(b));
        } else {
            seg.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/app-passwords/{seg}", user_href(address))
}

/// The user a URL names, checked against the actor's scope (and existing).
async fn target(state: &AppState, actor: &Actor, d: &str, l: &str) -> Result<Address, AppError> {
    let domain = actor.domain(d)?;
    let local = LocalPart::parse(l).map_err(|_| AppError::NotFound)?;
    let address = Address { local, domain };
    provision::user(&state.roles, actor, &address).await?;
    Ok(address)
}

#[derive(Debug, Default, Deserialize)]
struct AddForm {
    #[serde(default)]
    label: String,
}

/// The page a new app password is shown on, once: it is not stored anywhere it could be shown
/// from again.
#[derive(Template, WebTemplate)]
#[template(path = "user_app_password.html")]
struct NewPasswordPage {
    chrome: Chrome,
    address: String,
    user_href: String,
    label: String,
    password: String,
}

async fn add(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<AddForm>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let back = user_href(&address);
    let password = match ops::add(&state.roles, &actor, &address, &form.label).await {
        Ok(p) => p,
        Err(provision::Error::Invalid(m)) => return Ok(flash::failed(&back, m)),
        Err(provision::Error::Store(mailstore::StoreError::Conflict(_))) => {
            return Ok(flash::failed(
                &back,
                format!(
                    "{address} already has an app password {:?}",
                    form.label.trim()
                ),
            ));
        }
        Err(provision::Error::Store(mailstore::StoreError::Invalid(m))) => {
            return Ok(flash::failed(&back, m));
        }
        Err(e) => return Err(e.into()),
    };
    let mut response = NewPasswordPage {
        chrome: Chrome::from(&actor),
        address: address.to_string(),
        user_href: back,
        label: form.label.trim().to_string(),
        password,
    }
    .into_response();
    // The password is on this page only: no cache may keep it.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn confirm_revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l, label)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let href = label_href(&address, &label);
    Ok(ConfirmPage {
        chrome: Chrome::from(&actor),
        title: format!("Revoke the app password {label:?} of {address}"),
        message: format!(
            "Revoke the app password {label:?}? The device using it can no longer log in, and \
             its open POP3 session ends."
        ),
        action: format!("{href}/revoke"),
        cancel: user_href(&address),
        offer_force: false,
        errors: FieldErrors::default(),
    }
    .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l, label)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    ops::revoke(&state.roles, &actor, &address, &label).await?;
    Ok(flash::done(
        &user_href(&address),
        format!("App password {:?} revoked", label.trim()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_path_segment() {
        let a = Address::parse("john@example.com").unwrap();
        assert!(
            label_href(&a, "Anna's phone / tablet?")
                .ends_with("/app-passwords/Anna%27s%20phone%20%2F%20tablet%3F")
        );
    }
}
