//! The audit log end to end: every API call that reached authentication has exactly one record
//! with its outcome; checkpoints and proofs verify; an export verifies offline and a tampered one
//! does not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use base64::Engine as _;
use common::{CHAT, Server};
use serde_json::{Value, json};

/// Every record the auditor may read (the first thousand).
async fn audit_records(http: &reqwest::Client, s: &Server, auditor: &str) -> Value {
    http.get(s.url("/v1/audit/records?limit=1000"))
        .bearer_auth(auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_call_is_recorded_once_and_the_log_verifies_offline() {
    let s = Server::start();
    let secret = s.cleared_key("default", "user", "SECRET");
    let auditor = s.key("default", "auditor");
    let http = common::http().build().unwrap();
    let chat = |key: &str, body: Value| {
        http.post(s.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
    };
    let start = {
        let r = audit_records(&http, &s, &auditor).await;
        r["tree_size"].as_u64().unwrap() + 1 // this call's own record
    };

    // A mixed bag; (status, code) as each should be recorded.
    let mut expected: Vec<(u16, Option<&str>, Option<&str>)> = Vec::new();
    let r = http
        .get(s.url("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    expected.push((r.status().as_u16(), None, Some("default")));
    let r = chat(
        &secret,
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    expected.push((200, None, Some("default")));
    let r = http
        .get(s.url("/v1/models"))
        .bearer_auth("ek_000000000000_nope")
        .send()
        .await
        .unwrap();
    expected.push((r.status().as_u16(), Some("invalid_api_key"), None));
    let r = http.get(s.url("/v1/models")).send().await.unwrap();
    expected.push((r.status().as_u16(), Some("missing_api_key"), None));
    let r = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expected.push((r.status().as_u16(), Some("invalid_json"), Some("default")));
    let r = chat(
        &secret,
        json!({"model": CHAT, "messages": [{"role": "user", "content": "(TS//SI) plan"}]}),
    )
    .send()
    .await
    .unwrap();
    expected.push((
        r.status().as_u16(),
        Some("label_exceeds_clearance"),
        Some("default"),
    ));
    let r = chat(
        &secret,
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    expected.push((
        r.status().as_u16(),
        Some("model_not_found"),
        Some("default"),
    ));
    let r = chat(
        &auditor,
        json!({"model": CHAT, "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    expected.push((
        r.status().as_u16(),
        Some("forbidden_by_policy"),
        Some("default"),
    ));
    let r = http
        .get(s.url("/v1/audit/records"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    expected.push((
        r.status().as_u16(),
        Some("forbidden_by_policy"),
        Some("default"),
    ));

    let r: Value = http
        .get(s.url(&format!("/v1/audit/records?from={start}&limit=1000")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Administrative actions (the keys made above) arrive from the CLI's queue in between.
    let records: Vec<&Value> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"]["kind"] == "api")
        .collect();
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per call: {records:#?}"
    );
    for (got, (status, code, tenant)) in records.iter().zip(&expected) {
        let rec = &got["record"];
        assert_eq!(rec["status"].as_u64().unwrap() as u16, *status, "{rec}");
        assert_eq!(rec["code"].as_str(), *code, "{rec}");
        assert_eq!(rec["tenant"].as_str(), *tenant, "{rec}");
        assert_eq!(rec["kind"], "api");
        assert!(
            !rec.to_string().contains("plan"),
            "no prompt text in records: {rec}"
        );
    }
    let denied = &records[5]["record"];
    assert_eq!(denied["request_label"], "TOP SECRET//SI");
    assert_eq!(denied["findings"]["marking"], 1);
    let allowed = &records[1]["record"];
    assert_eq!(allowed["deployment"], "embedded-chat");
    assert_eq!(allowed["operation"], "POST /v1/chat/completions");
    assert_eq!(records[0]["record"]["operation"], "GET /v1/models");
    assert_eq!(allowed["response_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(allowed["answer_label"], "UNCLASSIFIED");
    assert!(allowed["request_sha256"].as_str().unwrap().len() == 64);

    // Administrative actions taken with the CLI while the server runs reach the log.
    assert!(s.cli(&["tenants", "create", "agency-z"]).0);
    let z = s.key("agency-z", "user");
    let mut admin = Vec::new();
    for _ in 0..50 {
        let r = audit_records(&http, &s, &auditor).await;
        admin = r["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["record"]["kind"] == "admin" && r["record"]["tenant"] == "agency-z")
            .map(|r| r["record"]["operation"].as_str().unwrap().to_string())
            .collect();
        if admin.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(admin, ["tenants.create", "keys.create"]);
    let all = http
        .get(s.url("/v1/audit/records?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(all.contains(&z[3..15]), "the new key's id is recorded");
    assert!(!all.contains(&z[16..]), "no key secret is ever recorded");

    // The checkpoint verifies with the public key, and an inclusion proof for the allowed call.
    let (ok, key, _) = s.cli(&["audit", "public-key"]);
    assert!(ok);
    let key = key.trim().to_string();
    let checkpoint = http
        .get(s.url("/v1/audit/checkpoint"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (size, root) = enclave_audit::key::open_checkpoint(checkpoint.as_bytes(), &key).unwrap();
    let index = records[1]["index"].as_u64().unwrap();
    let proof: Value = http
        .get(s.url(&format!(
            "/v1/audit/proof/inclusion?index={index}&tree_size={size}"
        )))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decode = |v: &Value| {
        let b = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        enclave_audit::Hash(b.try_into().unwrap())
    };
    let hashes: Vec<_> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(decode)
        .collect();
    enclave_audit::tree::verify_inclusion(&hashes, size, root, index, decode(&proof["leaf_hash"]))
        .unwrap();

    // Export, verify offline; one changed byte is caught and located.
    let out = s.data.path().join("export");
    let (ok, _, err) = s.cli(&["audit", "export", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, text, err) = s.cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        &key,
    ]);
    assert!(ok && text.starts_with("OK"), "{text}{err}");
    // The file `audit public-key > FILE` wrote works as well as the key text.
    let key_file = s.data.path().join("verifier.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let (ok, text, err) = s.cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        key_file.to_str().unwrap(),
    ]);
    assert!(ok && text.starts_with("OK"), "{text}{err}");
    let path = out.join("records.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[index as usize] = lines[index as usize].replace("\"status\":200", "\"status\":201");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = s.cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        &key,
    ]);
    assert!(
        !ok && err.contains(&format!("record {index} does not match")),
        "{err}"
    );

    // Operators see the log grow in /metrics.
    let metrics = common::http_get(&s.url("/metrics"));
    assert!(metrics.contains("enclave_audit_records_total"), "{metrics}");
    assert!(metrics.contains("enclave_audit_tree_size"), "{metrics}");
}

/// Bounded load, `kill -9` at three moments, restart each time: every answer that reached a
/// client has its record at the index the answer named, and every checkpoint handed out before a
/// crash is a prefix of the log afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let mut s = Server::start();
    let key = s.key("default", "user");
    let key_id = key[3..15].to_string();
    let http = common::http().build().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut checkpoints: Vec<String> = Vec::new();
    for delay_ms in [400u64, 650, 900] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (http, base, key, stop) = (http.clone(), s.base.clone(), key.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut cps = Vec::new();
                for n in 0..2000u32 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let path = if n % 10 == 0 {
                        "/v1/audit/checkpoint"
                    } else {
                        "/v1/models"
                    };
                    let Ok(r) = http
                        .get(format!("{base}{path}"))
                        .bearer_auth(&key)
                        .send()
                        .await
                    else {
                        break; // the server is gone
                    };
                    let index = r
                        .headers()
                        .get("enclave-audit-index")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let Ok(body) = r.text().await else { break };
                    if let Some(i) = index {
                        got.push(i);
                        if path.ends_with("checkpoint") {
                            cps.push(body);
                        }
                    }
                }
                (got, cps)
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let before = tokio::task::spawn_blocking({
            let mut s2 = std::mem::replace(&mut s, Server::placeholder());
            move || {
                s2.crash_and_restart();
                s2
            }
        });
        s = before.await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            let (got, cps) = t.await.unwrap();
            acked.extend(got);
            checkpoints.extend(cps);
        }
    }
    assert!(acked.len() > 50, "the load ran: {} answers", acked.len());

    let (_, public_key, _) = s.cli(&["audit", "public-key"]);
    let public_key = public_key.trim().to_string();
    let out = s.data.path().join("after-crashes");
    let (ok, _, err) = s.cli(&["audit", "export", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, text, err) = s.cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        &public_key,
    ]);
    assert!(ok, "{text}{err}");
    let lines: Vec<Value> = std::fs::read_to_string(out.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for index in &acked {
        let rec = lines
            .get(*index as usize)
            .unwrap_or_else(|| panic!("acknowledged record {index} lost"));
        assert_eq!(
            rec["key_id"],
            key_id.as_str(),
            "record {index} is another call's: {rec}"
        );
        assert_eq!(rec["status"], 200);
    }
    let mut tree = enclave_audit::Tree::new();
    for l in std::fs::read_to_string(out.join("records.jsonl"))
        .unwrap()
        .lines()
    {
        tree.append(l.as_bytes()).unwrap();
    }
    for cp in &checkpoints {
        let (size, root) = enclave_audit::key::open_checkpoint(cp.as_bytes(), &public_key).unwrap();
        assert_eq!(
            tree.root(size).unwrap(),
            root,
            "a checkpoint of size {size} handed out before a crash no longer holds"
        );
    }
}

/// A streamed answer's record is promised durably before its first byte and written when it
/// ends: `kill -9` part-way leaves exactly one record, marked interrupted, at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_kill_9_is_recorded_once_at_the_next_start() {
    let mut s = Server::start();
    let http = common::http().build().unwrap();
    let mut r = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(&json!({
            "model": CHAT, "stream": true, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("enclave-audit-index").is_none());
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty(), "the stream began");
    s = tokio::task::spawn_blocking(move || {
        s.crash_and_restart();
        s
    })
    .await
    .unwrap();
    drop(r);
    let auditor = s.key("default", "auditor");
    let admin_id = &s.admin_key[3..15];
    let records = audit_records(&http, &s, &auditor).await;
    let streams: Vec<&Value> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["operation"] == "POST /v1/chat/completions" && r["key_id"] == admin_id)
        .collect();
    assert_eq!(streams.len(), 1, "exactly one record: {streams:?}");
    assert_eq!(streams[0]["status"], 500, "{}", streams[0]);
    assert_eq!(streams[0]["code"], "stream_interrupted");
    assert_eq!(streams[0]["request_label"], "UNCLASSIFIED");
}

/// A client that goes away before its answer still leaves exactly one record: 499 when the
/// server drops the call, or the call's own outcome when it runs to the end (HTTP/1 notices a
/// closed connection only when it answers).
#[tokio::test]
async fn a_call_whose_client_left_is_recorded_once() {
    let s = Server::start();
    let auditor = s.key("default", "auditor");
    let http = common::http().build().unwrap();
    let slow = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(
            &json!({"model": CHAT, "messages": [{"role": "user", "content": "Write a story."}],
            "max_tokens": 100, "temperature": 0}),
        )
        .send();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), slow)
            .await
            .is_err(),
        "the call was still running when the client left"
    );
    let admin_id = &s.admin_key[3..15];
    let mut mine = Vec::new();
    for _ in 0..200 {
        let r = audit_records(&http, &s, &auditor).await;
        mine = r["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["record"]["operation"] == "POST /v1/chat/completions"
                    && (r["record"]["key_id"] == admin_id || r["record"]["status"] == 499)
            })
            .map(|r| r["record"]["status"].as_u64().unwrap())
            .collect();
        if !mine.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(mine.len(), 1, "exactly one record: {mine:?}");
    assert!(mine[0] == 200 || mine[0] == 499, "{mine:?}");
}

/// A tenant whose policy keeps content gets its prompts and answers sealed beside the log, never
/// in the records; another tenant's are not kept.
#[tokio::test]
async fn content_is_kept_sealed_only_where_the_tenant_asks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "[tenants.records-office]\nkeep_content = true\n").unwrap();
    let s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    assert!(s.cli(&["tenants", "create", "records-office"]).0);
    let keeper = s.key("records-office", "user");
    let http = common::http().build().unwrap();
    let ask = |key: &str| {
        http.post(s.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": CHAT, "messages": [{"role": "user", "content": "File note 4711 about the harbour"}], "max_tokens": 3}))
            .send()
    };
    let r = ask(&keeper).await.unwrap();
    assert_eq!(r.status(), 200);
    let index: u64 = r.headers()["enclave-audit-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    let sealed = s
        .data
        .path()
        .join(format!("audit/content/records-office/{index}.sealed"));
    let raw = std::fs::read(&sealed).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("harbour"),
        "sealed, not plain"
    );
    let (ok, kept, err) = s.cli(&[
        "audit",
        "content",
        &index.to_string(),
        "--tenant",
        "records-office",
    ]);
    assert!(ok, "{err}");
    assert!(kept.contains("File note 4711 about the harbour"), "{kept}");
    assert!(
        kept.contains(answer["id"].as_str().unwrap()),
        "the answer is kept too: {kept}"
    );
    // The default tenant keeps nothing.
    let r = ask(&s.admin_key).await.unwrap();
    let other: u64 = r.headers()["enclave-audit-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !s.data
            .path()
            .join(format!("audit/content/default/{other}.sealed"))
            .exists()
    );
    // Records never hold the text.
    let log = std::fs::read(s.data.path().join("audit/records.log")).unwrap();
    assert!(!String::from_utf8_lossy(&log).contains("harbour"));
}
