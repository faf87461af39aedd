//! Fine-tuning jobs in SQLite: the queries behind the `Store` methods of the same names.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::rows::{fine_tune, fine_tune_columns};
use crate::{FineTuneCheckpoint, FineTuneEvent, QueuedJob, StoreError, StoredFineTune};

pub(super) async fn save(pool: &SqlitePool, j: &StoredFineTune) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT INTO fine_tuning_jobs (id, tenant_id, status, label, fine_tuned_model, created_at, body) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
         fine_tuned_model = excluded.fine_tuned_model, body = excluded.body",
    )
    .bind(&j.id)
    .bind(&j.tenant_id)
    .bind(&j.status)
    .bind(&j.label)
    .bind(&j.fine_tuned_model)
    .bind(j.created_at)
    .bind(&j.body)
    .execute(&mut *tx)
    .await?;
    let job = QueuedJob {
        id: j.id.clone(),
        kind: "fine_tuning".into(),
        tenant_id: j.tenant_id.clone(),
        status: j.status.clone(),
        priority: j.priority,
        created_at: j.created_at,
        updated_at: crate::now(),
        holder: None,
        held_until: None,
    };
    super::jobs::upsert(&mut tx, &job).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<StoredFineTune>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        fine_tune_columns!(),
        " FROM fine_tuning_jobs WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(fine_tune).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant_id: &str,
) -> Result<Vec<StoredFineTune>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        fine_tune_columns!(),
        " FROM fine_tuning_jobs WHERE tenant_id = ? ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(fine_tune).collect()
}

pub(super) async fn with_status(
    pool: &SqlitePool,
    statuses: &[&str],
) -> Result<Vec<StoredFineTune>, StoreError> {
    let list = super::jobs::json_list(statuses);
    let rows = sqlx::query(concat!(
        "SELECT ",
        fine_tune_columns!(),
        " FROM fine_tuning_jobs WHERE status IN (SELECT value FROM json_each(?)) ORDER BY created_at, id"
    ))
    .bind(list)
    .fetch_all(pool)
    .await?;
    rows.iter().map(fine_tune).collect()
}

pub(super) async fn add_event(
    pool: &SqlitePool,
    job_id: &str,
    created_at: i64,
    body: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO fine_tuning_events (job_id, seq, created_at, body) \
         VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM fine_tuning_events WHERE job_id = ?), ?, ?) \
         RETURNING seq",
    )
    .bind(job_id)
    .bind(job_id)
    .bind(created_at)
    .bind(body)
    .fetch_one(pool)
    .await?;
    Ok(row.try_get("seq")?)
}

pub(super) async fn events(
    pool: &SqlitePool,
    job_id: &str,
) -> Result<Vec<FineTuneEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT job_id, seq, created_at, body FROM fine_tuning_events WHERE job_id = ? ORDER BY seq",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FineTuneEvent {
                job_id: r.try_get("job_id")?,
                seq: r.try_get("seq")?,
                created_at: r.try_get("created_at")?,
                body: r.try_get("body")?,
            })
        })
        .collect()
}

pub(super) async fn add_checkpoint(
    pool: &SqlitePool,
    c: &FineTuneCheckpoint,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO fine_tuning_checkpoints (id, job_id, step, created_at, body) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&c.id)
    .bind(&c.job_id)
    .bind(c.step)
    .bind(c.created_at)
    .bind(&c.body)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn checkpoints(
    pool: &SqlitePool,
    job_id: &str,
) -> Result<Vec<FineTuneCheckpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, job_id, step, created_at, body FROM fine_tuning_checkpoints WHERE job_id = ? ORDER BY step",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FineTuneCheckpoint {
                id: r.try_get("id")?,
                job_id: r.try_get("job_id")?,
                step: r.try_get("step")?,
                created_at: r.try_get("created_at")?,
                body: r.try_get("body")?,
            })
        })
        .collect()
}

pub(super) async fn save_artifact(
    pool: &SqlitePool,
    job_id: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO fine_tuning_artifacts (job_id, name, bytes) VALUES (?, ?, ?) \
         ON CONFLICT (job_id, name) DO UPDATE SET bytes = excluded.bytes",
    )
    .bind(job_id)
    .bind(name)
    .bind(bytes)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn artifact(
    pool: &SqlitePool,
    job_id: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query("SELECT bytes FROM fine_tuning_artifacts WHERE job_id = ? AND name = ?")
        .bind(job_id)
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("bytes")?),
        None => None,
    })
}
