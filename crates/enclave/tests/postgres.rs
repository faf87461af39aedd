//! Two `enclave serve` replicas sharing one PostgreSQL database (a real PostgreSQL 15 cluster
//! the test makes with `initdb`): `config check` tests the connection; one audit log holds both
//! replicas' calls and its export verifies; a key minted by one is
//! honoured by the other and a revocation made through one is refused by both within a second
//! or so; a per-minute quota holds across both; a model fine-tuned through one is served by
//! the other, and a job running on one is cancelled through the other; a document added through one is searchable
//! through the other within two seconds; a batch created through one is answered once
//! whichever replica takes it, and read through either.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

fn embed(s: &Server, key: &str) -> u16 {
    client()
        .post(s.url("/v1/embeddings"))
        .bearer_auth(key)
        .json(&json!({"model": "all-minilm-l6-v2", "input": "shared state"}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn two_replicas_on_one_postgres_database_serve_as_one_platform() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let url = cluster.create_database("enclave").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        "[tenants.metered.quota]\nrequests_per_minute = 8\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let a = Server::start_with(&[
        ("ENCLAVE_DATABASE_URL", &url),
        ("ENCLAVE_NODE_NAME", "replica-a"),
        ("ENCLAVE_CONFIG", config),
    ]);
    let b = Server::start_joining(
        &a,
        &[
            ("ENCLAVE_DATABASE_URL", &url),
            ("ENCLAVE_NODE_NAME", "replica-b"),
            ("ENCLAVE_CONFIG", config),
        ],
    );

    // `config check` connects and reads the tenants from the shared database.
    let (ok, out, err) = b.cli(&["config", "check"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("database: PostgreSQL 15") && out.contains("postgres://postgres@127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("default"), "{out}");

    // A key minted through one replica's CLI is a key on both.
    let key = a.cleared_key("default", "user", "UNCLASSIFIED");
    for s in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match embed(s, &key) {
                200 => break,
                503 => assert!(
                    Instant::now() < deadline,
                    "the embedding model never loaded"
                ),
                other => panic!("{other}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // A per-minute limit holds for the platform, not per replica: twelve calls spread over both
    // replicas, eight admitted.
    assert!(a.cli(&["tenants", "create", "metered"]).0);
    let metered = b.cleared_key("metered", "user", "UNCLASSIFIED");
    let answers: Vec<u16> = (0..12)
        .map(|i| embed(if i % 2 == 0 { &a } else { &b }, &metered))
        .collect();
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        8,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 429).count(),
        4,
        "{answers:?}"
    );

    // One audit log for the platform: B's export holds the calls both replicas served, in one
    // contiguous log signed with the platform's key, and verifies offline.
    std::thread::sleep(Duration::from_millis(500));
    let out = b.data.path().join("export");
    let (ok, _, err) = b.cli(&["audit", "export", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, verifier, err) = a.cli(&["audit", "public-key"]);
    assert!(ok, "{err}");
    let (ok, text, err) = b.cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        verifier.trim(),
    ]);
    assert!(ok && text.starts_with("OK"), "{text}{err}");
    let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    let metered = records
        .lines()
        .filter(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["tenant"] == "metered" && r["operation"] == "POST /v1/embeddings"
        })
        .count();
    assert_eq!(metered, 12, "every call of both replicas, refused ones too");

    // A batch created through A is answered once, by whichever replica takes it, and B reads it.
    let lines: String = (0..6)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("r-{i}"), "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": "all-minilm-l6-v2", "input": format!("line {i}")}})
            )
        })
        .collect();
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(lines.into_bytes()).file_name("in.jsonl"),
        );
    let file: Value = client()
        .post(a.url("/v1/files"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let batch: Value = client()
        .post(a.url("/v1/batches"))
        .bearer_auth(&key)
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/embeddings",
                      "completion_window": "24h"}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = batch["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let got: Value = client()
            .get(b.url(&format!("/v1/batches/{id}")))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if got["status"] == "completed" {
            break got;
        }
        assert!(Instant::now() < deadline, "{got}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["request_counts"]["completed"], 6, "{done}");
    let output = client()
        .get(a.url(&format!(
            "/v1/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut ids: Vec<String> = output
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["custom_id"].to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{output}");

    // A document added through A is searchable through B within about a second of being
    // ready (the catalog is shared; B's indexes follow it).
    let admin = a.cleared_key("default", "admin", "UNCLASSIFIED");
    let created = client()
        .post(a.url("/v1/knowledge-bases"))
        .bearer_auth(&admin)
        .json(&json!({"name": "shared", "max_label": "UNCLASSIFIED"}))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // B opens the knowledge base's indexes before the document exists.
    let search = |s: &Server| -> Value {
        client()
            .post(s.url("/v1/knowledge-bases/shared/search"))
            .bearer_auth(&key)
            .json(&json!({"query": "harbour crane tide tables", "k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert_eq!(search(&b)["data"].as_array().unwrap().len(), 0);
    let form = reqwest::blocking::multipart::Form::new()
        .text("label", "UNCLASSIFIED")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(
                b"Tide tables for the harbour crane berth.".to_vec(),
            )
            .file_name("tide.txt"),
        );
    let added = client()
        .post(a.url("/v1/knowledge-bases/shared/documents"))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(added.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while search(&a)["data"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never ingested");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = Instant::now();
    loop {
        let hits = search(&b);
        if hits["data"].as_array().unwrap().len() == 1 {
            assert!(hits.to_string().contains("harbour crane"), "{hits}");
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(2),
            "not searchable through B {:?} after it was ready on A",
            ready.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A model fine-tuned through A is served by B too (its adapter kept in the shared store),
    // and a running job is cancelled through B.
    let upload = |s: &Server, lines: usize| -> String {
        let data = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../train/testdata/case_notes/train.jsonl"
        ))
        .unwrap();
        let text: String = data.lines().take(lines).map(|l| format!("{l}\n")).collect();
        let form = reqwest::blocking::multipart::Form::new()
            .text("purpose", "fine-tune")
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(text.into_bytes()).file_name("t.jsonl"),
            );
        let f: Value = client()
            .post(s.url("/v1/files"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .unwrap()
            .json()
            .unwrap();
        f["id"].as_str().unwrap().to_string()
    };
    let create = |s: &Server, file: &str, epochs: u32| -> String {
        let job: Value = client()
            .post(s.url("/v1/fine_tuning/jobs"))
            .bearer_auth(&key)
            .json(&json!({"model": "smollm2-135m-instruct", "training_file": file,
                          "suffix": "shared", "hyperparameters": {"n_epochs": epochs, "batch_size": 4}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        job["id"].as_str().unwrap().to_string()
    };
    let job_on = |s: &Server, id: &str| -> Value {
        client()
            .get(s.url(&format!("/v1/fine_tuning/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let file = upload(&a, 4);
    let id = create(&a, &file, 1);
    let deadline = Instant::now() + Duration::from_secs(300);
    let model = loop {
        let j = job_on(&b, &id);
        match j["status"].as_str().unwrap() {
            "succeeded" => break j["fine_tuned_model"].as_str().unwrap().to_string(),
            "failed" | "cancelled" => panic!("{j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{j}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client()
            .post(b.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "max_tokens": 4,
                          "messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => break,
            // Not yet seen by B, or its engine still starting.
            404 | 503 => {}
            other => panic!("{other}: {}", r.text().unwrap()),
        }
        assert!(
            Instant::now() < deadline,
            "B never served the model A trained"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let id = create(&a, &upload(&a, 16), 3);
    let deadline = Instant::now() + Duration::from_secs(300);
    while job_on(&a, &id)["status"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancelled = client()
        .post(b.url(&format!("/v1/fine_tuning/jobs/{id}/cancel")))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(cancelled.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job_on(&a, &id);
        if j["status"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline && j["status"] == "running",
            "a cancel through B did not stop A's training: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Revoked through B's CLI, the key is refused by both replicas within a second; a user
    // disabled through A is refused by B within a second too.
    let (ok, _, err) = a.cli(&[
        "users",
        "add",
        "alice@agency.example",
        "--tenant",
        "default",
    ]);
    assert!(ok, "{err}");
    let (ok, alice, err) = a.cli(&["keys", "create", "--user", "alice@agency.example"]);
    assert!(ok, "{err}");
    let alice = alice.trim().to_string();
    assert_eq!(embed(&b, &alice), 200);
    let (ok, _, err) = b.cli(&["keys", "revoke", &key[3..15]]);
    assert!(ok, "{err}");
    let revoked = Instant::now();
    let (ok, _, err) = a.cli(&["users", "disable", "alice@agency.example"]);
    assert!(ok, "{err}");
    let disabled = Instant::now();
    for (s, k, since) in [
        (&a, &key, revoked),
        (&b, &key, revoked),
        (&b, &alice, disabled),
    ] {
        loop {
            if embed(s, k) == 401 {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_millis(1200),
                "still accepted {:?} after it was revoked or disabled",
                since.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
