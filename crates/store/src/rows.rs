//! Rows as the store's types: the column lists and the readers both databases' queries share.
//! The SQL differs between SQLite and PostgreSQL only in its placeholders and a few functions;
//! what a row holds and how it becomes a `Tenant`, an `ApiKey` or a `StoredBatch` is written once
//! here.

use std::str::FromStr;

use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Decode, Row, Type};

use crate::{
    AdminEvent, ApiKey, Conversation, KeyOwner, QueuedJob, Role, Session, StoreError, StoredBatch,
    StoredFile, StoredFineTune, Tenant, UsageRow, User,
};

/// A type both databases decode.
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row of either database, read by column name.
pub(crate) trait Read {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error>;
}

impl Read for SqliteRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
}

impl Read for PgRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
}

/// A key query: the columns `key_row` reads, joined with the tenant's name, then `$tail`.
/// A macro rather than `format!` because sqlx only takes static SQL (no injection by construction).
macro_rules! key_query {
    ($tail:literal) => {
        concat!(
            "SELECT k.id, k.tenant_id, t.name AS tenant_name, k.name, k.role, k.clearance, k.created_at, k.revoked_at, k.secret_hash, \
             k.user_id, u.name AS owner_name, u.clearance AS owner_clearance, u.disabled_at AS owner_disabled_at \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id LEFT JOIN users u ON u.id = k.user_id ",
            $tail
        )
    };
}

pub(crate) fn key_row(row: &impl Read) -> Result<ApiKey, StoreError> {
    let role: String = row.get("role")?;
    Ok(ApiKey {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        tenant_name: row.get("tenant_name")?,
        name: row.get("name")?,
        role: Role::from_str(&role)?,
        clearance: row.get("clearance")?,
        created_at: row.get("created_at")?,
        revoked_at: row.get("revoked_at")?,
        owner: match row.get::<Option<String>>("user_id")? {
            Some(id) => Some(KeyOwner {
                id,
                name: row.get("owner_name")?,
                clearance: row.get("owner_clearance")?,
                disabled_at: row.get("owner_disabled_at")?,
            }),
            None => None,
        },
    })
}

/// A user query: the columns `user_row` reads, joined with the tenant's name, then `$tail`.
macro_rules! user_query {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.tenant_id, t.name AS tenant_name, u.name, u.role, u.clearance, u.created_at, u.disabled_at \
             FROM users u JOIN tenants t ON t.id = u.tenant_id ",
            $tail
        )
    };
}

pub(crate) fn user_row(row: &impl Read) -> Result<User, StoreError> {
    let role: String = row.get("role")?;
    Ok(User {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        tenant_name: row.get("tenant_name")?,
        name: row.get("name")?,
        role: Role::from_str(&role)?,
        clearance: row.get("clearance")?,
        created_at: row.get("created_at")?,
        disabled_at: row.get("disabled_at")?,
    })
}

pub(crate) fn tenant_row(row: &impl Read) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: row.get("id")?,
        name: row.get("name")?,
        created_at: row.get("created_at")?,
    })
}

// A macro, not a constant: sqlx takes only static query text, and `concat!` only literals.
macro_rules! batch_columns {
    () => {
        "id, tenant_id, owner, endpoint, input_file_id, label, status, metadata, total, \
         output_file_id, error_file_id, error, created_at, in_progress_at, finalizing_at, \
         completed_at, failed_at, cancelling_at, cancelled_at, expires_at, \
         (SELECT priority FROM jobs WHERE jobs.id = batches.id) AS priority"
    };
}

pub(crate) fn batch(row: &impl Read) -> Result<StoredBatch, StoreError> {
    Ok(StoredBatch {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        owner: row.get("owner")?,
        endpoint: row.get("endpoint")?,
        input_file_id: row.get("input_file_id")?,
        label: row.get("label")?,
        status: row.get("status")?,
        metadata: row.get("metadata")?,
        total: row.get("total")?,
        output_file_id: row.get("output_file_id")?,
        error_file_id: row.get("error_file_id")?,
        error: row.get("error")?,
        created_at: row.get("created_at")?,
        in_progress_at: row.get("in_progress_at")?,
        finalizing_at: row.get("finalizing_at")?,
        completed_at: row.get("completed_at")?,
        failed_at: row.get("failed_at")?,
        cancelling_at: row.get("cancelling_at")?,
        cancelled_at: row.get("cancelled_at")?,
        expires_at: row.get("expires_at")?,
        priority: row.get::<Option<i64>>("priority")?.unwrap_or(0),
    })
}

/// The columns `conversation_row` reads, then `$tail` (static SQL: sqlx takes no other).
macro_rules! conversation_query {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, owner, title, label, created_at, updated_at FROM conversations ",
            $tail
        )
    };
}

pub(crate) fn conversation_row(row: &impl Read) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        owner: row.get("owner")?,
        title: row.get("title")?,
        label: row.get("label")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

// A macro, not a constant: sqlx takes only static query text, and `concat!` only literals.
macro_rules! file_columns {
    () => {
        "id, tenant_id, key_id, purpose, filename, bytes, lines, label, sha256, created_at"
    };
}

pub(crate) fn file_facts(row: &impl Read) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        key_id: row.get("key_id")?,
        purpose: row.get("purpose")?,
        filename: row.get("filename")?,
        bytes: row.get("bytes")?,
        lines: row.get("lines")?,
        label: row.get("label")?,
        sha256: row.get("sha256")?,
        created_at: row.get("created_at")?,
    })
}

pub(crate) fn fine_tune(row: &impl Read) -> Result<StoredFineTune, StoreError> {
    Ok(StoredFineTune {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        status: row.get("status")?,
        label: row.get("label")?,
        fine_tuned_model: row.get("fine_tuned_model")?,
        created_at: row.get("created_at")?,
        body: row.get("body")?,
        priority: row.get::<Option<i64>>("priority")?.unwrap_or(0),
    })
}

// A macro, not a constant: sqlx takes only static query text, and `concat!` only literals.
macro_rules! fine_tune_columns {
    () => {
        "id, tenant_id, status, label, fine_tuned_model, created_at, body, \
         (SELECT priority FROM jobs WHERE jobs.id = fine_tuning_jobs.id) AS priority"
    };
}

// A macro, not a constant: sqlx takes only static query text, and `concat!` only literals.
macro_rules! job_columns {
    () => {
        "id, kind, tenant_id, status, priority, created_at, updated_at, holder, held_until"
    };
}

pub(crate) fn queued(row: &impl Read) -> Result<QueuedJob, StoreError> {
    Ok(QueuedJob {
        id: row.get("id")?,
        kind: row.get("kind")?,
        tenant_id: row.get("tenant_id")?,
        status: row.get("status")?,
        priority: row.get("priority")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        holder: row.get("holder")?,
        held_until: row.get("held_until")?,
    })
}

pub(crate) use batch_columns;
pub(crate) use conversation_query;
pub(crate) use file_columns;
pub(crate) use fine_tune_columns;
pub(crate) use job_columns;
/// A session joined with its user (`s_created` is the session's own creation time).
pub(crate) fn session_row(row: &impl Read) -> Result<Session, StoreError> {
    Ok(Session {
        issuer: row.get("issuer")?,
        created_at: row.get("s_created")?,
        last_seen: row.get("last_seen")?,
        expires_at: row.get("expires_at")?,
        ended_at: row.get("ended_at")?,
        end_reason: row.get("end_reason")?,
        user: user_row(row)?,
    })
}

pub(crate) fn usage_row(row: &impl Read) -> Result<UsageRow, StoreError> {
    let n = |c: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.get::<i64>(c)?).unwrap_or(0))
    };
    Ok(UsageRow {
        tenant: row.get("tenant")?,
        key_id: row.get("key_id")?,
        model: row.get("model")?,
        day: row.get("day")?,
        requests: n("requests")?,
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens")?,
    })
}

pub(crate) fn admin_event_row(row: &impl Read) -> Result<AdminEvent, StoreError> {
    Ok(AdminEvent {
        id: row.get("id")?,
        at: row.get("at")?,
        operation: row.get("operation")?,
        tenant: row.get("tenant")?,
        key_id: row.get("key_id")?,
        detail: row.get("detail")?,
    })
}

pub(crate) use key_query;
pub(crate) use user_query;
