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

async fn check_tenants(store: &dyn Store) {
    let a = tenant(store, "agency-a").await;
    assert_eq!(
        store.tenant_by_name("agency-a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.tenant_by_name("nobody").await.unwrap(), None);
    let dup = Tenant {
        id: new_id(),
        name: "agency-a".into(),
        created_at: now(),
    };
    assert!(matches!(
        store.create_tenant(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    tenant(store, "agency-b").await;
    let names: Vec<_> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["agency-a", "agency-b"]);
}

async fn check_keys_are_hashed_scoped_and_revocable(store: &dyn Store) {
    let a = tenant(store, "keys-a").await;
    let b = tenant(store, "keys-b").await;
    let ka = key(store, &a, Role::Admin).await;
    let kb = key(store, &b, Role::User).await;

    let (found, hash) = store.key_for_auth(&ka.id).await.unwrap().unwrap();
    assert_eq!(found.tenant_name, "keys-a");
    assert_eq!(found.role, Role::Admin);
    assert!(keys::matches(&ka.secret, &hash));
    assert!(!keys::matches(&kb.secret, &hash));
    assert_ne!(
        hash,
        ka.secret.as_bytes(),
        "the secret itself is never stored"
    );

    let only_a = store.list_keys(Some(&a.id)).await.unwrap();
    assert_eq!(
        only_a.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [ka.id.as_str()]
    );
    assert_eq!(store.list_keys(None).await.unwrap().len(), 2);

    assert!(store.revoke_key(&ka.id, now()).await.unwrap());
    assert!(
        !store.revoke_key(&ka.id, now()).await.unwrap(),
        "revoking twice reports nothing to do"
    );
    assert!(!store.revoke_key("000000000000", now()).await.unwrap());
    let (revoked, _) = store.key_for_auth(&ka.id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
}

#[tokio::test]
async fn sqlite_conformance_admin_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("e.db")).await.unwrap();
    check_admin_events(&store).await;
}

async fn check_admin_events(store: &dyn Store) {
    use enclave_store::AdminEvent;
    for (i, op) in ["tenants.create", "keys.create", "keys.revoke"]
        .iter()
        .enumerate()
    {
        store
            .record_admin_event(&AdminEvent {
                id: 0,
                at: 100 + i as i64,
                operation: op.to_string(),
                tenant: Some("agency".into()),
                key_id: None,
                detail: format!("event {i}"),
            })
            .await
            .unwrap();
    }
    let pending = store.pending_admin_events(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|e| e.operation.as_str())
            .collect::<Vec<_>>(),
        ["tenants.create", "keys.create", "keys.revoke"]
    );
    store
        .mark_admin_event_logged(pending[0].id, 200)
        .await
        .unwrap();
    let rest = store.pending_admin_events(10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].operation, "keys.create");
}

async fn check_users_are_unique_scoped_and_disableable(store: &dyn Store) {
    use enclave_store::NewUser;
    let a = tenant(store, "users-a").await;
    let b = tenant(store, "users-b").await;
    let user = |tenant: &Tenant, name: &str, role: Role| NewUser {
        id: new_id(),
        tenant_id: tenant.id.clone(),
        name: name.into(),
        role,
        clearance: "SECRET".into(),
        created_at: now(),
    };
    store
        .create_user(&user(&a, "alice@agency.example", Role::User))
        .await
        .unwrap();
    store
        .create_user(&user(&b, "bob@other.example", Role::Auditor))
        .await
        .unwrap();
    // One identity is one person: the same name in another tenant is refused.
    assert!(matches!(
        store
            .create_user(&user(&b, "alice@agency.example", Role::Admin))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let alice = store
        .user_by_name("alice@agency.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            alice.tenant_name.as_str(),
            alice.role,
            alice.clearance.as_str()
        ),
        ("users-a", Role::User, "SECRET")
    );
    assert_eq!(alice.disabled_at, None);
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    let only_b: Vec<String> = store
        .list_users(Some(&b.id))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(only_b, ["bob@other.example"]);
    assert_eq!(store.list_users(None).await.unwrap().len(), 2);

    assert!(
        store
            .disable_user("alice@agency.example", now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .disable_user("alice@agency.example", now())
            .await
            .unwrap(),
        "disabling twice reports nothing to do"
    );
    assert!(!store.disable_user("nobody", now()).await.unwrap());
    let disabled = store
        .user_by_name("alice@agency.example")
        .await
        .unwrap()
        .unwrap();
    assert!(disabled.disabled_at.is_some());

    // A key belonging to a user carries the user as they are now.
    let minted = keys::mint();
    store
        .create_key(&NewKey {
            id: minted.id.clone(),
            tenant_id: a.id.clone(),
            name: None,
            role: Role::User,
            clearance: "SECRET".into(),
            secret_hash: minted.hash,
            created_at: now(),
            user_id: Some(disabled.id.clone()),
        })
        .await
        .unwrap();
    let (key, _) = store.key_for_auth(&minted.id).await.unwrap().unwrap();
    let owner = key.owner.unwrap();
    assert_eq!(
        (
            owner.name.as_str(),
            owner.clearance.as_str(),
            owner.disabled_at
        ),
        ("alice@agency.example", "SECRET", disabled.disabled_at)
    );
}

async fn check_sessions_end_and_follow_their_user(store: &dyn Store) {
    use enclave_store::{NewSession, NewUser};
    let t = tenant(store, "sessions").await;
    let user = NewUser {
        id: new_id(),
        tenant_id: t.id.clone(),
        name: "carol@agency.example".into(),
        role: Role::User,
        clearance: "CONFIDENTIAL".into(),
        created_at: now(),
    };
    store.create_user(&user).await.unwrap();
    let session = |id: u8| NewSession {
        id: [id; 32],
        user_id: user.id.clone(),
        issuer: "https://idp.example".into(),
        created_at: 1_000,
        expires_at: 5_000,
    };
    for id in [1, 2, 3] {
        store.create_session(&session(id)).await.unwrap();
    }
    let found = store.session(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(
        (
            found.user.name.as_str(),
            found.user.tenant_name.as_str(),
            found.user.clearance.as_str(),
            found.last_seen,
            found.expires_at,
            found.ended_at
        ),
        (
            "carol@agency.example",
            "sessions",
            "CONFIDENTIAL",
            1_000,
            5_000,
            None
        )
    );
    assert_eq!(store.session(&[9; 32]).await.unwrap(), None);

    store.touch_session(&[1; 32], 1_200).await.unwrap();
    store.touch_session(&[1; 32], 1_100).await.unwrap();
    assert_eq!(
        store.session(&[1; 32]).await.unwrap().unwrap().last_seen,
        1_200,
        "last_seen never goes back"
    );

    assert!(store.end_session(&[1; 32], 1_300, "logout").await.unwrap());
    assert!(
        !store.end_session(&[1; 32], 1_400, "logout").await.unwrap(),
        "an ended session cannot end again"
    );
    let ended = store.session(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(
        (ended.ended_at, ended.end_reason.as_deref()),
        (Some(1_300), Some("logout"))
    );
    assert_eq!(
        store
            .end_user_sessions(&user.id, 1_500, "user disabled")
            .await
            .unwrap(),
        2,
        "the two live sessions end; the ended one is left as it was"
    );
    assert_eq!(
        store
            .session(&[2; 32])
            .await
            .unwrap()
            .unwrap()
            .end_reason
            .as_deref(),
        Some("user disabled")
    );
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

async fn check_usage(store: &dyn Store) {
    use enclave_store::UsageRow;
    let row = |tenant: &str, day: &str, p: u64| UsageRow {
        tenant: tenant.into(),
        key_id: "k1".into(),
        model: "m".into(),
        day: day.into(),
        requests: 1,
        prompt_tokens: p,
        completion_tokens: 2 * p,
    };
    store
        .add_usage(&[row("a", "2026-11-01", 10), row("b", "2026-11-01", 5)])
        .await
        .unwrap();
    // Deltas add up on the same key, model and day.
    store
        .add_usage(&[row("a", "2026-11-01", 1), row("a", "2026-11-02", 7)])
        .await
        .unwrap();
    let a = store
        .usage(Some("a"), "2026-11-01", "2026-11-30")
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[0].requests, a[0].prompt_tokens, a[0].completion_tokens),
        (2, 11, 22)
    );
    assert_eq!(a[1].day, "2026-11-02");
    // One tenant never sees another's rows; the day range is inclusive.
    assert!(a.iter().all(|r| r.tenant == "a"));
    let day = store.usage(None, "2026-11-01", "2026-11-01").await.unwrap();
    assert_eq!(day.len(), 2);
}

#[tokio::test]
async fn sqlite_conformance_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).await.unwrap();
    check_conversations(&store).await;
}

/// Conversations belong to an owner in a tenant, keep their messages in order, and their label
/// is only ever set over the value it was read at (a raise by another answer is never lost).
async fn check_conversations(store: &dyn Store) {
    use enclave_store::{Conversation, ConversationMessage};
    let t = tenant(store, "talk").await;
    let other = tenant(store, "elsewhere").await;
    let new = |id: &str, tenant: &Tenant, owner: &str, at: i64| Conversation {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        owner: owner.into(),
        title: if id == "c1" {
            String::new()
        } else {
            format!("about {id}")
        },
        label: "UNCLASSIFIED".into(),
        created_at: at,
        updated_at: at,
    };
    store
        .create_conversation(&new("c1", &t, "alice", 10))
        .await
        .unwrap();
    store
        .create_conversation(&new("c2", &t, "alice", 20))
        .await
        .unwrap();
    store
        .create_conversation(&new("c3", &t, "bob", 30))
        .await
        .unwrap();
    store
        .create_conversation(&new("c4", &other, "alice", 40))
        .await
        .unwrap();
    let ids = |list: Vec<Conversation>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_conversations(&t.id, "alice").await.unwrap()),
        ["c2", "c1"]
    );
    assert_eq!(
        ids(store.list_conversations(&other.id, "alice").await.unwrap()),
        ["c4"]
    );

    let message = |role: &str, text: &str, label: &str| ConversationMessage {
        seq: 0,
        role: role.into(),
        content: text.into(),
        label: label.into(),
        citations: None,
        created_at: 50,
    };
    let first = [
        message("user", "where?", "SECRET"),
        message("assistant", "north", "SECRET"),
    ];
    assert!(
        store
            .append_to_conversation("c1", "UNCLASSIFIED", "SECRET", "t", &first, 50)
            .await
            .unwrap()
    );
    // Computed from the label before the raise: refused, nothing appended.
    let stale = [message("user", "and?", "UNCLASSIFIED")];
    assert!(
        !store
            .append_to_conversation("c1", "UNCLASSIFIED", "UNCLASSIFIED", "t", &stale, 60)
            .await
            .unwrap()
    );
    assert!(
        store
            .append_to_conversation("c1", "SECRET", "SECRET", "t", &stale, 60)
            .await
            .unwrap()
    );
    let c1 = store.conversation("c1").await.unwrap().unwrap();
    assert_eq!((c1.label.as_str(), c1.updated_at), ("SECRET", 60));
    assert_eq!(
        c1.title, "t",
        "an untitled conversation takes the title given"
    );
    assert_eq!(
        store.conversation("c2").await.unwrap().unwrap().title,
        "about c2"
    );
    let kept = store.conversation_messages("c1").await.unwrap();
    let seen: Vec<(i64, &str, &str)> = kept
        .iter()
        .map(|m| (m.seq, m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (0, "user", "where?"),
            (1, "assistant", "north"),
            (2, "user", "and?")
        ]
    );
    // Most recently updated first.
    assert_eq!(
        ids(store.list_conversations(&t.id, "alice").await.unwrap()),
        ["c1", "c2"]
    );
    assert!(
        !store
            .append_to_conversation("nope", "UNCLASSIFIED", "SECRET", "t", &stale, 70)
            .await
            .unwrap()
    );

    assert!(store.delete_conversation("c1").await.unwrap());
    assert!(!store.delete_conversation("c1").await.unwrap());
    assert_eq!(store.conversation("c1").await.unwrap(), None);
    assert!(store.conversation_messages("c1").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_conformance_responses() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
    check_responses(&store).await;
}

/// Stored responses come back as stored, and go when deleted.
async fn check_responses(store: &dyn Store) {
    let t = tenant(store, "agents").await;
    let r = enclave_store::StoredResponse {
        id: "resp_1".into(),
        tenant_id: t.id.clone(),
        key_id: "k1".into(),
        label: "SECRET".into(),
        context: "[1,2]".into(),
        input: "[1]".into(),
        body: "{}".into(),
        created_at: 5,
    };
    store.create_response(&r).await.unwrap();
    assert_eq!(store.response("resp_1").await.unwrap(), Some(r.clone()));
    assert!(matches!(
        store.create_response(&r).await,
        Err(StoreError::Conflict(_) | StoreError::Database(_))
    ));
    assert!(store.delete_response("resp_1").await.unwrap());
    assert!(!store.delete_response("resp_1").await.unwrap());
    assert_eq!(store.response("resp_1").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_conformance_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("f.db")).await.unwrap();
    check_files(&store).await;
}

/// Files come back as stored, facts without the bytes, per tenant, newest first, and go.
async fn check_files(store: &dyn Store) {
    let t = tenant(store, "jobs").await;
    let other = tenant(store, "elsewhere").await;
    let file = |id: &str, tenant: &Tenant, at: i64| enclave_store::StoredFile {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        key_id: "k1".into(),
        purpose: "batch".into(),
        filename: "lines.jsonl".into(),
        bytes: 11,
        lines: 1,
        label: "SECRET".into(),
        sha256: "ab".repeat(32),
        created_at: at,
    };
    let a = file("file-a", &t, 5);
    let b = file("file-b", &t, 6);
    store.create_file(&a, b"{\"x\": 1}\n").await.unwrap();
    store.create_file(&b, b"{\"y\": 2}\n").await.unwrap();
    store
        .create_file(&file("file-c", &other, 7), b"{}")
        .await
        .unwrap();
    assert_eq!(store.file("file-a").await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.file_content("file-a").await.unwrap().as_deref(),
        Some(&b"{\"x\": 1}\n"[..])
    );
    let listed: Vec<String> = store
        .list_files(&t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, ["file-b", "file-a"]);
    assert!(store.create_file(&a, b"again").await.is_err());
    assert!(store.delete_file("file-a").await.unwrap());
    assert!(!store.delete_file("file-a").await.unwrap());
    assert_eq!(store.file("file-a").await.unwrap(), None);
    assert_eq!(store.file_content("file-a").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_conformance_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("ft.db")).await.unwrap();
    check_fine_tuning(&store).await;
}

/// Jobs per tenant, newest first, updated in place, found by status across tenants; events
/// numbered from 1 per job in order; checkpoints by step; a model name used once only.
async fn check_fine_tuning(store: &dyn Store) {
    use enclave_store::{FineTuneCheckpoint, StoredFineTune};
    let t = tenant(store, "tuners").await;
    let other = tenant(store, "others").await;
    let job = |id: &str, tenant: &Tenant, at: i64| StoredFineTune {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        status: "queued".into(),
        label: "SECRET".into(),
        fine_tuned_model: None,
        created_at: at,
        body: "{}".into(),
        priority: 0,
    };
    let a = job("ftjob-a", &t, 5);
    store.save_fine_tune(&a).await.unwrap();
    store.save_fine_tune(&job("ftjob-b", &t, 6)).await.unwrap();
    store
        .save_fine_tune(&job("ftjob-c", &other, 7))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list_fine_tunes(&t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, ["ftjob-b", "ftjob-a"]);
    let done = StoredFineTune {
        status: "succeeded".into(),
        fine_tuned_model: Some("ft:m:tuners:x:ftjob-a".into()),
        body: "{\"done\": true}".into(),
        ..a.clone()
    };
    store.save_fine_tune(&done).await.unwrap();
    assert_eq!(store.fine_tune("ftjob-a").await.unwrap(), Some(done));
    let queued: Vec<String> = store
        .fine_tunes_with_status(&["queued", "running"])
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(queued, ["ftjob-b", "ftjob-c"]);
    let succeeded = store.fine_tunes_with_status(&["succeeded"]).await.unwrap();
    assert_eq!(succeeded.len(), 1);
    // Another job may not take the same model name.
    let clash = StoredFineTune {
        fine_tuned_model: Some("ft:m:tuners:x:ftjob-a".into()),
        ..job("ftjob-b", &t, 6)
    };
    assert!(store.save_fine_tune(&clash).await.is_err());

    assert_eq!(
        store
            .add_fine_tune_event("ftjob-a", 10, "{\"n\":1}")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .add_fine_tune_event("ftjob-a", 11, "{\"n\":2}")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .add_fine_tune_event("ftjob-b", 12, "{\"n\":1}")
            .await
            .unwrap(),
        1
    );
    let events = store.fine_tune_events("ftjob-a").await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].body, "{\"n\":2}");
    for step in [8, 4] {
        store
            .add_fine_tune_checkpoint(&FineTuneCheckpoint {
                id: format!("ftckpt-{step}"),
                job_id: "ftjob-a".into(),
                step,
                created_at: 20,
                body: "{}".into(),
            })
            .await
            .unwrap();
    }
    // A job's files: kept by name, replaced, and read back; none for a name never kept.
    store
        .save_fine_tune_artifact("ftjob-a", "adapter.gguf", b"first")
        .await
        .unwrap();
    store
        .save_fine_tune_artifact("ftjob-a", "adapter.gguf", &[0u8, 1, 2, 255])
        .await
        .unwrap();
    assert_eq!(
        store
            .fine_tune_artifact("ftjob-a", "adapter.gguf")
            .await
            .unwrap(),
        Some(vec![0u8, 1, 2, 255])
    );
    assert_eq!(
        store
            .fine_tune_artifact("ftjob-a", "checkpoint-step-4.gguf")
            .await
            .unwrap(),
        None
    );
    let steps: Vec<i64> = store
        .fine_tune_checkpoints("ftjob-a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, [4, 8]);
    assert!(
        store
            .fine_tune_checkpoints("ftjob-b")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_conformance_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("jobs.db"))
        .await
        .unwrap();
    check_jobs(&store).await;
}

/// One queue for every kind of job: the claimable ones by priority then age, held by one
/// server at a time (of racing servers one wins), a lapsed hold claimable again, holds renewed
/// and released only by their holder, a status kept in step with the kind's own row, and a
/// tenant's jobs of every kind listed together.
async fn check_jobs(store: &dyn Store) {
    use enclave_store::{StoredBatch, StoredFineTune};
    let t = tenant(store, "queuers").await;
    let other = tenant(store, "strangers").await;
    let job = |id: &str, tenant: &Tenant, at: i64, priority: i64| StoredFineTune {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        status: "queued".into(),
        label: "UNCLASSIFIED".into(),
        fine_tuned_model: None,
        created_at: at,
        body: "{}".into(),
        priority,
    };
    store
        .save_fine_tune(&job("ft-low", &t, 1, -1))
        .await
        .unwrap();
    store
        .save_fine_tune(&job("ft-normal", &t, 2, 0))
        .await
        .unwrap();
    store
        .save_fine_tune(&job("ft-high", &other, 3, 1))
        .await
        .unwrap();
    let batch = StoredBatch {
        id: "batch-1".into(),
        tenant_id: t.id.clone(),
        owner: "{}".into(),
        endpoint: "/v1/embeddings".into(),
        input_file_id: "file-1".into(),
        label: "UNCLASSIFIED".into(),
        status: "validating".into(),
        metadata: None,
        total: 3,
        output_file_id: None,
        error_file_id: None,
        error: None,
        created_at: 4,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        expires_at: 100,
        priority: 1,
    };
    store.save_batch(&batch).await.unwrap();
    let ids = |jobs: Vec<enclave_store::QueuedJob>| -> Vec<String> {
        jobs.into_iter().map(|j| j.id).collect()
    };
    let claimable = |now| store.claimable_jobs("fine_tuning", &["queued", "running"], now);
    assert_eq!(
        ids(claimable(100).await.unwrap()),
        ["ft-high", "ft-normal", "ft-low"]
    );
    assert_eq!(
        ids(store
            .claimable_jobs("batch", &["validating", "in_progress"], 100)
            .await
            .unwrap()),
        ["batch-1"]
    );
    assert_eq!(store.batch("batch-1").await.unwrap().unwrap().priority, 1);

    // Of eight servers racing for one job, exactly one gets it.
    let nodes: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
    let races = futures::future::join_all(
        nodes
            .iter()
            .map(|n| store.claim_job("ft-high", n, 100, 130)),
    )
    .await;
    let won: Vec<&str> = nodes
        .iter()
        .zip(&races)
        .filter(|(_, r)| *r.as_ref().unwrap())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let winner = won[0];
    let loser = nodes
        .iter()
        .find(|n| n.as_str() != winner)
        .unwrap()
        .as_str();
    // The holder claiming again keeps it (a renewal); nobody else gets it.
    assert!(store.claim_job("ft-high", winner, 100, 130).await.unwrap());
    assert_eq!(ids(claimable(120).await.unwrap()), ["ft-normal", "ft-low"]);
    // Only the holder renews or releases; a hold that lapsed is anyone's.
    assert!(!store.renew_job("ft-high", loser, 160).await.unwrap());
    store.release_job("ft-high", loser).await.unwrap();
    assert!(!store.claim_job("ft-high", loser, 120, 150).await.unwrap());
    assert!(store.renew_job("ft-high", winner, 160).await.unwrap());
    assert!(!store.claim_job("ft-high", loser, 150, 190).await.unwrap());
    assert!(store.claim_job("ft-high", loser, 161, 190).await.unwrap());
    assert!(!store.renew_job("ft-high", winner, 200).await.unwrap());
    // A server starting again lets go of what it held.
    assert_eq!(store.release_jobs_of(loser).await.unwrap(), 1);
    assert_eq!(store.release_jobs_of(loser).await.unwrap(), 0);
    assert_eq!(ids(claimable(170).await.unwrap())[0], "ft-high");
    // The status follows the kind's own row; the priority stays as created.
    let done = StoredFineTune {
        status: "succeeded".into(),
        priority: 0,
        ..job("ft-high", &other, 3, 1)
    };
    store.save_fine_tune(&done).await.unwrap();
    assert_eq!(ids(claimable(170).await.unwrap()), ["ft-normal", "ft-low"]);
    assert_eq!(
        store.fine_tune("ft-high").await.unwrap().unwrap().priority,
        1
    );
    // A tenant's jobs of both kinds, newest first; not another tenant's.
    let listed = store.list_jobs(&t.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|j| (j.id.as_str(), j.kind.as_str()))
            .collect::<Vec<_>>(),
        [
            ("batch-1", "batch"),
            ("ft-normal", "fine_tuning"),
            ("ft-low", "fine_tuning")
        ]
    );
    assert_eq!(listed[0].status, "validating");
    assert_eq!(ids(store.list_jobs(&other.id).await.unwrap()), ["ft-high"]);
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
