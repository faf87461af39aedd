//! Labels, clearances and sovereign routing, end to end: the real binary with a configuration
//! that adds an outside (`eu`) deployment, a recording OpenAI-compatible upstream on loopback, and
//! the official `openai` Python SDK as the client (tests/sdk/test_labels.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::Server;
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

/// An OpenAI-compatible upstream that records every request body and answers by echoing the
/// last message, streamed in three-character pieces so placeholders arrive split.
async fn upstream(State(seen): State<Seen>, Json(body): Json<Value>) -> Response {
    seen.lock().unwrap().push(body.clone());
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let answer = format!("You said: {last}");
    if body["stream"].as_bool() == Some(true) {
        let chars: Vec<char> = answer.chars().collect();
        let mut sse = String::new();
        for piece in chars.chunks(3) {
            let text: String = piece.iter().collect();
            let chunk = json!({"id": "u1", "object": "chat.completion.chunk", "created": 0,
                "model": "up", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        let last = json!({"id": "u1", "object": "chat.completion.chunk", "created": 0, "model": "up",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}});
        sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
        return ([("content-type", "text/event-stream")], sse).into_response();
    }
    Json(json!({
        "id": "u1", "object": "chat.completion", "created": 0, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }))
    .into_response()
}

fn start_upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let state = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/v1/chat/completions", axum::routing::post(upstream))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/v1"), seen)
}

const IBAN: &str = "DE89 3704 0044 0532 0130 00";

#[test]
fn labels_clearances_and_sovereign_routing_through_the_openai_sdk() {
    let (upstream_url, seen) = start_upstream();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            r#"
scheme = "US"

[[deployments]]
name = "cloud-eu"
model = "eu-chat"
backend = "openai"
base_url = "{upstream_url}"
upstream_model = "provider-small"
accreditation = "UNCLASSIFIED"
jurisdiction = "eu"
nation = "DEU"

[tenants.agency-eu]
jurisdictions = ["eu"]
redact_pii_for = ["eu"]

[tenants.agency-strict]
jurisdictions = ["eu"]
"#
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // `config check` understands the file before anything serves it.
    let check = Command::new(common::bin())
        .args(["config", "check", config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("cloud-eu") && text.contains("jurisdiction eu"),
        "{text}"
    );
    assert!(
        text.contains("accredited to UNCLASSIFIED//REL TO DEU"),
        "{text}"
    );

    let s = Server::start_with(&[("ENCLAVE_CONFIG", config)]);
    for t in ["agency-eu", "agency-strict"] {
        assert!(s.cli(&["tenants", "create", t]).0);
    }
    let secret = s.cleared_key("default", "user", "SECRET");
    let eu = s.key("agency-eu", "user");
    let eu_secret = s.cleared_key("agency-eu", "user", "SECRET");
    let strict = s.key("agency-strict", "user");
    let auditor = s.key("default", "auditor");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_labels.py"
    );
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("KEY_SECRET", &secret)
        .env("KEY_EU", &eu)
        .env("KEY_EU_SECRET", &eu_secret)
        .env("KEY_STRICT", &strict)
        .env("KEY_AUDITOR", &auditor)
        .env("IBAN", IBAN)
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the label suite failed:\n{stdout}");

    // What the outside provider saw: exactly the two allowed requests, each with the IBAN
    // replaced by a placeholder and never the IBAN itself; nothing classified, nothing from the
    // strict tenant.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "upstream saw {seen:#?}");
    for body in seen.iter() {
        let sent = body.to_string();
        assert!(
            !sent.contains(IBAN) && !sent.contains("DE89"),
            "leaked: {sent}"
        );
        assert!(sent.contains("[IBAN_1]"), "no placeholder: {sent}");
        assert!(sent.contains("[EMAIL_1]"), "no placeholder: {sent}");
        assert_eq!(body["model"], "provider-small");
        assert!(!sent.contains("convoy"), "classified content left: {sent}");
    }

    // Denials are counted by code.
    let metrics = common::http_get(&s.url("/metrics"));
    for code in [
        "label_exceeds_clearance",
        "no_accredited_deployment",
        "forbidden_by_policy",
    ] {
        assert!(
            metrics.contains(&format!("enclave_denials_total{{code=\"{code}\"}}")),
            "no denial count for {code}:\n{metrics}"
        );
    }
}
