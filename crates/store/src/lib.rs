//! Persistence for Enclave's state: tenants, users, keys, sessions, usage, conversations, stored
//! responses, files, jobs (batches, fine-tuning) and administrative events.
//!
//! Callers see the [`Store`] trait only; [`SqliteStore`] is the single-machine implementation and
//! [`PgStore`] the one several servers share (scale-out), both passing one conformance suite.
//! The store writes what it is given: ids, timestamps and hashes are minted by the caller (see
//! [`keys`]). It must never hold a key's
//! secret, only its hash, and never return one tenant's rows to a query scoped to another.
//!
//! - [`keys`]: minting and checking API keys (pure).
//! - [`sqlite`]: the SQLite implementation and its migrations (`migrations/sqlite`).
//! - [`postgres`]: the PostgreSQL implementation and its migrations (`migrations/postgres`).

pub mod keys;
mod postgres;
mod rows;
mod sqlite;

use std::str::FromStr;

use async_trait::async_trait;
use serde::Serialize;

pub use postgres::{PgAuditStorage, PgLedger, PgStore};
pub use sqlite::SqliteStore;

/// What a key may do. Enforcement lives in the gateway; the store only keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Calls models.
    User,
    /// Manages its own tenant.
    Admin,
    /// Reads audit records across tenants.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(StoreError::Invalid(format!(
                "unknown role `{other}`: expected `user`, `admin` or `auditor`"
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A stored key: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub name: Option<String>,
    pub role: Role,
    /// The highest label the key may read, as a canonical banner; empty means the lowest level.
    pub clearance: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The user the key belongs to, as they are now; `None` for a program's key.
    pub owner: Option<KeyOwner>,
}

/// The user a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyOwner {
    pub id: String,
    pub name: String,
    /// The user's clearance now: the key never reads above it.
    pub clearance: String,
    pub disabled_at: Option<i64>,
}

/// A key to insert, as minted by the caller.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub role: Role,
    pub clearance: String,
    pub secret_hash: [u8; 32],
    pub created_at: i64,
    /// The user it belongs to, if any (of the same tenant).
    pub user_id: Option<String>,
}

/// A person who signs in (by certificate today): the identity a sign-in maps to, and the tenant,
/// role and clearance that identity is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    /// The mapped identity: a UPN, an e-mail address or a subject name. Unique across tenants.
    pub name: String,
    pub role: Role,
    /// The highest label the user may read, as a canonical banner.
    pub clearance: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: Role,
    pub clearance: String,
    pub created_at: i64,
}

/// A browser session, as its cookie finds it: the session and the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub issuer: String,
    pub created_at: i64,
    /// When the session last served a request (kept to the minute, for the idle timeout).
    pub last_seen: i64,
    /// The absolute end: no request is served past it, however active the session.
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    /// `logout`, `user disabled`, `idle`, `expired`.
    pub end_reason: Option<String>,
    pub user: User,
}

/// A session to insert; `id` is the SHA-256 of the cookie's value.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: [u8; 32],
    pub user_id: String,
    pub issuer: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` already exists")]
    Conflict(String),
    #[error("`{0}` was not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An administrative action, on its way to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminEvent {
    /// Assigned by the store; 0 on a new event.
    pub id: i64,
    pub at: i64,
    /// `tenants.create`, `keys.create`, `keys.revoke`, ...
    pub operation: String,
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    /// What was done, in words; never a secret.
    pub detail: String,
}

/// Usage of one key and model on one UTC day (`YYYY-MM-DD`); also a delta to add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub tenant: String,
    pub key_id: String,
    pub model: String,
    pub day: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A conversation kept for its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub tenant_id: String,
    /// The user's name, or the key's id for a key that belongs to no user.
    pub owner: String,
    pub title: String,
    /// The banner of the highest label its messages reached.
    pub label: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationMessage {
    /// Its place in the conversation, from 0; assigned by the store on append.
    pub seq: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The banner of the label it was sent or answered at.
    pub label: String,
    /// The JSON array of passages an answer was grounded in.
    pub citations: Option<String>,
    pub created_at: i64,
}

/// A stored response of the Responses API; the JSON columns are the API's own shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredResponse {
    pub id: String,
    pub tenant_id: String,
    /// The key (or user) that made it.
    pub key_id: String,
    /// The banner of the label its answer reached.
    pub label: String,
    /// JSON array: every item the model saw and wrote.
    pub context: String,
    /// JSON array: the items this request sent.
    pub input: String,
    /// JSON object: the response as answered.
    pub body: String,
    pub created_at: i64,
}

/// A file uploaded for batches or fine-tuning: its facts (the bytes are read on their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredFile {
    pub id: String,
    pub tenant_id: String,
    /// The key (or user) that uploaded it.
    pub key_id: String,
    /// `batch` or `fine-tune`.
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    /// Lines of JSON it holds.
    pub lines: i64,
    /// The banner of its label: declared, joined with every marking found in it.
    pub label: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    pub created_at: i64,
}

/// A background job's place in the one queue every job kind shares: whose it is, where it
/// stands, how urgent it is, and which server holds it until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedJob {
    pub id: String,
    /// `batch` or `fine_tuning`.
    pub kind: String,
    pub tenant_id: String,
    /// The kind's own status (OpenAI's words for it).
    pub status: String,
    /// Higher runs first: 1 high, 0 normal, -1 low.
    pub priority: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The server working on it, while its hold lasts.
    pub holder: Option<String>,
    /// Unix seconds; a hold not renewed by then has lapsed.
    pub held_until: Option<i64>,
}

/// A batch: its request, who it runs as, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredBatch {
    pub id: String,
    pub tenant_id: String,
    /// JSON: who its lines run as.
    pub owner: String,
    pub endpoint: String,
    pub input_file_id: String,
    /// The banner of its input file's label.
    pub label: String,
    /// OpenAI's: `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
    /// `cancelling`, `cancelled`.
    pub status: String,
    /// JSON object, as sent.
    pub metadata: Option<String>,
    pub total: i64,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub expires_at: i64,
    /// Its place in the jobs queue: 1 high, 0 normal, -1 low (set when it is created).
    pub priority: i64,
}

/// One answered line of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    pub batch_id: String,
    pub custom_id: String,
    /// Its line in the input file (1-based).
    pub line: i64,
    pub ok: bool,
    /// The banner of the label its answer reached (the batch's when it failed).
    pub label: String,
    /// JSON: the line of the output or error file.
    pub body: String,
}

/// A fine-tuning job: its searchable facts, and the rest as the service keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredFineTune {
    pub id: String,
    pub tenant_id: String,
    /// OpenAI's: `validating_files`, `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// The banner of its label: the join of its training and validation files' labels.
    pub label: String,
    /// The model it made, once it succeeded (unique).
    pub fine_tuned_model: Option<String>,
    pub created_at: i64,
    /// JSON: the request, owner, hyperparameters, lineage and results.
    pub body: String,
    /// Its place in the jobs queue: 1 high, 0 normal, -1 low (set when it is created).
    pub priority: i64,
}

/// One event of a fine-tuning job, numbered from 1 in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FineTuneEvent {
    pub job_id: String,
    pub seq: i64,
    pub created_at: i64,
    /// JSON: level, message, data.
    pub body: String,
}

/// A checkpoint a fine-tuning job kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FineTuneCheckpoint {
    pub id: String,
    pub job_id: String,
    pub step: i64,
    pub created_at: i64,
    /// JSON: metrics and where its adapter is.
    pub body: String,
}

/// Enclave's persistent state. One conformance suite runs against every implementation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    async fn create_key(&self, key: &NewKey) -> Result<(), StoreError>;
    /// The key and its stored hash, for the caller to compare in constant time.
    async fn key_for_auth(&self, id: &str) -> Result<Option<(ApiKey, Vec<u8>)>, StoreError>;
    /// Marks a key revoked; false if no such key or already revoked.
    async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError>;
    /// Keys of one tenant, or of all when `tenant` is `None`.
    async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError>;

    /// Queues an administrative action for the audit log.
    /// Fails with `Conflict` when a user of that name exists, in any tenant.
    async fn create_user(&self, user: &NewUser) -> Result<(), StoreError>;
    /// The user a sign-in maps to, disabled or not.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// Users of one tenant, or of all, by name.
    async fn list_users(&self, tenant_id: Option<&str>) -> Result<Vec<User>, StoreError>;
    /// Sets the role and clearance a sign-in brought; false when there is no such user.
    async fn update_user(
        &self,
        name: &str,
        role: Role,
        clearance: &str,
    ) -> Result<bool, StoreError>;
    /// Marks the user disabled; false when there is no such enabled user.
    async fn disable_user(&self, name: &str, at: i64) -> Result<bool, StoreError>;

    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;
    /// The session whose cookie hashes to `id`, ended or not, with its user.
    async fn session(&self, id: &[u8; 32]) -> Result<Option<Session>, StoreError>;
    /// Records that the session served a request at `at`.
    async fn touch_session(&self, id: &[u8; 32], at: i64) -> Result<(), StoreError>;
    /// Ends one session; false when there is no such live session.
    async fn end_session(&self, id: &[u8; 32], at: i64, reason: &str) -> Result<bool, StoreError>;
    /// Ends every live session of a user; how many were ended.
    async fn end_user_sessions(
        &self,
        user_id: &str,
        at: i64,
        reason: &str,
    ) -> Result<u64, StoreError>;

    async fn create_conversation(&self, conversation: &Conversation) -> Result<(), StoreError>;
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;
    /// The owner's conversations in a tenant, the most recently updated first.
    async fn list_conversations(
        &self,
        tenant_id: &str,
        owner: &str,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// Its messages in order.
    async fn conversation_messages(&self, id: &str)
    -> Result<Vec<ConversationMessage>, StoreError>;
    /// Appends `messages` (numbered after the last) and sets the label to `label`, only if the
    /// label is still `seen`: a label raised meanwhile by another answer is never overwritten by
    /// one computed from the older value. False when it was (read again and retry) or when
    /// there is no such conversation. `title` becomes the title if it has none yet.
    async fn append_to_conversation(
        &self,
        id: &str,
        seen: &str,
        label: &str,
        title: &str,
        messages: &[ConversationMessage],
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Deletes it with its messages; false when there is no such conversation.
    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError>;

    async fn create_response(&self, response: &StoredResponse) -> Result<(), StoreError>;
    async fn response(&self, id: &str) -> Result<Option<StoredResponse>, StoreError>;
    /// False when there is no such response.
    async fn delete_response(&self, id: &str) -> Result<bool, StoreError>;

    async fn create_file(&self, file: &StoredFile, content: &[u8]) -> Result<(), StoreError>;
    async fn file(&self, id: &str) -> Result<Option<StoredFile>, StoreError>;
    async fn file_content(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A tenant's files, newest first.
    async fn list_files(&self, tenant_id: &str) -> Result<Vec<StoredFile>, StoreError>;
    /// False when there is no such file.
    async fn delete_file(&self, id: &str) -> Result<bool, StoreError>;

    /// The jobs of `kind` in one of `statuses` that no server holds (or whose hold lapsed
    /// before `now`), the highest priority first, then the oldest.
    async fn claimable_jobs(
        &self,
        kind: &str,
        statuses: &[&str],
        now: i64,
    ) -> Result<Vec<QueuedJob>, StoreError>;
    /// Takes the job for `holder` until `until`, if no other server holds it (a lapsed hold
    /// counts as none). True when `holder` now holds it; of servers racing, one wins.
    async fn claim_job(
        &self,
        id: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;
    /// Extends `holder`'s hold; false when it no longer holds the job.
    async fn renew_job(&self, id: &str, holder: &str, until: i64) -> Result<bool, StoreError>;
    /// Lets go of a job `holder` holds.
    async fn release_job(&self, id: &str, holder: &str) -> Result<(), StoreError>;
    /// Lets go of every job `holder` holds (a server starting again after it stopped).
    async fn release_jobs_of(&self, holder: &str) -> Result<u64, StoreError>;
    /// A tenant's jobs of every kind, newest first.
    async fn list_jobs(&self, tenant_id: &str) -> Result<Vec<QueuedJob>, StoreError>;

    /// Creates a batch, or updates where one stands (status, times, files, error).
    async fn save_batch(&self, batch: &StoredBatch) -> Result<(), StoreError>;
    async fn batch(&self, id: &str) -> Result<Option<StoredBatch>, StoreError>;
    /// A tenant's batches, newest first.
    async fn list_batches(&self, tenant_id: &str) -> Result<Vec<StoredBatch>, StoreError>;
    /// Batches not yet at an end, oldest first.
    async fn unfinished_batches(&self) -> Result<Vec<StoredBatch>, StoreError>;
    /// Records a line's result once: false when its custom_id already has one.
    async fn record_batch_result(&self, result: &BatchResult) -> Result<bool, StoreError>;
    /// A batch's results, in line order.
    async fn batch_results(&self, batch_id: &str) -> Result<Vec<BatchResult>, StoreError>;
    /// A batch's lines answered and failed so far.
    async fn batch_counts(&self, batch_id: &str) -> Result<(i64, i64), StoreError>;

    /// Creates a fine-tuning job, or updates its status, model and document.
    async fn save_fine_tune(&self, job: &StoredFineTune) -> Result<(), StoreError>;
    async fn fine_tune(&self, id: &str) -> Result<Option<StoredFineTune>, StoreError>;
    /// A tenant's fine-tuning jobs, newest first.
    async fn list_fine_tunes(&self, tenant_id: &str) -> Result<Vec<StoredFineTune>, StoreError>;
    /// Every tenant's jobs in one of `statuses`, oldest first.
    async fn fine_tunes_with_status(
        &self,
        statuses: &[&str],
    ) -> Result<Vec<StoredFineTune>, StoreError>;
    /// Appends an event; returns its number (1, 2, … per job).
    async fn add_fine_tune_event(
        &self,
        job_id: &str,
        created_at: i64,
        body: &str,
    ) -> Result<i64, StoreError>;
    /// A job's events, in order.
    async fn fine_tune_events(&self, job_id: &str) -> Result<Vec<FineTuneEvent>, StoreError>;
    async fn add_fine_tune_checkpoint(&self, c: &FineTuneCheckpoint) -> Result<(), StoreError>;
    /// Keeps a file a job made (an adapter) under `name`, replacing one of that name.
    async fn save_fine_tune_artifact(
        &self,
        job_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError>;
    async fn fine_tune_artifact(
        &self,
        job_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// A job's checkpoints, by step.
    async fn fine_tune_checkpoints(
        &self,
        job_id: &str,
    ) -> Result<Vec<FineTuneCheckpoint>, StoreError>;

    async fn record_admin_event(&self, event: &AdminEvent) -> Result<(), StoreError>;
    /// Actions not yet in the audit log, oldest first.
    async fn pending_admin_events(&self, limit: u32) -> Result<Vec<AdminEvent>, StoreError>;
    /// Marks actions as taken by the audit log.
    async fn mark_admin_event_logged(&self, id: i64, at: i64) -> Result<(), StoreError>;

    /// Adds usage deltas, in one transaction.
    async fn add_usage(&self, deltas: &[UsageRow]) -> Result<(), StoreError>;
    /// Usage rows with `from <= day <= to`, of one tenant or all.
    async fn usage(
        &self,
        tenant: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRow>, StoreError>;
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A new random id for a row.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
