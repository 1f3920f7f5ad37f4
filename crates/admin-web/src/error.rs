//! The one error type of the handlers. The response names no SQL and no stack: the cause is
//! logged, the user sees a status and a sentence.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailstore::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such object, or not in the admin's scope: the two look the same from outside.
    #[error("not found")]
    NotFound,
    /// Signed in, but the role does not allow this (a domain admin on a super-admin page).
    #[error("forbidden")]
    Forbidden,
    /// No valid session or token.
    #[error("sign-in required")]
    Unauthorized,
    /// A state-changing request without a valid CSRF token or from another origin.
    #[error("the request was refused (stale form or foreign origin)")]
    Csrf,
    /// Input the handler cannot use, said in a sentence safe to show.
    #[error("{0}")]
    BadRequest(String),
    /// Too many failed sign-ins.
    #[error("too many attempts; try again later")]
    Throttled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::provision::Error> for AppError {
    fn from(e: crate::provision::Error) -> Self {
        use crate::provision::Error;
        match e {
            Error::NotFound(_) => AppError::NotFound,
            Error::Forbidden => AppError::Forbidden,
            Error::Invalid(m) => AppError::BadRequest(m),
            Error::Store(e) => AppError::Store(e),
            Error::Internal(m) => AppError::Internal(m),
        }
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound | AppError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            AppError::Forbidden | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::BadRequest(_)
            | AppError::Store(StoreError::Invalid(_) | StoreError::QuotaOutsideDomain { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            AppError::Throttled => StatusCode::TOO_MANY_REQUESTS,
            AppError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Store(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the user is told: the store's own words only where they are about the input.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Store(StoreError::Conflict(m) | StoreError::Invalid(m)) => m.clone(),
            AppError::Store(e @ StoreError::QuotaOutsideDomain { .. }) => e.to_string(),
            AppError::Store(StoreError::NotFound(_)) => "not found".into(),
            AppError::Store(StoreError::Unavailable(_)) => {
                "the store is unavailable; try again shortly".into()
            }
            AppError::Store(_) | AppError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    fn log(&self) {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "admin request failed");
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        if matches!(self, AppError::Unauthorized) {
            return Redirect::to("/signin").into_response();
        }
        let status = self.status();
        let page = ErrorPage {
            status: status.as_u16(),
            message: self.public_message(),
        };
        (status, page).into_response()
    }
}

/// The same errors for the JSON API: `{"error": "..."}` with the same status codes.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.status();
        let body = serde_json::json!({ "error": self.0.public_message() });
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme that would have worked.
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}
