//! The SQLite implementation of [`Store`]: one file in the data directory, WAL journal.
//!
//! Write transactions begin `IMMEDIATE`, taking the write lock first: a deferred one that read
//! before writing could not take it while another connection held it (SQLite answers busy at
//! once, without waiting, rather than risk a deadlock).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::rows::{
    admin_event_row, key_query, key_row, session_row, tenant_row, usage_row, user_query, user_row,
};
use crate::{
    AdminEvent, ApiKey, BatchResult, Conversation, ConversationMessage, FineTuneCheckpoint,
    FineTuneEvent, NewKey, NewSession, NewUser, QueuedJob, Role, Session, Store, StoreError,
    StoredBatch, StoredFile, StoredFineTune, StoredResponse, Tenant, UsageRow, User,
};

mod batches;
mod conversations;
mod files;
mod fine_tuning;
mod jobs;
mod responses;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// State in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("tenant {}", tenant.name))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_row)
            .collect()
    }

    async fn create_key(&self, key: &NewKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, clearance, secret_hash, created_at, user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.clearance)
        .bind(key.secret_hash.as_slice())
        .bind(key.created_at)
        .bind(&key.user_id)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("key {}", key.id))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn key_for_auth(&self, id: &str) -> Result<Option<(ApiKey, Vec<u8>)>, StoreError> {
        let Some(row) = sqlx::query(key_query!("WHERE k.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let hash: Vec<u8> = row.try_get("secret_hash")?;
        Ok(Some((key_row(&row)?, hash)))
    }

    async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_user(&self, user: &NewUser) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, name, role, clearance, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.tenant_id)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.clearance)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("user {}", user.name))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        sqlx::query(user_query!("WHERE u.name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn list_users(&self, tenant_id: Option<&str>) -> Result<Vec<User>, StoreError> {
        let rows = match tenant_id {
            Some(t) => {
                sqlx::query(user_query!("WHERE u.tenant_id = ? ORDER BY u.name"))
                    .bind(t)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(user_query!("ORDER BY u.name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(user_row).collect()
    }

    async fn update_user(
        &self,
        name: &str,
        role: Role,
        clearance: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET role = ?, clearance = ? WHERE name = ?")
            .bind(role.as_str())
            .bind(clearance)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn disable_user(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL")
                .bind(at)
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, issuer, created_at, last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id[..])
        .bind(&s.user_id)
        .bind(&s.issuer)
        .bind(s.created_at)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT s.issuer, s.created_at AS s_created, s.last_seen, s.expires_at, s.ended_at, s.end_reason, \
             u.id, u.tenant_id, t.name AS tenant_name, u.name, u.role, u.clearance, u.created_at, u.disabled_at \
             FROM sessions s JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = u.tenant_id \
             WHERE s.id = ?",
        )
        .bind(&id[..])
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(session_row(&row)?))
    }

    async fn touch_session(&self, id: &[u8; 32], at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen = ? WHERE id = ? AND last_seen < ?")
            .bind(at)
            .bind(&id[..])
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_session(&self, id: &[u8; 32], at: i64, reason: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(&id[..])
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_user_sessions(
        &self,
        user_id: &str,
        at: i64,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE user_id = ? AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn create_conversation(&self, conversation: &Conversation) -> Result<(), StoreError> {
        conversations::create(&self.pool, conversation).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        conversations::get(&self.pool, id).await
    }

    async fn list_conversations(
        &self,
        tenant_id: &str,
        owner: &str,
    ) -> Result<Vec<Conversation>, StoreError> {
        conversations::list(&self.pool, tenant_id, owner).await
    }

    async fn conversation_messages(
        &self,
        id: &str,
    ) -> Result<Vec<ConversationMessage>, StoreError> {
        conversations::messages(&self.pool, id).await
    }

    async fn append_to_conversation(
        &self,
        id: &str,
        seen: &str,
        label: &str,
        title: &str,
        messages: &[ConversationMessage],
        at: i64,
    ) -> Result<bool, StoreError> {
        conversations::append(&self.pool, id, (seen, label), title, messages, at).await
    }

    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        conversations::delete(&self.pool, id).await
    }

    async fn create_response(&self, response: &StoredResponse) -> Result<(), StoreError> {
        responses::create(&self.pool, response).await
    }

    async fn response(&self, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        responses::get(&self.pool, id).await
    }

    async fn delete_response(&self, id: &str) -> Result<bool, StoreError> {
        responses::delete(&self.pool, id).await
    }

    async fn create_file(&self, file: &StoredFile, content: &[u8]) -> Result<(), StoreError> {
        files::create(&self.pool, file, content).await
    }

    async fn file(&self, id: &str) -> Result<Option<StoredFile>, StoreError> {
        files::get(&self.pool, id).await
    }

    async fn file_content(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        files::content(&self.pool, id).await
    }

    async fn list_files(&self, tenant_id: &str) -> Result<Vec<StoredFile>, StoreError> {
        files::list(&self.pool, tenant_id).await
    }

    async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        files::delete(&self.pool, id).await
    }

    async fn claimable_jobs(
        &self,
        kind: &str,
        statuses: &[&str],
        now: i64,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        jobs::claimable(&self.pool, kind, statuses, now).await
    }

    async fn claim_job(
        &self,
        id: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        jobs::claim(&self.pool, id, holder, now, until).await
    }

    async fn renew_job(&self, id: &str, holder: &str, until: i64) -> Result<bool, StoreError> {
        jobs::renew(&self.pool, id, holder, until).await
    }

    async fn release_job(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        jobs::release(&self.pool, id, holder).await
    }

    async fn release_jobs_of(&self, holder: &str) -> Result<u64, StoreError> {
        jobs::release_all(&self.pool, holder).await
    }

    async fn list_jobs(&self, tenant_id: &str) -> Result<Vec<QueuedJob>, StoreError> {
        jobs::list(&self.pool, tenant_id).await
    }

    async fn save_batch(&self, batch: &StoredBatch) -> Result<(), StoreError> {
        batches::save(&self.pool, batch).await
    }

    async fn batch(&self, id: &str) -> Result<Option<StoredBatch>, StoreError> {
        batches::get(&self.pool, id).await
    }

    async fn list_batches(&self, tenant_id: &str) -> Result<Vec<StoredBatch>, StoreError> {
        batches::list(&self.pool, tenant_id).await
    }

    async fn unfinished_batches(&self) -> Result<Vec<StoredBatch>, StoreError> {
        batches::unfinished(&self.pool).await
    }

    async fn record_batch_result(&self, result: &BatchResult) -> Result<bool, StoreError> {
        batches::record_result(&self.pool, result).await
    }

    async fn batch_results(&self, batch_id: &str) -> Result<Vec<BatchResult>, StoreError> {
        batches::results(&self.pool, batch_id).await
    }

    async fn batch_counts(&self, batch_id: &str) -> Result<(i64, i64), StoreError> {
        batches::counts(&self.pool, batch_id).await
    }

    async fn save_fine_tune(&self, job: &StoredFineTune) -> Result<(), StoreError> {
        fine_tuning::save(&self.pool, job).await
    }

    async fn fine_tune(&self, id: &str) -> Result<Option<StoredFineTune>, StoreError> {
        fine_tuning::get(&self.pool, id).await
    }

    async fn list_fine_tunes(&self, tenant_id: &str) -> Result<Vec<StoredFineTune>, StoreError> {
        fine_tuning::list(&self.pool, tenant_id).await
    }

    async fn fine_tunes_with_status(
        &self,
        statuses: &[&str],
    ) -> Result<Vec<StoredFineTune>, StoreError> {
        fine_tuning::with_status(&self.pool, statuses).await
    }

    async fn add_fine_tune_event(
        &self,
        job_id: &str,
        created_at: i64,
        body: &str,
    ) -> Result<i64, StoreError> {
        fine_tuning::add_event(&self.pool, job_id, created_at, body).await
    }

    async fn fine_tune_events(&self, job_id: &str) -> Result<Vec<FineTuneEvent>, StoreError> {
        fine_tuning::events(&self.pool, job_id).await
    }

    async fn add_fine_tune_checkpoint(&self, c: &FineTuneCheckpoint) -> Result<(), StoreError> {
        fine_tuning::add_checkpoint(&self.pool, c).await
    }

    async fn save_fine_tune_artifact(
        &self,
        job_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        fine_tuning::save_artifact(&self.pool, job_id, name, bytes).await
    }

    async fn fine_tune_artifact(
        &self,
        job_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        fine_tuning::artifact(&self.pool, job_id, name).await
    }

    async fn fine_tune_checkpoints(
        &self,
        job_id: &str,
    ) -> Result<Vec<FineTuneCheckpoint>, StoreError> {
        fine_tuning::checkpoints(&self.pool, job_id).await
    }

    async fn record_admin_event(&self, e: &AdminEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_events (at, operation, tenant, key_id, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.operation)
        .bind(&e.tenant)
        .bind(&e.key_id)
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn add_usage(&self, deltas: &[UsageRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for d in deltas {
            sqlx::query(
                "INSERT INTO usage (tenant, key_id, model, day, requests, prompt_tokens, completion_tokens) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant, key_id, model, day) DO UPDATE SET \
                 requests = requests + excluded.requests, \
                 prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
                 completion_tokens = completion_tokens + excluded.completion_tokens",
            )
            .bind(&d.tenant)
            .bind(&d.key_id)
            .bind(&d.model)
            .bind(&d.day)
            .bind(i64::try_from(d.requests).unwrap_or(i64::MAX))
            .bind(i64::try_from(d.prompt_tokens).unwrap_or(i64::MAX))
            .bind(i64::try_from(d.completion_tokens).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(
        &self,
        tenant: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, key_id, model, day, requests, prompt_tokens, completion_tokens FROM usage \
             WHERE (? IS NULL OR tenant = ?) AND day >= ? AND day <= ? \
             ORDER BY day, tenant, model, key_id",
        )
        .bind(tenant)
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_row).collect()
    }

    async fn pending_admin_events(&self, limit: u32) -> Result<Vec<AdminEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, operation, tenant, key_id, detail FROM admin_events \
             WHERE logged_at IS NULL ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(admin_event_row).collect()
    }

    async fn mark_admin_event_logged(&self, id: i64, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE admin_events SET logged_at = ? WHERE id = ? AND logged_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        sqlx::query(key_query!(
            "WHERE (?1 IS NULL OR k.tenant_id = ?1) ORDER BY k.created_at, k.id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_row)
        .collect()
    }
}
