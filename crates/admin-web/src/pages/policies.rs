//! A domain's mailbox policies (issue 6): quota behaviour (permanent or temporary refusal, the
//! warning threshold), retention (CAPA `EXPIRE`) and `LOGIN-DELAY`, over `provision`'s
//! `update_policies` (as the API resource `/api/v1/domains/{domain}/policies` and `pophost domain
//! set` are). Everyone in scope may read them; changing them is for super admins, as with quotas.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::Form;
use mailstore::{DomainPolicies, StoreError};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::segment;
use crate::provision::{self, Actor, PolicyChange};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/domains/{domain}/policies", get(show).post(update))
}

// ---------------------------------------------------------------------------------------------
// The page.

/// The form as typed; empty fields are "none".
#[derive(Debug, Default, Deserialize)]
struct PolicyForm {
    #[serde(default)]
    quota_tempfail: Option<String>,
    #[serde(default)]
    quota_warn_percent: String,
    #[serde(default)]
    retention_days: String,
    #[serde(default)]
    login_delay_secs: String,
}

/// A whole number in `1..=max`, or empty for none.
fn optional_number(raw: &str, max: u64) -> Result<Option<u64>, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!("a whole number from 1 to {max}, or empty for none")),
    }
}

impl PolicyForm {
    fn from_policies(p: &DomainPolicies) -> Self {
        let text = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        Self {
            quota_tempfail: p.quota_tempfail.then(|| "on".into()),
            quota_warn_percent: text(p.quota_warn_percent.map(u32::from)),
            retention_days: text(p.retention_days),
            login_delay_secs: text(p.login_delay_secs),
        }
    }

    fn policies(&self) -> Result<DomainPolicies, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut field = |name: &'static str, raw: &str, max: u64| match optional_number(raw, max) {
            Ok(v) => v,
            Err(e) => {
                errors.add(name, e);
                None
            }
        };
        let warn = field("quota_warn_percent", &self.quota_warn_percent, 100);
        let retention = field(
            "retention_days",
            &self.retention_days,
            u64::from(mailstore::MAX_RETENTION_DAYS),
        );
        let delay = field(
            "login_delay_secs",
            &self.login_delay_secs,
            u64::from(mailstore::MAX_LOGIN_DELAY_SECS),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        // The ranges were checked above, so these conversions cannot fail.
        Ok(DomainPolicies {
            quota_tempfail: self.quota_tempfail.as_deref() == Some("on"),
            quota_warn_percent: warn.and_then(|v| u8::try_from(v).ok()),
            retention_days: retention.and_then(|v| u32::try_from(v).ok()),
            login_delay_secs: delay.and_then(|v| u32::try_from(v).ok()),
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "domains_policies.html")]
struct PolicyPage {
    chrome: Chrome,
    name: String,
    href: String,
    form: PolicyForm,
    errors: FieldErrors,
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    let policies = provision::policies(&state.roles, &actor, &name).await?;
    Ok(PolicyPage {
        chrome: Chrome::from(&actor),
        href: segment(name.as_str()),
        name: name.to_string(),
        form: PolicyForm::from_policies(&policies),
        errors: FieldErrors::default(),
    }
    .into_response())
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<PolicyForm>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let href = segment(name.as_str());
    let invalid = |form: PolicyForm, errors: FieldErrors| {
        let page = PolicyPage {
            chrome: Chrome::from(&actor),
            name: name.to_string(),
            href: href.clone(),
            form,
            errors,
        };
        (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
    };
    let policies = match form.policies() {
        Ok(p) => p,
        Err(errors) => return Ok(invalid(form, errors)),
    };
    let change = PolicyChange::from(&policies);
    match provision::update_policies(&state.roles, &actor, &name, &change).await {
        Ok(_) => Ok(flash::done(
            &format!("/domains/{href}/policies"),
            format!("Policies of {name} saved"),
        )),
        Err(provision::Error::Store(StoreError::Invalid(m))) => {
            let mut errors = FieldErrors::default();
            errors.add("policies", m);
            Ok(invalid(form, errors))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values() {
        assert_eq!(optional_number(" ", 100), Ok(None));
        assert_eq!(optional_number("90", 100), Ok(Some(90)));
        for bad in ["0", "101", "-1", "x", "9.5"] {
            assert!(optional_number(bad, 100).is_err(), "{bad}");
        }
        let p = DomainPolicies {
            quota_tempfail: true,
            quota_warn_percent: Some(80),
            retention_days: Some(30),
            login_delay_secs: None,
        };
        assert_eq!(PolicyForm::from_policies(&p).policies().ok(), Some(p));
    }
}
