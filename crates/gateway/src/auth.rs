//! Authentication: `Authorization: Bearer <key>` → the [`Principal`] every handler acts for.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use enclave_store::{ApiKey, Role, keys};

use crate::AppState;
use crate::error::ApiError;

/// How long a looked-up key is trusted without asking the store again, and so how long a revoked
/// key may still work. The secret is still compared on every call; only the round trip is saved.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
const KEY_CACHE_MAX: usize = 10_000;

/// Keys looked up in the last [`KEY_CACHE_TTL`]: a store lookup per call would cost more than
/// the rest of authentication.
#[derive(Debug, Default)]
pub struct KeyCache {
    map: Mutex<Cached>,
}

/// Key id → (when looked up, the key, its stored hash).
type Cached = HashMap<String, (Instant, ApiKey, Vec<u8>)>;

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<(ApiKey, Vec<u8>)> {
        let map = self.lock();
        let (at, key, hash) = map.get(id)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| (key.clone(), hash.clone()))
    }

    fn put(&self, id: &str, (key, hash): (ApiKey, Vec<u8>)) {
        let mut map = self.lock();
        if map.len() >= KEY_CACHE_MAX {
            map.retain(|_, (at, _, _)| at.elapsed() < KEY_CACHE_TTL);
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(id.to_string(), (Instant::now(), key, hash));
    }
}

/// Who is calling: a key of one tenant, with a role.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub role: Role,
    /// The stored clearance banner; parsed against the scheme in force on each request.
    pub clearance: String,
}

/// Rejects a request without a valid, unrevoked key; otherwise attaches its [`Principal`].
pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // OpenAI clients send `Authorization: Bearer`; Anthropic's send `x-api-key`.
    let principal = match req.headers().get(AUTHORIZATION) {
        Some(h) => authenticate(&state, Some(h)).await?,
        None => match req.headers().get("x-api-key") {
            Some(k) => {
                authenticate_raw(&state, k.to_str().map_err(|_| ApiError::InvalidKey)?).await?
            }
            None => return Err(ApiError::MissingKey),
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
    let header = header.ok_or(ApiError::MissingKey)?;
    let value = header.to_str().map_err(|_| ApiError::InvalidKey)?;
    let presented = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(ApiError::InvalidKey)?;
    authenticate_raw(state, presented).await
}

async fn authenticate_raw(state: &AppState, presented: &str) -> Result<Principal, ApiError> {
    let presented = presented.trim();
    if presented.is_empty() {
        return Err(ApiError::MissingKey);
    }
    let id = keys::parse_id(presented).ok_or(ApiError::InvalidKey)?;
    let found = match state.key_cache.get(id) {
        Some(hit) => Some(hit),
        None => {
            let found = state.store.key_for_auth(id).await.map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                ApiError::Internal
            })?;
            if let Some(f) = &found {
                state.key_cache.put(id, f.clone());
            }
            found
        }
    };
    let Some((key, hash)) = found else {
        return Err(ApiError::InvalidKey);
    };
    if !keys::matches(presented, &hash) {
        return Err(ApiError::InvalidKey);
    }
    if key.revoked_at.is_some() {
        return Err(ApiError::RevokedKey(key.id));
    }
    Ok(Principal {
        key_id: key.id,
        tenant_id: key.tenant_id,
        tenant_name: key.tenant_name,
        role: key.role,
        clearance: key.clearance,
    })
}
