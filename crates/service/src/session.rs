//! Browser sign-in (OpenID Connect, authorization code with PKCE) and the server-side sessions it
//! makes.
//!
//! Talking to the provider (discovery, the authorization URL, the code exchange, the ID token's
//! signature and nonce, userinfo) is a [`BrowserLogin`]'s job, wired in from `enclave-identity`.
//! Here: the logins in flight (by `state`, bound to the browser that began them, used once,
//! gone after ten minutes), the claims made a user exactly as for bearer tokens
//! ([`crate::token`]), and the sessions themselves: stored by the SHA-256 of their cookie, with an
//! absolute end and an idle timeout, each request checking that the session is live and its
//! user enabled (the answer kept for at most a second), and every start and end audited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enclave_store::NewSession;
use sha2::Digest as _;

use crate::Service;
use crate::error::Error;
use crate::principal::{Established, Principal};
use crate::token::{TokenClaims, TokenRefused};

/// An issuer a browser may sign in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginIssuer {
    /// The short name `/login?issuer=` takes.
    pub name: String,
    pub issuer: String,
}

/// Where to send the browser, and the secrets the callback needs.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The provider's authorization endpoint with every parameter of the request.
    pub url: String,
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier (its S256 challenge is in `url`).
    pub verifier: String,
}

/// The OpenID Connect side of a browser sign-in.
#[async_trait]
pub trait BrowserLogin: Send + Sync + std::fmt::Debug {
    /// The issuers configured for browsers (with a `client_id`), in configuration order.
    fn issuers(&self) -> Vec<LoginIssuer>;
    /// Starts a sign-in with `issuer` (a [`LoginIssuer::name`]), the provider sending the browser
    /// back to `redirect_uri`.
    async fn authorize(
        &self,
        issuer: &str,
        redirect_uri: &str,
    ) -> Result<Authorization, TokenRefused>;
    /// Exchanges the code for tokens, verifies the ID token (signature, issuer, audience, times,
    /// `nonce`) and reads the claims (with userinfo's) through the issuer's claim map.
    async fn complete(
        &self,
        issuer: &str,
        code: &str,
        redirect_uri: &str,
        started: &Authorization,
    ) -> Result<TokenClaims, TokenRefused>;
}

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session unused this long has ended.
    pub idle: Duration,
    /// No session lasts longer, however active.
    pub absolute: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// A login between `/login` and its callback.
#[derive(Debug)]
struct Pending {
    issuer: String,
    started: Authorization,
    /// SHA-256 of the cookie the browser that began it was given: a callback from any other
    /// browser (a login forced on a victim) is refused.
    binding: [u8; 32],
    redirect_uri: String,
    return_to: String,
    at: Instant,
}

/// How long a browser has to come back from the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Logins in flight at once; beyond it new ones wait (an unauthenticated flood must not push out
/// the logins of real people).
const PENDING_MAX: usize = 10_000;
/// How long a session's principal is kept without asking the store: the bound on how long a
/// logged-out session, or a disabled user's, keeps working.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(1);
const SESSION_CACHE_MAX: usize = 10_000;
/// `last_seen` is written at most this often per session.
const TOUCH_EVERY: i64 = 60;

/// Logins in flight and sessions seen lately.
#[derive(Debug, Default)]
pub struct Sessions {
    pub limits: SessionLimits,
    pending: Mutex<HashMap<String, Pending>>,
    seen: Mutex<HashMap<[u8; 32], (Instant, Principal)>>,
}

/// A login begun: where to send the browser, and the cookie value that binds the login to it.
#[derive(Debug, Clone)]
pub struct LoginStarted {
    pub redirect: String,
    pub binding: String,
}

/// A session begun.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session cookie's value.
    pub cookie: String,
    pub principal: Principal,
    pub user: String,
    pub return_to: String,
    pub max_age: Duration,
}

fn digest(value: &str) -> [u8; 32] {
    sha2::Sha256::digest(value.as_bytes()).into()
}

/// Bytes as lower-case hex: the text of cookies and tokens.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// 256 random bits, URL-safe: session cookies and login bindings.
fn secret() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "session store failed");
    Error::Internal
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Principal)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, id: &[u8; 32]) {
        self.seen().remove(id);
    }
}

/// The anti-forgery token of the session `cookie`: pages carry it, and a request the cookie
/// authenticates that changes anything must send it back (`Enclave-CSRF`). Derived one way from
/// the cookie, so it reveals nothing of it and needs no storage.
pub fn csrf_token(cookie: &str) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"enclave csrf\0");
    hasher.update(cookie.as_bytes());
    hex(&hasher.finalize())
}

/// The issuers a browser may choose from; refused when none is configured.
pub fn login_issuers(state: &Service) -> Result<Vec<LoginIssuer>, Error> {
    let issuers = state
        .logins
        .as_ref()
        .map(|l| l.issuers())
        .unwrap_or_default();
    if issuers.is_empty() {
        return Err(Error::SignInNotConfigured);
    }
    Ok(issuers)
}

/// Begins a sign-in with `issuer`; the browser comes back to `redirect_uri`, then goes on to
/// `return_to` (a path on this server).
pub async fn begin_login(
    state: &Service,
    issuer: &str,
    redirect_uri: &str,
    return_to: &str,
) -> Result<LoginStarted, Error> {
    let logins = state.logins.as_ref().ok_or(Error::SignInNotConfigured)?;
    if !logins.issuers().iter().any(|i| i.name == issuer) {
        return Err(Error::SignInFailed(format!(
            "no issuer is named `{issuer}`: /login lists them"
        )));
    }
    {
        let mut pending = state.sessions.pending();
        pending.retain(|_, p| p.at.elapsed() < LOGIN_TTL);
        if pending.len() >= PENDING_MAX {
            return Err(Error::Overloaded(
                "too many sign-ins are in progress".into(),
            ));
        }
    }
    let started = logins
        .authorize(issuer, redirect_uri)
        .await
        .map_err(|e| Error::SignInFailed(e.0))?;
    let binding = secret();
    let redirect = started.url.clone();
    // Only a path on this server: never an open redirect to another site.
    let return_to = if return_to.starts_with('/') && !return_to.starts_with("//") {
        return_to.to_string()
    } else {
        "/".to_string()
    };
    state.sessions.pending().insert(
        started.state.clone(),
        Pending {
            issuer: issuer.to_string(),
            binding: digest(&binding),
            redirect_uri: redirect_uri.to_string(),
            started,
            return_to,
            at: Instant::now(),
        },
    );
    Ok(LoginStarted { redirect, binding })
}

/// Completes the sign-in the provider sent the browser back from with `code` (or with its
/// refusal, as `Err`): the login must be in flight, begun by this browser (`binding`, its login
/// cookie), and the code must yield a verified ID token whose claims make an enabled user.
/// Every refusal is audited and counted.
pub async fn finish_login(
    state: &Service,
    login_state: &str,
    code: Result<&str, String>,
    binding: Option<&str>,
) -> Result<SignedIn, Error> {
    let result = complete(state, login_state, code, binding).await;
    let (outcome, reason) = match &result {
        Ok(_) => ("accepted", "verified"),
        Err(e) => ("refused", e.code()),
    };
    metrics::counter!(
        "enclave_sign_ins_total",
        "source" => "oidc",
        "outcome" => outcome,
        "reason" => reason
    )
    .increment(1);
    if let Err(e) = &result {
        audit(
            state,
            "signin.refuse",
            None,
            None,
            format!("browser sign-in refused: {e}"),
        )
        .await;
    }
    result
}

async fn complete(
    state: &Service,
    login_state: &str,
    code: Result<&str, String>,
    binding: Option<&str>,
) -> Result<SignedIn, Error> {
    let logins = state.logins.as_ref().ok_or(Error::SignInNotConfigured)?;
    let pending = state
        .sessions
        .pending()
        .remove(login_state)
        .filter(|p| p.at.elapsed() < LOGIN_TTL)
        .ok_or_else(|| {
            Error::SignInFailed(
                "no sign-in is in progress for this `state` (used already, or older than ten minutes): start again at /login".into(),
            )
        })?;
    if binding.map(digest) != Some(pending.binding) {
        return Err(Error::SignInFailed(
            "this sign-in was begun by another browser".into(),
        ));
    }
    let code = code.map_err(Error::SignInFailed)?;
    let claims = logins
        .complete(
            &pending.issuer,
            code,
            &pending.redirect_uri,
            &pending.started,
        )
        .await
        .map_err(|e| Error::SignInFailed(e.0))?;
    let principal = crate::token::sign_in(state, &claims, Established::Session, None).await?;
    let cookie = secret();
    let now = enclave_store::now();
    let max_age = state.sessions.limits.absolute;
    let expires_at = now + i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX / 2);
    state
        .store
        .create_session(&NewSession {
            id: digest(&cookie),
            user_id: principal.key_id.clone(),
            issuer: claims.issuer.clone(),
            created_at: now,
            expires_at,
        })
        .await
        .map_err(store_error)?;
    // No session without its record: if the record cannot be queued, the session ends unused.
    if let Err(e) = crate::admin::record_event(
        state.store.as_ref(),
        "sessions.start",
        Some(&principal.tenant_name),
        Some(&principal.key_id),
        format!(
            "browser sign-in from {}: `{}`, {} cleared to {}",
            claims.issuer, claims.user, principal.role, principal.clearance
        ),
    )
    .await
    {
        tracing::error!(error = %e, "cannot queue the audit record of a sign-in");
        let _ = state
            .store
            .end_session(&digest(&cookie), now, "audit unavailable")
            .await;
        return Err(Error::AuditUnavailable);
    }
    Ok(SignedIn {
        cookie,
        principal,
        user: claims.user,
        return_to: pending.return_to,
        max_age,
    })
}

/// The principal a session cookie establishes: a live session (not logged out, within its
/// absolute end and idle timeout) of an enabled user. A session found timed out is ended and
/// audited.
pub async fn authenticate_session(state: &Service, cookie: &str) -> Result<Principal, Error> {
    let id = digest(cookie);
    if let Some((at, principal)) = state.sessions.seen().get(&id)
        && at.elapsed() < SESSION_CACHE_TTL
    {
        return Ok(principal.clone());
    }
    let session = state
        .store
        .session(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| Error::SessionEnded("no such session".into()))?;
    if let Some(reason) = &session.end_reason {
        return Err(Error::SessionEnded(reason.clone()));
    }
    if session.ended_at.is_some() {
        return Err(Error::SessionEnded("ended".into()));
    }
    let now = enclave_store::now();
    let idle = i64::try_from(state.sessions.limits.idle.as_secs()).unwrap_or(i64::MAX / 2);
    let over = if now >= session.expires_at {
        Some("expired")
    } else if now - session.last_seen >= idle {
        Some("idle")
    } else {
        None
    };
    if let Some(reason) = over {
        end(
            state,
            &id,
            &session.user.tenant_name,
            &session.user.id,
            reason,
        )
        .await?;
        return Err(Error::SessionEnded(reason.into()));
    }
    if session.user.disabled_at.is_some() {
        end(
            state,
            &id,
            &session.user.tenant_name,
            &session.user.id,
            "user disabled",
        )
        .await?;
        return Err(Error::DisabledUser(session.user.name));
    }
    if now - session.last_seen >= TOUCH_EVERY {
        state
            .store
            .touch_session(&id, now)
            .await
            .map_err(store_error)?;
    }
    let principal = Principal::of_user(session.user, Established::Session);
    let mut seen = state.sessions.seen();
    if seen.len() >= SESSION_CACHE_MAX {
        seen.retain(|_, (at, _)| at.elapsed() < SESSION_CACHE_TTL);
        if seen.len() >= SESSION_CACHE_MAX {
            seen.clear();
        }
    }
    seen.insert(id, (Instant::now(), principal.clone()));
    Ok(principal)
}

/// Ends the session `cookie` names (logout); false when it was not live.
pub async fn logout(state: &Service, cookie: &str) -> Result<bool, Error> {
    let id = digest(cookie);
    let Some(session) = state.store.session(&id).await.map_err(store_error)? else {
        return Ok(false);
    };
    if session.ended_at.is_some() {
        return Ok(false);
    }
    end(
        state,
        &id,
        &session.user.tenant_name,
        &session.user.id,
        "logout",
    )
    .await?;
    Ok(true)
}

async fn end(
    state: &Service,
    id: &[u8; 32],
    tenant: &str,
    user_id: &str,
    reason: &str,
) -> Result<(), Error> {
    state.sessions.forget(id);
    if state
        .store
        .end_session(id, enclave_store::now(), reason)
        .await
        .map_err(store_error)?
    {
        audit(
            state,
            "sessions.end",
            Some(tenant),
            Some(user_id),
            format!("session ended: {reason}"),
        )
        .await;
    }
    Ok(())
}

/// Queues an audit record of a sign-in event; a failure is logged (the event already happened).
async fn audit(
    state: &Service,
    operation: &str,
    tenant: Option<&str>,
    user_id: Option<&str>,
    detail: String,
) {
    if let Err(e) =
        crate::admin::record_event(state.store.as_ref(), operation, tenant, user_id, detail).await
    {
        tracing::error!(error = %e, operation, "cannot queue a sign-in audit record");
    }
}
