//! The one jobs queue, with two servers sharing one store as replicas do: every batch line is
//! answered exactly once though both servers work on the batches at once, a high-priority
//! batch is answered before a low one created earlier, and a server starting again takes up
//! the jobs it held when it stopped, while another server's hold keeps them from it until the
//! hold lapses.
//!
//! The lines are answered by a recording runner: what is under test is which server answers
//! which line when, not the call a line makes (the batch SDK tests cover that).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_audit::{AuditLog, ContentVault};
use enclave_service::Service;
use enclave_service::batches::{self, Line, LineOutcome, LineRunner, NewBatch};
use enclave_service::jobs::Priority;
use enclave_service::policy::{Policy, PolicyConfig};
use enclave_service::principal::{Established, Principal};
use enclave_store::{Role, SqliteStore, Store, Tenant};
use serde_json::json;

/// (server, batch, custom_id) in the order lines were taken up.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct Recorder {
    node: String,
    seen: Seen,
}

#[async_trait::async_trait]
impl LineRunner for Recorder {
    async fn run(&self, line: Line<'_>) -> LineOutcome {
        self.seen.lock().unwrap().push((
            self.node.clone(),
            line.batch.to_string(),
            line.custom_id.to_string(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        LineOutcome {
            status: 200,
            body: json!({"object": "list", "data": []}),
            label: Some(line.label.to_string()),
        }
    }
}

/// A server named `node` over the database at `db`.
async fn server(db: &Path, audit: &Path, node: &str) -> Service {
    let store = Arc::new(SqliteStore::open(db).await.unwrap());
    let config: PolicyConfig = serde_json::from_value(json!({})).unwrap();
    let policy = Policy::from_config(&config, None).unwrap();
    let dir = audit.join(node);
    Service::new(
        store as Arc<dyn Store>,
        Arc::new(policy),
        AuditLog::open(&dir, "test/audit").unwrap(),
        Arc::new(ContentVault::open(&dir).unwrap()),
        &enclave_upstream::Connector,
    )
    .unwrap()
    .with_node(node)
}

fn principal(tenant: &Tenant) -> Principal {
    Principal {
        established: Established::ApiKey,
        key_id: format!("key-{}", tenant.name),
        tenant_id: tenant.id.clone(),
        tenant_name: tenant.name.clone(),
        role: Role::User,
        clearance: "UNCLASSIFIED".into(),
        user: None,
    }
}

/// A batch of `lines` embedding lines named `{name}-{n}`, at `priority`.
async fn batch(s: &Service, p: &Principal, name: &str, lines: usize, priority: Priority) -> String {
    let body: String = (0..lines)
        .map(|n| {
            format!(
                "{}\n",
                json!({"custom_id": format!("{name}-{n}"), "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": "minilm", "input": format!("line {n}")}})
            )
        })
        .collect();
    let file = enclave_service::files::upload(s, p, None, "batch", "in.jsonl", body.as_bytes())
        .await
        .unwrap();
    let created = batches::create(
        s,
        p,
        NewBatch {
            input_file_id: file.id,
            endpoint: "/v1/embeddings".into(),
            completion_window: "24h".into(),
            metadata: None,
            priority: Some(priority),
        },
    )
    .await
    .unwrap();
    assert_eq!(created["enclave"]["priority"], priority.as_str());
    created["id"].as_str().unwrap().to_string()
}

async fn wait_completed(s: &Service, p: &Principal, id: &str) -> serde_json::Value {
    for _ in 0..600 {
        let b = batches::get(s, p, id).await.unwrap();
        if b["status"] == "completed" {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch {id} did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_answer_every_line_once_highest_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let a = server(&db, dir.path(), "replica-a").await;
    let b = server(&db, dir.path(), "replica-b").await;
    let north = Tenant {
        id: "t-north".into(),
        name: "north".into(),
        created_at: 1,
    };
    let south = Tenant {
        id: "t-south".into(),
        name: "south".into(),
        created_at: 1,
    };
    a.store.create_tenant(&north).await.unwrap();
    a.store.create_tenant(&south).await.unwrap();
    let (pn, ps) = (principal(&north), principal(&south));
    // Created oldest first: the low one, a normal one of another tenant, then a high one.
    let low = batch(&a, &pn, "low", 40, Priority::Low).await;
    let normal = batch(&b, &ps, "normal", 40, Priority::Normal).await;
    let high = batch(&a, &pn, "high", 40, Priority::High).await;

    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = [(&a, "replica-a"), (&b, "replica-b")]
        .into_iter()
        .map(|(s, node)| {
            let runner = Arc::new(Recorder {
                node: node.into(),
                seen: Arc::clone(&seen),
            });
            tokio::spawn(batches::work(s.clone(), runner, stop.clone()))
        })
        .collect();
    for (p, id) in [(&pn, &low), (&ps, &normal), (&pn, &high)] {
        let done = wait_completed(&a, p, id).await;
        assert_eq!(done["request_counts"]["completed"], 40, "{done}");
        assert_eq!(done["request_counts"]["failed"], 0, "{done}");
    }
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    // Every line once, though both servers worked on the batches.
    assert_eq!(seen.len(), 120, "a line was answered twice: {seen:?}");
    let mut lines: Vec<(&str, &str)> = seen
        .iter()
        .map(|(_, b, c)| (b.as_str(), c.as_str()))
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 120);
    for node in ["replica-a", "replica-b"] {
        assert!(
            seen.iter().any(|(n, _, _)| n == node),
            "{node} answered nothing: {seen:?}"
        );
    }
    // The high batch, created last, had every line taken up before the low batch's first.
    let last_high = seen.iter().rposition(|(_, b, _)| *b == high).unwrap();
    let first_low = seen.iter().position(|(_, b, _)| *b == low).unwrap();
    assert!(
        last_high < first_low,
        "high's last line at {last_high}, low's first at {first_low}"
    );
    // Nothing is held once the workers stopped.
    let left = a
        .store
        .claimable_jobs("batch", &["completed"], enclave_store::now())
        .await
        .unwrap();
    assert_eq!(left.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_waits_for_its_holder_or_the_hold_to_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let a = server(&db, dir.path(), "replica-a").await;
    let t = Tenant {
        id: "t-one".into(),
        name: "one".into(),
        created_at: 1,
    };
    a.store.create_tenant(&t).await.unwrap();
    let p = principal(&t);
    let id = batch(&a, &p, "held", 5, Priority::Normal).await;
    // replica-a took the batch and then stopped without letting go (a crash).
    let now = enclave_store::now();
    assert!(
        a.store
            .claim_job(&id, "replica-a", now, now + 3)
            .await
            .unwrap()
    );

    // Another server does not touch it while the hold lasts, and takes it up when it lapses.
    let b = server(&db, dir.path(), "replica-b").await;
    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(batches::work(
        b.clone(),
        Arc::new(Recorder {
            node: "replica-b".into(),
            seen: Arc::clone(&seen),
        }),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "answered under another server's hold"
    );
    wait_completed(&b, &p, &id).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 5);

    // A server starting again takes up at once what it held itself when it stopped.
    let id = batch(&a, &p, "mine", 5, Priority::Normal).await;
    let now = enclave_store::now();
    assert!(
        a.store
            .claim_job(&id, "replica-a", now, now + 3600)
            .await
            .unwrap()
    );
    let restarted = server(&db, dir.path(), "replica-a").await;
    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(batches::work(
        restarted.clone(),
        Arc::new(Recorder {
            node: "replica-a".into(),
            seen: Arc::clone(&seen),
        }),
        stop.clone(),
    ));
    wait_completed(&restarted, &p, &id).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 5);
}
