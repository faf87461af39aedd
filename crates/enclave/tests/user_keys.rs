//! Keys belonging to a user: made with `enclave keys create --user`, of the user's tenant, never
//! above the user's role or clearance, and stopped within a second of the user's disablement.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::time::Duration;

use common::{CHAT, Server, http};
use serde_json::{Value, json};

async fn chat(server: &Server, key: &str, text: &str) -> (u16, Value) {
    let r = http()
        .build()
        .unwrap()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_users_key_follows_the_user() {
    let server = Server::start();
    let (ok, _, err) = server.cli(&[
        "users",
        "add",
        "alice",
        "--tenant",
        "default",
        "--role",
        "admin",
        "--clearance",
        "SECRET",
    ]);
    assert!(ok, "{err}");

    let (ok, key, err) = server.cli(&["keys", "create", "--user", "alice", "--name", "laptop"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("created admin key") && err.contains("belonging to `alice`"),
        "{err}"
    );
    let key = key.trim().to_string();
    assert_eq!(chat(&server, &key, "(S) Where is the crane?").await.0, 200);
    let (status, body) = chat(&server, &key, "(TS) Where is the crane?").await;
    assert_eq!(status, 403, "{body}");

    // Never above the user.
    let (ok, _, err) = server.cli(&[
        "keys",
        "create",
        "--user",
        "alice",
        "--clearance",
        "TOP SECRET",
    ]);
    assert!(!ok && err.contains("cleared to SECRET"), "{err}");
    let (ok, _, err) = server.cli(&["keys", "create", "--user", "alice", "--role", "auditor"]);
    assert!(!ok && err.contains("not auditor"), "{err}");
    let (ok, _, err) = server.cli(&["keys", "create", "--user", "nobody"]);
    assert!(
        !ok && err.contains("no enabled user named `nobody`"),
        "{err}"
    );
    // A lower clearance is allowed, and holds.
    let (ok, low, err) = server.cli(&[
        "keys",
        "create",
        "--user",
        "alice",
        "--role",
        "user",
        "--clearance",
        "CONFIDENTIAL",
    ]);
    assert!(ok, "{err}");
    let (status, _) = chat(&server, low.trim(), "(S) Where is the crane?").await;
    assert_eq!(status, 403);

    let (ok, list, _) = server.cli(&["keys", "list"]);
    assert!(ok);
    let line = list.lines().find(|l| l.ends_with(" laptop")).unwrap();
    assert!(
        line.contains(" alice ") && line.contains(" active "),
        "{list}"
    );

    // Disabling the user stops the key within a second.
    let (ok, _, err) = server.cli(&["users", "disable", "alice"]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = chat(&server, &key, "(S) Where is the crane?").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "user_disabled", "{body}");
    let (_, list, _) = server.cli(&["keys", "list"]);
    let line = list.lines().find(|l| l.ends_with(" laptop")).unwrap();
    assert!(line.contains(" user-off "), "{list}");
}
