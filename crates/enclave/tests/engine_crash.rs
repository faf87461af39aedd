//! A crash in the chat engine (a segfault in a llama.cpp kernel, as AMX gives) never takes the
//! server down: the request in flight fails with 503 `model_unavailable`, `/readyz` turns
//! unready, the log says why, and the engine is restarted and answers again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::time::{Duration, Instant};

use common::{CHAT, Server};
use futures::StreamExt;
use serde_json::{Value, json};

/// The pid of the server's `engine-worker` child.
fn engine_pid(server: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for task in std::fs::read_dir(format!("/proc/{server}/task")).unwrap() {
            let children =
                std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
            for pid in children.split_whitespace() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains("engine-worker") {
                    return pid.parse().unwrap();
                }
            }
        }
        assert!(Instant::now() < deadline, "no engine-worker child found");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn post_chat(s: &Server, body: Value) -> reqwest::Response {
    common::http()
        .build()
        .unwrap()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn chat(s: &Server, max_tokens: u32) -> (u16, Value) {
    let r = post_chat(
        s,
        json!({"model": CHAT, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to two hundred in words."}]}),
    )
    .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn readyz(s: &Server) -> (u16, Value) {
    let r = common::http()
        .build()
        .unwrap()
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_engine_fails_the_call_restarts_the_engine_and_the_server_keeps_serving() {
    let mut s = Server::start();
    let (status, body) = chat(&s, 4).await;
    assert_eq!(status, 200, "{body}");
    let worker = engine_pid(s.pid());

    // A long streamed answer, under way (its first token arrived) when the engine dies.
    let r = post_chat(
        &s,
        json!({"model": CHAT, "max_tokens": 1500, "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": "Write a very long story."}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut body = String::new();
    while !body.contains("\"content\"") {
        let chunk = stream.next().await.expect("a first token").unwrap();
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    // SIGABRT is how llama.cpp dies on a failed GGML_ASSERT. (A SIGSEGV sent with `kill` is not
    // a fault: Rust's stack-overflow handler swallows the first one; a real fault kills.)
    signal(worker, "ABRT");
    while let Some(chunk) = stream.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        body.contains("model_unavailable"),
        "the stream ends with an error event: {body}"
    );

    // While the engine restarts: a call gets 503 model_unavailable with the reason, and the
    // server is unready.
    let (status, body) = chat(&s, 4).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGABRT"),
        "{body}"
    );
    let (status, body) = readyz(&s).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["models"][CHAT], "restarting", "{body}");
    assert!(s.is_running(), "the server survived its engine");

    // Restarted: ready again, a new worker, chat answers.
    s.wait_ready();
    let (status, body) = readyz(&s).await;
    assert_eq!(body["engine"]["restarts"], 1, "{body}");
    assert_eq!(status, 200);
    let again = engine_pid(s.pid());
    assert_ne!(again, worker, "a new engine process");
    let (status, body) = chat(&s, 4).await;
    assert_eq!(status, 200, "{body}");

    let log = s.log.lock().unwrap().clone();
    assert!(
        log.contains("the chat engine stopped") && log.contains("SIGABRT"),
        "the log says why: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_keeps_dying_is_restarted_each_time() {
    let s = Server::start();
    for round in 1..=2u64 {
        let worker = engine_pid(s.pid());
        signal(worker, "KILL");
        // Wait for the supervisor to see the death (unready), then for the restart (ready).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = readyz(&s).await;
            if status == 503 || body["engine"]["restarts"].as_u64() == Some(round) {
                break;
            }
            assert!(Instant::now() < deadline, "death not noticed: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.wait_ready();
        let (_, body) = readyz(&s).await;
        assert_eq!(body["engine"]["restarts"], round, "{body}");
        let (status, body) = chat(&s, 4).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
}
