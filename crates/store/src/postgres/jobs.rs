//! The one queue of background jobs in PostgreSQL: the queries behind the `Store` methods on jobs,
//! and the row every batch and fine-tuning job keeps in it.

use sqlx::postgres::PgPool;

use crate::rows::{job_columns, queued};
use crate::{QueuedJob, StoreError};

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The job's row, written with its kind's own row: created with its priority, then its status.
pub(super) async fn upsert(tx: &mut sqlx::PgConnection, job: &QueuedJob) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, tenant_id, status, priority, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
    pool: &PgPool,
    kind: &str,
    statuses: &[&str],
    now: i64,
) -> Result<Vec<QueuedJob>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE kind = $1 AND status = ANY($2) \
         AND (holder IS NULL OR held_until < $3) ORDER BY priority DESC, created_at, id"
    ))
    .bind(kind)
    .bind(owned(statuses))
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter().map(queued).collect()
}

pub(super) async fn claim(
    pool: &PgPool,
    id: &str,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET holder = $1, held_until = $2 \
         WHERE id = $3 AND (holder IS NULL OR held_until < $4 OR holder = $5)",
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
    pool: &PgPool,
    id: &str,
    holder: &str,
    until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE jobs SET held_until = $1 WHERE id = $2 AND holder = $3")
        .bind(until)
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn release(pool: &PgPool, id: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET holder = NULL, held_until = NULL WHERE id = $1 AND holder = $2")
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn release_all(pool: &PgPool, holder: &str) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE jobs SET holder = NULL, held_until = NULL WHERE holder = $1")
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn list(pool: &PgPool, tenant_id: &str) -> Result<Vec<QueuedJob>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(queued).collect()
}
