//! Rows as the catalog's types, read alike from SQLite and PostgreSQL: the SQL of the two
//! catalogs differs, what a row holds and how it is read is written once here.

use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Decode, Row, Type};

use super::{DocumentInfo, StoredChunk};
use crate::error::KbError;

/// A type both databases decode.
pub(super) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row of either database, read by column name.
pub(super) trait Read {
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

pub(super) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn vector_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Counts as the databases store them (i64), as the API shows them.
pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The columns [`document_info`] reads; a macro so queries stay `&'static str` (sqlx refuses
/// SQL built at run time).
macro_rules! document_columns {
    () => {
        "id, kb, name, format, label, status, error, chunks, pages, bytes, sha256, created, updated"
    };
}

pub(super) use document_columns;

pub(super) fn document_info(row: &impl Read) -> Result<DocumentInfo, KbError> {
    let pages: String = row.get("pages")?;
    let pages: Vec<usize> = serde_json::from_str(&pages).unwrap_or_default();
    Ok(DocumentInfo {
        id: row.get("id")?,
        object: "knowledge_base.document",
        knowledge_base: row.get("kb")?,
        name: row.get("name")?,
        format: row.get("format")?,
        label: row.get("label")?,
        status: row.get("status")?,
        error: row.get("error")?,
        chunks: count(row.get("chunks")?),
        pages: pages.len() as u64,
        bytes: count(row.get("bytes")?),
        sha256: row.get("sha256")?,
        created: row.get("created")?,
        updated: row.get("updated")?,
    })
}

/// The columns [`stored_chunk`] reads, from `chunks c`.
macro_rules! chunk_columns {
    () => {
        "c.id, c.document, c.label, c.text, c.vector"
    };
}

pub(super) use chunk_columns;

pub(super) fn stored_chunk(row: &impl Read) -> Result<StoredChunk, KbError> {
    Ok(StoredChunk {
        id: row.get("id")?,
        document: row.get("document")?,
        label: row.get("label")?,
        text: row.get("text")?,
        vector: vector_from(&row.get::<Vec<u8>>("vector")?),
    })
}
