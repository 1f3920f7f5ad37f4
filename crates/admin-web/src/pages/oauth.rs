//! A domain's OAuth 2.0 sign-in settings on the domain pages (`/domains/{domain}/oauth`), over
//! `provision::oauth` like the API and `pophost domain oauth`: its admins may read and set them
//! (a key file or an `http` key URL only a super admin may name) and turn them off.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::segment;
use crate::provision::oauth::{self as ops, OAuthJson};
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain}/oauth", get(show).post(update))
        .route("/domains/{domain}/oauth/clear", post(clear))
}

/// The form as typed. `jwks` is a URL (`http…`) or an absolute file path.
#[derive(Debug, Default, Deserialize)]
struct OAuthForm {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    jwks: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    claim: String,
    #[serde(default)]
    algorithms: String,
}

impl OAuthForm {
    fn from_settings(s: &OAuthJson) -> Self {
        Self {
            issuer: s.issuer.clone(),
            jwks: s
                .jwks_url
                .clone()
                .or_else(|| s.jwks_file.clone())
                .unwrap_or_default(),
            audience: s.audience.clone(),
            claim: s.claim.clone(),
            algorithms: s.algorithms.join(","),
        }
    }

    fn settings(&self) -> OAuthJson {
        let jwks = self.jwks.trim().to_string();
        let is_path = jwks.starts_with('/');
        let claim = self.claim.trim();
        let algorithms = self.algorithms.trim();
        OAuthJson {
            issuer: self.issuer.clone(),
            jwks_url: (!is_path).then(|| jwks.clone()),
            jwks_file: is_path.then_some(jwks),
            audience: self.audience.clone(),
            claim: if claim.is_empty() {
                mailstore::DEFAULT_CLAIM
            } else {
                claim
            }
            .to_string(),
            algorithms: if algorithms.is_empty() {
                mailstore::JwtAlgorithm::ALL
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            } else {
                algorithms
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .collect()
            },
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "domains_oauth.html")]
struct OAuthPage {
    chrome: Chrome,
    name: String,
    href: String,
    /// Whether settings are stored (the "turn off" button).
    on: bool,
    form: OAuthForm,
    errors: FieldErrors,
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    let settings = ops::get(&state.roles, &actor, &name).await?;
    Ok(OAuthPage {
        chrome: Chrome::from(&actor),
        href: segment(name.as_str()),
        name: name.to_string(),
        on: settings.is_some(),
        form: settings
            .as_ref()
            .map(OAuthForm::from_settings)
            .unwrap_or_default(),
        errors: FieldErrors::default(),
    }
    .into_response())
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<OAuthForm>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    let href = segment(name.as_str());
    match ops::set(&state.roles, &actor, &name, &form.settings()).await {
        Ok(_) => Ok(flash::done(
            &format!("/domains/{href}/oauth"),
            format!("OAuth settings of {name} saved"),
        )),
        Err(provision::Error::Invalid(m)) => {
            let mut errors = FieldErrors::default();
            errors.add("oauth", m);
            let on = ops::get(&state.roles, &actor, &name).await?.is_some();
            let page = OAuthPage {
                chrome: Chrome::from(&actor),
                name: name.to_string(),
                href,
                on,
                form,
                errors,
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn clear(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    let href = segment(name.as_str());
    ops::clear(&state.roles, &actor, &name).await?;
    Ok(flash::done(
        &format!("/domains/{href}/oauth"),
        format!("OAuth turned off for {name}"),
    ))
}
