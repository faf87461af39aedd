//! Signed tokens (JWTs from the agency's identity provider) → the [`Principal`] they establish.
//!
//! Checking a token's signature, issuer, audience and times, and reading its claims as the
//! issuer's configuration says, is a [`TokenVerifier`]'s job (the binary wires one in from
//! `enclave-identity`, which holds the HTTP client that fetches keys). What the claims are
//! allowed to grant is decided here: the tenant must exist, the clearance must be a label of the
//! scheme in force (a claim that does not parse is a refusal, never a default) and is clamped to
//! the tenant's ceiling, and the person is a user — created at first sign-in, given the claims'
//! role and clearance at each later one, and refused once disabled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enclave_store::{NewUser, Role};
use sha2::Digest as _;

use crate::Service;
use crate::error::Error;
use crate::principal::{Established, Principal};

/// What a verified token says, read through its issuer's claim map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub issuer: String,
    /// The person or program: the user's name.
    pub user: String,
    pub tenant: String,
    pub role: Role,
    /// The clearance claim as written (parsed here, against the scheme in force).
    pub clearance: String,
    /// Compartments the claims add to the clearance (each checked against the scheme here).
    pub compartments: Vec<String>,
    /// The person's citizenship(s), trigraphs: their clearance's releasability. `None`: the
    /// scheme's owner nation.
    pub citizenship: Option<Vec<String>>,
    /// Unix seconds; the principal is not kept past it.
    pub expires_at: i64,
    /// How long these claims may be trusted before the token's signature is checked again (the
    /// issuer's key lifetime: a key it drops must stop verifying within it).
    pub verify_again_after: Duration,
}

/// Why a token was refused, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub String);

/// Checks a token and reads its claims.
#[async_trait]
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    async fn verify(&self, token: &str) -> Result<TokenClaims, TokenRefused>;

    /// The user `token` names, read **without verifying it**: only so the user's row can be
    /// fetched while the signature is checked. Nothing read here is trusted; the row is used
    /// only if the verified claims name the same user.
    fn user_hint(&self, _token: &str) -> Option<String> {
        None
    }
}

/// How long a token's principal is kept without asking the store again: as for keys, the bound
/// on how long a disabled user's token keeps working.
const PRINCIPAL_TTL: Duration = Duration::from_secs(1);
/// Verified claims are kept at most this long whatever the issuer says (and never past the
/// token's `exp`): a signature costs far more than the store's lookups.
const CLAIMS_TTL: Duration = Duration::from_secs(300);
const TOKEN_CACHE_MAX: usize = 10_000;

/// Tokens seen lately, by their SHA-256: the verified claims, and the principal they made.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: Mutex<HashMap<[u8; 32], Seen>>,
}

/// What the cache still vouches for.
enum Cached {
    Principal(Principal),
    Claims(TokenClaims),
}

#[derive(Debug, Clone)]
struct Seen {
    verified_at: Instant,
    claims: TokenClaims,
    principal: Option<(Instant, Principal)>,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Seen>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal made within [`PRINCIPAL_TTL`], else the claims verified within their
    /// `verify_again_after` (at most [`CLAIMS_TTL`]) and not yet expired.
    fn get(&self, digest: &[u8; 32]) -> Option<Cached> {
        let map = self.lock();
        let seen = map.get(digest)?;
        if let Some((at, p)) = &seen.principal
            && at.elapsed() < PRINCIPAL_TTL
        {
            return Some(Cached::Principal(p.clone()));
        }
        let ttl = seen.claims.verify_again_after.min(CLAIMS_TTL);
        (seen.verified_at.elapsed() < ttl && seen.claims.expires_at > enclave_store::now())
            .then(|| Cached::Claims(seen.claims.clone()))
    }

    fn put(
        &self,
        digest: [u8; 32],
        verified_at: Instant,
        claims: TokenClaims,
        principal: Option<Principal>,
    ) {
        let mut map = self.lock();
        if map.len() >= TOKEN_CACHE_MAX {
            map.retain(|_, s| s.verified_at.elapsed() < CLAIMS_TTL);
            if map.len() >= TOKEN_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            digest,
            Seen {
                verified_at,
                claims,
                principal: principal.map(|p| (Instant::now(), p)),
            },
        );
    }
}

/// The principal a signed token establishes.
pub async fn authenticate_token(state: &Service, token: &str) -> Result<Principal, Error> {
    let Some(verifier) = &state.tokens else {
        return Err(Error::InvalidKey);
    };
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let (verified_at, claims, prefetched) = match state.token_cache.get(&digest) {
        Some(Cached::Principal(principal)) => return Ok(principal),
        // Verified lately: only the store is asked again (a disabled user stops here).
        Some(Cached::Claims(claims)) => (None, Ok(claims), None),
        None => {
            let started = Instant::now();
            // The user's row is read while the signature is checked: a store query and a
            // signature cost about the same, and one after the other they would cost twice. The
            // name read is only what the token claims; the row is used only if the verified
            // claims name the same user.
            let prefetch = verifier.user_hint(token).map(|name| {
                let store = std::sync::Arc::clone(&state.store);
                tokio::spawn(async move { store.user_by_name(&name).await.ok().flatten() })
            });
            let verified = verifier.verify(token).await;
            let prefetched = match prefetch {
                Some(task) => task.await.ok().flatten(),
                None => None,
            };
            (
                Some(started),
                verified.map_err(|e| Error::InvalidToken(e.0)),
                prefetched,
            )
        }
    };
    let signed_in = match &claims {
        Ok(claims) => sign_in(state, claims, Established::Token, prefetched).await,
        Err(e) => Err(e.clone()),
    };
    if let Ok(claims) = claims {
        let verified_at = match verified_at {
            Some(at) => at,
            None => state
                .token_cache
                .lock()
                .get(&digest)
                .map_or_else(Instant::now, |s| s.verified_at),
        };
        state.token_cache.put(
            digest,
            verified_at,
            claims,
            signed_in.as_ref().ok().cloned(),
        );
    }
    // Counted when a token is checked, not on each call its principal serves from the cache.
    let (outcome, reason) = match &signed_in {
        Ok(_) => ("accepted", "verified"),
        Err(e) => ("refused", e.code()),
    };
    metrics::counter!(
        "enclave_sign_ins_total",
        "source" => "token",
        "outcome" => outcome,
        "reason" => reason
    )
    .increment(1);
    signed_in
}

/// The claims made a user of their tenant: created at first sign-in, updated when the claims
/// changed, refused when disabled or claimed by another tenant. `how` is the source: a bearer
/// token, or a browser's sign-in.
/// `known` is the user's row if it was read already (for the name the claims carry).
pub(crate) async fn sign_in(
    state: &Service,
    claims: &TokenClaims,
    how: Established,
    known: Option<enclave_store::User>,
) -> Result<Principal, Error> {
    let by = match how {
        Established::Session => "browser sign-in",
        _ => "token",
    };
    let policy = &state.policy;
    let scheme = &policy.scheme;
    let mut claimed = scheme.parse(&claims.clearance).map_err(|e| {
        Error::InvalidToken(format!(
            "the clearance claim `{}` is not a label of scheme {}: {e}",
            claims.clearance,
            scheme.name()
        ))
    })?;
    // Each compartment is read by the scheme's own parser, as it would be in a banner.
    for name in &claims.compartments {
        let level = scheme.level_name(claimed.level, false);
        let with = scheme
            .parse(&format!("{level}//{name}"))
            .ok()
            .filter(|l| {
                l.releasability == enclave_label::Releasability::Unrestricted
                    && !l.compartments.is_empty()
            })
            .ok_or_else(|| {
                Error::InvalidToken(format!(
                    "the compartment claim `{name}` is not a compartment of scheme {} at {level}",
                    scheme.name()
                ))
            })?;
        claimed.compartments.extend(with.compartments);
    }
    if let Some(nations) = &claims.citizenship {
        claimed.releasability = enclave_label::Releasability::To(nations.iter().cloned().collect());
    }
    let clearance = scheme.banner(
        &scheme
            .clearance(claimed)
            .meet(&policy.token_ceiling(&claims.tenant)),
    );
    let store_error = |e: enclave_store::StoreError| {
        tracing::error!(error = %e, "user sign-in failed in the store");
        Error::Internal
    };
    let found = match known.filter(|u| u.name == claims.user) {
        Some(user) => Some(user),
        None => state
            .store
            .user_by_name(&claims.user)
            .await
            .map_err(store_error)?,
    };
    let (user, tenant_id, tenant_name) = match found {
        Some(user) => {
            if user.disabled_at.is_some() {
                return Err(Error::DisabledUser(user.name));
            }
            // The user's row carries its tenant: one query on every sign-in but the first.
            if user.tenant_name != claims.tenant {
                return Err(Error::InvalidToken(format!(
                    "the user `{}` belongs to tenant `{}`, not `{}`",
                    user.name, user.tenant_name, claims.tenant
                )));
            }
            if user.role != claims.role || user.clearance != clearance {
                state
                    .store
                    .update_user(&user.name, claims.role, &clearance)
                    .await
                    .map_err(store_error)?;
                crate::admin::record_event(
                    state.store.as_ref(),
                    "users.update",
                    Some(&user.tenant_name),
                    Some(&user.id),
                    format!(
                        "{by} from {} changed `{}` to {} cleared to {clearance}",
                        claims.issuer, user.name, claims.role
                    ),
                )
                .await
                .map_err(|_| Error::Internal)?;
            }
            (user.id, user.tenant_id, user.tenant_name)
        }
        None => {
            let tenant = state
                .store
                .tenant_by_name(&claims.tenant)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    Error::InvalidToken(format!(
                        "the token names tenant `{}`, which does not exist",
                        claims.tenant
                    ))
                })?;
            let id = enclave_store::new_id();
            let created = state
                .store
                .create_user(&NewUser {
                    id: id.clone(),
                    tenant_id: tenant.id.clone(),
                    name: claims.user.clone(),
                    role: claims.role,
                    clearance: clearance.clone(),
                    created_at: enclave_store::now(),
                })
                .await;
            if let Err(enclave_store::StoreError::Conflict(_)) = created {
                // A concurrent first sign-in of the same person made the user a moment ago.
                return Err(Error::InvalidToken(
                    "the user is being created by another sign-in; retry".into(),
                ));
            }
            created.map_err(store_error)?;
            crate::admin::record_event(
                state.store.as_ref(),
                "users.create",
                Some(&tenant.name),
                Some(&id),
                format!(
                    "first {by} from {}: `{}`, {} cleared to {clearance}",
                    claims.issuer, claims.user, claims.role
                ),
            )
            .await
            .map_err(|_| Error::Internal)?;
            (id, tenant.id, tenant.name)
        }
    };
    Ok(Principal {
        established: how,
        key_id: user,
        tenant_id,
        tenant_name,
        role: claims.role,
        clearance,
        user: Some(claims.user.clone()),
    })
}
