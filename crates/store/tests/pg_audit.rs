//! One audit log for the platform on PostgreSQL (a real PostgreSQL 15 cluster made with
//! `initdb`): three servers appending at once get contiguous indices with no gap or repeat,
//! every server ends with the same tree (so every checkpoint handed out is a prefix of every
//! later one, whoever signed it), a server's export verifies offline, a server that stops
//! loses nothing it acknowledged, and a server started with another key is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::path::Path;
use std::time::Duration;

use enclave_audit::key::open_checkpoint;
use enclave_audit::{AuditLog, Record, verify_export};
use enclave_store::{PgAuditStorage, PgStore};

const ORIGIN: &str = "enclave.test/audit";

fn record(server: usize, i: u64) -> Record {
    Record {
        v: 1,
        time: format!("2026-12-01T10:00:{:02}.000000000Z", i % 60),
        node: format!("replica-{server}"),
        kind: "api".into(),
        operation: "POST /v1/chat/completions".into(),
        tenant: Some("agency".into()),
        key_id: Some(format!("{i:012x}")),
        status: 200,
        ..Record::default()
    }
}

fn server(dir: &Path, url: &str) -> AuditLog {
    AuditLog::open_shared(dir, ORIGIN, Box::new(PgAuditStorage::connect(url).unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_append_to_one_contiguous_log() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let url = cluster.create_database("audit").unwrap();
    let store = PgStore::open(&url, 4).await.unwrap();
    // One key for the platform: the first server's, copied to the others.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = server(dirs[0].path(), &url);
    store.claim_audit_key(&first.public_key()).await.unwrap();
    for d in &dirs[1..] {
        std::fs::copy(dirs[0].path().join("log.key"), d.path().join("log.key")).unwrap();
    }
    let mut logs = vec![first];
    for d in &dirs[1..] {
        let log = server(d.path(), &url);
        store.claim_audit_key(&log.public_key()).await.unwrap();
        logs.push(log);
    }

    // 3 × 400 appends at once; a checkpoint taken part-way.
    let mut tasks = Vec::new();
    for (s, log) in logs.iter().enumerate() {
        for i in 0..400u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(&record(s, i)).await.unwrap()
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let early = logs[1].checkpoint().unwrap();
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..1200).collect::<Vec<_>>(),
        "contiguous, no gap, no repeat"
    );

    // Every server comes to the same tree (idle servers follow the shared log).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let key = logs[0].public_key();
    let roots: Vec<_> = logs
        .iter()
        .map(|l| open_checkpoint(l.checkpoint().unwrap().as_bytes(), &key).unwrap())
        .collect();
    assert!(
        roots.iter().all(|r| *r == roots[0] && r.0 == 1200),
        "{roots:?}"
    );
    // The part-way checkpoint is a prefix of the final tree, as every server computes it.
    let (size, root) = open_checkpoint(early.as_bytes(), &key).unwrap();
    for l in &logs {
        assert_eq!(l.root(size).unwrap(), root);
    }
    let out = tempfile::tempdir().unwrap();
    logs[2].export(out.path()).unwrap();
    let verified = verify_export(out.path(), &key).unwrap();
    assert_eq!(verified.records, 1200);

    // A server that stops loses nothing it acknowledged; one that starts again sees it all.
    let gone = logs.pop().unwrap();
    let acknowledged = gone.append(&record(2, 999)).await.unwrap();
    drop(gone);
    let again = server(dirs[2].path(), &url);
    assert_eq!(again.size(), acknowledged + 1);
    assert_eq!(
        logs[0].append(&record(0, 1000)).await.unwrap(),
        acknowledged + 1
    );

    // A server with a key of its own is refused.
    let stranger = tempfile::tempdir().unwrap();
    let other = server(stranger.path(), &url);
    let refused = store
        .claim_audit_key(&other.public_key())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("log.key"), "{refused}");
}
