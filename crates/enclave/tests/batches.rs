//! Batches: OpenAI's Batch API through the official `openai` package (tests/sdk/test_batches.py)
//! against the real binary in front of a recording mock upstream, and a 1,000-line batch
//! crashed with `kill -9` part-way: after the restart every `custom_id` appears exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use enclave_mock_upstream::MockUpstream;
use serde_json::{Value, json};

fn config(mock: &MockUpstream, dir: &std::path::Path) -> std::path::PathBuf {
    let deployment = |name: &str, model: &str, scenario: &str, label: &str, kind: &str| {
        format!(
            "[[deployments]]\nname = \"{name}\"\nmodel = \"{model}\"\nbackend = \"openai\"\nkind = \"{kind}\"\n\
             base_url = \"{}\"\naccreditation = \"{label}\"\njurisdiction = \"enclave\"\n\n",
            mock.url(scenario)
        )
    };
    let path = dir.join("enclave.toml");
    std::fs::write(
        &path,
        [
            deployment("low", "mock", "ok-low", "UNCLASSIFIED", "chat"),
            deployment("high", "mock", "ok-high", "SECRET", "chat"),
            deployment("slow", "slowmock", "slow-40", "SECRET", "chat"),
            deployment("embed", "mock-embed", "ok-embed", "SECRET", "embedding"),
        ]
        .concat(),
    )
    .unwrap();
    path
}

fn key(s: &Server) -> String {
    let (ok, out, err) = s.cli(&[
        "keys",
        "create",
        "--tenant",
        "default",
        "--clearance",
        "SECRET",
    ]);
    assert!(ok, "keys create failed: {err}");
    out.trim().to_string()
}

#[test]
fn the_openai_sdk_runs_batches_with_labels_outputs_and_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockUpstream::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&mock, dir.path());
    let s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    let test = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_batches.py"
    );
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", test])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", key(&s))
        .env("MOCK_STATS", mock.url("stats").trim_end_matches("/v1"))
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");
}

#[test]
fn a_batch_killed_part_way_answers_every_line_exactly_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockUpstream::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&mock, dir.path());
    let mut s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    let k = key(&s);
    let lines: String = (0..1000)
        .map(|i| {
            json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "slowmock", "max_tokens": 4, "messages": [{"role": "user", "content": format!("question {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect();
    // reqwest is built without a crypto provider: the process installs ring first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::new();
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(lines.into_bytes()).file_name("lines.jsonl"),
        );
    let file: Value = client
        .post(format!("{}/v1/files", s.base))
        .bearer_auth(&k)
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let batch: Value = client
        .post(format!("{}/v1/batches", s.base))
        .bearer_auth(&k)
        .json(&json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = batch["id"].as_str().unwrap().to_string();
    let get = |s: &Server| -> Value {
        reqwest::blocking::Client::new()
            .get(format!("{}/v1/batches/{id}", s.base))
            .bearer_auth(&k)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // Part-way: some lines answered, most not.
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(&s)["request_counts"]["completed"].as_i64().unwrap() < 30 {
        assert!(
            Instant::now() < deadline,
            "the batch did not start: {}",
            get(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = get(&s)["request_counts"]["completed"].as_i64().unwrap();
    s.crash_and_restart();
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let b = get(&s);
        if b["status"] == "completed" {
            break b;
        }
        assert!(Instant::now() < deadline, "the batch did not finish: {b}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["request_counts"]["completed"], 1000, "{done}");
    let output = client
        .get(format!(
            "{}/v1/files/{}/content",
            s.base,
            done["output_file_id"].as_str().unwrap()
        ))
        .bearer_auth(&k)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in output.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        *seen
            .entry(v["custom_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 1000, "every custom_id once");
    assert!(seen.values().all(|n| *n == 1), "a line answered twice");
    assert!(done["error_file_id"].is_null(), "{done}");
    // Every line is a call in the audit log of its own, linked to the batch (a line cut by the
    // crash may have been recorded twice: answered once, asked twice).
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    let mut from = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{}/v1/audit/records?from={from}&limit=1000",
                s.base
            ))
            .bearer_auth(&s.admin_key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        for r in page["data"].as_array().unwrap() {
            let record = &r["record"];
            if record["kind"] == "batch" && record["run"] == id.as_str() {
                let detail = record["detail"].as_str().unwrap();
                let line = detail.split('`').nth(1).unwrap().to_string();
                *recorded.entry(line).or_default() += 1;
                assert_eq!(record["request_label"], "UNCLASSIFIED", "{record}");
            }
        }
        // Each read is recorded too: stop at the end of the log as it was when read.
        match page["next_from"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(recorded.len(), 1000, "a record for every line");
    // The CLI sees it too.
    let (ok, listed, err) = s.cli(&["jobs", "list", "--url", &s.base, "--key", &k]);
    assert!(ok, "{err}");
    assert!(
        listed.contains(&id) && listed.contains("completed\t1000/1000 done"),
        "{listed}"
    );
    let (ok, watched, err) = s.cli(&["jobs", "watch", &id, "--url", &s.base, "--key", &k]);
    assert!(ok, "{err}");
    assert!(
        watched.contains("completed: 1000 of 1000 lines answered"),
        "{watched}"
    );
    eprintln!("killed with {before} of 1000 lines answered; after the restart all 1000, each once");
}
