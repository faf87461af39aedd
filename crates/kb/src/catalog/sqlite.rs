//! The catalog in one SQLite file (WAL, foreign keys on), the embedded default. Write
//! transactions begin `IMMEDIATE`, taking the write lock first: a deferred one that read before
//! writing (claiming, deleting) could not take it while another connection held it, and SQLite
//! answers busy at once rather than wait.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::now;
use super::rows::{
    chunk_columns, count, document_columns, document_info, stored_chunk, vector_bytes,
};
use super::{
    Catalog, DocumentChunks, KbRecord, NewDocument, NewKb, Passage, QueuedDocument, StoredChunk,
};
use super::{DocumentCounts, DocumentInfo};
use crate::error::KbError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The catalog in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
}

impl SqliteCatalog {
    /// Opens (creating if missing) the catalog file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, KbError> {
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

/// `ids` as a JSON array, which `json_each` expands: one query for a whole list.
fn json_list<T: serde::Serialize>(ids: &[T]) -> Result<String, KbError> {
    serde_json::to_string(ids).map_err(|e| KbError::Storage(e.to_string()))
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn requeue_interrupted(&self) -> Result<(u64, u64), KbError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let chunks = sqlx::query(
            "DELETE FROM chunks WHERE document IN (SELECT id FROM documents WHERE status = 'indexing')",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let documents = sqlx::query(
            "UPDATE documents SET status = 'queued', chunks = 0 WHERE status = 'indexing'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((documents, chunks))
    }

    async fn create(&self, kb: &NewKb) -> Result<(), KbError> {
        let result = sqlx::query(
            "INSERT INTO knowledge_bases (id, tenant, name, max_label, default_label, created) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&kb.id)
        .bind(&kb.tenant)
        .bind(&kb.name)
        .bind(&kb.max_label)
        .bind(&kb.default_label)
        .bind(kb.created)
        .execute(&self.pool)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(KbError::Exists(kb.name.clone()))
            }
            other => other.map(drop).map_err(KbError::from),
        }
    }

    async fn resolve(&self, tenant: &str, id_or_name: &str) -> Result<Option<String>, KbError> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT id FROM knowledge_bases WHERE tenant = ? AND (id = ? OR name = ?)",
        )
        .bind(tenant)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn list(&self, tenant: &str) -> Result<Vec<String>, KbError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM knowledge_bases WHERE tenant = ? ORDER BY created, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn all(&self) -> Result<Vec<String>, KbError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM knowledge_bases ORDER BY created, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn get(&self, id: &str) -> Result<Option<KbRecord>, KbError> {
        let Some(row) = sqlx::query(
            "SELECT id, tenant, name, max_label, default_label, created, \
             (SELECT COUNT(*) FROM chunks WHERE kb = knowledge_bases.id) AS chunks \
             FROM knowledge_bases WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut documents = DocumentCounts::default();
        for r in
            sqlx::query("SELECT status, COUNT(*) AS n FROM documents WHERE kb = ? GROUP BY status")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
        {
            let n = count(r.try_get("n")?);
            match r.try_get::<String, _>("status")?.as_str() {
                "queued" => documents.queued = n,
                "indexing" => documents.indexing = n,
                "ready" => documents.ready = n,
                _ => documents.failed += n,
            }
        }
        Ok(Some(KbRecord {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            name: row.try_get("name")?,
            max_label: row.try_get("max_label")?,
            default_label: row.try_get("default_label")?,
            created: row.try_get("created")?,
            documents,
            chunks: count(row.try_get("chunks")?),
        }))
    }

    async fn add_document(&self, doc: &NewDocument) -> Result<(), KbError> {
        sqlx::query(
            "INSERT INTO documents (id, kb, name, format, label, given_label, status, text, pages, sha256, bytes, uploader, created, updated) \
             VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&doc.id)
        .bind(&doc.kb)
        .bind(&doc.name)
        .bind(&doc.format)
        .bind(&doc.label)
        .bind(&doc.given_label)
        .bind(&doc.text)
        .bind(json_list(&doc.pages)?)
        .bind(&doc.sha256)
        .bind(i64::try_from(doc.bytes).unwrap_or(i64::MAX))
        .bind(&doc.uploader)
        .bind(doc.created)
        .bind(doc.created)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn document(&self, kb: &str, id: &str) -> Result<Option<DocumentInfo>, KbError> {
        sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE kb = ? AND id = ?"
        ))
        .bind(kb)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(document_info)
        .transpose()
    }

    async fn documents(&self, kb: &str) -> Result<Vec<DocumentInfo>, KbError> {
        sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE kb = ? ORDER BY created, id"
        ))
        .bind(kb)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(document_info)
        .collect()
    }

    async fn delete_document(&self, kb: &str, id: &str) -> Result<Vec<i64>, KbError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let chunks: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM chunks WHERE kb = ? AND document = ?")
                .bind(kb)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM chunks WHERE kb = ? AND document = ?")
            .bind(kb)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM documents WHERE kb = ? AND id = ?")
            .bind(kb)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            // Rolled back now, not when the connection is next used: until then it would hold
            // the write lock and make the next writer wait.
            tx.rollback().await?;
            return Err(KbError::NoDocument(id.to_string()));
        }
        tx.commit().await?;
        Ok(chunks)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<QueuedDocument>, KbError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT id, kb, text, pages, given_label FROM documents WHERE status = 'queued' ORDER BY created, id LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut docs = Vec::with_capacity(rows.len());
        for r in &rows {
            docs.push(QueuedDocument {
                id: r.try_get("id")?,
                kb: r.try_get("kb")?,
                text: r.try_get("text")?,
                pages: serde_json::from_str(&r.try_get::<String, _>("pages")?).unwrap_or_default(),
                given_label: r.try_get("given_label")?,
            });
        }
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        sqlx::query(
            "UPDATE documents SET status = 'indexing', updated = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(now())
        .bind(json_list(&ids)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(docs)
    }

    async fn requeue(&self, ids: &[String]) -> Result<(), KbError> {
        sqlx::query(
            "UPDATE documents SET status = 'queued' WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_list(ids)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn write_chunks(&self, docs: &[DocumentChunks<'_>]) -> Result<Vec<Vec<i64>>, KbError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            sqlx::query("DELETE FROM chunks WHERE document = ?")
                .bind(doc.document)
                .execute(&mut *tx)
                .await?;
            let mut ids = Vec::with_capacity(doc.chunks.len());
            for (ord, c) in doc.chunks.iter().enumerate() {
                let id = sqlx::query(
                    "INSERT INTO chunks (kb, document, ord, label, text, page, start, \"end\", vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(doc.kb)
                .bind(doc.document)
                .bind(ord as i64)
                .bind(c.label)
                .bind(c.text)
                .bind(c.page.map(i64::from))
                .bind(i64::try_from(c.start).unwrap_or(i64::MAX))
                .bind(i64::try_from(c.end).unwrap_or(i64::MAX))
                .bind(vector_bytes(c.vector))
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
                ids.push(id);
            }
            sqlx::query("UPDATE documents SET chunks = ? WHERE id = ?")
                .bind(ids.len() as i64)
                .bind(doc.document)
                .execute(&mut *tx)
                .await?;
            out.push(ids);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn finish(&self, ready: &[String], failed: &[(String, String)]) -> Result<(), KbError> {
        let t = now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE documents SET status = 'ready', updated = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(t)
        .bind(json_list(ready)?)
        .execute(&mut *tx)
        .await?;
        for (id, reason) in failed {
            sqlx::query(
                "UPDATE documents SET status = 'failed', error = ?, updated = ? WHERE id = ?",
            )
            .bind(reason)
            .bind(t)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ready_chunks(&self, kb: &str) -> Result<Vec<StoredChunk>, KbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks c JOIN documents d ON d.id = c.document \
             WHERE c.kb = ? AND d.status = 'ready' ORDER BY c.id"
        ))
        .bind(kb)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_chunk).collect()
    }

    async fn document_chunks(
        &self,
        kb: &str,
        documents: &[String],
    ) -> Result<Vec<StoredChunk>, KbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks c JOIN documents d ON d.id = c.document WHERE c.kb = ? \
             AND d.status = 'ready' AND c.document IN (SELECT value FROM json_each(?)) ORDER BY c.id"
        ))
        .bind(kb)
        .bind(json_list(documents)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_chunk).collect()
    }

    async fn passages(&self, kb: &str, ids: &[i64]) -> Result<Vec<Passage>, KbError> {
        let rows = sqlx::query(
            "SELECT c.id, c.document, d.name, c.label, c.text, c.page, c.start, c.\"end\" \
             FROM chunks c JOIN documents d ON d.id = c.document \
             WHERE c.kb = ? AND c.id IN (SELECT value FROM json_each(?))",
        )
        .bind(kb)
        .bind(json_list(ids)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Passage {
                    id: row.try_get("id")?,
                    document: row.try_get("document")?,
                    document_name: row.try_get("name")?,
                    label: row.try_get("label")?,
                    text: row.try_get("text")?,
                    page: row
                        .try_get::<Option<i64>, _>("page")?
                        .and_then(|p| u32::try_from(p).ok()),
                    start: count(row.try_get("start")?),
                    end: count(row.try_get("end")?),
                })
            })
            .collect()
    }
}
