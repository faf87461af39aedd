//! Background work: fine-tuning jobs, their events, checkpoints and files, and the one jobs
//! queue every kind shares.

use super::*;

/// Jobs per tenant, newest first, updated in place, found by status across tenants; events
/// numbered from 1 per job in order; checkpoints by step; a model name used once only.
pub(super) async fn check_fine_tuning(store: &dyn Store) {
    use enclave_store::{FineTuneCheckpoint, StoredFineTune};
    let t = tenant(store, "tuners").await;
    let other = tenant(store, "others").await;
    let job = |id: &str, tenant: &Tenant, at: i64| StoredFineTune {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        status: "queued".into(),
        label: "SECRET".into(),
        fine_tuned_model: None,
        created_at: at,
        body: "{}".into(),
        priority: 0,
    };
    let a = job("ftjob-a", &t, 5);
    store.save_fine_tune(&a).await.unwrap();
    store.save_fine_tune(&job("ftjob-b", &t, 6)).await.unwrap();
    store
        .save_fine_tune(&job("ftjob-c", &other, 7))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list_fine_tunes(&t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, ["ftjob-b", "ftjob-a"]);
    let done = StoredFineTune {
        status: "succeeded".into(),
        fine_tuned_model: Some("ft:m:tuners:x:ftjob-a".into()),
        body: "{\"done\": true}".into(),
        ..a.clone()
    };
    store.save_fine_tune(&done).await.unwrap();
    assert_eq!(store.fine_tune("ftjob-a").await.unwrap(), Some(done));
    let queued: Vec<String> = store
        .fine_tunes_with_status(&["queued", "running"])
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(queued, ["ftjob-b", "ftjob-c"]);
    let succeeded = store.fine_tunes_with_status(&["succeeded"]).await.unwrap();
    assert_eq!(succeeded.len(), 1);
    // Another job may not take the same model name.
    let clash = StoredFineTune {
        fine_tuned_model: Some("ft:m:tuners:x:ftjob-a".into()),
        ..job("ftjob-b", &t, 6)
    };
    assert!(store.save_fine_tune(&clash).await.is_err());

    assert_eq!(
        store
            .add_fine_tune_event("ftjob-a", 10, "{\"n\":1}")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .add_fine_tune_event("ftjob-a", 11, "{\"n\":2}")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .add_fine_tune_event("ftjob-b", 12, "{\"n\":1}")
            .await
            .unwrap(),
        1
    );
    let events = store.fine_tune_events("ftjob-a").await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].body, "{\"n\":2}");
    for step in [8, 4] {
        store
            .add_fine_tune_checkpoint(&FineTuneCheckpoint {
                id: format!("ftckpt-{step}"),
                job_id: "ftjob-a".into(),
                step,
                created_at: 20,
                body: "{}".into(),
            })
            .await
            .unwrap();
    }
    // A job's files: kept by name, replaced, and read back; none for a name never kept.
    store
        .save_fine_tune_artifact("ftjob-a", "adapter.gguf", b"first")
        .await
        .unwrap();
    store
        .save_fine_tune_artifact("ftjob-a", "adapter.gguf", &[0u8, 1, 2, 255])
        .await
        .unwrap();
    assert_eq!(
        store
            .fine_tune_artifact("ftjob-a", "adapter.gguf")
            .await
            .unwrap(),
        Some(vec![0u8, 1, 2, 255])
    );
    assert_eq!(
        store
            .fine_tune_artifact("ftjob-a", "checkpoint-step-4.gguf")
            .await
            .unwrap(),
        None
    );
    let steps: Vec<i64> = store
        .fine_tune_checkpoints("ftjob-a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, [4, 8]);
    assert!(
        store
            .fine_tune_checkpoints("ftjob-b")
            .await
            .unwrap()
            .is_empty()
    );
}

/// One queue for every kind of job: the claimable ones by priority then age, held by one
/// server at a time (of racing servers one wins), a lapsed hold claimable again, holds renewed
/// and released only by their holder, a status kept in step with the kind's own row, and a
/// tenant's jobs of every kind listed together.
pub(super) async fn check_jobs(store: &dyn Store) {
    use enclave_store::{StoredBatch, StoredFineTune};
    let t = tenant(store, "queuers").await;
    let other = tenant(store, "strangers").await;
    let job = |id: &str, tenant: &Tenant, at: i64, priority: i64| StoredFineTune {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        status: "queued".into(),
        label: "UNCLASSIFIED".into(),
        fine_tuned_model: None,
        created_at: at,
        body: "{}".into(),
        priority,
    };
    store
        .save_fine_tune(&job("ft-low", &t, 1, -1))
        .await
        .unwrap();
    store
        .save_fine_tune(&job("ft-normal", &t, 2, 0))
        .await
        .unwrap();
    store
        .save_fine_tune(&job("ft-high", &other, 3, 1))
        .await
        .unwrap();
    let batch = StoredBatch {
        id: "batch-1".into(),
        tenant_id: t.id.clone(),
        owner: "{}".into(),
        endpoint: "/v1/embeddings".into(),
        input_file_id: "file-1".into(),
        label: "UNCLASSIFIED".into(),
        status: "validating".into(),
        metadata: None,
        total: 3,
        output_file_id: None,
        error_file_id: None,
        error: None,
        created_at: 4,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        expires_at: 100,
        priority: 1,
    };
    store.save_batch(&batch).await.unwrap();
    let ids = |jobs: Vec<enclave_store::QueuedJob>| -> Vec<String> {
        jobs.into_iter().map(|j| j.id).collect()
    };
    let claimable = |now| store.claimable_jobs("fine_tuning", &["queued", "running"], now);
    assert_eq!(
        ids(claimable(100).await.unwrap()),
        ["ft-high", "ft-normal", "ft-low"]
    );
    assert_eq!(
        ids(store
            .claimable_jobs("batch", &["validating", "in_progress"], 100)
            .await
            .unwrap()),
        ["batch-1"]
    );
    assert_eq!(store.batch("batch-1").await.unwrap().unwrap().priority, 1);

    // Of eight servers racing for one job, exactly one gets it.
    let nodes: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
    let races = futures::future::join_all(
        nodes
            .iter()
            .map(|n| store.claim_job("ft-high", n, 100, 130)),
    )
    .await;
    let won: Vec<&str> = nodes
        .iter()
        .zip(&races)
        .filter(|(_, r)| *r.as_ref().unwrap())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let winner = won[0];
    let loser = nodes
        .iter()
        .find(|n| n.as_str() != winner)
        .unwrap()
        .as_str();
    // The holder claiming again keeps it (a renewal); nobody else gets it.
    assert!(store.claim_job("ft-high", winner, 100, 130).await.unwrap());
    assert_eq!(ids(claimable(120).await.unwrap()), ["ft-normal", "ft-low"]);
    // Only the holder renews or releases; a hold that lapsed is anyone's.
    assert!(!store.renew_job("ft-high", loser, 160).await.unwrap());
    store.release_job("ft-high", loser).await.unwrap();
    assert!(!store.claim_job("ft-high", loser, 120, 150).await.unwrap());
    assert!(store.renew_job("ft-high", winner, 160).await.unwrap());
    assert!(!store.claim_job("ft-high", loser, 150, 190).await.unwrap());
    assert!(store.claim_job("ft-high", loser, 161, 190).await.unwrap());
    assert!(!store.renew_job("ft-high", winner, 200).await.unwrap());
    // A server starting again lets go of what it held.
    assert_eq!(store.release_jobs_of(loser).await.unwrap(), 1);
    assert_eq!(store.release_jobs_of(loser).await.unwrap(), 0);
    assert_eq!(ids(claimable(170).await.unwrap())[0], "ft-high");
    // The status follows the kind's own row; the priority stays as created.
    let done = StoredFineTune {
        status: "succeeded".into(),
        priority: 0,
        ..job("ft-high", &other, 3, 1)
    };
    store.save_fine_tune(&done).await.unwrap();
    assert_eq!(ids(claimable(170).await.unwrap()), ["ft-normal", "ft-low"]);
    assert_eq!(
        store.fine_tune("ft-high").await.unwrap().unwrap().priority,
        1
    );
    // A tenant's jobs of both kinds, newest first; not another tenant's.
    let listed = store.list_jobs(&t.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|j| (j.id.as_str(), j.kind.as_str()))
            .collect::<Vec<_>>(),
        [
            ("batch-1", "batch"),
            ("ft-normal", "fine_tuning"),
            ("ft-low", "fine_tuning")
        ]
    );
    assert_eq!(listed[0].status, "validating");
    assert_eq!(ids(store.list_jobs(&other.id).await.unwrap()), ["ft-high"]);
}
