//! Static files, compiled into the binary (no CDN, nothing to install beside it).

use axum::Router;
use axum::http::header;
use axum::routing::get;

use crate::state::AppState;

const CSS: &str = include_str!("../../../../web/static/app.css");
/// The users table's "select all" box: a file of its own, as the CSP allows no inline script.
const SELECT_ALL_JS: &str = include_str!("../../../../web/static/select-all.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/static/app.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    CSS,
                )
            }),
        )
        .route(
            "/static/select-all.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    SELECT_ALL_JS,
                )
            }),
        )
}
