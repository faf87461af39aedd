//! `cargo bench -p enclave-store --bench audit_pg`: durable audit appends per second into the
//! platform's one log on PostgreSQL (a cluster made with `initdb`, every commit flushed to disk
//! as in production), with one and three servers appending at once, beside one server's own
//! log file (group commit, `fdatasync`) in the same run. Prints appends/s and records per commit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary that prints its table"
)]

use std::time::Instant;

use enclave_audit::{AuditLog, Record};
use enclave_store::{PgAuditStorage, PgStore};

fn record(i: u64) -> Record {
    Record {
        v: 1,
        time: "2026-12-01T10:00:00.123456789Z".into(),
        node: "gw-1".into(),
        kind: "api".into(),
        operation: "POST /v1/chat/completions".into(),
        client: Some("10.1.2.3".into()),
        tenant: Some("citizen-services".into()),
        key_id: Some(format!("{i:012x}")),
        role: Some("user".into()),
        model: Some("smollm2-135m-instruct".into()),
        deployment: Some("embedded-chat".into()),
        status: 200,
        request_label: Some("SECRET//NOFORN".into()),
        answer_label: Some("SECRET//NOFORN".into()),
        prompt_tokens: 412,
        completion_tokens: 128,
        latency_ms: 950,
        request_sha256: Some("9f".repeat(32)),
        ..Record::default()
    }
}

/// `callers` tasks per server append `n` records in all over `logs`; returns appends/s.
fn drive(rt: &tokio::runtime::Runtime, logs: &[AuditLog], n: u64, callers: u64) -> f64 {
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        let total = callers * logs.len() as u64;
        for t in 0..total {
            let log = logs[(t % logs.len() as u64) as usize].clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    log.append(&record(i)).await.unwrap();
                    i += total;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 100_000u64;
    let callers = 256u64;
    let cluster = enclave_pgtest::Cluster::start_durable().unwrap();
    println!("| log | servers | callers each | appends/s | records per commit |");
    println!("| --- | ---: | ---: | ---: | ---: |");

    // The peer: one server's own file, group-committed.
    let dir = tempfile::tempdir().unwrap();
    let file = AuditLog::open(&dir.path().join("file"), "bench/audit").unwrap();
    let rate = drive(&rt, std::slice::from_ref(&file), n, callers);
    println!(
        "| file (one server) | 1 | {callers} | {rate:.0} | {:.0} |",
        n as f64 / file.batches().max(1) as f64
    );

    for servers in [1usize, 3] {
        let url = cluster.create_database(&format!("audit{servers}")).unwrap();
        rt.block_on(PgStore::open(&url, 2)).unwrap();
        let logs: Vec<AuditLog> = (0..servers)
            .map(|s| {
                let d = dir.path().join(format!("pg{servers}-{s}"));
                AuditLog::open_shared(
                    &d,
                    "bench/audit",
                    Box::new(PgAuditStorage::connect(&url).unwrap()),
                )
                .unwrap()
            })
            .collect();
        let rate = drive(&rt, &logs, n, callers);
        let commits: u64 = logs.iter().map(AuditLog::batches).sum();
        println!(
            "| PostgreSQL (one log) | {servers} | {callers} | {rate:.0} | {:.0} |",
            n as f64 / commits.max(1) as f64
        );
    }
}
