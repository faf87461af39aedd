//! Browser sign-in over HTTP: `/login` (choose an issuer, go to it), `/auth/callback` (the
//! provider's answer; the session cookie), `/logout`, and `/`, which says who is signed in.
//!
//! The session cookie is `Secure`, `HttpOnly` and `SameSite=Strict`, lasting no longer than the
//! session. Since a `Strict` cookie is not sent on the navigation the provider's redirect
//! starts, the callback answers with a page that moves on by itself, a navigation from this site.
//! The short-lived login cookie that binds a sign-in to the browser that began it is `Lax`, so
//! that it does come back on that redirect.

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use enclave_service::error::Error;
use enclave_service::session;
use serde::Deserialize;

use crate::AppState;

pub use crate::cookies::{SESSION_COOKIE, cookie_value};
const LOGIN_COOKIE: &str = "enclave_login";
const CALLBACK: &str = "/auth/callback";

/// Where Enclave is reached from browsers, for the redirect URI the provider sends them back to.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// `https://enclave.agency.example`: the configured public URL. Without it, the scheme
    /// below and the request's `Host`.
    pub public_url: Option<String>,
    pub https: bool,
}

fn set_cookie(
    name: &str,
    value: String,
    path: &str,
    same_site: SameSite,
    max_age: i64,
) -> HeaderValue {
    let cookie = Cookie::build((name, value))
        .path(path)
        .secure(true)
        .http_only(true)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    // A cookie's text is ASCII by construction (its values are hex).
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// HTML-escapes text shown in a page (names and messages come from the provider and the user).
/// Five characters; no crate is needed for it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str, head: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Enclave</title>{head}</head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title)
    );
    (
        status,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        html,
    )
        .into_response()
}

pub(crate) fn error_page(error: &Error) -> Response {
    let status = crate::error::status(error).0;
    page(
        status,
        "Sign-in refused",
        &format!(
            "<p>{}</p><p><code>{}</code></p><p><a href=\"/login\">Sign in again</a></p>",
            escape(&error.to_string()),
            error.code()
        ),
        "",
    )
}

fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Result<String, Error> {
    let site = state.site();
    let base = match &site.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']))
                .ok_or_else(|| {
                    Error::SignInFailed(
                        "the request has no usable Host header, and `[identity] public_url` is not set".into(),
                    )
                })?;
            format!("{}://{host}", if site.https { "https" } else { "http" })
        }
    };
    Ok(format!("{base}{CALLBACK}"))
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    issuer: Option<String>,
    next: Option<String>,
}

/// `GET /login`: straight to the only issuer, or a choice of them.
#[utoipa::path(get, path = "/login", tag = "sign-in", security(()),
    params(
        ("issuer" = Option<String>, Query, description = "The identity provider to sign in with, by its short name; needed only when several are configured"),
        ("next" = Option<String>, Query, description = "The path on this server to go on to once signed in"),
    ),
    responses(
        (status = 303, description = "To the identity provider's sign-in page"),
        (status = 200, description = "A choice of identity providers", content_type = "text/html", body = String),
        (status = 404, description = "Browser sign-in is not configured", content_type = "text/html", body = String),
        (status = 401, description = "The sign-in cannot start (an unknown issuer, the provider unreachable)", content_type = "text/html", body = String),
    ))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let issuers = match session::login_issuers(&state) {
        Ok(i) => i,
        Err(e) => return error_page(&e),
    };
    let next = query.next.unwrap_or_else(|| "/".into());
    let name = match query.issuer {
        Some(name) => name,
        None if issuers.len() == 1 => issuers[0].name.clone(),
        None => {
            let links: String = issuers
                .iter()
                .map(|i| {
                    let query = serde_urlencoded::to_string([
                        ("issuer", i.name.as_str()),
                        ("next", next.as_str()),
                    ])
                    .unwrap_or_default();
                    let href = format!("/login?{query}");
                    format!(
                        "<li><a href=\"{}\">{}</a> <small>{}</small></li>",
                        escape(&href),
                        escape(&i.name),
                        escape(&i.issuer)
                    )
                })
                .collect();
            return page(
                StatusCode::OK,
                "Sign in",
                &format!("<p>Choose your identity provider:</p><ul>{links}</ul>"),
                "",
            );
        }
    };
    let started = match redirect_uri(&state, &headers) {
        Ok(uri) => session::begin_login(&state, &name, &uri, &next).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(started) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let h = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&started.redirect) {
                h.insert(LOCATION, location);
            }
            h.insert(
                SET_COOKIE,
                set_cookie(LOGIN_COOKIE, started.binding, "/auth", SameSite::Lax, 600),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => error_page(&e),
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer. A session on success.
#[utoipa::path(get, path = "/auth/callback", tag = "sign-in", security(()),
    params(
        ("code" = Option<String>, Query, description = "The provider's authorization code"),
        ("state" = Option<String>, Query, description = "The sign-in this answers"),
        ("error" = Option<String>, Query, description = "The provider's refusal"),
        ("error_description" = Option<String>, Query, description = "Why the provider refused"),
    ),
    responses(
        (status = 200, description = "Signed in: the session cookie is set and the page moves on", content_type = "text/html", body = String),
        (status = 401, description = "The sign-in is refused, and why", content_type = "text/html", body = String),
        (status = 404, description = "Browser sign-in is not configured", content_type = "text/html", body = String),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let binding = cookie_value(&headers, LOGIN_COOKIE);
    let code = match (&query.code, &query.error) {
        (_, Some(error)) => Err(format!(
            "the provider answered `{error}`{}",
            query
                .error_description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )),
        (Some(code), None) => Ok(code.as_str()),
        (None, None) => Err("the provider sent no code".to_string()),
    };
    let signed = session::finish_login(
        &state,
        query.state.as_deref().unwrap_or_default(),
        code,
        binding.as_deref(),
    )
    .await;
    let clear_login = set_cookie(LOGIN_COOKIE, String::new(), "/auth", SameSite::Lax, 0);
    let mut response = match signed {
        Ok(signed) => {
            let to = escape(&signed.return_to);
            let mut r = page(
                StatusCode::OK,
                "Signed in",
                &format!(
                    "<p>Signed in as <strong>{}</strong> of tenant {}, cleared to <strong>{}</strong>.</p>\
                     <p><a href=\"{to}\">Continue</a></p>",
                    escape(&signed.user),
                    escape(&signed.principal.tenant_name),
                    escape(&signed.principal.clearance),
                ),
                &format!("<meta http-equiv=\"refresh\" content=\"0;url={to}\">"),
            );
            let max_age = i64::try_from(signed.max_age.as_secs()).unwrap_or(i64::MAX / 2);
            r.headers_mut().append(
                SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    signed.cookie,
                    "/",
                    SameSite::Strict,
                    max_age,
                ),
            );
            r
        }
        Err(e) => error_page(&e),
    };
    response.headers_mut().append(SET_COOKIE, clear_login);
    response
}

/// `GET /logout`: a page whose button signs out (a link alone must not end a session).
#[utoipa::path(get, path = "/logout", tag = "sign-in", security(()),
    responses((status = 200, description = "A page with the sign-out button", content_type = "text/html", body = String)))]
pub async fn logout_page(headers: HeaderMap) -> Response {
    let csrf = cookie_value(&headers, SESSION_COOKIE)
        .map(|c| session::csrf_token(&c))
        .unwrap_or_default();
    page(
        StatusCode::OK,
        "Sign out",
        &format!(
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(&csrf)
        ),
        "",
    )
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session and clears its cookie. The form must carry the session's
/// anti-forgery token and come from this origin.
#[utoipa::path(post, path = "/logout", tag = "sign-in", security(()),
    responses(
        (status = 200, description = "Signed out: the session has ended and its cookie is cleared", content_type = "text/html", body = String),
        (status = 403, description = "A forged sign-out (another origin, or no anti-forgery token)", content_type = "text/html", body = String),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Response {
    if let Some(cookie) = cookie_value(&headers, SESSION_COOKIE) {
        let forged = crate::auth::check_origin(&headers)
            .and_then(|()| crate::auth::check_token(&cookie, &form.csrf));
        if let Err(e) = forged {
            return error_page(&e);
        }
        if let Err(e) = session::logout(&state, &cookie).await {
            return error_page(&e);
        }
    }
    let mut response = page(
        StatusCode::OK,
        "Signed out",
        "<p>Your session has ended.</p><p><a href=\"/login\">Sign in</a></p>",
        "",
    );
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(SESSION_COOKIE, String::new(), "/", SameSite::Strict, 0),
    );
    response
}

/// `GET /`: the console when signed in, else a way to sign in.
#[utoipa::path(get, path = "/", tag = "sign-in", security(()),
    responses(
        (status = 303, description = "Signed in: to the console"),
        (status = 200, description = "A link to sign in", content_type = "text/html", body = String),
    ))]
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = match cookie_value(&headers, SESSION_COOKIE) {
        Some(cookie) => Some(session::authenticate_session(&state, &cookie).await),
        None => None,
    };
    match signed_in {
        Some(Ok(_)) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/console"));
            r
        }
        Some(Err(e)) => page(
            StatusCode::OK,
            "Enclave",
            &format!(
                "<p>{}</p><p><a href=\"/login\">Sign in</a></p>",
                escape(&e.to_string())
            ),
            "",
        ),
        None => page(
            StatusCode::OK,
            "Enclave",
            "<p>You are not signed in.</p><p><a href=\"/login\">Sign in</a></p>",
            "",
        ),
    }
}
