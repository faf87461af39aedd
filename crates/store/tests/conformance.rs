//! The behaviour every `Store` implementation must have: the same `check_*` functions run against
//! SQLite and against PostgreSQL (a real server from the machine's packages, in a cluster made
//! for the test with `initdb` and removed after it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use enclave_store::{
    NewKey, PgStore, Role, SqliteStore, Store, StoreError, Tenant, keys, new_id, now,
};

#[path = "conformance/identity.rs"]
mod identity;
#[path = "conformance/jobs.rs"]
mod jobs;
#[path = "conformance/records.rs"]
mod records;

use identity::*;
use jobs::*;
use records::*;

async fn tenant(store: &dyn Store, name: &str) -> Tenant {
    let t = Tenant {
        id: new_id(),
        name: name.into(),
        created_at: now(),
    };
    store.create_tenant(&t).await.unwrap();
    t
}

async fn key(store: &dyn Store, tenant: &Tenant, role: Role) -> keys::MintedKey {
    let minted = keys::mint();
    store
        .create_key(&NewKey {
            id: minted.id.clone(),
            tenant_id: tenant.id.clone(),
            name: None,
            role,
            clearance: "SECRET//NOFORN".into(),
            secret_hash: minted.hash,
            created_at: now(),
            user_id: None,
        })
        .await
        .unwrap();
    minted
}

#[tokio::test]
async fn sqlite_conformance_admin_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("e.db")).await.unwrap();
    check_admin_events(&store).await;
}

#[tokio::test]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("enclave.db"))
        .await
        .unwrap();
    check_tenants(&store).await;
    check_keys_are_hashed_scoped_and_revocable(&store).await;
    check_users_are_unique_scoped_and_disableable(&store).await;
    check_sessions_end_and_follow_their_user(&store).await;
}

#[tokio::test]
async fn sqlite_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enclave.db");
    let (t, k) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let t = tenant(&store, "persistent").await;
        let k = key(&store, &t, Role::User).await;
        (t, k)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.tenant_by_name("persistent").await.unwrap(), Some(t));
    assert!(store.key_for_auth(&k.id).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_conformance_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("u.db")).await.unwrap();
    check_usage(&store).await;
}

#[tokio::test]
async fn sqlite_conformance_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).await.unwrap();
    check_conversations(&store).await;
}

#[tokio::test]
async fn sqlite_conformance_responses() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
    check_responses(&store).await;
}

#[tokio::test]
async fn sqlite_conformance_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("f.db")).await.unwrap();
    check_files(&store).await;
}

#[tokio::test]
async fn sqlite_conformance_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("ft.db")).await.unwrap();
    check_fine_tuning(&store).await;
}

#[tokio::test]
async fn sqlite_conformance_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("jobs.db"))
        .await
        .unwrap();
    check_jobs(&store).await;
}

/// Every check against PostgreSQL, each group in a database of its own, and state surviving a
/// new connection pool (a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let open = |name: &'static str| {
        let url = cluster.create_database(name).unwrap();
        async move { PgStore::open(&url, 8).await.unwrap() }
    };
    let store = open("core").await;
    assert!(store.server_version().await.unwrap().starts_with("15"));
    check_tenants(&store).await;
    check_keys_are_hashed_scoped_and_revocable(&store).await;
    check_users_are_unique_scoped_and_disableable(&store).await;
    check_sessions_end_and_follow_their_user(&store).await;
    check_admin_events(&open("admin").await).await;
    check_usage(&open("usage").await).await;
    check_conversations(&open("conversations").await).await;
    check_responses(&open("responses").await).await;
    check_files(&open("files").await).await;
    check_fine_tuning(&open("fine_tuning").await).await;
    check_jobs(&open("jobs").await).await;

    // A new pool (a restarted server) sees what the first wrote; migrations run once.
    let url = cluster.create_database("reopen").unwrap();
    let (t, k) = {
        let store = PgStore::open(&url, 2).await.unwrap();
        let t = tenant(&store, "persistent").await;
        let k = key(&store, &t, Role::User).await;
        (t, k)
    };
    let store = PgStore::open(&url, 2).await.unwrap();
    assert_eq!(store.tenant_by_name("persistent").await.unwrap(), Some(t));
    assert!(store.key_for_auth(&k.id).await.unwrap().is_some());
}
