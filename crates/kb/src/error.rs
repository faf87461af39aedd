//! Everything a knowledge-base operation can refuse or fail with.

use crate::segment::SegmentError;

/// Why texts could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding model is still loading")]
    NotReady,
    #[error("embedding failed: {0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("no knowledge base `{0}`")]
    NoKnowledgeBase(String),
    #[error("no document `{0}` in this knowledge base")]
    NoDocument(String),
    #[error("a knowledge base named `{0}` already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("`{name}`: {reason}")]
    Unreadable { name: String, reason: String },
    #[error("`{name}`: {source}")]
    Unlabelled { name: String, source: SegmentError },
    #[error("`{name}`: {source}")]
    UnrecognizedMarking { name: String, source: SegmentError },
    #[error("{0}")]
    AboveClearance(String),
    #[error("{0}")]
    AboveMaximum(String),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("knowledge-base storage failed: {0}")]
    Storage(String),
}

impl From<sqlx::Error> for KbError {
    fn from(e: sqlx::Error) -> Self {
        KbError::Storage(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for KbError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        KbError::Storage(e.to_string())
    }
}

impl From<tantivy::TantivyError> for KbError {
    fn from(e: tantivy::TantivyError) -> Self {
        KbError::Storage(format!("full-text index: {e}"))
    }
}

impl From<tokio::task::JoinError> for KbError {
    fn from(e: tokio::task::JoinError) -> Self {
        KbError::Storage(format!("a background step failed: {e}"))
    }
}
