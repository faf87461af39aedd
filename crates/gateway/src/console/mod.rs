//! The web console: pages rendered on the server (minijinja templates, embedded in the binary
//! with the stylesheet and the one script) under classification banners, for people signed in
//! by session or smart card.
//!
//! Nothing here decides access: a page shows what the principal's own API calls return (the
//! script calls `/v1` with the session and its anti-forgery token), and every banner, portion
//! mark and banner colour comes from the label code (`/console/label`, `/console/labels.css`).
//! Every response carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline script, no frames) and `X-Frame-Options: DENY`.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enclave_label::{Label, Scheme};
use enclave_service::error::Error;
use enclave_service::principal::Principal;
use minijinja::Environment;
use serde::Serialize;

use crate::AppState;
use crate::auth::{browser_principal, certificate};

pub mod pages;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the console's security headers to every page, asset and sign-in response.
pub async fn secure(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn templates() -> Result<&'static Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in [
            ("layout.html", include_str!("templates/layout.html")),
            ("chat.html", include_str!("templates/chat.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("admin.html", include_str!("templates/admin.html")),
            ("kb.html", include_str!("templates/kb.html")),
        ] {
            env.add_template(name, text).map_err(|e| e.to_string())?;
        }
        Ok(env)
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn render(name: &str, ctx: minijinja::Value) -> Response {
    let html = templates().and_then(|env| {
        env.get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| e.to_string())
    });
    match html {
        Ok(html) => (
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "a console page cannot be rendered");
            crate::browser::error_page(&Error::Internal)
        }
    }
}

/// A label as the page shows it: banner, portion mark, and the banner's colour class.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub banner: String,
    pub portion: String,
    pub class: String,
}

fn shown(scheme: &Scheme, label: &Label) -> Shown {
    Shown {
        banner: scheme.banner(label),
        portion: scheme.portion(label),
        class: colour_class(scheme, label),
    }
}

/// The stylesheet class of a label's banner colours: one per colour pair the scheme can show.
fn colour_class(scheme: &Scheme, label: &Label) -> String {
    let (background, text) = scheme.banner_colours(label);
    format!(
        "lbl-{}-{}",
        background.trim_start_matches('#'),
        text.trim_start_matches('#')
    )
}

/// The signed-in browser's principal and session cookie, or where to send it instead.
async fn signed_in(
    state: &AppState,
    req: Request,
    here: &str,
) -> Result<(Principal, Option<String>, axum::http::request::Parts), Response> {
    let card = certificate(&req);
    let (parts, _) = req.into_parts();
    match browser_principal(state, &parts.headers, card).await {
        Some(Ok((principal, cookie))) => Ok((principal, cookie, parts)),
        Some(Err(e)) => Err(crate::browser::error_page(&e)),
        None => {
            let to = format!("/login?next={here}");
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(LOCATION, v);
            }
            Err(r)
        }
    }
}

fn parse_or_lowest(scheme: &Scheme, banner: &str) -> Label {
    if banner.is_empty() {
        scheme.lowest()
    } else {
        scheme.parse(banner).unwrap_or_else(|_| scheme.lowest())
    }
}

/// `GET /console/label?l=A&l=B`: the join of the labels given (the lowest when none), as the
/// page shows it. The only place pages get banner and portion text from.
#[utoipa::path(get, path = "/console/label", tag = "console", security(()),
    params(("l" = Option<Vec<String>>, Query, description = "Labels to join; repeat for each")),
    responses(
        (status = 200, description = "The join's banner, portion mark and banner colour class", body = Object),
        (status = 303, description = "Not signed in: to /login"),
        (status = 400, description = "A label that is not of the scheme in force", body = crate::error::ErrorBody),
    ))]
pub async fn label(State(state): State<AppState>, req: Request) -> Response {
    let parts = match signed_in(&state, req, "/console").await {
        Ok((_, _, parts)) => parts,
        Err(response) => return response,
    };
    let scheme = &state.policy.scheme;
    let query = parts.uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut joined = scheme.lowest();
    for (_, text) in pairs.iter().filter(|(k, _)| k == "l") {
        match scheme.parse(text) {
            Ok(l) => joined = joined.join(&l),
            Err(e) => {
                return crate::error::ApiError::from(Error::InvalidLabel {
                    param: "l".into(),
                    message: format!("`{text}` is not a label of scheme {}: {e}", scheme.name()),
                })
                .into_response();
            }
        }
    }
    Json(shown(scheme, &joined)).into_response()
}

/// `GET /console/labels.css`: a banner class for every colour pair the scheme in force shows.
#[utoipa::path(get, path = "/console/labels.css", tag = "console", security(()),
    responses((status = 200, description = "Banner colour classes", content_type = "text/css", body = String)))]
pub async fn labels_css(State(state): State<AppState>) -> Response {
    let scheme = &state.policy.scheme;
    let mut css = String::from("/* Banner colours, from the label scheme in force. */\n");
    let mut seen = std::collections::BTreeSet::new();
    for level in 0..scheme.def().levels.len() {
        let Ok(level) = u8::try_from(level) else {
            break;
        };
        let plain = Label::level(level);
        let mut compartmented = plain.clone();
        compartmented.compartments.insert("*".into());
        for label in [plain, compartmented] {
            let (background, text) = scheme.banner_colours(&label);
            let class = colour_class(scheme, &label);
            if seen.insert(class.clone()) {
                css.push_str(&format!(
                    ".{class} {{ background: {background}; color: {text}; }}\n"
                ));
            }
        }
    }
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        css,
    )
        .into_response()
}

/// `GET /console/assets/{file}`: the stylesheet and the scripts, embedded in the binary.
#[utoipa::path(get, path = "/console/assets/{file}", tag = "console", security(()),
    params(("file" = String, Path, description = "`common.js`, a page's script (`chat.js`, `kb.js`, `admin.js`, `audit.js`), `console.css` or `favicon.svg`")),
    responses(
        (status = 200, description = "The asset", content_type = "text/plain", body = String),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ))]
pub async fn asset(Path(file): Path<String>) -> Response {
    const JS: &str = "text/javascript; charset=utf-8";
    let (body, kind) = match file.as_str() {
        "common.js" => (include_str!("assets/common.js"), JS),
        "chat.js" => (include_str!("assets/chat.js"), JS),
        "audit.js" => (include_str!("assets/audit.js"), JS),
        "admin.js" => (include_str!("assets/admin.js"), JS),
        "kb.js" => (include_str!("assets/kb.js"), JS),
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "favicon.svg" => (include_str!("assets/favicon.svg"), "image/svg+xml"),
        _ => {
            return crate::error::ApiError::from(Error::NoRoute(format!("/console/assets/{file}")))
                .into_response();
        }
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /favicon.ico`: browsers ask for it on every page; the console's icon.
#[utoipa::path(get, path = "/favicon.ico", tag = "console", security(()),
    responses((status = 200, description = "The console's icon (SVG)", content_type = "image/svg+xml", body = String)))]
pub async fn favicon() -> Response {
    asset(Path("favicon.svg".to_string())).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_templates_parse() {
        assert!(super::templates().is_ok(), "{:?}", super::templates().err());
    }
}
