//! Batches in SQLite: the queries behind the `Store` methods of the same names.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::rows::{batch, batch_columns};
use crate::{BatchResult, QueuedJob, StoreError, StoredBatch};

pub(super) async fn save(pool: &SqlitePool, b: &StoredBatch) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT INTO batches (id, tenant_id, owner, endpoint, input_file_id, label, status, \
         metadata, total, output_file_id, error_file_id, error, created_at, in_progress_at, \
         finalizing_at, completed_at, failed_at, cancelling_at, cancelled_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, output_file_id = excluded.output_file_id, \
         error_file_id = excluded.error_file_id, error = excluded.error, \
         in_progress_at = excluded.in_progress_at, finalizing_at = excluded.finalizing_at, \
         completed_at = excluded.completed_at, failed_at = excluded.failed_at, \
         cancelling_at = excluded.cancelling_at, cancelled_at = excluded.cancelled_at",
    )
    .bind(&b.id)
    .bind(&b.tenant_id)
    .bind(&b.owner)
    .bind(&b.endpoint)
    .bind(&b.input_file_id)
    .bind(&b.label)
    .bind(&b.status)
    .bind(&b.metadata)
    .bind(b.total)
    .bind(&b.output_file_id)
    .bind(&b.error_file_id)
    .bind(&b.error)
    .bind(b.created_at)
    .bind(b.in_progress_at)
    .bind(b.finalizing_at)
    .bind(b.completed_at)
    .bind(b.failed_at)
    .bind(b.cancelling_at)
    .bind(b.cancelled_at)
    .bind(b.expires_at)
    .execute(&mut *tx)
    .await?;
    let job = QueuedJob {
        id: b.id.clone(),
        kind: "batch".into(),
        tenant_id: b.tenant_id.clone(),
        status: b.status.clone(),
        priority: b.priority,
        created_at: b.created_at,
        updated_at: crate::now(),
        holder: None,
        held_until: None,
    };
    super::jobs::upsert(&mut tx, &job).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<StoredBatch>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        batch_columns!(),
        " FROM batches WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(batch).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant_id: &str,
) -> Result<Vec<StoredBatch>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        batch_columns!(),
        " FROM batches WHERE tenant_id = ? ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(batch).collect()
}

pub(super) async fn unfinished(pool: &SqlitePool) -> Result<Vec<StoredBatch>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        batch_columns!(),
        " FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') \
         ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(batch).collect()
}

pub(super) async fn record_result(pool: &SqlitePool, r: &BatchResult) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO batch_results (batch_id, custom_id, line, ok, label, body) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (batch_id, custom_id) DO NOTHING",
    )
    .bind(&r.batch_id)
    .bind(&r.custom_id)
    .bind(r.line)
    .bind(r.ok)
    .bind(&r.label)
    .bind(&r.body)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn results(
    pool: &SqlitePool,
    batch_id: &str,
) -> Result<Vec<BatchResult>, StoreError> {
    let rows = sqlx::query(
        "SELECT batch_id, custom_id, line, ok, label, body FROM batch_results WHERE batch_id = ? ORDER BY line",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(BatchResult {
                batch_id: r.try_get("batch_id")?,
                custom_id: r.try_get("custom_id")?,
                line: r.try_get("line")?,
                ok: r.try_get("ok")?,
                label: r.try_get("label")?,
                body: r.try_get("body")?,
            })
        })
        .collect()
}

pub(super) async fn counts(pool: &SqlitePool, batch_id: &str) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(ok), 0) AS ok, COUNT(*) - COALESCE(SUM(ok), 0) AS failed \
         FROM batch_results WHERE batch_id = ?",
    )
    .bind(batch_id)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("ok")?, row.try_get("failed")?))
}
