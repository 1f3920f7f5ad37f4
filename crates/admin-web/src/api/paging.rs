//! Paging of the API's listings: `?page=` and `?per_page=` (at most 500), and an RFC 8288
//! `Link` header with the `first`, `prev`, `next` and `last` pages, so a script follows `next`
//! instead of counting. The links keep the request's other parameters.

use axum::Json;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Which page of how many, and how long: what the links are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Paging {
    pub page: u64,
    pub pages: u64,
    pub per_page: u64,
}

impl Paging {
    pub fn new(page: u64, total: u64, per_page: u64) -> Self {
        Self {
            page,
            pages: total.div_ceil(per_page.max(1)).max(1),
            per_page,
        }
    }
}

/// The `Link` value for `uri` (the request's, as the client sent it).
pub(super) fn link(uri: &Uri, paging: Paging) -> String {
    let kept: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "page" && k != "per_page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let href = |page: u64| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        query.append_pair("per_page", &paging.per_page.to_string());
        query.append_pair("page", &page.to_string());
        format!("{}?{}", uri.path(), query.finish())
    };
    let mut links = vec![format!("<{}>; rel=\"first\"", href(1))];
    if paging.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", href(paging.page - 1)));
    }
    if paging.page < paging.pages {
        links.push(format!("<{}>; rel=\"next\"", href(paging.page + 1)));
    }
    links.push(format!("<{}>; rel=\"last\"", href(paging.pages)));
    links.join(", ")
}

/// `body` as JSON with the `Link` header of its page.
pub(super) fn paged<T: Serialize>(uri: &Uri, paging: Paging, body: T) -> Response {
    let mut res = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&link(uri, paging)) {
        res.headers_mut().insert(header::LINK, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_other_parameters_and_name_the_neighbours() {
        let uri: Uri = "/api/v1/domains?q=a%20b&page=2&per_page=10"
            .parse()
            .unwrap();
        assert_eq!(
            link(&uri, Paging::new(2, 35, 10)),
            "</api/v1/domains?q=a+b&per_page=10&page=1>; rel=\"first\", \
             </api/v1/domains?q=a+b&per_page=10&page=1>; rel=\"prev\", \
             </api/v1/domains?q=a+b&per_page=10&page=3>; rel=\"next\", \
             </api/v1/domains?q=a+b&per_page=10&page=4>; rel=\"last\""
        );
        let only: Uri = "/api/v1/sessions".parse().unwrap();
        assert_eq!(
            link(&only, Paging::new(1, 0, 25)),
            "</api/v1/sessions?per_page=25&page=1>; rel=\"first\", \
             </api/v1/sessions?per_page=25&page=1>; rel=\"last\""
        );
    }
}
