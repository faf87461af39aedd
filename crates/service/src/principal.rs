//! Who is calling, and how that was established: an API key of one tenant, with the role and
//! clearance an administrator gave it, or a client certificate that maps to a user (OIDC and
//! signed tokens are further ways to produce a [`Principal`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use enclave_store::{ApiKey, Role, keys};

use crate::Service;
use crate::error::Error;

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

/// How a principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Established {
    /// An API key (`Authorization: Bearer`, `x-api-key`).
    ApiKey,
    /// A client certificate the TLS handshake verified, mapped to a user.
    Certificate,
    /// A signed token (JWT) from a configured issuer, its claims made a user.
    Token,
    /// A browser session, made by an OpenID Connect sign-in.
    Session,
}

/// Who is calling: a key or a user of one tenant, with a role. `key_id` names the caller in
/// records, quotas and policies: the key's id, or the user's id for a certificate.
#[derive(Debug, Clone)]
pub struct Principal {
    pub established: Established,
    pub key_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub role: Role,
    /// The stored clearance banner; parsed against the scheme in force on each request.
    pub clearance: String,
    /// The person's name, for a user's principal (certificate, token, session, or their key).
    pub user: Option<String>,
}

/// The principal an API key establishes: a valid, unrevoked key of a tenant, with its role and
/// clearance.
pub async fn authenticate_key(state: &Service, presented: &str) -> Result<Principal, Error> {
    let presented = presented.trim();
    if presented.is_empty() {
        return Err(Error::MissingKey);
    }
    let id = keys::parse_id(presented).ok_or(Error::InvalidKey)?;
    let found = match state.key_cache.get(id) {
        Some(hit) => Some(hit),
        None => {
            let found = state.store.key_for_auth(id).await.map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                Error::Internal
            })?;
            if let Some(f) = &found {
                state.key_cache.put(id, f.clone());
            }
            found
        }
    };
    let Some((key, hash)) = found else {
        return Err(Error::InvalidKey);
    };
    if !keys::matches(presented, &hash) {
        return Err(Error::InvalidKey);
    }
    if key.revoked_at.is_some() {
        return Err(Error::RevokedKey(key.id));
    }
    let clearance = match &key.owner {
        None => key.clearance,
        Some(owner) if owner.disabled_at.is_some() => {
            return Err(Error::DisabledUser(owner.name.clone()));
        }
        // A user's key reads no higher than the user may now.
        Some(owner) => owned_clearance(state, &key.clearance, &owner.clearance)?,
    };
    Ok(Principal {
        established: Established::ApiKey,
        key_id: key.id,
        tenant_id: key.tenant_id,
        tenant_name: key.tenant_name,
        role: key.role,
        clearance,
        user: key.owner.map(|o| o.name),
    })
}

/// The clearance of a user's key: the meet of its own and its owner's. Both are stored banners;
/// one that no longer parses in the scheme in force refuses the call rather than guess.
fn owned_clearance(state: &Service, key: &str, owner: &str) -> Result<String, Error> {
    let scheme = &state.policy.scheme;
    // An empty banner is the lowest level (keys minted before clearances were stored).
    let parse = |banner: &str| {
        if banner.is_empty() {
            Ok(scheme.lowest())
        } else {
            scheme.parse(banner)
        }
    };
    match (parse(key), parse(owner)) {
        (Ok(k), Ok(o)) => Ok(scheme.banner(&scheme.clearance(k).meet(&scheme.clearance(o)))),
        _ => {
            tracing::error!(
                key,
                owner,
                "a stored clearance does not parse in the scheme in force"
            );
            Err(Error::Internal)
        }
    }
}

/// The principal a verified client certificate establishes: the enabled user its mapped identity
/// (`name`: a UPN, an e-mail address or a subject name) names. Looked up on every call, so a
/// disabled user stops at the next request.
pub async fn authenticate_user(state: &Service, name: &str) -> Result<Principal, Error> {
    let user = state
        .store
        .user_by_name(name)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "user lookup failed");
            Error::Internal
        })?
        .ok_or_else(|| Error::UnmappedCertificate(format!("no user is named `{name}`")))?;
    if user.disabled_at.is_some() {
        return Err(Error::DisabledUser(user.name));
    }
    Ok(Principal::of_user(user, Established::Certificate))
}

impl Principal {
    /// A user as the caller: the user's id stands where a key's would, with their tenant, role
    /// and clearance as stored.
    pub fn of_user(user: enclave_store::User, established: Established) -> Self {
        Self {
            established,
            key_id: user.id,
            tenant_id: user.tenant_id,
            tenant_name: user.tenant_name,
            role: user.role,
            clearance: user.clearance,
            user: Some(user.name),
        }
    }
}
