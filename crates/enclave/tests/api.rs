//! The OpenAI-compatible API over plain HTTP, against the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{CHAT, EMBED, Server};
use futures::StreamExt;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    common::http().build().unwrap()
}

async fn post(s: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": CHAT, "messages": [{"role": "user", "content": content}], "max_tokens": 16, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The server's `/metrics` text.
async fn metrics(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads an SSE response into its `data:` payloads.
async fn sse(r: reqwest::Response) -> Vec<String> {
    let mut body = String::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn models_chat_and_embeddings_follow_the_openai_shapes() {
    let s = Server::start();
    let key = &s.admin_key;

    let models: Value = client()
        .get(s.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(models["object"], "list");
    assert_eq!(ids, [CHAT, EMBED]);

    // Non-streamed, greedy: usage adds up and `length` is reported at the cap.
    let (status, body) = post(
        &s,
        key,
        "/v1/chat/completions",
        chat("Name three colours.", json!({"max_tokens": 5})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let u = &body["usage"];
    assert_eq!(u["completion_tokens"], 5);
    assert!(
        u["prompt_tokens"].as_u64().unwrap() > 10,
        "the template adds a system prompt and markers"
    );
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 5)
    );
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // `max_completion_tokens` wins over `max_tokens`; the model stops on its own with room.
    let (_, body) = post(
        &s,
        key,
        "/v1/chat/completions",
        chat(
            "Say hi.",
            json!({"max_tokens": 3, "max_completion_tokens": 200}),
        ),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 3);

    // Same seed and parameters, same text; sampled, not greedy.
    let sampled = chat(
        "Write a sentence about rivers.",
        json!({"temperature": 0.9, "seed": 1234, "max_tokens": 24}),
    );
    let (_, a) = post(&s, key, "/v1/chat/completions", sampled.clone()).await;
    let (_, b) = post(&s, key, "/v1/chat/completions", sampled).await;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    let texts: std::collections::HashSet<String> = futures::future::join_all((0..4).map(|seed| {
        let s = &s;
        async move {
            let (_, r) = post(
                s,
                key,
                "/v1/chat/completions",
                chat(
                    "Write a sentence about rivers.",
                    json!({"temperature": 1.0, "seed": seed, "max_tokens": 24}),
                ),
            )
            .await;
            r["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        }
    }))
    .await
    .into_iter()
    .collect();
    assert!(
        texts.len() > 1,
        "different seeds should give different samples: {texts:?}"
    );

    // A stop sequence cuts the answer before it.
    let (_, full) = post(
        &s,
        key,
        "/v1/chat/completions",
        chat(
            "Count from 1 to 10, separated by commas.",
            json!({"max_tokens": 40}),
        ),
    )
    .await;
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let cut = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map(|(i, _)| i)
        .unwrap();
    let stop = text[cut..].chars().take(2).collect::<String>();
    let (_, stopped) = post(
        &s,
        key,
        "/v1/chat/completions",
        chat(
            "Count from 1 to 10, separated by commas.",
            json!({"max_tokens": 40, "stop": [stop.clone()]}),
        ),
    )
    .await;
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let got = stopped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(
        got,
        &text[..text.find(&stop).unwrap()],
        "stop {stop:?} in {text:?}"
    );

    // Embeddings: float and base64 carry the same unit vectors; token arrays work too.
    let (status, floats) = post(
        &s,
        key,
        "/v1/embeddings",
        json!({"model": EMBED, "input": ["hello world", "goodbye"]}),
    )
    .await;
    assert_eq!(status, 200, "{floats}");
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["data"][1]["index"], 1);
    let v: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(v.len(), 384);
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(
        floats["usage"]["prompt_tokens"], 7,
        "[CLS] hello world [SEP] + [CLS] goodbye [SEP]"
    );
    let (_, b64) = post(&s, key, "/v1/embeddings", json!({"model": EMBED, "input": "hello world", "encoding_format": "base64", "dimensions": 384})).await;
    use base64_decode::decode;
    let decoded = decode(b64["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded, v);
    let (_, toks) = post(
        &s,
        key,
        "/v1/embeddings",
        json!({"model": EMBED, "input": [7592, 2088]}),
    )
    .await;
    let tv: Vec<f32> = serde_json::from_value(toks["data"][0]["embedding"].clone()).unwrap();
    assert!(
        tv.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-5),
        "token ids of `hello world` embed the same"
    );
}

/// Minimal base64 decoding for the test (standard alphabet, padded).
mod base64_decode {
    pub fn decode(s: &str) -> Vec<f32> {
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut bytes = vec![];
        for c in s.bytes().filter(|&c| c != b'=') {
            bits = (bits << 6) | table.iter().position(|&t| t == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                bytes.push((bits >> n) as u8);
            }
        }
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

#[tokio::test]
async fn streams_are_well_formed_and_counted() {
    let s = Server::start();
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(&chat(
            "Tell me about the sea.",
            json!({"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 12}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(r).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    let with_choices = &chunks[..chunks.len() - 1];
    let finishes: Vec<&Value> = with_choices
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert!(finishes[..finishes.len() - 1].iter().all(|f| f.is_null()));
    assert_eq!(*finishes.last().unwrap(), "length");
    assert!(with_choices.iter().all(|c| c["usage"].is_null()));
    let streamed: String = with_choices
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();

    // The streamed text equals the non-streamed text for the same greedy request.
    let (_, whole) = post(
        &s,
        &s.admin_key,
        "/v1/chat/completions",
        chat("Tell me about the sea.", json!({"max_tokens": 12})),
    )
    .await;
    assert_eq!(whole["choices"][0]["message"]["content"], streamed);
}

#[tokio::test]
async fn sixteen_concurrent_streams_complete_and_a_dropped_one_does_not_stall_them() {
    let s = Server::start();
    let key = s.admin_key.clone();
    let base = s.base.clone();
    // One client reads two chunks then disconnects.
    let dropper = {
        let (key, base) = (key.clone(), base.clone());
        tokio::spawn(async move {
            let r = client()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&chat(
                    "Write a long story.",
                    json!({"stream": true, "max_tokens": 400}),
                ))
                .send()
                .await
                .unwrap();
            let mut stream = r.bytes_stream();
            stream.next().await;
            stream.next().await;
        })
    };
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (key, base) = (key.clone(), base.clone());
            tokio::spawn(async move {
                let r = client()
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&chat(&format!("Give me fact number {i} about space."), json!({"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 20})))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let events = sse(r).await;
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
                let u = &usage["usage"];
                assert!(u["completion_tokens"].as_u64().unwrap() >= 1 && u["completion_tokens"].as_u64().unwrap() <= 20);
                assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));
            })
        })
        .collect();
    dropper.await.unwrap();
    let all = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        futures::future::join_all(tasks),
    )
    .await
    .expect("streams stalled");
    for t in all {
        t.unwrap();
    }
    // The dropped request released its sequence: nothing is left running.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let metrics = metrics(&s).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "enclave_engine_active_sequences 0"),
        "{metrics}"
    );
    assert!(metrics.lines().any(|l| l == "enclave_engine_queue_depth 0"));
}

#[tokio::test]
async fn metrics_and_health_are_exposed() {
    let s = Server::start();
    assert_eq!(
        client()
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = client()
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    post(
        &s,
        &s.admin_key,
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 2})),
    )
    .await;
    post(&s, "ek_bad", "/v1/chat/completions", chat("hi", json!({}))).await;
    let r = client().get(s.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for needle in [
        r#"enclave_http_requests_total{route="/v1/chat/completions",method="POST",status="200"} 1"#,
        r#"enclave_http_requests_total{route="/v1/chat/completions",method="POST",status="401"} 1"#,
        "enclave_http_request_duration_seconds_bucket{",
        r#"enclave_tokens_total{model="smollm2-135m-instruct",direction="out"} 2"#,
        "enclave_engine_queue_depth 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn an_overloaded_engine_answers_429_at_once_and_keeps_serving() {
    let s = Server::start_with(&[
        ("ENCLAVE_CHAT__SLOTS", "1"),
        ("ENCLAVE_CHAT__MAX_QUEUE", "1"),
    ]);
    // Greedy on this prompt runs to the 400-token cap (checked), so the sequence stays busy for
    // seconds whatever the machine's load.
    let long = || {
        chat(
            "Write a long story about a lighthouse.",
            json!({"max_tokens": 400, "temperature": 0}),
        )
    };
    let (key, base) = (s.admin_key.clone(), s.base.clone());
    let send_long = || {
        let (key, base, body) = (key.clone(), base.clone(), long());
        tokio::spawn(async move {
            client()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Waits until `/metrics` shows a line; the engine admits requests on its own thread.
    let wait_for = |line: &'static str| {
        let s = &s;
        async move {
            for _ in 0..500 {
                if metrics(s).await.lines().any(|l| l == line) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("`{line}` never appeared in /metrics");
        }
    };
    // One request takes the only sequence, then a second waits in the queue.
    let first = send_long();
    wait_for("enclave_engine_active_sequences 1").await;
    let second = send_long();
    wait_for("enclave_engine_queue_depth 1").await;
    let busy = [first, second];
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("hi", json!({"max_tokens": 1})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "a third request while one runs and one waits is refused at once"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "engine_overloaded");
    for t in busy {
        assert_eq!(t.await.unwrap(), 200, "the admitted requests complete");
    }
    let (status, _) = post(
        &s,
        &key,
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 1})),
    )
    .await;
    assert_eq!(status, 200);
}

/// A long shared system prompt is computed once per tenant and label: the second call reports
/// the reused tokens in `usage.prompt_tokens_details.cached_tokens`, as OpenAI does; another
/// tenant's identical call, or a call at another label, reuses nothing (its answer and its timing
/// owe nothing to the first).
#[tokio::test]
async fn a_tenants_shared_prefix_is_cached_for_that_tenant_only() {
    let s = Server::start();
    let (ok, _, err) = s.cli(&["tenants", "create", "other-agency"]);
    assert!(ok, "{err}");
    let other = s.key("other-agency", "user");
    let system: String = (0..40)
        .map(|i| {
            format!(
                "Rule {i}: records of type {i} are kept for {} years. ",
                i + 2
            )
        })
        .collect();
    let body = |question: &str| {
        json!({"model": CHAT, "max_tokens": 4, "temperature": 0, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question}]})
    };
    let cached = |v: &Value| v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    let (status, first) = post(&s, &s.admin_key, "/v1/chat/completions", body("Type 3?")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(cached(&first), Some(0), "{first}");
    let (_, second) = post(&s, &s.admin_key, "/v1/chat/completions", body("Type 9?")).await;
    let prompt_tokens = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let reused = cached(&second).unwrap();
    assert!(
        reused > prompt_tokens / 2 && reused < prompt_tokens,
        "reused {reused} of {prompt_tokens}: {second}"
    );
    let (status, theirs) = post(&s, &other, "/v1/chat/completions", body("Type 9?")).await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(
        cached(&theirs),
        Some(0),
        "another tenant read the cache: {theirs}"
    );
    // Within the tenant, the cache is per label: a SECRET request shares nothing with the
    // UNCLASSIFIED ones before it (its time to first token must not reveal them), then reuses
    // its own.
    let secret = s.cleared_key("default", "user", "SECRET");
    let (status, high) = post(&s, &secret, "/v1/chat/completions", body("(S) Type 9?")).await;
    assert_eq!(status, 200, "{high}");
    assert_eq!(
        cached(&high),
        Some(0),
        "a SECRET request reused an UNCLASSIFIED prefix: {high}"
    );
    let (_, high_again) = post(&s, &secret, "/v1/chat/completions", body("(S) Type 4?")).await;
    assert!(cached(&high_again).unwrap() > 0, "{high_again}");
}

/// SIGTERM: the server stops taking calls, then finishes its background work — usage metered so
/// far written, the last administrative actions moved into the audit log, the ingestion worker
/// stopped — waits for it, and exits 0. Usage of a call made just before is there after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_server_finishes_its_background_work_and_exits_cleanly() {
    let mut s = Server::start();
    let (status, _) = post(
        &s,
        &s.admin_key,
        "/v1/embeddings",
        json!({"model": EMBED, "input": "the harbour crane"}),
    )
    .await;
    assert_eq!(status, 200);
    let (mut s, exit) = tokio::task::spawn_blocking(move || {
        let exit = s.terminate(std::time::Duration::from_secs(30));
        (s, exit)
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit}");
    let log = s.log.lock().unwrap().clone();
    for task in ["meter flush", "admin-event pump"] {
        assert!(
            log.lines()
                .any(|l| l.contains("background task stopped") && l.contains(task)),
            "`{task}` was not stopped and awaited:\n{log}"
        );
    }
    assert!(
        log.contains("background task stopped: ingestion worker"),
        "{log}"
    );
    let stopped = log.rfind("stopped").unwrap();
    assert!(
        log[stopped..].lines().count() <= 2,
        "`stopped` is the last word:\n{log}"
    );

    s.crash_and_restart();
    let usage: Value = client()
        .get(s.url("/v1/usage"))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests: u64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["model"] == EMBED)
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 1, "{usage}");
}

/// A stored response of the Responses API, answered by the embedded model, is there after the
/// server is killed and started again, at its label.
#[tokio::test]
async fn stored_responses_survive_a_restart() {
    let mut s = Server::start();
    let http = common::http().build().unwrap();
    let r = http
        .post(s.url("/v1/responses"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"model": CHAT, "input": "Say hi.", "max_output_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let made: Value = r.json().await.unwrap();
    assert_eq!(made["status"], "completed", "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    s.crash_and_restart();
    let r = http
        .get(s.url(&format!("/v1/responses/{id}")))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["enclave-label"], "UNCLASSIFIED");
    let kept: Value = r.json().await.unwrap();
    assert_eq!(kept, made);
}
