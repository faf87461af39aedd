//! A streamed answer's audit record is written when the stream ends, however it ends: its real
//! token counts, the label its text reached, the SHA-256 of every byte the client received, and
//! whether it was complete, cut by the backend, withheld, or cut by the client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{Gateway, MockUpstream, eventually, sse_events, upstream};
use enclave_store::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn ask(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// Streams `path` to its end: the bytes received and the record the call left.
async fn streamed(gw: &Gateway, key: &str, path: &str, body: &Value) -> (Vec<u8>, Value) {
    let before = gw.state.audit.size();
    let r = gw.post(path, key, body).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("enclave-audit-index").is_none(),
        "a stream's record is written when it ends, so its index is not known up front"
    );
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(10), r.bytes())
        .await
        .expect("the stream ends")
        .unwrap()
        .to_vec();
    // The body ends only once the record is durable: it is there now.
    assert_eq!(gw.state.audit.size(), before + 1);
    let record = gw.records().pop().unwrap();
    assert_eq!(record["operation"], format!("POST {path}"));
    (bytes, record)
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_complete_stream_is_recorded_with_its_tokens_and_the_digest_of_what_was_received() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("up", "m", &mock.url("ok"), json!({})),
        upstream("up-anthropic", "claude", &mock.url("ok"), json!({"backend": "anthropic"})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;

    let (bytes, record) = streamed(&gw, &key, "/v1/chat/completions", &ask("m")).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    let usage = sse_events(&text)
        .into_iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .expect("a usage chunk");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["code"], Value::Null);
    assert_eq!(record["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(record["completion_tokens"], usage["completion_tokens"]);
    assert!(
        record["completion_tokens"].as_u64().unwrap() > 0,
        "{record}"
    );
    assert_eq!(record["response_sha256"], digest(&bytes));
    assert_eq!(record["answer_label"], "UNCLASSIFIED");
    assert_eq!(record["deployment"], "up");

    // Anthropic's surface, the same way.
    let body = json!({
        "model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hello there"}],
    });
    let (bytes, record) = streamed(&gw, &key, "/v1/messages", &body).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    let delta = sse_events(&text)
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some("message_delta"))
        .map(|(_, d)| serde_json::from_str::<Value>(&d).unwrap())
        .expect("a message_delta event");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(
        record["completion_tokens"], delta["usage"]["output_tokens"],
        "{record}"
    );
    assert!(record["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(record["response_sha256"], digest(&bytes));
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_or_withheld_is_recorded_as_such() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stalls", "stalls", &mock.url("stall-mid"), json!({"retries": 0, "first_token_timeout_secs": 0.4})),
        upstream("garbles", "garbles", &mock.url("bad-sse-mid"), json!({"retries": 0})),
        upstream("marks", "marks", &mock.url("marked"), json!({})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    for model in ["stalls", "garbles"] {
        let (bytes, record) = streamed(&gw, &key, "/v1/chat/completions", &ask(model)).await;
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("[DONE]"), "{text}");
        assert_eq!(record["status"], 502, "{model}: {record}");
        assert_eq!(record["code"], "upstream_error", "{record}");
        assert!(
            record["detail"].as_str().unwrap().contains("part-way"),
            "{record}"
        );
        assert_eq!(record["response_sha256"], digest(&bytes));
    }

    // An answer whose text carries a marking above the key's clearance: withheld, recorded
    // with the label it reached.
    let (bytes, record) = streamed(&gw, &key, "/v1/chat/completions", &ask("marks")).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("label_exceeds_clearance"), "{text}");
    assert!(!text.contains("The source reports"), "{text}");
    assert_eq!(record["status"], 403, "{record}");
    assert_eq!(record["code"], "label_exceeds_clearance");
    assert_eq!(record["request_label"], "UNCLASSIFIED");
    assert_eq!(record["answer_label"], "SECRET", "{record}");
    assert_eq!(record["response_sha256"], digest(&bytes));
}

#[tokio::test]
async fn a_stream_the_client_leaves_is_recorded_as_cut_by_the_client() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stalls", "m", &mock.url("stall-mid"), json!({"first_token_timeout_secs": 60.0, "timeout_secs": 60.0})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let before = gw.state.audit.size();
    let mut r = gw.post("/v1/chat/completions", &key, &ask("m")).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
    assert!(
        eventually(3.0, || gw.state.audit.size() == before + 1).await,
        "one record once the client left"
    );
    let record = gw.records().pop().unwrap();
    assert_eq!(record["status"], 499, "{record}");
    assert_eq!(record["code"], "client_closed_request");
    assert!(
        record["detail"].as_str().unwrap().contains("part-way"),
        "{record}"
    );
    assert_eq!(record["completion_tokens"], 0);
    assert!(record["response_sha256"].is_string());
    // Exactly one: nothing more arrives later.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.state.audit.size(), before + 1);
}

#[tokio::test]
async fn personal_data_and_markings_the_model_writes_are_counted_in_the_record() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("personal", "personal", &mock.url("personal"), json!({})),
        upstream("plain", "plain", &mock.url("ok"), json!({})),
        upstream("marks", "marks", &mock.url("marked"), json!({})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let want = json!({"email": 1, "iban": 1});

    // Streamed: the caller is inside the enclave and gets the answer as written; the record
    // counts what the model wrote, never the values.
    let (bytes, record) = streamed(&gw, &key, "/v1/chat/completions", &ask("personal")).await;
    let text: String = sse_events(std::str::from_utf8(&bytes).unwrap())
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        text.starts_with("Write to jane.doe@example.org or pay DE89"),
        "{text}"
    );
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["answer_findings"], want, "{record}");
    assert_eq!(
        record["findings"],
        json!({}),
        "the request carried none: {record}"
    );
    assert!(!record.to_string().contains("jane.doe"), "{record}");

    // Whole.
    let mut whole = ask("personal");
    whole["stream"] = json!(false);
    whole.as_object_mut().unwrap().remove("stream_options");
    let (status, body) = gw.call("/v1/chat/completions", &key, &whole).await;
    assert_eq!(status, 200, "{body}");
    let record = gw.last_record("POST /v1/chat/completions");
    assert_eq!(record["answer_findings"], want, "{record}");

    // An answer with nothing in it leaves no `answer_findings` at all (older records' bytes).
    let (_, record) = streamed(&gw, &key, "/v1/chat/completions", &ask("plain")).await;
    assert!(record.get("answer_findings").is_none(), "{record}");

    // A withheld answer's record counts the marking that withheld it.
    let (_, record) = streamed(&gw, &key, "/v1/chat/completions", &ask("marks")).await;
    assert_eq!(record["status"], 403, "{record}");
    assert_eq!(record["answer_findings"]["marking"], 1, "{record}");
}
