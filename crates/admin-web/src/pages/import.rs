//! Importing a domain's users from CSV: the pasted CSV is first checked as a dry run and shown
//! as a preview; "Apply" sends the same CSV again and applies it. Every row goes through
//! `provision::accounts`, so scope checks, password rules and audit records are those of a single
//! change.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::Form;
use mailstore::DomainName;
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::pages::domains::segment;
use crate::provision::accounts::{self, Outcome, RowResult, Summary};
use crate::provision::{self, Actor};
use crate::state::AppState;

/// The import page's route (its form's body may be as large as the API's import).
pub(crate) const PATH: &str = "/domains/{domain}/users/import";

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(form_page).post(import))
}

#[derive(Debug, Default, Deserialize)]
struct ImportForm {
    #[serde(default)]
    csv: String,
    /// Change the accounts that exist already.
    #[serde(default)]
    update: bool,
    /// `apply` to make the changes; anything else previews them.
    #[serde(default)]
    action: String,
}

/// One line of the result table: a row read from the CSV, or a line that could not be read.
struct ResultLine {
    line: usize,
    address: String,
    outcome: &'static str,
    failed: bool,
    error: String,
}

/// What a preview or an import did, for the page.
struct Report {
    applied: bool,
    summary: String,
    lines: Vec<ResultLine>,
    /// Rows that would be added or updated: without any, there is nothing to apply.
    changes: u64,
}

#[derive(Template, WebTemplate)]
#[template(path = "users_import.html")]
struct ImportPage {
    chrome: Chrome,
    domain: String,
    href: String,
    form: ImportForm,
    errors: FieldErrors,
    report: Option<Report>,
}

impl ImportPage {
    /// The CSV form is shown until the import is applied; then only the outcome is.
    fn show_form(&self) -> bool {
        self.report.as_ref().is_none_or(|r| !r.applied)
    }
}

/// The domain a URL names, if the actor may reach it: its canonical name.
async fn reach(state: &AppState, actor: &Actor, raw: &str) -> Result<DomainName, AppError> {
    Ok(provision::domain(&state.roles, actor, &actor.domain(raw)?)
        .await?
        .name)
}

async fn form_page(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let domain = reach(&state, &actor, &raw).await?;
    Ok(page(&actor, &domain, ImportForm::default(), None).into_response())
}

fn page(
    actor: &Actor,
    domain: &DomainName,
    form: ImportForm,
    report: Option<Report>,
) -> ImportPage {
    ImportPage {
        chrome: Chrome::from(actor),
        domain: domain.to_string(),
        href: segment(domain.as_str()),
        form,
        errors: FieldErrors::default(),
        report,
    }
}

/// The form as sent: a file upload (`multipart/form-data`: the CSV in `file`, or pasted in
/// `csv`), or the preview's "Apply" (URL-encoded, the CSV in `csv`).
async fn read_form(req: Request) -> Result<ImportForm, AppError> {
    if !crate::auth::is_multipart(req.headers()) {
        let Form(form) = Form::<ImportForm>::from_request(req, &())
            .await
            .map_err(|e| AppError::BadRequest(e.body_text()))?;
        return Ok(form);
    }
    let bad = |e: MultipartError| AppError::BadRequest(e.body_text());
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| AppError::BadRequest(e.body_text()))?;
    let (mut form, mut file) = (ImportForm::default(), String::new());
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "file" => file = text,
            "csv" => form.csv = text,
            "update" => form.update = text == "true",
            "action" => form.action = text,
            _ => {}
        }
    }
    if !file.trim().is_empty() {
        form.csv = file;
    }
    Ok(form)
}

async fn import(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    let domain = reach(&state, &actor, &raw).await?;
    let mut form = read_form(req).await?;
    if form.csv.trim().is_empty() {
        let mut page = page(&actor, &domain, form, None);
        page.errors.add(
            "csv",
            "Choose a CSV file, or paste one, with a header line and at least one account.",
        );
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let (rows, parse_errors) = accounts::parse_csv(&form.csv);
    let options = accounts::Options {
        dry_run: form.action != "apply",
        update: form.update,
    };
    let results = accounts::apply_in_domain(&state.roles, &actor, &domain, rows, options).await;
    let summary = Summary::of(&results, parse_errors.len());
    let mut lines: Vec<ResultLine> = results
        .into_iter()
        .map(|r| result_line(r, options.dry_run))
        .collect();
    lines.extend(parse_errors.into_iter().map(|e| ResultLine {
        line: e.line,
        address: String::new(),
        outcome: "not read",
        failed: true,
        error: e.message,
    }));
    lines.sort_by_key(|l| l.line);
    let report = Report {
        applied: !options.dry_run,
        summary: summary.to_string(),
        lines,
        changes: summary.added + summary.updated,
    };
    if report.applied {
        // The outcome page shows no CSV: it holds passwords.
        form.csv.clear();
    }
    Ok(page(&actor, &domain, form, Some(report)).into_response())
}

fn result_line(r: RowResult, dry_run: bool) -> ResultLine {
    let failed = matches!(r.outcome, Outcome::Failed(_));
    let (outcome, error) = match (r.outcome, dry_run) {
        (Outcome::Added, true) => ("would be added", String::new()),
        (Outcome::Added, false) => ("added", String::new()),
        (Outcome::Updated, true) => ("would be updated", String::new()),
        (Outcome::Updated, false) => ("updated", String::new()),
        (Outcome::Unchanged, _) => ("left unchanged", String::new()),
        (Outcome::Failed(e), true) => ("would fail", e),
        (Outcome::Failed(e), false) => ("failed", e),
    };
    ResultLine {
        line: r.line,
        address: r.address.to_string(),
        outcome,
        failed,
        error,
    }
}
