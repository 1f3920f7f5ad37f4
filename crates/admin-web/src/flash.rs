//! "Say what happened": the one-line confirmation or error an action leaves for the page its
//! redirect leads to ("Password of john@example.com changed"). It travels in a short-lived cookie
//! set with the redirect and cleared by the page that shows it, so no JavaScript and no store
//! write is needed, and a reload does not show it twice.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use base64::Engine;

use crate::auth::{cookie, expired};

pub const FLASH_COOKIE: &str = "__Host-pophost-flash";
/// Longer messages are cut: a cookie is not the place for a report.
const MAX_LEN: usize = 300;

/// A message for the next page: a confirmation (`ok`) or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

impl Flash {
    fn encode(&self) -> String {
        let mut text = String::from(if self.ok { "1" } else { "0" });
        text.extend(self.message.chars().take(MAX_LEN));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(value: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let ok = match text.as_bytes().first()? {
            b'1' => true,
            b'0' => false,
            _ => return None,
        };
        let message: String = text[1..].chars().take(MAX_LEN).collect();
        (!message.is_empty()).then_some(Self { ok, message })
    }

    /// The flash a request carries, if any.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<Self> {
        let jar = CookieJar::from_headers(headers);
        jar.get(FLASH_COOKIE).and_then(|c| Self::decode(c.value()))
    }
}

/// 303 to `to`, with a confirmation for the page there.
pub fn done(to: &str, message: impl Into<String>) -> Response {
    redirect(to, true, message.into())
}

/// 303 to `to`, with an error for the page there.
pub fn failed(to: &str, message: impl Into<String>) -> Response {
    redirect(to, false, message.into())
}

fn redirect(to: &str, ok: bool, message: String) -> Response {
    let value = Flash { ok, message }.encode();
    let jar = CookieJar::new().add(cookie(FLASH_COOKIE, value));
    (jar, Redirect::to(to)).into_response()
}

/// Clears the flash cookie on a page that showed it (any response but a redirect, which may
/// carry a flash of its own).
pub fn clear_if_shown(had_flash: bool, res: &mut Response) {
    if had_flash
        && !res.status().is_redirection()
        && res.status() != StatusCode::NOT_MODIFIED
        && let Ok(v) = HeaderValue::from_str(&expired(FLASH_COOKIE).to_string())
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flash_survives_its_cookie_and_garbage_is_no_flash() {
        let f = Flash {
            ok: false,
            message: "Session of jöhn@example.com: none to end".into(),
        };
        assert_eq!(Flash::decode(&f.encode()), Some(f));
        assert_eq!(Flash::decode("not base64!"), None);
        assert_eq!(Flash::decode(""), None);
        let long = Flash {
            ok: true,
            message: "x".repeat(1000),
        };
        assert_eq!(
            Flash::decode(&long.encode()).unwrap().message.len(),
            MAX_LEN
        );
    }
}
