//! `cargo bench -p enclave-audit`: durable appends per second with group commit, beside one
//! `fdatasync` per record (the cost of durability without batching) and streamed calls (a durable
//! promise when they start, the record when they end) in the same run, and the time to verify a
//! 1,000,000-record export offline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary that prints its table"
)]

use std::time::Instant;

use enclave_audit::{AuditLog, LogKey, Record, Tree, verify_export};

fn record(i: u64) -> Record {
    Record {
        v: 1,
        time: "2026-11-22T10:00:00.123456789Z".into(),
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
        findings: [("email".to_string(), 1u64)].into(),
        prompt_tokens: 412,
        completion_tokens: 128,
        latency_ms: 950,
        request_sha256: Some("9f".repeat(32)),
        detail: Some("routed to `embedded-chat` (enclave, accredited to TOP SECRET)".into()),
        ..Record::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Group commit: 256 callers appending at once.
    let log = AuditLog::open(&dir.path().join("grouped"), "bench/audit").unwrap();
    let n = 200_000u64;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..256u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    log.append(&record(i)).await.unwrap();
                    i += 256;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let grouped = n as f64 / started.elapsed().as_secs_f64();
    let batch = n as f64 / log.batches() as f64;

    // Streamed calls: a durable promise when each starts, its record when it ends (two
    // group-committed writes per call), by the same 256 callers.
    let streams = AuditLog::open(&dir.path().join("streams"), "bench/audit").unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..256u64 {
            let log = streams.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    let call = log.open_call(record(i)).await.unwrap();
                    call.close(&record(i)).await.unwrap();
                    i += 256;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let streamed = n as f64 / started.elapsed().as_secs_f64();

    // One fdatasync per record: a single caller waits for each append.
    let single = AuditLog::open(&dir.path().join("single"), "bench/audit").unwrap();
    let m = 2_000u64;
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..m {
            single.append(&record(i)).await.unwrap();
        }
    });
    let per_record = m as f64 / started.elapsed().as_secs_f64();

    // A 1,000,000-record export, verified offline.
    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let key = LogKey::load_or_create(&dir.path().join("export.key"), "bench/audit").unwrap();
    let mut tree = Tree::new();
    let mut lines = Vec::with_capacity(400 * 1_000_000);
    let mut leaves = String::with_capacity(65 * 1_000_000);
    for i in 0..1_000_000u64 {
        let bytes = record(i).canonical();
        tree.append(&bytes).unwrap();
        leaves.push_str(&hex::encode(tree.leaf(i).unwrap().0));
        leaves.push('\n');
        lines.extend_from_slice(&bytes);
        lines.push(b'\n');
    }
    let root = tree.root(1_000_000).unwrap();
    std::fs::write(export.join("records.jsonl"), &lines).unwrap();
    std::fs::write(export.join("leaf-hashes.txt"), &leaves).unwrap();
    std::fs::write(
        export.join("checkpoint"),
        key.checkpoint(1_000_000, root).unwrap(),
    )
    .unwrap();
    drop((lines, leaves, tree));
    let started = Instant::now();
    let v = verify_export(&export, &key.public_key()).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(v.records, 1_000_000);

    println!("\naudit log, this machine's disk");
    println!("{:<52} {:>14}", "figure", "value");
    println!(
        "{:<52} {:>14.0}",
        "durable appends/s, group commit, 256 callers (goal ≥ 50,000)", grouped
    );
    println!("{:<52} {:>14.1}", "  records per fdatasync reached", batch);
    println!(
        "{:<52} {:>14.0}",
        "streamed calls/s: promise at start, record at end", streamed
    );
    println!(
        "{:<52} {:>13.2}×",
        "  streamed ÷ plain appends",
        streamed / grouped
    );
    println!(
        "{:<52} {:>14.0}",
        "durable appends/s, one fdatasync per record", per_record
    );
    println!(
        "{:<52} {:>13.1}×",
        "group commit ÷ fsync per record",
        grouped / per_record
    );
    println!(
        "{:<52} {:>14.2}",
        "verify a 1,000,000-record export, seconds", secs
    );
    println!(
        "{:<52} {:>14.0}",
        "  records verified/s (goal ≥ 1,000,000)",
        1e6 / secs
    );
}
