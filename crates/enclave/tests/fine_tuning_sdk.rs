//! OpenAI's fine-tuning API through the official `openai` package, unchanged
//! (tests/sdk/test_fine_tuning.py), against the real binary: a model trained on the committed
//! case-note task answers in its form and shows its lineage; a SECRET training file makes a
//! SECRET model an UNCLASSIFIED key can neither list nor call; bad jobs are refused. Then the
//! audit log: the finished job's lineage is an event in it, and calls to the model are records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

use common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_fine_tunes_a_model_that_inherits_its_datas_labels() {
    let s = Server::start_with(&[]);
    let (ok, _, err) = s.cli(&["tenants", "create", "elsewhere"]);
    assert!(ok, "{err}");
    let test = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_fine_tuning.py"
    );
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../train/testdata/case_notes");
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", test])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", s.cleared_key("default", "user", "SECRET"))
        .env(
            "ENCLAVE_LOW_KEY",
            s.cleared_key("default", "user", "UNCLASSIFIED"),
        )
        .env(
            "ENCLAVE_OTHER_KEY",
            s.cleared_key("elsewhere", "user", "SECRET"),
        )
        .env("ENCLAVE_CASE_NOTES", data)
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");

    // Finishing is audited with the lineage; serving is audited call by call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let records = s.audit_records().await;
        let text = serde_json::to_string(&records).unwrap();
        let finished = records
            .iter()
            .filter(|r| r.to_string().contains("fine_tuning.succeeded"))
            .count();
        let calls = records
            .iter()
            .filter(|r| {
                r["model"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ft:smollm2-135m-instruct:default:casenotes:"))
            })
            .count();
        if finished >= 2 && calls >= 6 {
            assert!(text.contains("base_sha256"), "the lineage is in the record");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished jobs in the log: {finished}, calls to the model: {calls}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A blocking client for the restart test (reqwest is built without a crypto provider: the
/// process installs ring first).
fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

fn get(s: &Server, key: &str, path: &str) -> serde_json::Value {
    client()
        .get(s.url(path))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Waits until the job reaches one of `statuses`; returns it.
fn wait_for(s: &Server, key: &str, id: &str, statuses: &[&str]) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let job = get(s, key, &format!("/v1/fine_tuning/jobs/{id}"));
        if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {job}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_job_running_when_the_server_is_killed_trains_again_and_its_model_is_served_after_restarts() {
    let mut s = Server::start_with(&[]);
    let key = s.cleared_key("default", "user", "UNCLASSIFIED");
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../train/testdata/case_notes/train.jsonl"
    );
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(std::fs::read(data).unwrap())
                .file_name("train.jsonl"),
        );
    let file: serde_json::Value = client()
        .post(s.url("/v1/files"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let job: serde_json::Value = client()
        .post(s.url("/v1/fine_tuning/jobs"))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({"model": "smollm2-135m-instruct", "training_file": file["id"],
            "suffix": "restart", "hyperparameters": {"n_epochs": 1, "batch_size": 4}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    // Killed while it runs (after its first step), the job is queued again at the next start,
    // says so in its events, trains again from the start and succeeds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let events = get(&s, &key, &format!("/v1/fine_tuning/jobs/{id}/events"));
        let stepped = events["data"].as_array().unwrap().iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Step 1/")
        });
        if stepped {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no step: {events}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.crash_and_restart();
    let done = wait_for(&s, &key, &id, &["succeeded", "failed", "cancelled"]);
    assert_eq!(done["status"], "succeeded", "{done}");
    let events = get(&s, &key, &format!("/v1/fine_tuning/jobs/{id}/events"));
    let messages: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("queued to train again")),
        "{messages:?}"
    );
    let started = messages
        .iter()
        .filter(|m| **m == "Fine-tuning job started")
        .count();
    assert_eq!(started, 2, "{messages:?}");
    // The jobs CLI lists it, and watching a finished job says what it made.
    let (ok, listed, err) = s.cli(&["jobs", "list", "--url", &s.base, "--key", &key]);
    assert!(ok, "{err}");
    assert!(
        listed.contains(&id) && listed.contains("succeeded"),
        "{listed}"
    );
    let (ok, watched, err) = s.cli(&["jobs", "watch", &id, "--url", &s.base, "--key", &key]);
    assert!(ok, "{err}");
    assert!(
        watched.contains("succeeded: ft:smollm2-135m-instruct:default:restart:")
            && watched.contains("at UNCLASSIFIED"),
        "{watched}"
    );
    // After another restart the model is served again, from its adapter.
    let model = done["fine_tuned_model"].as_str().unwrap().to_string();
    s.crash_and_restart();
    let listed = get(&s, &key, "/v1/models");
    assert!(listed.to_string().contains(&model), "{listed}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = client()
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => break,
            503 => {}
            other => panic!("{other}: {}", r.text().unwrap()),
        }
        assert!(std::time::Instant::now() < deadline, "never served");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Uploads the committed training file for `key`; returns its id.
fn upload_training_file(s: &Server, key: &str) -> String {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../train/testdata/case_notes/train.jsonl"
    );
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(std::fs::read(data).unwrap())
                .file_name("train.jsonl"),
        );
    let file: serde_json::Value = client()
        .post(s.url("/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    file["id"].as_str().unwrap().to_string()
}

#[test]
fn training_is_charged_to_the_tenants_quota_and_stops_when_the_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "[tenants.thrifty.quota]\nmonthly_tokens = 600\n").unwrap();
    let s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    assert!(s.cli(&["tenants", "create", "thrifty"]).0);
    let key = s.cleared_key("thrifty", "user", "UNCLASSIFIED");
    let file = upload_training_file(&s, &key);
    let job: serde_json::Value = client()
        .post(s.url("/v1/fine_tuning/jobs"))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({"model": "smollm2-135m-instruct", "training_file": file,
            "suffix": "thrifty", "hyperparameters": {"n_epochs": 1, "batch_size": 4}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    // Each step is charged before it runs: the 16 examples (about 1,000 tokens) do not fit a
    // budget of 600, so the job trains a step or two and fails with OpenAI's quota code.
    let done = wait_for(&s, &key, &id, &["succeeded", "failed", "cancelled"]);
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "insufficient_quota", "{done}");
    assert!(done["fine_tuned_model"].is_null(), "{done}");
    let events = get(&s, &key, &format!("/v1/fine_tuning/jobs/{id}/events"));
    let steps = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Step ")
        })
        .count();
    assert!(steps >= 1, "some steps fit the budget: {events}");
    // What it trained is the tenant's usage, under its own name, and within the budget.
    let usage = get(&s, &key, "/v1/usage");
    let trained: u64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["model"] == "training:smollm2-135m-instruct")
        .map(|b| b["input_tokens"].as_u64().unwrap())
        .sum();
    assert!(trained > 0 && trained <= 600, "{usage}");
    // A chat call that would need more than what is left is refused too: it is one budget.
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({"model": "smollm2-135m-instruct", "max_tokens": 600,
            "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
}
