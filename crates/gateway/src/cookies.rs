//! Reading the cookies a request carries: the browser session's, and the sign-in's.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use cookie::Cookie;

/// The cookie a browser session is carried in.
pub const SESSION_COOKIE: &str = "enclave_session";

/// The value of the cookie `name` the request carries.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}
