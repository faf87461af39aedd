//! Kept conversations: a chat that names one (`Enclave-Conversation`) is kept in it with the
//! labels the service computed; the conversation never drops below the highest label it reached;
//! it is its owner's alone; a user whose clearance falls no longer sees it, opens it or continues
//! it; the Markdown export carries banners and portion marks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{Gateway, MockUpstream, sse_events, upstream};
use enclave_store::{Role, Store};
use serde_json::{Value, json};

const CHAT: &str = "/v1/chat/completions";

async fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = gw
        .http
        .get(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A chat in conversation `id` declared at `label`: the status, the answer's label header, and
/// the body.
async fn chat(
    gw: &Gateway,
    key: &str,
    id: &str,
    label: &str,
    text: &str,
    stream: bool,
) -> (u16, String, String) {
    let r = gw
        .http
        .post(gw.url(CHAT))
        .bearer_auth(key)
        .header("Enclave-Conversation", id)
        .header("Enclave-Label", label)
        .json(&json!({"model": "m", "stream": stream, "max_tokens": 8,
            "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("enclave-label")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, header, r.text().await.unwrap())
}

/// A key of a new user of tenant `agency` cleared to `clearance`.
async fn cleared_key(gw: &Gateway, name: &str, clearance: &str) -> String {
    let scheme = gw.state.policy.scheme.clone();
    let store = gw.store.as_ref() as &dyn Store;
    enclave_service::admin::create_user(
        store,
        &scheme,
        "agency",
        name,
        Role::User,
        Some(clearance),
    )
    .await
    .unwrap();
    enclave_service::admin::create_user_key(store, &scheme, name, None, None, None)
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn conversations_are_kept_at_their_labels_for_their_owner_only() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({"accreditation": "TOP SECRET"}))],
    }))
    .await;
    gw.key("agency", Role::User).await;
    let store = gw.store.as_ref() as &dyn Store;
    let alice = cleared_key(&gw, "alice@agency.example", "SECRET").await;
    let bob = cleared_key(&gw, "bob@agency.example", "SECRET").await;

    let (status, created) = gw.call("/v1/conversations", &alice, &json!({})).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["object"], "conversation");
    assert_eq!(created["label"], "UNCLASSIFIED");
    let id = created["id"].as_str().unwrap().to_string();

    // A SECRET turn, streamed: kept with its labels; the conversation reaches SECRET.
    let (status, header, body) = chat(&gw, &alice, &id, "SECRET", "Where is the site?", true).await;
    assert_eq!((status, header.as_str()), (200, "SECRET"), "{body}");
    let answered: String = sse_events(&body)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(!answered.is_empty());
    let (status, kept) = get(&gw, &format!("/v1/conversations/{id}"), &alice).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["label"], "SECRET");
    assert_eq!(kept["title"], "Where is the site?");
    let messages = kept["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{kept}");
    assert_eq!(
        (
            messages[0]["role"].as_str(),
            messages[0]["content"].as_str(),
            messages[0]["portion"].as_str()
        ),
        (Some("user"), Some("Where is the site?"), Some("(S)"))
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"].as_str(), Some(answered.as_str()));
    assert_eq!(messages[1]["label"], "SECRET");

    // Declared lower, the next turn is still SECRET: a conversation never drops.
    let (status, header, body) =
        chat(&gw, &alice, &id, "UNCLASSIFIED", "And the road?", false).await;
    assert_eq!((status, header.as_str()), (200, "SECRET"), "{body}");
    let (_, kept) = get(&gw, &format!("/v1/conversations/{id}"), &alice).await;
    assert_eq!(kept["messages"].as_array().unwrap().len(), 4);
    assert_eq!(kept["messages"][2]["portion"], "(S)");

    // Markdown export: the banner above and below, portion marks on every message.
    let r = gw
        .http
        .get(gw.url(&format!("/v1/conversations/{id}/export")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = r.text().await.unwrap();
    assert!(md.starts_with("**SECRET**\n"), "{md}");
    assert!(md.trim_end().ends_with("**SECRET**"), "{md}");
    assert!(md.contains("**You** (S) Where is the site?"), "{md}");
    assert!(md.contains("**You** (S) And the road?"), "{md}");

    // Another user of the same tenant sees none of it.
    let (_, listed) = get(&gw, "/v1/conversations", &bob).await;
    assert_eq!(listed["data"], json!([]));
    for path in [
        format!("/v1/conversations/{id}"),
        format!("/v1/conversations/{id}/export"),
    ] {
        let (status, body) = get(&gw, &path, &bob).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, _, _) = chat(&gw, &bob, &id, "SECRET", "Mine now?", false).await;
    assert_eq!(status, 404);

    // Alice's clearance falls (her next sign-in said so): within a second her key's clearance
    // follows, and the SECRET conversation is gone from her list, closed and not continued.
    let (_, listed) = get(&gw, "/v1/conversations", &alice).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    store
        .update_user("alice@agency.example", Role::User, "UNCLASSIFIED")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, listed) = get(&gw, "/v1/conversations", &alice).await;
    assert_eq!((status, &listed["data"]), (200, &json!([])));
    let (status, body) = get(&gw, &format!("/v1/conversations/{id}"), &alice).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("Where is the site"));
    let (status, _, body) = chat(&gw, &alice, &id, "UNCLASSIFIED", "Still there?", false).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = gw.call("/v1/conversations", &alice, &json!({})).await;
    assert_eq!(status, 200, "a new conversation at her clearance is fine");

    // Restored, she sees it again, and may delete it.
    store
        .update_user("alice@agency.example", Role::User, "SECRET")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = gw
        .http
        .delete(gw.url(&format!("/v1/conversations/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = get(&gw, &format!("/v1/conversations/{id}"), &alice).await;
    assert_eq!(status, 404);

    // Every call was audited like any other.
    let ops: Vec<String> = gw
        .records()
        .iter()
        .filter_map(|r| r["operation"].as_str().map(str::to_string))
        .collect();
    for op in [
        "POST /v1/conversations".to_string(),
        format!("GET /v1/conversations/{id}"),
        format!("DELETE /v1/conversations/{id}"),
    ] {
        assert!(ops.contains(&op), "{op} not in {ops:?}");
    }
}

/// Answers that end at the same moment in one conversation each raise its label; none is lost.
#[tokio::test]
async fn concurrent_answers_never_lower_a_conversation() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({"accreditation": "TOP SECRET"}))],
    }))
    .await;
    gw.key("agency", Role::User).await;
    let key = cleared_key(&gw, "carol@agency.example", "SECRET").await;
    let (_, created) = gw.call("/v1/conversations", &key, &json!({})).await;
    let id = created["id"].as_str().unwrap().to_string();
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (gw, key, id) = (std::sync::Arc::clone(&gw), key.clone(), id.clone());
        let label = if i == 5 { "SECRET" } else { "UNCLASSIFIED" };
        tasks.push(tokio::spawn(async move {
            // Each turn declares its own label; only one is SECRET.
            let r = gw
                .http
                .post(gw.url(CHAT))
                .bearer_auth(&key)
                .header("Enclave-Conversation", &id)
                .header("Enclave-Label", label)
                .json(&json!({"model": "m", "max_tokens": 4,
                    "messages": [{"role": "user", "content": format!("turn {i}")}]}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200, "{status}");
    }
    let (_, kept) = get(&gw, &format!("/v1/conversations/{id}"), &key).await;
    assert_eq!(kept["label"], "SECRET", "{kept}");
    assert_eq!(kept["messages"].as_array().unwrap().len(), 24);
}
