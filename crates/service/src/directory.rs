//! Administration over the API, as the console's administration page calls it: a tenant's users,
//! keys and quotas, minting a key (its secret shown once) and revoking one, and the deployments
//! and models serving the platform.
//!
//! Cedar decides who may (`tenant.read`: admins their own tenant, auditors any; `keys.manage`:
//! admins their own tenant). Two rules are not Cedar's to relax, because they are about labels
//! and roles rather than tenants: a key is never minted above its minter's own clearance, and
//! the API mints only `user` and `admin` keys (auditor keys read every tenant's records and are
//! the operator's, from the command line).

use enclave_label::Label;
use enclave_policy::{ALL_TENANTS, Action};
use enclave_store::{ApiKey, Role, User};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Service;
use crate::admin::{self, AdminError};
use crate::error::Error;
use crate::monitor;
use crate::principal::Principal;

/// A tenant as an administrator sees it: its label policy and its quotas.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// The label of a request that declares none.
    pub default_label: String,
    /// The highest clearance a signed token may give its people.
    pub ceiling: String,
    /// Limits on the tenant, on each key, and per model.
    #[schema(value_type = Object)]
    pub quota: Value,
}

/// A key as an administrator sees it: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: Option<String>,
    pub tenant: String,
    pub role: String,
    pub clearance: String,
    /// The user it belongs to.
    pub user: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A user as an administrator sees them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub role: String,
    pub clearance: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// What a new key is asked for.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    pub name: Option<String>,
    /// `user` (default) or `admin`.
    pub role: Option<String>,
    /// A label at most the minter's clearance; the lowest when unset (a user's own when `user`
    /// is given).
    pub clearance: Option<String>,
    /// A user of the tenant the key belongs to.
    pub user: Option<String>,
}

/// A key just minted: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MintedKeyInfo {
    #[serde(flatten)]
    pub key: KeyInfo,
    pub secret: String,
}

/// A deployment as the administration page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeploymentInfo {
    pub name: String,
    pub model: String,
    pub backend: String,
    pub accreditation: String,
    pub jurisdiction: String,
    /// `closed` (serving), `open` (refusing after failures), or `embedded` (no breaker).
    pub breaker: String,
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "administration store failure");
    Error::Internal
}

fn admin_error(e: AdminError) -> Error {
    match e {
        AdminError::Invalid(message) => Error::invalid("body", message),
        AdminError::Store(e) => store_error(e),
        AdminError::Audit(e) => {
            tracing::error!(error = %e, "administration audit failure");
            Error::AuditUnavailable
        }
    }
}

/// The tenant a read is about: `tenant`, else the caller's own, once Cedar allows it.
fn scope<'a>(
    state: &Service,
    principal: &'a Principal,
    tenant: Option<&'a str>,
    action: Action,
) -> Result<&'a str, Error> {
    let scope = tenant.unwrap_or(&principal.tenant_name);
    monitor::authorize(&state.policy, principal, action, scope)?;
    Ok(scope)
}

async fn tenant_id(state: &Service, name: &str) -> Result<Option<String>, Error> {
    if name == ALL_TENANTS {
        return Ok(None);
    }
    let tenant = state
        .store
        .tenant_by_name(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| Error::NotFound(format!("there is no tenant `{name}`")))?;
    Ok(Some(tenant.id))
}

/// The tenants the caller may read.
pub async fn tenants(state: &Service, principal: &Principal) -> Result<Vec<TenantInfo>, Error> {
    let scheme = &state.policy.scheme;
    let all = state.store.list_tenants().await.map_err(store_error)?;
    let out: Vec<TenantInfo> = all
        .into_iter()
        .filter(|t| {
            monitor::authorize(&state.policy, principal, Action::ReadTenant, &t.name).is_ok()
        })
        .map(|t| {
            let policy = state.policy.tenant(&t.name);
            let quota = state.policy.quota(&t.name);
            TenantInfo {
                default_label: scheme.banner(&policy.default_label),
                ceiling: scheme.banner(&state.policy.token_ceiling(&t.name)),
                quota: json!({
                    "tenant": quota.tenant,
                    "key": quota.key,
                    "models": quota.models,
                }),
                id: t.id,
                name: t.name,
                created_at: t.created_at,
            }
        })
        .collect();
    if out.is_empty() {
        // Not even one's own: say so as Cedar would.
        monitor::authorize(
            &state.policy,
            principal,
            Action::ReadTenant,
            &principal.tenant_name,
        )?;
    }
    Ok(out)
}

fn user_info(u: User) -> UserInfo {
    UserInfo {
        id: u.id,
        name: u.name,
        tenant: u.tenant_name,
        role: u.role.as_str().to_string(),
        clearance: u.clearance,
        created_at: u.created_at,
        disabled_at: u.disabled_at,
    }
}

fn key_info(k: ApiKey) -> KeyInfo {
    KeyInfo {
        id: k.id,
        name: k.name,
        tenant: k.tenant_name,
        role: k.role.as_str().to_string(),
        clearance: k.clearance,
        user: k.owner.map(|o| o.name),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

/// The users of `tenant` (the caller's own when `None`; `*` for all, auditors).
pub async fn users(
    state: &Service,
    principal: &Principal,
    tenant: Option<&str>,
) -> Result<Vec<UserInfo>, Error> {
    let scope = scope(state, principal, tenant, Action::ReadTenant)?;
    let id = tenant_id(state, scope).await?;
    let users = state
        .store
        .list_users(id.as_deref())
        .await
        .map_err(store_error)?;
    Ok(users.into_iter().map(user_info).collect())
}

/// The keys of `tenant` (the caller's own when `None`; `*` for all, auditors): never a secret.
pub async fn keys(
    state: &Service,
    principal: &Principal,
    tenant: Option<&str>,
) -> Result<Vec<KeyInfo>, Error> {
    let scope = scope(state, principal, tenant, Action::ReadTenant)?;
    let id = tenant_id(state, scope).await?;
    let keys = state
        .store
        .list_keys(id.as_deref())
        .await
        .map_err(store_error)?;
    Ok(keys.into_iter().map(key_info).collect())
}

/// Mints a key of the caller's tenant.
pub async fn create_key(
    state: &Service,
    principal: &Principal,
    req: &NewKeyRequest,
) -> Result<MintedKeyInfo, Error> {
    monitor::authorize(
        &state.policy,
        principal,
        Action::ManageKeys,
        &principal.tenant_name,
    )?;
    let scheme = &state.policy.scheme;
    let role = match req.role.as_deref().unwrap_or("user") {
        "user" => Role::User,
        "admin" => Role::Admin,
        other => {
            return Err(Error::invalid(
                "role",
                format!(
                    "`role` must be `user` or `admin`, not `{other}`: auditor keys are created by the operator (`enclave keys create --role auditor`)"
                ),
            ));
        }
    };
    let mine = monitor::clearance(&state.policy, principal)?;
    let wanted: Option<Label> = match &req.clearance {
        Some(text) => Some(scheme.parse(text).map_err(|e| Error::InvalidLabel {
            param: "clearance".into(),
            message: format!("`{text}` is not a label of scheme {}: {e}", scheme.name()),
        })?),
        None => None,
    };
    if let Some(w) = &wanted
        && !mine.dominates(w)
    {
        return Err(Error::LabelExceedsClearance(format!(
            "a key cleared to {} would read above your own clearance, {}",
            scheme.banner(w),
            scheme.banner(&mine)
        )));
    }
    let name = req.name.clone().filter(|n| !n.trim().is_empty());
    let clearance = wanted.as_ref().map(|w| scheme.banner(w));
    let minted = match &req.user {
        Some(user) => {
            let owner = state
                .store
                .user_by_name(user)
                .await
                .map_err(store_error)?
                .filter(|u| u.tenant_id == principal.tenant_id)
                .ok_or_else(|| {
                    Error::NotFound(format!("there is no user `{user}` in your tenant"))
                })?;
            // Without a clearance asked for, the key takes the user's, capped at the minter's.
            let owner_clearance = scheme
                .parse(&owner.clearance)
                .map_err(|_| Error::Internal)?;
            let capped = clearance.unwrap_or_else(|| scheme.banner(&owner_clearance.meet(&mine)));
            admin::create_user_key(
                state.store.as_ref(),
                scheme,
                &owner.name,
                Some(role),
                name,
                Some(&capped),
            )
            .await
        }
        None => {
            admin::create_key(
                state.store.as_ref(),
                scheme,
                &principal.tenant_name,
                role,
                name,
                clearance.as_deref(),
            )
            .await
        }
    }
    .map_err(admin_error)?;
    let listed = state
        .store
        .key_for_auth(&minted.id)
        .await
        .map_err(store_error)?
        .map(|(k, _)| key_info(k))
        .ok_or(Error::Internal)?;
    Ok(MintedKeyInfo {
        key: listed,
        secret: minted.secret,
    })
}

/// Revokes a key of the caller's tenant.
pub async fn revoke_key(state: &Service, principal: &Principal, id: &str) -> Result<(), Error> {
    monitor::authorize(
        &state.policy,
        principal,
        Action::ManageKeys,
        &principal.tenant_name,
    )?;
    let id = id.strip_prefix("ek_").unwrap_or(id);
    let key = state
        .store
        .key_for_auth(id)
        .await
        .map_err(store_error)?
        .map(|(k, _)| k)
        .filter(|k| k.tenant_id == principal.tenant_id && k.revoked_at.is_none())
        .ok_or_else(|| Error::NotFound(format!("there is no active key `{id}` in your tenant")))?;
    admin::revoke_key(state.store.as_ref(), &key.id)
        .await
        .map_err(admin_error)?;
    Ok(())
}

/// The deployments serving the platform, with each one's breaker.
pub fn deployments(state: &Service, principal: &Principal) -> Result<Vec<DeploymentInfo>, Error> {
    monitor::authorize(
        &state.policy,
        principal,
        Action::ReadTenant,
        &principal.tenant_name,
    )?;
    Ok(state
        .policy
        .deployments
        .iter()
        .map(|d| DeploymentInfo {
            name: d.placement.name.clone(),
            model: d.model.clone(),
            backend: match &d.backend {
                crate::policy::Backend::Embedded => "embedded".to_string(),
                crate::policy::Backend::Upstream(spec) => {
                    format!("{:?}", spec.protocol).to_lowercase()
                }
            },
            accreditation: d.accreditation.clone(),
            jurisdiction: d.placement.jurisdiction.clone(),
            breaker: state.registry.breaker_word(d.slot).to_string(),
        })
        .collect())
}

/// The models served here, with the hashes their files were verified against.
pub fn models(state: &Service, principal: &Principal) -> Result<Vec<crate::PinnedModel>, Error> {
    monitor::authorize(
        &state.policy,
        principal,
        Action::ReadTenant,
        &principal.tenant_name,
    )?;
    Ok(state.models.pinned.get().cloned().unwrap_or_default())
}
