//! Administrative operations — tenants, keys, revocation — and how they reach the audit log.
//! The CLI calls them today; the console and other front ends call the same functions.
//!
//! An administrative action is queued in the store as it happens (the CLI may run while the
//! server owns the log) and moved into the audit log by [`ingest_events`], oldest first, each
//! marked only once its record is durable: a crash between the two logs it again, never loses it.

use enclave_audit::{AuditLog, LogError, Record};
use enclave_label::Scheme;
use enclave_store::{
    AdminEvent, NewKey, NewUser, Role, Store, StoreError, Tenant, User, keys, new_id, now,
};

/// Why an administrative operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong; the sentence says how.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] LogError),
}

/// A key just minted: its id, and its secret, shown once and never stored.
#[derive(Debug)]
pub struct MintedKey {
    pub id: String,
    pub secret: String,
    pub tenant: Tenant,
    pub role: Role,
    /// The clearance it was given, as a banner.
    pub clearance: String,
    /// The user it belongs to, if any.
    pub user: Option<String>,
}

/// Creates a tenant named `name` (1 to 64 letters, digits, `-`, `_`, `.`).
pub async fn create_tenant(store: &dyn Store, name: &str) -> Result<Tenant, AdminError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(AdminError::Invalid(format!(
            "a tenant name is 1 to 64 characters of letters, digits, `-`, `_` and `.`; got `{name}`"
        )));
    }
    let tenant = Tenant {
        id: new_id(),
        name: name.to_string(),
        created_at: now(),
    };
    store.create_tenant(&tenant).await?;
    record_event(
        store,
        "tenants.create",
        Some(name),
        None,
        format!("created tenant `{name}` ({})", tenant.id),
    )
    .await?;
    Ok(tenant)
}

/// `text` as a clearance banner of `scheme` (the scheme's lowest level when `None`).
fn clearance_banner(scheme: &Scheme, text: Option<&str>) -> Result<String, AdminError> {
    let label = match text {
        Some(text) => scheme.parse(text).map_err(|e| {
            AdminError::Invalid(format!(
                "`{text}` is not a label of scheme {}: {e}",
                scheme.name()
            ))
        })?,
        None => scheme.lowest(),
    };
    Ok(scheme.banner(&scheme.clearance(label)))
}

/// The tenant named `name`, or an error saying how to create it.
async fn tenant_named(store: &dyn Store, name: &str) -> Result<Tenant, AdminError> {
    store.tenant_by_name(name).await?.ok_or_else(|| {
        AdminError::Invalid(format!(
            "no tenant named `{name}`: create it with `enclave tenants create {name}`"
        ))
    })
}

/// Mints a key of tenant `tenant` with `role`, cleared to `clearance` (a label of `scheme`,
/// clamped to what the scheme allows as a clearance; the scheme's lowest when `None`).
pub async fn create_key(
    store: &dyn Store,
    scheme: &Scheme,
    tenant: &str,
    role: Role,
    name: Option<String>,
    clearance: Option<&str>,
) -> Result<MintedKey, AdminError> {
    let clearance = clearance_banner(scheme, clearance)?;
    let tenant = tenant_named(store, tenant).await?;
    mint_key(store, tenant, role, name, clearance, None).await
}

/// Mints a key belonging to the user `user`, of their tenant: with their role unless a lower one
/// is given, cleared to their clearance unless a lower one is given. It stops working when they
/// are disabled, and never reads above their clearance of the moment.
pub async fn create_user_key(
    store: &dyn Store,
    scheme: &Scheme,
    user: &str,
    role: Option<Role>,
    name: Option<String>,
    clearance: Option<&str>,
) -> Result<MintedKey, AdminError> {
    let owner = store
        .user_by_name(user)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(|| {
            AdminError::Invalid(format!(
                "no enabled user named `{user}`: `enclave users list` shows them"
            ))
        })?;
    let role = role.unwrap_or(owner.role);
    if role != owner.role && role != Role::User {
        return Err(AdminError::Invalid(format!(
            "`{user}` is {}: their key may be {} or user, not {role}",
            owner.role, owner.role
        )));
    }
    let clearance = match clearance {
        None => owner.clearance.clone(),
        Some(text) => {
            let banner = clearance_banner(scheme, Some(text))?;
            let (asked, held) = (scheme.parse(&banner), scheme.parse(&owner.clearance));
            if !matches!((&asked, &held), (Ok(a), Ok(h)) if h.dominates(a)) {
                return Err(AdminError::Invalid(format!(
                    "`{user}` is cleared to {}; their key cannot be cleared to {banner}",
                    owner.clearance
                )));
            }
            banner
        }
    };
    let tenant = tenant_named(store, &owner.tenant_name).await?;
    mint_key(store, tenant, role, name, clearance, Some(&owner)).await
}

async fn mint_key(
    store: &dyn Store,
    tenant: Tenant,
    role: Role,
    name: Option<String>,
    clearance: String,
    owner: Option<&User>,
) -> Result<MintedKey, AdminError> {
    let minted = keys::mint();
    store
        .create_key(&NewKey {
            id: minted.id.clone(),
            tenant_id: tenant.id.clone(),
            name,
            role,
            clearance: clearance.clone(),
            secret_hash: minted.hash,
            created_at: now(),
            user_id: owner.map(|u| u.id.clone()),
        })
        .await?;
    let whose = owner.map_or(String::new(), |u| format!(" belonging to `{}`", u.name));
    record_event(
        store,
        "keys.create",
        Some(&tenant.name),
        Some(&minted.id),
        format!("created a {role} key{whose} cleared to {clearance}"),
    )
    .await?;
    Ok(MintedKey {
        id: minted.id,
        secret: minted.secret,
        tenant,
        role,
        clearance,
        user: owner.map(|u| u.name.clone()),
    })
}

/// Registers a person who signs in by certificate: `name` is the identity their certificate maps
/// to (UPN, e-mail address or subject part), given a role and a clearance in `tenant`.
pub async fn create_user(
    store: &dyn Store,
    scheme: &Scheme,
    tenant: &str,
    name: &str,
    role: Role,
    clearance: Option<&str>,
) -> Result<User, AdminError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AdminError::Invalid("a user needs a name".into()));
    }
    let clearance = clearance_banner(scheme, clearance)?;
    let tenant = tenant_named(store, tenant).await?;
    let user = NewUser {
        id: new_id(),
        tenant_id: tenant.id.clone(),
        name: name.to_string(),
        role,
        clearance: clearance.clone(),
        created_at: now(),
    };
    store.create_user(&user).await?;
    record_event(
        store,
        "users.create",
        Some(&tenant.name),
        Some(&user.id),
        format!("registered {role} user `{name}` cleared to {clearance}"),
    )
    .await?;
    store
        .user_by_name(name)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("user `{name}` vanished")))
}

/// Disables the user `name`: their certificate stops working at their next request.
pub async fn disable_user(store: &dyn Store, name: &str) -> Result<(), AdminError> {
    let user = store
        .user_by_name(name)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(|| {
            AdminError::Invalid(format!(
                "no enabled user named `{name}`: `enclave users list` shows them"
            ))
        })?;
    store.disable_user(name, now()).await?;
    let ended = store
        .end_user_sessions(&user.id, now(), "user disabled")
        .await?;
    record_event(
        store,
        "users.disable",
        Some(&user.tenant_name),
        Some(&user.id),
        format!("disabled user `{name}`; {ended} live session(s) ended"),
    )
    .await
}

/// Revokes the key `id` (with or without its `ek_` prefix); returns the bare id.
pub async fn revoke_key(store: &dyn Store, id: &str) -> Result<String, AdminError> {
    let id = id.strip_prefix("ek_").unwrap_or(id).to_string();
    if !store.revoke_key(&id, now()).await? {
        return Err(AdminError::Invalid(format!(
            "no active key with id `{id}`: `enclave keys list` shows the keys"
        )));
    }
    record_event(
        store,
        "keys.revoke",
        None,
        Some(&id),
        format!("revoked key {id}"),
    )
    .await?;
    Ok(id)
}

/// Queues an administrative action for the audit log (the server appends it, running or at its
/// next start).
pub async fn record_event(
    store: &dyn Store,
    operation: &str,
    tenant: Option<&str>,
    key_id: Option<&str>,
    detail: String,
) -> Result<(), AdminError> {
    store
        .record_admin_event(&AdminEvent {
            id: 0,
            at: now(),
            operation: operation.to_string(),
            tenant: tenant.map(str::to_string),
            key_id: key_id.map(str::to_string),
            detail,
        })
        .await?;
    Ok(())
}

/// Moves queued administrative actions into the audit log, oldest first; each is marked only
/// once its record is durable.
pub async fn ingest_events(store: &dyn Store, audit: &AuditLog) -> Result<(), AdminError> {
    for e in store.pending_admin_events(1000).await? {
        let record = Record {
            v: 2,
            time: rfc3339(e.at),
            node: node(),
            kind: "admin".into(),
            operation: e.operation.clone(),
            tenant: e.tenant.clone(),
            key_id: e.key_id.clone(),
            detail: Some(format!("admin event {}: {}", e.id, e.detail)),
            ..Default::default()
        };
        audit.append(&record).await?;
        store.mark_admin_event_logged(e.id, now()).await?;
    }
    Ok(())
}

/// An administrative record made by this process now.
pub fn record(operation: &str, detail: String) -> Record {
    Record {
        v: 2,
        time: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        node: node(),
        kind: "admin".into(),
        operation: operation.to_string(),
        detail: Some(detail),
        ..Default::default()
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// This node's name in records: `HOSTNAME`, else `/etc/hostname`, else `enclave`. Looked up
/// once per process.
pub fn node() -> String {
    static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NODE.get_or_init(lookup_node).clone()
}

fn lookup_node() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "enclave".to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn keys_are_minted_revoked_and_every_step_reaches_the_audit_log() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store: Arc<dyn Store> = Arc::new(
            enclave_store::SqliteStore::open(&dir.path().join("db"))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let log = AuditLog::open(&dir.path().join("audit"), "test/audit")
            .unwrap_or_else(|e| panic!("{e}"));
        let scheme = Scheme::builtin("US").unwrap_or_else(|| panic!("US scheme"));
        assert!(matches!(
            create_tenant(store.as_ref(), "no spaces please").await,
            Err(AdminError::Invalid(_))
        ));
        create_tenant(store.as_ref(), "agency")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = create_key(
            store.as_ref(),
            &scheme,
            "agency",
            Role::User,
            None,
            Some("S//NF"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.clearance, "SECRET//NOFORN");
        assert!(key.secret.starts_with("ek_"));
        let err = create_key(store.as_ref(), &scheme, "nobody", Role::User, None, None)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().contains("no tenant named `nobody`"),
            "{err}"
        );
        assert_eq!(
            revoke_key(store.as_ref(), &format!("ek_{}", key.id))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            key.id
        );
        assert!(
            revoke_key(store.as_ref(), &key.id).await.is_err(),
            "revoked once"
        );

        ingest_events(store.as_ref(), &log)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let operations: Vec<String> = log
            .records(0, log.size())
            .into_iter()
            .filter_map(|(_, b)| serde_json::from_slice::<Record>(&b).ok())
            .map(|r| r.operation)
            .collect();
        assert_eq!(operations, ["tenants.create", "keys.create", "keys.revoke"]);
        // Moved once: a second pass finds nothing queued.
        ingest_events(store.as_ref(), &log)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.size(), 3);
    }
}
