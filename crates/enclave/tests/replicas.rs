//! Three `enclave serve` replicas on one PostgreSQL database (a real PostgreSQL 15 cluster made
//! with `initdb`) behind nginx (Debian's package), driven by 200 concurrent clients, with one
//! replica killed (`kill -9`) part-way:
//! - no client request hangs: each gets an answer (nginx moves on from the dead replica);
//! - every answer a client received from Enclave has exactly one audit record, in one log whose
//!   export verifies offline, and every checkpoint handed out during the run is a prefix of the
//!   final log;
//! - the monthly token budget holds for the platform: admitted tokens never exceed it;
//! - the killed replica, started again, rejoins and serves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENTS: usize = 200;
const REQUESTS_EACH: usize = 5;
const BUDGET: u64 = 4_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx in front of `ports`, on its own port, as one process (no master and workers, so
/// killing it leaves nothing behind); stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(ports: &[u16]) -> Nginx {
    let exe = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|e| Command::new(e).arg("-v").output().is_ok())
        .expect("nginx is not installed: scripts/setup.sh installs it from Debian's packages");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let servers: String = ports
        .iter()
        .map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         upstream enclave {{\n{servers} keepalive 64;\n }}\n\
         server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://enclave;\n\
         proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n\
         proxy_next_upstream error timeout;\n   proxy_connect_timeout 1s;\n\
         proxy_read_timeout 60s;\n   proxy_buffering off;\n  }}\n }}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(exe)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        port,
        _dir: dir,
    }
}

/// What one client request got: the digest of the body it sent, and the status (0: no answer).
struct Sent {
    digest: String,
    status: u16,
    from_enclave: bool,
}

#[test]
fn three_replicas_behind_nginx_survive_a_kill_with_one_log_and_one_budget() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let url = cluster.create_database("enclave").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        format!("[tenants.load.quota]\nmonthly_tokens = {BUDGET}\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let listen: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let env = |i: usize| {
        [
            ("ENCLAVE_DATABASE_URL", url.clone()),
            ("ENCLAVE_NODE_NAME", format!("replica-{i}")),
            ("ENCLAVE_CONFIG", config.to_string()),
            ("ENCLAVE_LISTEN", listen[i].clone()),
        ]
    };
    let e0 = env(0);
    let e0: Vec<(&str, &str)> = e0.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = Server::start_with(&e0);
    let mut replicas = vec![first];
    for i in 1..3 {
        let e = env(i);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let joined = Server::start_joining(&replicas[0], &e);
        replicas.push(joined);
    }
    assert!(replicas[0].cli(&["tenants", "create", "load"]).0);
    let key = replicas[1].cleared_key("load", "user", "UNCLASSIFIED");
    let auditor = replicas[2].key("default", "auditor");
    let lb = nginx(&ports);
    let base = format!("http://127.0.0.1:{}", lb.port);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    // Every replica has its embedding model loaded before the load starts.
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = rt.block_on(async {
                http.post(format!("{}/v1/embeddings", r.base))
                    .bearer_auth(&auditor)
                    .json(&json!({"model": "all-minilm-l6-v2", "input": "warm"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
            if status != 503 {
                break;
            }
            assert!(Instant::now() < deadline, "{} never loaded", r.base);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (http, base, key, answered) = (
            http.clone(),
            base.clone(),
            key.clone(),
            Arc::clone(&answered),
        );
        rt.spawn(async move {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (http, base, key, answered) = (
                        http.clone(),
                        base.clone(),
                        key.clone(),
                        Arc::clone(&answered),
                    );
                    tokio::spawn(async move {
                        let mut sent = Vec::new();
                        for r in 0..REQUESTS_EACH {
                            let body = serde_json::to_vec(&json!({
                                "model": "all-minilm-l6-v2",
                                "input": format!("client {c} asks question {r} about the harbour"),
                            }))
                            .unwrap();
                            let digest = hex::encode(Sha256::digest(&body));
                            let got = http
                                .post(format!("{base}/v1/embeddings"))
                                .bearer_auth(&key)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .await;
                            let (status, from_enclave) = match got {
                                Ok(resp) => {
                                    let status = resp.status().as_u16();
                                    let from_enclave = resp.headers().contains_key("enclave-label")
                                        || resp
                                            .json::<Value>()
                                            .await
                                            .is_ok_and(|v| v["error"]["code"].is_string());
                                    (status, from_enclave)
                                }
                                Err(e) => panic!("a client request failed or hung: {e}"),
                            };
                            answered.fetch_add(1, Ordering::Relaxed);
                            sent.push(Sent {
                                digest,
                                status,
                                from_enclave,
                            });
                        }
                        sent
                    })
                })
                .collect();
            let mut all = Vec::new();
            for c in clients {
                all.extend(c.await.unwrap());
            }
            all
        })
    };
    // Checkpoints handed out during the run, by whichever replica nginx picks.
    let checkpoints = {
        let (http, base, auditor) = (http.clone(), base.clone(), auditor.clone());
        rt.spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..60 {
                if let Ok(r) = http
                    .get(format!("{base}/v1/audit/checkpoint"))
                    .bearer_auth(&auditor)
                    .send()
                    .await
                    && r.status() == 200
                {
                    seen.push(r.text().await.unwrap());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    // A third of the way in, one replica dies.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < CLIENTS * REQUESTS_EACH / 3 {
        assert!(Instant::now() < deadline, "the load stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    replicas[2].kill();
    let sent = rt.block_on(load).unwrap();
    let checkpoints = rt.block_on(checkpoints).unwrap();
    assert_eq!(sent.len(), CLIENTS * REQUESTS_EACH);

    // The budget held for the platform, and it was reached.
    let refused = sent.iter().filter(|s| s.status == 429).count();
    let ok = sent.iter().filter(|s| s.status == 200).count();
    assert!(refused > 0 && ok > 0, "{ok} served, {refused} refused");
    let store = rt.block_on(enclave_store::PgStore::open(&url, 2)).unwrap();
    let admitted = rt
        .block_on(enclave_store::PgLedger::new(&store).month_tokens("tenant:load"))
        .unwrap();
    assert!(admitted <= BUDGET, "admitted {admitted} tokens of {BUDGET}");

    // The killed replica starts again and serves.
    replicas[2].restart();
    let status = rt.block_on(async {
        http.get(format!("{}/v1/models", replicas[2].base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);

    // One log: every answer from Enclave has exactly one record; the export verifies; every
    // checkpoint handed out is a prefix of it.
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("export");
    let (ok_export, _, err) = replicas[0].cli(&["audit", "export", "--out", out.to_str().unwrap()]);
    assert!(ok_export, "{err}");
    let (_, verifier, _) = replicas[1].cli(&["audit", "public-key"]);
    let verifier = verifier.trim().to_string();
    let (verified, text, err) = replicas[1].cli(&[
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--public-key",
        &verifier,
    ]);
    assert!(verified && text.starts_with("OK"), "{text}{err}");
    let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    let mut by_digest: HashMap<String, usize> = HashMap::new();
    let mut tree = enclave_audit::Tree::new();
    for line in records.lines() {
        tree.append(line.as_bytes()).unwrap();
        let r: Value = serde_json::from_str(line).unwrap();
        if let Some(d) = r["request_sha256"].as_str() {
            *by_digest.entry(d.to_string()).or_default() += 1;
        }
    }
    let mut answers = 0;
    for s in sent.iter().filter(|s| s.from_enclave) {
        answers += 1;
        assert_eq!(
            by_digest.get(&s.digest).copied().unwrap_or(0),
            1,
            "an answer ({}) without exactly one record",
            s.status
        );
    }
    assert!(answers >= ok + refused);
    assert!(!checkpoints.is_empty());
    for c in &checkpoints {
        let (size, root) = enclave_audit::key::open_checkpoint(c.as_bytes(), &verifier).unwrap();
        assert_eq!(
            tree.root(size).unwrap(),
            root,
            "a checkpoint of size {size} is not a prefix"
        );
    }
    eprintln!(
        "{ok} served, {refused} refused by the budget, {} without an answer from Enclave; {admitted} of {BUDGET} tokens admitted; {} checkpoints checked; {} records",
        sent.len() - answers,
        checkpoints.len(),
        tree.size()
    );
}
