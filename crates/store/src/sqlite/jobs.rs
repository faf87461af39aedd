//! The one queue of background jobs in SQLite: the queries behind the `Store` methods on jobs,
//! and the row every batch and fine-tuning job keeps in it.

use sqlx::sqlite::SqlitePool;

use crate::rows::{job_columns, queued};
use crate::{QueuedJob, StoreError};

/// Statuses travel as one JSON array, which `json_each` expands, so the query text stays static.
pub(super) fn json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace(['"', '\\'], "")))
        .collect();
    format!("[{}]", quoted.join(","))
}

/// The job's row, written with its kind's own row: created with its priority, then its status.
pub(super) async fn upsert(
    tx: &mut sqlx::SqliteConnection,
    job: &QueuedJob,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, tenant_id, status, priority, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(&job.id)
    .bind(&job.kind)
    .bind(&job.tenant_id)
    .bind(&job.status)
    .bind(job.priority)
    .bind(job.created_at)
    .bind(job.updated_at)
    .execute(tx)
    .await?;
    Ok(())
}

pub(super) async fn claimable(
    pool: &SqlitePool,
    kind: &str,
    statuses: &[&str],
    now: i64,
) -> Result<Vec<QueuedJob>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE kind = ? AND status IN (SELECT value FROM json_each(?)) \
         AND (holder IS NULL OR held_until < ?) ORDER BY priority DESC, created_at, id"
    ))
    .bind(kind)
    .bind(json_list(statuses))
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter().map(queued).collect()
}

pub(super) async fn claim(
    pool: &SqlitePool,
    id: &str,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET holder = ?, held_until = ? \
         WHERE id = ? AND (holder IS NULL OR held_until < ? OR holder = ?)",
    )
    .bind(holder)
    .bind(until)
    .bind(id)
    .bind(now)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn renew(
    pool: &SqlitePool,
    id: &str,
    holder: &str,
    until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE jobs SET held_until = ? WHERE id = ? AND holder = ?")
        .bind(until)
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn release(pool: &SqlitePool, id: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET holder = NULL, held_until = NULL WHERE id = ? AND holder = ?")
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn release_all(pool: &SqlitePool, holder: &str) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE jobs SET holder = NULL, held_until = NULL WHERE holder = ?")
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn list(pool: &SqlitePool, tenant_id: &str) -> Result<Vec<QueuedJob>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = ? ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(queued).collect()
}
