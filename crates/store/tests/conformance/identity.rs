//! Who may call: tenants, keys, users, sessions, and the administrative events they leave.

use super::*;

pub(super) async fn check_tenants(store: &dyn Store) {
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

pub(super) async fn check_keys_are_hashed_scoped_and_revocable(store: &dyn Store) {
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

pub(super) async fn check_admin_events(store: &dyn Store) {
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

pub(super) async fn check_users_are_unique_scoped_and_disableable(store: &dyn Store) {
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

pub(super) async fn check_sessions_end_and_follow_their_user(store: &dyn Store) {
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
