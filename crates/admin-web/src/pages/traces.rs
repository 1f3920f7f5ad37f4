//! A user's protocol trace: the block on the user page (start for N minutes, stop, view), the
//! trace's own page (`/domains/{d}/users/{l}/trace`) and its text download, over
//! `provision::traces` like the API and `pophost user trace`.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{Address, LocalPart, TraceInfo};
use serde::Deserialize;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::flash;
use crate::pages::human_time;
use crate::pages::users::user_href;
use crate::provision::{Actor, traces};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain}/users/{local}/trace", get(show))
        .route(
            "/domains/{domain}/users/{local}/trace/download",
            get(download),
        )
        .route("/domains/{domain}/users/{local}/trace/start", post(start))
        .route("/domains/{domain}/users/{local}/trace/stop", post(stop))
}

/// What the user page's Protocol trace block shows.
#[derive(Default)]
pub struct TraceSummary {
    /// Whether the user has an unexpired trace (the rest is empty without one).
    pub exists: bool,
    pub recording: bool,
    /// "2026-12-07 10:02:00 UTC".
    pub until: String,
    pub started_by: String,
    pub lines: usize,
}

/// The block's contents for `address`.
pub async fn summary(
    state: &AppState,
    actor: &Actor,
    address: &Address,
) -> Result<TraceSummary, AppError> {
    let now = state.now();
    Ok(traces::get(&state.roles, actor, address, now)
        .await?
        .map(|(info, lines)| TraceSummary {
            exists: true,
            recording: info.recording(now),
            until: human_time(info.until),
            started_by: info.started_by.clone(),
            lines: lines.len(),
        })
        .unwrap_or_default())
}

fn address(actor: &Actor, raw_domain: &str, raw_local: &str) -> Result<Address, AppError> {
    let domain = actor.domain(raw_domain)?;
    let local = LocalPart::parse(raw_local).map_err(|_| AppError::NotFound)?;
    Ok(Address { local, domain })
}

struct LineView {
    when: String,
    session: String,
    direction: &'static str,
    text: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "user_trace.html")]
struct TracePage {
    chrome: Chrome,
    address: String,
    user_href: String,
    info: Option<TraceView>,
    lines: Vec<LineView>,
}

struct TraceView {
    recording: bool,
    started_by: String,
    started: String,
    until: String,
    stopped: Option<String>,
    dropped: u64,
}

impl From<(&TraceInfo, i64)> for TraceView {
    fn from((info, now): (&TraceInfo, i64)) -> Self {
        Self {
            recording: info.recording(now),
            started_by: info.started_by.clone(),
            started: human_time(info.started_at),
            until: human_time(info.until),
            stopped: info.stopped_at.map(human_time),
            dropped: info.dropped,
        }
    }
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let address = address(&actor, &d, &l)?;
    let now = state.now();
    let trace = traces::get(&state.roles, &actor, &address, now).await?;
    let (info, lines) = match &trace {
        Some((info, lines)) => (Some(TraceView::from((info, now))), lines.as_slice()),
        None => (None, &[][..]),
    };
    Ok(TracePage {
        chrome: Chrome::from(&actor),
        address: address.to_string(),
        user_href: user_href(&address),
        info,
        lines: lines
            .iter()
            .map(|l| LineView {
                when: human_time(l.at),
                session: l.session.clone(),
                direction: l.direction.as_str(),
                text: l.text.clone(),
            })
            .collect(),
    }
    .into_response())
}

async fn download(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let address = address(&actor, &d, &l)?;
    let text = traces::download(&state.roles, &actor, &address, state.now()).await?;
    // Only characters no header or file system minds in the suggested name.
    let name: String = address
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"trace-{name}.txt\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct StartForm {
    #[serde(default)]
    minutes: String,
}

async fn start(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<StartForm>,
) -> Result<Response, AppError> {
    let address = address(&actor, &d, &l)?;
    let href = user_href(&address);
    let Ok(minutes) = form.minutes.trim().parse::<u32>() else {
        return Ok(flash::failed(&href, "Trace length must be 1 to 60 minutes"));
    };
    match traces::start(&state.roles, &actor, &address, minutes, state.now()).await {
        Ok(info) => Ok(flash::done(
            &format!("{href}/trace"),
            format!(
                "Tracing {address}'s POP3 sessions until {}",
                human_time(info.until)
            ),
        )),
        Err(crate::provision::Error::Invalid(m)) => Ok(flash::failed(&href, m)),
        Err(e) => Err(e.into()),
    }
}

async fn stop(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let address = address(&actor, &d, &l)?;
    let stopped = traces::stop(&state.roles, &actor, &address, state.now()).await?;
    let message = if stopped {
        format!("Trace of {address} stopped")
    } else {
        format!("{address} was not being traced")
    };
    Ok(flash::done(
        &format!("{}/trace", user_href(&address)),
        message,
    ))
}
