//! Authentication: `Authorization: Bearer <key or signed token>` (or `x-api-key`) → the
//! [`Principal`] every handler acts for; without either, a browser's session cookie, and without
//! that, the client certificate the TLS handshake verified.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
pub use enclave_service::principal::Principal;
use enclave_service::principal::{authenticate_key, authenticate_user};
use enclave_service::session::authenticate_session;
use enclave_service::token::authenticate_token;

use crate::AppState;
use crate::error::{ApiError, Error};

/// Rejects a request without a valid, unrevoked key or a verified client certificate naming an
/// enabled user; otherwise attaches its [`Principal`]. A key, when sent, is what counts.
pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // OpenAI clients send `Authorization: Bearer`; Anthropic's send `x-api-key`.
    let principal = match req.headers().get(AUTHORIZATION) {
        Some(h) => authenticate(&state, Some(h)).await?,
        None => match req.headers().get("x-api-key") {
            Some(k) => credential(&state, k.to_str().map_err(|_| Error::InvalidKey)?).await?,
            None => {
                // A credential the browser sends by itself: a forged cross-site request would
                // carry it too, so a request that changes anything must prove it is the page's.
                let changes = !req.method().is_safe();
                let card = certificate(&req);
                match browser_principal(&state, req.headers(), card).await {
                    Some(Ok((principal, session))) => {
                        if changes {
                            check_forgery(req.headers(), session.as_deref())?;
                        }
                        principal
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Error::MissingKey.into()),
                }
            }
        },
    };
    req.extensions_mut().insert(principal.clone());
    let mut response = next.run(req).await;
    // The audit step, outside this layer, records who called.
    response.extensions_mut().insert(principal);
    Ok(response)
}

async fn authenticate(
    state: &AppState,
    header: Option<&axum::http::HeaderValue>,
) -> Result<Principal, ApiError> {
    let header = header.ok_or(Error::MissingKey)?;
    let value = header.to_str().map_err(|_| Error::InvalidKey)?;
    let presented = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(Error::InvalidKey)?;
    credential(state, presented).await
}

/// An API key (`ek_…`), or else a signed token (three dot-separated parts) where issuers are
/// configured.
async fn credential(state: &AppState, presented: &str) -> Result<Principal, ApiError> {
    let presented = presented.trim();
    if !presented.starts_with("ek_") && presented.split('.').count() == 3 {
        return Ok(authenticate_token(state, presented).await?);
    }
    Ok(authenticate_key(state, presented).await?)
}

/// Who the connection's verified client certificate names, if it presented one.
pub fn certificate(req: &Request) -> Option<Result<String, String>> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::peer::Peer>>()?;
    peer.0.client.as_ref().map(|c| c.name.clone())
}

/// The principal of a browser's own credentials: its session cookie (and the cookie, for the
/// anti-forgery check), else the client certificate its connection presented. `None` when it
/// sent neither.
pub async fn browser_principal(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    card: Option<Result<String, String>>,
) -> Option<Result<(Principal, Option<String>), Error>> {
    if let Some(cookie) = crate::cookies::cookie_value(headers, crate::cookies::SESSION_COOKIE) {
        return Some(
            authenticate_session(state, &cookie)
                .await
                .map(|p| (p, Some(cookie))),
        );
    }
    match card? {
        Ok(name) => Some(authenticate_user(state, &name).await.map(|p| (p, None))),
        Err(why) => Some(Err(Error::UnmappedCertificate(why))),
    }
}

/// Refuses a state-changing request on a browser's ambient credential when the browser says it
/// came from another origin (`Sec-Fetch-Site`), or, for a session, without the page's
/// anti-forgery token in `Enclave-CSRF`.
pub fn check_forgery(headers: &axum::http::HeaderMap, session: Option<&str>) -> Result<(), Error> {
    check_origin(headers)?;
    match session {
        Some(cookie) => check_token(
            cookie,
            headers
                .get("enclave-csrf")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        ),
        None => Ok(()),
    }
}

/// Refuses a request the browser says came from another origin.
pub fn check_origin(headers: &axum::http::HeaderMap) -> Result<(), Error> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if matches!(site, "same-origin" | "none") {
        Ok(())
    } else {
        Err(Error::CsrfRefused(format!(
            "a request from another origin (Sec-Fetch-Site: {site}) cannot use this browser's sign-in to change anything"
        )))
    }
}

/// Refuses `sent` unless it is the anti-forgery token of the session `cookie`.
pub fn check_token(cookie: &str, sent: &str) -> Result<(), Error> {
    let expected = enclave_service::session::csrf_token(cookie);
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        sent.as_bytes(),
        expected.as_bytes(),
    )) {
        Ok(())
    } else {
        Err(Error::CsrfRefused(
            "a request signed in by session cookie that changes anything must send the page's `Enclave-CSRF` token".into(),
        ))
    }
}
