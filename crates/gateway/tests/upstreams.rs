//! Routing that survives faults: the gateway in front of the fault-injecting mock upstream.
//! For each fault: retry or fallback where allowed, a clean error where not, no leaked stream
//! or connection, and an audit record that shows every attempt.

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

const CHAT: &str = "/v1/chat/completions";

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream})
}

fn outcomes(record: &Value) -> Vec<(String, String)> {
    record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["deployment"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn retries_transient_failures_then_answers() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("flaky", "m", &mock.url("fail-2-503"), json!({"retries": 2})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let (status, body) = gw.call(CHAT, &key, &ask("m", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: hello there"
    );
    let record = gw.last_record("POST /v1/chat/completions");
    assert_eq!(
        outcomes(&record),
        pairs(&[
            ("flaky", "server_error"),
            ("flaky", "server_error"),
            ("flaky", "ok")
        ])
    );
    assert_eq!(record["attempts"][0]["status"], 503);
    assert_eq!(record["deployment"], "flaky");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"enclave_upstream_attempts_total{deployment="flaky",outcome="server_error"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("enclave_gateway_overhead_seconds_bucket"));
}

#[tokio::test]
async fn a_429_is_retried_and_connection_drops_fall_back() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("limited", "m", &mock.url("fail-1-429"), json!({})),
        upstream("closing", "c", &mock.url("close"), json!({"retries": 1})),
        upstream("backup", "c", &mock.url("ok"), json!({"priority": 1})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let (status, _) = gw.call(CHAT, &key, &ask("m", false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[("limited", "rate_limited"), ("limited", "ok")])
    );
    let (status, body) = gw.call(CHAT, &key, &ask("c", true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[
            ("closing", "connect_error"),
            ("closing", "connect_error"),
            ("backup", "ok")
        ])
    );
}

#[tokio::test]
async fn a_stall_before_the_first_token_times_out_and_falls_back_without_leaking() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stuck", "m", &mock.url("stall"), json!({"retries": 0, "first_token_timeout_secs": 0.3})),
        upstream("backup", "m", &mock.url("ok"), json!({"priority": 1})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    for stream in [false, true] {
        let r = gw.post(CHAT, &key, &ask("m", stream)).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("said"), "{text}");
        assert_eq!(
            outcomes(&gw.last_record("POST /v1/chat/completions")),
            pairs(&[("stuck", "first_token_timeout"), ("backup", "ok")])
        );
    }
    // The abandoned attempts closed their connections: the mock saw both clients leave.
    assert!(
        eventually(2.0, || mock.stats()["cancelled"] == 2).await,
        "{}",
        mock.stats()
    );
    assert!(eventually(2.0, || mock.stats()["inflight"] == 0).await);
}

#[tokio::test]
async fn failures_that_cannot_be_retried_get_clean_errors() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("strict", "bad", &mock.url("status-400"), json!({})),
        upstream("backup", "bad", &mock.url("ok"), json!({"priority": 1})),
        upstream("slow", "slow", &mock.url("slow-3000"), json!({"retries": 0, "first_token_timeout_secs": 5.0, "timeout_secs": 0.5})),
        upstream("garbled", "garbled", &mock.url("bad-sse"), json!({})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;

    // The upstream says the request is wrong: passed on, no retry, no fallback.
    let (status, body) = gw.call(CHAT, &key, &ask("bad", false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock failure 400")
    );
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[("strict", "rejected")])
    );

    // Too slow for the total timeout, retried as configured (not at all), then 502.
    let (status, body) = gw.call(CHAT, &key, &ask("slow", false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`slow`")
    );

    // A malformed first event: nothing reached the client yet, so it is an ordinary error.
    let r = gw.post(CHAT, &key, &ask("garbled", true)).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[("garbled", "malformed")])
    );
    let record = gw.last_record("POST /v1/chat/completions");
    assert_eq!(record["status"], 502);
    assert_eq!(record["code"], "upstream_unavailable");
}

#[tokio::test]
async fn failures_after_the_first_byte_end_the_stream_with_an_error_event() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stalls", "stalls", &mock.url("stall-mid"), json!({"first_token_timeout_secs": 0.4})),
        upstream("garbles", "garbles", &mock.url("bad-sse-mid"), json!({})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    for model in ["stalls", "garbles"] {
        let started = std::time::Instant::now();
        let r = gw.post(CHAT, &key, &ask(model, true)).await;
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(std::time::Duration::from_secs(5), r.text())
            .await
            .expect("the stream must end, not hang")
            .unwrap();
        let events = sse_events(&text);
        let contents: String = events
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(contents, "You said:", "{text}");
        let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
        assert_eq!(last["error"]["code"], "upstream_error", "{text}");
        assert!(!text.contains("[DONE]"));
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
    assert!(eventually(2.0, || mock.stats()["inflight"] == 0).await);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_at_once() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stalls", "m", &mock.url("stall-mid"), json!({"first_token_timeout_secs": 60.0, "timeout_secs": 60.0})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let mut r = gw.post(CHAT, &key, &ask("m", true)).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(mock.stats()["inflight"], 1);
    drop(r);
    // Well before any timeout: the mock sees its client go, the gateway's reader task ends.
    assert!(
        eventually(2.0, || mock.stats()["cancelled"] == 1).await,
        "{}",
        mock.stats()
    );
    assert_eq!(mock.stats()["inflight"], 0);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("enclave_upstream_streams_open 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_probes_back() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("sick", "m", &mock.url("status-503"), json!({"retries": 0, "breaker_failures": 2, "breaker_cooldown_secs": 0.5})),
        upstream("backup", "m", &mock.url("ok"), json!({"priority": 1})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    for _ in 0..2 {
        assert_eq!(gw.call(CHAT, &key, &ask("m", false)).await.0, 200);
    }
    assert!(
        gw.metrics()
            .await
            .contains(r#"enclave_upstream_circuit_open{deployment="sick"} 1"#)
    );
    assert_eq!(gw.call(CHAT, &key, &ask("m", false)).await.0, 200);
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[("sick", "circuit_open"), ("backup", "ok")])
    );
    let sick_calls = mock.stats()["by_scenario"]["status-503"].as_u64().unwrap();
    assert_eq!(sick_calls, 2, "an open circuit sends nothing");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(gw.call(CHAT, &key, &ask("m", false)).await.0, 200);
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/chat/completions")),
        pairs(&[("sick", "server_error"), ("backup", "ok")]),
        "after the cool-down one request probes"
    );
}

#[tokio::test]
async fn weights_split_traffic_and_connections_are_reused() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("a", "m", &mock.url("ok-a"), json!({"weight": 3})),
        upstream("b", "m", &mock.url("ok-b"), json!({"weight": 1})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    for _ in 0..200 {
        assert_eq!(gw.call(CHAT, &key, &ask("m", false)).await.0, 200);
    }
    let stats = mock.stats();
    let a = stats["by_scenario"]["ok-a"].as_u64().unwrap() as f64;
    let b = stats["by_scenario"]["ok-b"].as_u64().unwrap() as f64;
    assert_eq!(a + b, 200.0);
    assert!((2.0..=4.5).contains(&(a / b)), "a {a}, b {b}");
    // One pooled connection per deployment serves requests one after another.
    assert!(stats["connections_total"].as_u64().unwrap() <= 4, "{stats}");
}

#[tokio::test]
async fn tool_calls_pass_between_both_surfaces_and_both_protocols() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("oa", "oa", &mock.url("ok"), json!({})),
        upstream("an", "an", &mock.url("ok"), json!({"backend": "anthropic"})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let weather = json!({"type": "object", "properties": {"query": {"type": "string"}}});
    for model in ["oa", "an"] {
        for stream in [false, true] {
            // OpenAI surface.
            let req = json!({
                "model": model, "stream": stream,
                "messages": [{"role": "user", "content": "weather in Paris"}],
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look it up", "parameters": weather}}],
            });
            let r = gw.post(CHAT, &key, &req).await;
            assert_eq!(r.status(), 200);
            let (name, args) = if stream {
                let text = r.text().await.unwrap();
                let mut name = String::new();
                let mut args = String::new();
                let mut finish = String::new();
                for (_, d) in sse_events(&text) {
                    let Ok(v) = serde_json::from_str::<Value>(&d) else {
                        continue;
                    };
                    if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array() {
                        name.push_str(calls[0]["function"]["name"].as_str().unwrap_or(""));
                        args.push_str(calls[0]["function"]["arguments"].as_str().unwrap_or(""));
                    }
                    if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                        finish = f.to_string();
                    }
                }
                assert_eq!(finish, "tool_calls", "{text}");
                (name, args)
            } else {
                let body: Value = r.json().await.unwrap();
                let call = &body["choices"][0]["message"]["tool_calls"][0];
                assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
                assert!(body["choices"][0]["message"]["content"].is_null());
                (
                    call["function"]["name"].as_str().unwrap().to_string(),
                    call["function"]["arguments"].as_str().unwrap().to_string(),
                )
            };
            assert_eq!(name, "lookup");
            let args: Value = serde_json::from_str(&args).unwrap();
            assert_eq!(args["query"], "weather in Paris");
            // What the upstream received, in its own protocol.
            let sent = &mock.stats()["last_request"];
            if model == "an" {
                assert_eq!(sent["tools"][0]["input_schema"], weather, "{sent}");
            } else {
                assert_eq!(
                    sent["tools"][0]["function"]["parameters"], weather,
                    "{sent}"
                );
            }

            // Anthropic surface, with the tool's result sent back.
            let req = json!({
                "model": model, "max_tokens": 64, "stream": stream,
                "messages": [
                    {"role": "user", "content": "weather in Paris"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"query": "Paris"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
                ],
                "tools": [{"name": "lookup", "input_schema": weather}],
            });
            let r = gw.post("/v1/messages", &key, &req).await;
            assert_eq!(r.status(), 200);
            let text = if stream {
                let body = r.text().await.unwrap();
                let events = sse_events(&body);
                let names: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
                assert_eq!(names.first(), Some(&"message_start"));
                assert_eq!(names.last(), Some(&"message_stop"));
                events
                    .iter()
                    .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
                    .collect::<String>()
            } else {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["type"], "message");
                assert_eq!(body["stop_reason"], "end_turn");
                body["content"][0]["text"].as_str().unwrap().to_string()
            };
            assert_eq!(text, "The tool said: sunny");
        }
    }
}

#[tokio::test]
async fn upstream_credentials_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-very-secret-upstream-credential";
    std::fs::write(dir.path().join("key"), format!("{secret}\n")).unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("p", "m", &mock.url("ok"), json!({"api_key_file": dir.path().join("key")})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    assert_eq!(gw.call(CHAT, &key, &ask("m", false)).await.0, 200);
    let shown = format!("{:?}", gw.state.policy);
    assert!(!shown.contains(secret) && shown.contains("<redacted>"));
    let log: String = gw.records().iter().map(Value::to_string).collect();
    assert!(!log.contains(secret));
}

#[tokio::test]
async fn the_anthropic_surface_answers_errors_in_its_own_shape() {
    let mock = MockUpstream::start().await.unwrap();
    let gw =
        Gateway::start(json!({"deployments": [upstream("p", "m", &mock.url("ok"), json!({}))]}))
            .await;
    let r = gw
        .http
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "m", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let key = gw.key("agency", Role::User).await;
    let r = gw
        .http
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "m", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one message")
    );
    // Sampling parameters in Anthropic's ranges reach the upstream; out of range, a clear 400.
    let ask = |t: f64| json!({"model": "m", "max_tokens": 5, "temperature": t, "messages": [{"role": "user", "content": "x"}]});
    let r = gw
        .http
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&ask(0.25))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.stats()["last_request"]["temperature"], 0.25);
    let r = gw
        .http
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&ask(1.5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_value");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 0 and 1")
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_a_whole_answer_cancels_the_upstream_too() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("stuck", "m", &mock.url("stall"), json!({"first_token_timeout_secs": 60.0, "timeout_secs": 60.0})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let gone = gw
        .http
        .post(gw.url(CHAT))
        .bearer_auth(&key)
        .json(&ask("m", false))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err());
    assert!(
        eventually(2.0, || mock.stats()["cancelled"] == 1).await,
        "{}",
        mock.stats()
    );
    // The call is still audited, as one the client abandoned.
    assert!(eventually(2.0, || gw.records().iter().any(|r| r["status"] == 499)).await);
}

#[tokio::test]
async fn embeddings_route_to_upstreams_with_the_same_fallback() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({"deployments": [
        upstream("e1", "embed", &mock.url("status-503"), json!({"kind": "embedding", "retries": 1})),
        upstream("e2", "embed", &mock.url("ok"), json!({"kind": "embedding", "priority": 1})),
    ]}))
    .await;
    let key = gw.key("agency", Role::User).await;
    let (status, body) = gw
        .call(
            "/v1/embeddings",
            &key,
            &json!({"model": "embed", "input": ["one two", "three"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["enclave"]["deployment"], "e2");
    assert_eq!(
        outcomes(&gw.last_record("POST /v1/embeddings")),
        pairs(&[("e1", "server_error"), ("e1", "server_error"), ("e2", "ok")])
    );
    // A chat route refuses an embedding model by kind.
    let (status, body) = gw.call(CHAT, &key, &ask("embed", false)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "wrong_model_kind");
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second_of_revocation() {
    use enclave_store::Store as _;
    let gw = Gateway::start(json!({})).await;
    let key = gw.key("agency", Role::User).await;
    let get = || gw.http.get(gw.url("/v1/models")).bearer_auth(&key).send();
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(
        gw.store
            .revoke_key(&key[3..15], enclave_store::now())
            .await
            .unwrap()
    );
    tokio::time::sleep(enclave_service::principal::KEY_CACHE_TTL).await;
    let r = get().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "revoked_api_key");
}
