//! The durable log: concurrent appends, proofs against signed checkpoints, recovery, storage that
//! loses what was not synced, and tampered exports that the offline verifier must catch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::sync::{Arc, Mutex};

use enclave_audit::key::open_checkpoint;
use enclave_audit::log::Storage;
use enclave_audit::tree::verify_inclusion;
use enclave_audit::{AuditLog, LogKey, Record, VerifyError, verify_export};
use tlog_tiles::tlog::record_hash;

fn record(i: u64) -> Record {
    Record {
        v: 1,
        time: format!("2026-11-22T10:00:{:02}.000000000Z", i % 60),
        node: "node-1".into(),
        kind: "api".into(),
        operation: "POST /v1/chat/completions".into(),
        tenant: Some("agency".into()),
        key_id: Some(format!("{i:012x}")),
        status: 200,
        ..Record::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_durable_provable_and_verifiable_offline() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "enclave.test/audit").unwrap();
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(&record(i)).await.unwrap()
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..2000).collect::<Vec<_>>());

    let key = log.public_key();
    let (size, root) = open_checkpoint(log.checkpoint().unwrap().as_bytes(), &key).unwrap();
    assert_eq!(size, 2000);
    for (index, bytes) in log.records(0, size).into_iter().step_by(97) {
        let proof = log.inclusion(index, size).unwrap();
        verify_inclusion(&proof, size, root, index, record_hash(&bytes)).unwrap();
    }
    // Reopening (a restart) finds the same tree; the key is reused, not replaced.
    drop(log);
    let reopened = AuditLog::open(dir.path(), "enclave.test/audit").unwrap();
    assert_eq!(reopened.size(), 2000);
    assert_eq!(reopened.root(2000).unwrap(), root);
    assert_eq!(reopened.public_key(), key);
    let out = dir.path().join("export");
    reopened.export(&out).unwrap();
    let ok = verify_export(&out, &key).unwrap();
    assert_eq!((ok.records, ok.checkpoint_size), (2000, 2000));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("log.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the signing key is readable by its owner only"
        );
    }
}

fn rewrite(path: &std::path::Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn the_offline_verifier_names_every_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("log"), "enclave.test/audit").unwrap();
    for i in 0..50 {
        log.append(&record(i)).await.unwrap();
    }
    let key = log.public_key();
    let fresh = |name: &str| {
        let out = dir.path().join(name);
        log.export(&out).unwrap();
        out
    };
    // One byte of record 17.
    let out = fresh("altered");
    rewrite(&out.join("records.jsonl"), |l| {
        l[17] = l[17].replace("node-1", "node-2")
    });
    assert_eq!(
        verify_export(&out, &key),
        Err(VerifyError::Record { index: 17 })
    );
    // A deleted record.
    let out = fresh("deleted");
    rewrite(&out.join("records.jsonl"), |l| {
        l.remove(30);
    });
    assert_eq!(
        verify_export(&out, &key),
        Err(VerifyError::Record { index: 30 })
    );
    // Two records swapped.
    let out = fresh("reordered");
    rewrite(&out.join("records.jsonl"), |l| l.swap(5, 6));
    assert_eq!(
        verify_export(&out, &key),
        Err(VerifyError::Record { index: 5 })
    );
    // The log truncated, hashes and all.
    let out = fresh("truncated");
    rewrite(&out.join("records.jsonl"), |l| l.truncate(40));
    rewrite(&out.join("leaf-hashes.txt"), |l| l.truncate(40));
    assert_eq!(
        verify_export(&out, &key),
        Err(VerifyError::Truncated {
            signed: 50,
            found: 40
        })
    );
    // A record and its logged hash both rewritten: only the signed root catches it.
    let out = fresh("rewritten");
    rewrite(&out.join("records.jsonl"), |l| {
        l[3] = l[3].replace("agency", "agencz")
    });
    let forged = hex::encode(
        record_hash(
            std::fs::read_to_string(out.join("records.jsonl"))
                .unwrap()
                .lines()
                .nth(3)
                .unwrap()
                .as_bytes(),
        )
        .0,
    );
    rewrite(&out.join("leaf-hashes.txt"), |l| l[3] = forged);
    assert_eq!(
        verify_export(&out, &key),
        Err(VerifyError::Root { size: 50 })
    );
    // A checkpoint signed by another key.
    let out = fresh("foreign");
    let other = AuditLog::open(&dir.path().join("other"), "enclave.test/audit").unwrap();
    std::fs::write(out.join("checkpoint"), other.checkpoint().unwrap()).unwrap();
    assert!(matches!(
        verify_export(&out, &key),
        Err(VerifyError::Checkpoint(_))
    ));
}

/// Storage that keeps synced and unsynced bytes apart and can be told to fail its next sync,
/// losing what was not synced, as a power cut would.
#[derive(Clone, Default)]
struct Lossy(Arc<Mutex<LossyState>>);

#[derive(Default)]
struct LossyState {
    synced: Vec<u8>,
    pending: Vec<u8>,
    fail_sync_after: Option<usize>,
}

impl Storage for Lossy {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().pending.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        if let Some(n) = s.fail_sync_after.as_mut() {
            if *n == 0 {
                // As a file would: the failed batch's bytes stay where they were written, and
                // only a power cut would lose them. The log must cut them itself.
                let pending = std::mem::take(&mut s.pending);
                s.synced.extend_from_slice(&pending);
                return Err(std::io::Error::other("disk error"));
            }
            *n -= 1;
        }
        let pending = std::mem::take(&mut s.pending);
        s.synced.extend_from_slice(&pending);
        Ok(())
    }
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        Ok(self.0.lock().unwrap().synced.clone())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().synced.truncate(len as usize);
        Ok(())
    }
}

fn key(dir: &std::path::Path) -> LogKey {
    LogKey::load_or_create(&dir.join("log.key"), "enclave.test/audit").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_storage_that_loses_unsynced_writes() {
    let dir = tempfile::tempdir().unwrap();
    for cut_after in [0usize, 1, 3, 7] {
        let storage = Lossy::default();
        storage.0.lock().unwrap().fail_sync_after = Some(cut_after);
        let log = AuditLog::with_storage(Box::new(storage.clone()), key(dir.path())).unwrap();
        // Ten waves of thirty concurrent appends: at least ten batches, so the cut lands.
        let mut acked = Vec::new();
        let mut failed = 0;
        for wave in 0..10u64 {
            let mut tasks = Vec::new();
            for i in wave * 30..wave * 30 + 30 {
                let log = log.clone();
                tasks.push(tokio::spawn(
                    async move { (i, log.append(&record(i)).await) },
                ));
            }
            for t in tasks {
                match t.await.unwrap() {
                    (i, Ok(index)) => acked.push((i, index)),
                    (_, Err(_)) => failed += 1,
                }
            }
        }
        assert!(failed > 0, "the cut happened");
        assert!(!log.healthy(), "a failed sync marks the log unhealthy");
        drop(log);
        // Power back: what was synced, plus a torn half-record that never was.
        {
            let mut s = storage.0.lock().unwrap();
            s.fail_sync_after = None;
            s.pending.clear();
            s.synced.extend_from_slice(&[200, 0, 0, 0, b'{']);
        }
        let log = AuditLog::with_storage(Box::new(storage.clone()), key(dir.path())).unwrap();
        let stored = log.records(0, u64::MAX);
        for (i, index) in &acked {
            let (_, bytes) = &stored[*index as usize];
            assert_eq!(
                bytes,
                &record(*i).canonical(),
                "acknowledged record {index} lost"
            );
        }
        assert_eq!(
            log.size() as usize,
            acked.len(),
            "nothing unacknowledged survives as a record"
        );
        // And the log keeps working after the torn tail was cut.
        let next = log.append(&record(999)).await.unwrap();
        assert_eq!(next, acked.len() as u64);
        assert!(log.healthy());
    }
}

fn streamed(i: u64) -> Record {
    Record {
        v: 2,
        time: format!("2026-11-30T11:00:00.{i:09}Z"),
        node: "node-1".into(),
        kind: "api".into(),
        operation: "POST /v1/chat/completions".into(),
        key_id: Some("0123456789ab".into()),
        status: 200,
        ..Record::default()
    }
}

fn stored(dir: &std::path::Path) -> Vec<Record> {
    let log = AuditLog::open(dir, "enclave.test/audit").unwrap();
    log.records(0, log.size())
        .into_iter()
        .map(|(_, bytes)| serde_json::from_slice(&bytes).unwrap())
        .collect()
}

#[tokio::test]
async fn an_open_call_has_exactly_one_record_however_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "enclave.test/audit").unwrap();

    // Closed: the final record, once.
    let call = log.open_call(streamed(1)).await.unwrap();
    let fin = Record {
        prompt_tokens: 12,
        completion_tokens: 34,
        response_sha256: Some("ab".repeat(32)),
        ..streamed(1)
    };
    assert_eq!(call.close(&fin).await.unwrap(), 0);

    // Dropped without a close (the serving task went away): recorded as interrupted at once.
    drop(log.open_call(streamed(2)).await.unwrap());

    // The process dies with a call open: no record yet, one at the next start.
    std::mem::forget(log.open_call(streamed(3)).await.unwrap());

    // The process dies after the final record was synced but before its close line was noted:
    // the next start finds the record and adds none.
    let call = log.open_call(streamed(4)).await.unwrap();
    log.append(&Record {
        completion_tokens: 5,
        ..streamed(4)
    })
    .await
    .unwrap();
    std::mem::forget(call);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        log.size(),
        3,
        "closed, dropped and the last one's own record"
    );
    drop(log);

    let records = stored(dir.path());
    let times: Vec<&str> = records.iter().map(|r| r.time.as_str()).collect();
    assert_eq!(records.len(), 4, "{times:?}");
    assert_eq!(records[0], fin);
    for r in [&records[1], &records[3]] {
        assert_eq!(r.status, 500);
        assert_eq!(r.code.as_deref(), Some(enclave_audit::open::INTERRUPTED));
        assert_eq!(r.completion_tokens, 0);
    }
    assert_eq!(records[1].time, streamed(2).time);
    assert_eq!(records[2].completion_tokens, 5);
    assert_eq!(records[3].time, streamed(3).time);
    // A second start finds nothing left open.
    assert_eq!(stored(dir.path()).len(), 4);
}

#[tokio::test]
async fn a_call_open_across_journal_turns_is_still_recorded_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "enclave.test/audit").unwrap();
    let long = log.open_call(streamed(0)).await.unwrap();
    // About 3 MiB of journal lines: the files take turns more than once.
    let padding = "x".repeat(8 << 10);
    for i in 1..=400 {
        let r = Record {
            detail: Some(padding.clone()),
            ..streamed(i)
        };
        let call = log.open_call(r.clone()).await.unwrap();
        call.close(&r).await.unwrap();
    }
    std::mem::forget(long);
    drop(log);
    let total: u64 = ["open-a.journal", "open-b.journal"]
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
        .sum();
    assert!(total < 2 << 20, "the journal stays bounded: {total} bytes");
    let records = stored(dir.path());
    assert_eq!(records.len(), 401);
    let last = records.last().unwrap();
    assert_eq!(last.time, streamed(0).time);
    assert_eq!(last.code.as_deref(), Some(enclave_audit::open::INTERRUPTED));
}
