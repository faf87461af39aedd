//! Every bad request gets its OpenAI-shaped error with the right status, code and parameter, and
//! the server keeps serving afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{CHAT, EMBED, Server};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    path: &'static str,
    key: Key,
    body: Body,
    status: u16,
    code: &'static str,
    param: Option<&'static str>,
}

enum Key {
    Admin,
    None,
    Garbage,
    Revoked,
}

enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

fn chat(extra: Value) -> Body {
    let mut body =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    Body::Json(body)
}

fn cases() -> Vec<Case> {
    use Key::*;
    let c = |name, path, key, body, status, code, param| Case {
        name,
        path,
        key,
        body,
        status,
        code,
        param,
    };
    vec![
        c("no key", "/v1/chat/completions", None, chat(json!({})), 401, "missing_api_key", Option::None),
        c("garbage key", "/v1/chat/completions", Garbage, chat(json!({})), 401, "invalid_api_key", Option::None),
        c("revoked key", "/v1/models", Revoked, Body::Json(json!({})), 401, "revoked_api_key", Option::None),
        c("unknown model", "/v1/chat/completions", Admin, chat(json!({"model": "gpt-9"})), 404, "model_not_found", Some("model")),
        c("embedding model for chat", "/v1/chat/completions", Admin, chat(json!({"model": EMBED})), 400, "wrong_model_kind", Some("model")),
        c("malformed json", "/v1/chat/completions", Admin, Body::Raw(b"{\"model\": ".to_vec()), 400, "invalid_json", Option::None),
        c("empty body", "/v1/chat/completions", Admin, Body::Raw(vec![]), 400, "invalid_json", Option::None),
        c("invalid utf-8", "/v1/chat/completions", Admin, Body::Raw(b"{\"model\": \"\xff\xfe\"}".to_vec()), 400, "invalid_json", Option::None),
        c("wrong type", "/v1/chat/completions", Admin, chat(json!({"max_tokens": "ten"})), 400, "invalid_value", Some("max_tokens")),
        c("wrong nested type", "/v1/chat/completions", Admin, chat(json!({"messages": [{"role": "user", "content": 5}]})), 400, "invalid_value", Some("messages[0].content")),
        c("missing messages", "/v1/chat/completions", Admin, Body::Json(json!({"model": CHAT})), 400, "invalid_value", Some("body")),
        c("empty messages", "/v1/chat/completions", Admin, chat(json!({"messages": []})), 400, "invalid_value", Some("messages")),
        c("bad role", "/v1/chat/completions", Admin, chat(json!({"messages": [{"role": "robot", "content": "x"}]})), 400, "invalid_value", Some("messages[0].role")),
        c("n=2", "/v1/chat/completions", Admin, chat(json!({"n": 2})), 400, "unsupported_parameter", Some("n")),
        c("logprobs", "/v1/chat/completions", Admin, chat(json!({"logprobs": true})), 400, "unsupported_parameter", Some("logprobs")),
        c("tools", "/v1/chat/completions", Admin, chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})), 400, "unsupported_parameter", Some("tools")),
        c("image by URL", "/v1/chat/completions", Admin, chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})), 400, "invalid_value", Some("messages[0].content[0].image_url")),
        c("image to a text model", "/v1/chat/completions", Admin, chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})), 400, "images_not_supported", Option::None),
        c("audio content", "/v1/chat/completions", Admin, chat(json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]})), 400, "unsupported_parameter", Some("messages[0].content[0].type")),
        c("temperature out of range", "/v1/chat/completions", Admin, chat(json!({"temperature": 3.5})), 400, "invalid_value", Some("temperature")),
        c("top_p zero", "/v1/chat/completions", Admin, chat(json!({"top_p": 0})), 400, "invalid_value", Some("top_p")),
        c("max_tokens zero", "/v1/chat/completions", Admin, chat(json!({"max_tokens": 0})), 400, "invalid_value", Some("max_tokens")),
        c("five stops", "/v1/chat/completions", Admin, chat(json!({"stop": ["a", "b", "c", "d", "e"]})), 400, "invalid_value", Some("stop")),
        c("stream_options without stream", "/v1/chat/completions", Admin, chat(json!({"stream_options": {"include_usage": true}})), 400, "invalid_value", Some("stream_options")),
        c("beyond the context window", "/v1/chat/completions", Admin, chat(json!({"max_tokens": 100000})), 400, "context_length_exceeded", Some("messages")),
        c("oversized body", "/v1/chat/completions", Admin, Body::Raw(format!("{{\"model\":\"{CHAT}\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "a".repeat(5 << 20)).into_bytes()), 413, "request_too_large", Option::None),
        c("chat model for embeddings", "/v1/embeddings", Admin, Body::Json(json!({"model": CHAT, "input": "x"})), 400, "wrong_model_kind", Some("model")),
        c("empty embedding input", "/v1/embeddings", Admin, Body::Json(json!({"model": EMBED, "input": []})), 400, "invalid_value", Some("input")),
        c("empty embedding string", "/v1/embeddings", Admin, Body::Json(json!({"model": EMBED, "input": ["ok", ""]})), 400, "invalid_value", Some("input[1]")),
        c("dimensions", "/v1/embeddings", Admin, Body::Json(json!({"model": EMBED, "input": "x", "dimensions": 128})), 400, "unsupported_parameter", Some("dimensions")),
        c("encoding format", "/v1/embeddings", Admin, Body::Json(json!({"model": EMBED, "input": "x", "encoding_format": "int8"})), 400, "invalid_value", Some("encoding_format")),
        c("token outside vocabulary", "/v1/embeddings", Admin, Body::Json(json!({"model": EMBED, "input": [999999]})), 422, "unprocessable_input", Option::None),
        c("unknown route", "/v1/assistants", Admin, Body::Json(json!({})), 404, "unknown_route", Option::None),
        c("fine-tuning a model that cannot be", "/v1/fine_tuning/jobs", Admin, Body::Json(json!({"model": "gpt-4o", "training_file": "file-x"})), 400, "invalid_value", Some("model")),
    ]
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let s = Server::start();
    let revoked = s.key("default", "user");
    let revoked_id = &revoked[3..15];
    let (ok, _, err) = s.cli(&["keys", "revoke", revoked_id]);
    assert!(ok, "{err}");
    // No connection reuse: the server closes the connection it refused an oversized body on, and
    // a pooled client could pick that connection again for the next case.
    let client = common::http().pool_max_idle_per_host(0).build().unwrap();
    let mut failures = vec![];
    for case in cases() {
        let url = s.url(case.path);
        // A server that refuses an oversized body answers before reading it, and may close the
        // connection while the client is still writing; a client then sees a reset instead of the
        // 413. Send again in that case (bounded), as a client library would.
        let mut attempt = 0;
        let r = loop {
            let mut req = if case.path == "/v1/models" {
                client.get(&url)
            } else {
                client.post(&url)
            };
            req = match case.key {
                Key::Admin => req.bearer_auth(&s.admin_key),
                Key::None => req,
                Key::Garbage => {
                    req.bearer_auth("ek_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                }
                Key::Revoked => req.bearer_auth(&revoked),
            };
            req = match &case.body {
                Body::Json(v) => req.json(v),
                Body::Raw(b) => req
                    .header("content-type", "application/json")
                    .body(b.clone()),
            };
            match req.send().await {
                Ok(r) => break r,
                Err(e) if attempt < 5 && case.status == 413 => {
                    attempt += 1;
                    eprintln!("{}: {e}; sending again", case.name);
                }
                Err(e) => panic!("{}: {e}", case.name),
            }
        };
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("{}: body is not JSON: {text}", case.name));
                continue;
            }
        };
        let e = &body["error"];
        let shape_ok = e["message"].as_str().is_some_and(|m| !m.is_empty())
            && e["type"].is_string()
            && e.get("param").is_some()
            && e.get("code").is_some();
        if status != case.status
            || e["code"] != case.code
            || e["param"].as_str() != case.param
            || !shape_ok
        {
            failures.push(format!(
                "{}: want {} {} {:?}, got {status} {body}",
                case.name, case.status, case.code, case.param
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Fields no OpenAI API defines are ignored, and the server still answers.
    let r = client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "x_custom_field": {"a": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn keys_are_shown_once_and_listed_without_secrets() {
    let s = Server::start();
    let (ok, _, err) = s.cli(&["tenants", "create", "agency-b"]);
    assert!(ok, "{err}");
    let (ok, out, err) = s.cli(&["keys", "create", "--tenant", "agency-b", "--role", "user"]);
    assert!(ok, "{err}");
    let secret = out.trim();
    assert_eq!(out.lines().count(), 1, "stdout holds the key alone");
    assert!(err.contains("agency-b"), "details go to stderr: {err}");
    let (_, list, _) = s.cli(&["keys", "list"]);
    assert!(list.contains(&secret[3..15]), "the id is listed");
    assert!(!list.contains(&secret[16..]), "the secret is never listed");
    let (ok, out, err) = s.cli(&[
        "keys",
        "create",
        "--tenant",
        "agency-b",
        "--clearance",
        "ts//si",
    ]);
    assert!(
        ok && err.contains("cleared to TOP SECRET//SI//NOFORN"),
        "{err}"
    );
    let (_, list, _) = s.cli(&["keys", "list", "--tenant", "agency-b"]);
    let row = list
        .lines()
        .find(|l| l.contains(&out.trim()[3..15]))
        .unwrap();
    assert!(row.contains("TOP SECRET//SI//NOFORN"), "{list}");
    let (ok, _, err) = s.cli(&[
        "keys",
        "create",
        "--tenant",
        "agency-b",
        "--clearance",
        "TS//ZZ",
    ]);
    assert!(!ok && err.contains("expected a compartment"), "{err}");
    let r = common::http()
        .build()
        .unwrap()
        .get(s.url("/v1/models"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (ok, _, err) = s.cli(&["keys", "create", "--tenant", "nobody"]);
    assert!(!ok && err.contains("no tenant named `nobody`"), "{err}");
    let (ok, _, err) = s.cli(&["keys", "create", "--tenant", "agency-b", "--role", "root"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, _, err) = s.cli(&["tenants", "create", "agency-b"]);
    assert!(!ok && err.contains("already exists"), "{err}");
}
