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
                match crate::browser::cookie_value(req.headers(), crate::browser::SESSION_COOKIE) {
                    Some(cookie) => authenticate_session(&state, &cookie).await?,
                    None => match certificate(&req) {
                        Some(Ok(name)) => authenticate_user(&state, &name).await?,
                        Some(Err(why)) => return Err(Error::UnmappedCertificate(why).into()),
                        None => return Err(Error::MissingKey.into()),
                    },
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
fn certificate(req: &Request) -> Option<Result<String, String>> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::peer::Peer>>()?;
    peer.0.client.as_ref().map(|c| c.name.clone())
}
