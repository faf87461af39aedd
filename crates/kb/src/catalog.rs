//! The knowledge-base catalog: knowledge bases, their documents and the chunks the indexes are
//! built from. It is the source of truth; the full-text and vector indexes are derived from it.
//!
//! [`Catalog`] is the seam a shared database slots into: [`SqliteCatalog`] is the embedded
//! default, and every implementation passes the same conformance suite
//! (`crates/kb/tests/catalog.rs`). A catalog stores labels as the banners it is given and never
//! decides access: the service above it checks every label before a row is written or returned.

use async_trait::async_trait;
use serde::Serialize;

use crate::error::KbError;

mod postgres;
mod rows;
mod sqlite;

/// Seconds since the Unix epoch, as the catalog stamps rows.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub use postgres::PgCatalog;
pub use sqlite::SqliteCatalog;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DocumentCounts {
    pub queued: u64,
    pub indexing: u64,
    pub ready: u64,
    pub failed: u64,
}

/// A document as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentInfo {
    pub id: String,
    pub object: &'static str,
    pub knowledge_base: String,
    pub name: String,
    pub format: String,
    pub label: String,
    pub status: String,
    pub error: Option<String>,
    pub chunks: u64,
    pub pages: u64,
    pub bytes: u64,
    pub sha256: String,
    pub created: i64,
    pub updated: i64,
}

/// A knowledge base to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKb {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// Banners, as the scheme writes them.
    pub max_label: String,
    pub default_label: Option<String>,
    pub created: i64,
}

/// A knowledge base as the catalog holds it, with its document and chunk counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub max_label: String,
    pub default_label: Option<String>,
    pub created: i64,
    pub documents: DocumentCounts,
    pub chunks: u64,
}

/// A document to queue for ingestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub id: String,
    pub kb: String,
    pub name: String,
    pub format: String,
    /// The document's label: the given one joined with every marking in it.
    pub label: String,
    /// The label given at upload (or the knowledge base's default), a floor for its passages.
    pub given_label: Option<String>,
    pub text: String,
    /// Where each page starts in `text`, in bytes.
    pub pages: Vec<usize>,
    pub sha256: String,
    pub bytes: u64,
    pub uploader: String,
    pub created: i64,
}

/// A queued document, claimed by the ingestion worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDocument {
    pub id: String,
    pub kb: String,
    pub text: String,
    pub pages: Vec<usize>,
    pub given_label: Option<String>,
}

/// A chunk to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk<'a> {
    pub label: &'a str,
    pub text: &'a str,
    pub page: Option<u32>,
    pub start: u64,
    pub end: u64,
    pub vector: &'a [f32],
}

/// The chunks of one document, replacing whatever it had.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentChunks<'a> {
    pub document: &'a str,
    pub kb: &'a str,
    pub chunks: Vec<NewChunk<'a>>,
}

/// A chunk as the indexes are loaded from it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub id: i64,
    pub document: String,
    pub label: String,
    pub text: String,
    pub vector: Vec<f32>,
}

/// A chunk as a search result shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub id: i64,
    pub document: String,
    pub document_name: String,
    pub label: String,
    pub text: String,
    pub page: Option<u32>,
    pub start: u64,
    pub end: u64,
}

/// Where knowledge bases, documents and chunks are kept. Every method is one atomic step.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Whether other servers write this catalog too (then each server's indexes follow it).
    fn shared(&self) -> bool {
        false
    }

    /// Documents a crash left `indexing` go back to `queued`, their chunks removed. Returns how
    /// many documents and chunks that touched.
    async fn requeue_interrupted(&self) -> Result<(u64, u64), KbError>;

    /// Creates a knowledge base; [`KbError::Exists`] when its tenant has one of that name.
    async fn create(&self, kb: &NewKb) -> Result<(), KbError>;
    /// The id of `tenant`'s knowledge base with this id or name; another tenant's is `None`.
    async fn resolve(&self, tenant: &str, id_or_name: &str) -> Result<Option<String>, KbError>;
    /// The ids of `tenant`'s knowledge bases, oldest first.
    async fn list(&self, tenant: &str) -> Result<Vec<String>, KbError>;
    /// The ids of every tenant's knowledge bases (for loading indexes at start).
    async fn all(&self) -> Result<Vec<String>, KbError>;
    async fn get(&self, id: &str) -> Result<Option<KbRecord>, KbError>;

    /// Queues a document for ingestion.
    async fn add_document(&self, doc: &NewDocument) -> Result<(), KbError>;
    /// The document `id` of knowledge base `kb`; one of another knowledge base is `None`.
    async fn document(&self, kb: &str, id: &str) -> Result<Option<DocumentInfo>, KbError>;
    /// The documents of `kb`, oldest first.
    async fn documents(&self, kb: &str) -> Result<Vec<DocumentInfo>, KbError>;
    /// Removes a document and its chunks; returns the ids of the chunks removed.
    async fn delete_document(&self, kb: &str, id: &str) -> Result<Vec<i64>, KbError>;

    /// Up to `limit` queued documents, oldest first, now marked `indexing`.
    async fn claim(&self, limit: usize) -> Result<Vec<QueuedDocument>, KbError>;
    /// Claimed documents go back to `queued` untouched.
    async fn requeue(&self, ids: &[String]) -> Result<(), KbError>;
    /// Writes each document's chunks in one transaction, replacing any it had; returns the new
    /// chunk ids, in the order given.
    async fn write_chunks(&self, docs: &[DocumentChunks<'_>]) -> Result<Vec<Vec<i64>>, KbError>;
    /// Marks documents `ready`, and others `failed` with the reason.
    async fn finish(&self, ready: &[String], failed: &[(String, String)]) -> Result<(), KbError>;

    /// The chunks of `kb`'s ready documents, in id order.
    async fn ready_chunks(&self, kb: &str) -> Result<Vec<StoredChunk>, KbError>;
    /// The chunks of the ready documents `documents` of `kb`, in id order (what a server
    /// following a shared catalog takes in).
    async fn document_chunks(
        &self,
        kb: &str,
        documents: &[String],
    ) -> Result<Vec<StoredChunk>, KbError>;
    /// The chunks of `kb` with these ids, in any order; ids not found (deleted since) are left
    /// out.
    async fn passages(&self, kb: &str, ids: &[i64]) -> Result<Vec<Passage>, KbError>;
}
