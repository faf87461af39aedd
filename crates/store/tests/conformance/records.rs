//! What calls leave behind: usage, conversations, stored responses and files.

use super::*;

pub(super) async fn check_usage(store: &dyn Store) {
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

/// Conversations belong to an owner in a tenant, keep their messages in order, and their label
/// is only ever set over the value it was read at (a raise by another answer is never lost).
pub(super) async fn check_conversations(store: &dyn Store) {
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

/// Stored responses come back as stored, and go when deleted.
pub(super) async fn check_responses(store: &dyn Store) {
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

/// Files come back as stored, facts without the bytes, per tenant, newest first, and go.
pub(super) async fn check_files(store: &dyn Store) {
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
