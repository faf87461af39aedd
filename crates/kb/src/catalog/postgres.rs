//! The catalog on PostgreSQL, shared by every server of the platform: the SQLite catalog's
//! queries in PostgreSQL's placeholders and types (`migrations-postgres`). Ingestion claims
//! documents with `FOR UPDATE SKIP LOCKED`, so servers never index one document at once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::now;
use super::rows::{
    chunk_columns, count, document_columns, document_info, stored_chunk, vector_bytes,
};
use super::{
    Catalog, DocumentChunks, KbRecord, NewDocument, NewKb, Passage, QueuedDocument, StoredChunk,
};
use super::{DocumentCounts, DocumentInfo};
use crate::error::KbError;

/// A document `indexing` for longer than this is taken to belong to a server that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// The catalog in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgCatalog {
    pool: PgPool,
    abandoned_after: i64,
}

impl PgCatalog {
    /// Connects to the database at `url` and brings the catalog's tables up to date (its
    /// migrations are tracked apart from the store's, in `_enclave_kb_migrations`).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, KbError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let mut migrator = sqlx::migrate!("./migrations-postgres");
        migrator.dangerous_set_table_name("_enclave_kb_migrations");
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            abandoned_after: ABANDONED_AFTER.as_secs() as i64,
        })
    }

    /// Takes a document `indexing` for `after` as abandoned by a server that died (ten minutes
    /// unless set; a test sets none).
    pub fn abandoned_after(mut self, after: Duration) -> Self {
        self.abandoned_after = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        self
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    fn shared(&self) -> bool {
        true
    }

    async fn requeue_interrupted(&self) -> Result<(u64, u64), KbError> {
        let mut tx = self.pool.begin().await?;
        // Other servers may be indexing right now: only what has been `indexing` for longer
        // than any batch takes goes back.
        let before = now().saturating_sub(self.abandoned_after);
        let chunks = sqlx::query(
            "DELETE FROM chunks WHERE document IN \
             (SELECT id FROM documents WHERE status = 'indexing' AND updated <= $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let documents = sqlx::query(
            "UPDATE documents SET status = 'queued', chunks = 0 WHERE status = 'indexing' AND updated <= $1",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((documents, chunks))
    }

    async fn create(&self, kb: &NewKb) -> Result<(), KbError> {
        let result = sqlx::query(
            "INSERT INTO knowledge_bases (id, tenant, name, max_label, default_label, created) VALUES ($1, $2, $3, $4, $5, $6)",
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
            "SELECT id FROM knowledge_bases WHERE tenant = $1 AND (id = $2 OR name = $3)",
        )
        .bind(tenant)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn list(&self, tenant: &str) -> Result<Vec<String>, KbError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM knowledge_bases WHERE tenant = $1 ORDER BY created, id",
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
             FROM knowledge_bases WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut documents = DocumentCounts::default();
        for r in
            sqlx::query("SELECT status, COUNT(*) AS n FROM documents WHERE kb = $1 GROUP BY status")
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
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&doc.id)
        .bind(&doc.kb)
        .bind(&doc.name)
        .bind(&doc.format)
        .bind(&doc.label)
        .bind(&doc.given_label)
        .bind(&doc.text)
        .bind(serde_json::to_string(&doc.pages).map_err(|e| KbError::Storage(e.to_string()))?)
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
            " FROM documents WHERE kb = $1 AND id = $2"
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
            " FROM documents WHERE kb = $1 ORDER BY created, id"
        ))
        .bind(kb)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(document_info)
        .collect()
    }

    async fn delete_document(&self, kb: &str, id: &str) -> Result<Vec<i64>, KbError> {
        let mut tx = self.pool.begin().await?;
        let chunks: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM chunks WHERE kb = $1 AND document = $2")
                .bind(kb)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM chunks WHERE kb = $1 AND document = $2")
            .bind(kb)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM documents WHERE kb = $1 AND id = $2")
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, kb, text, pages, given_label FROM documents WHERE status = 'queued' \
             ORDER BY created, id LIMIT $1 FOR UPDATE SKIP LOCKED",
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
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        sqlx::query("UPDATE documents SET status = 'indexing', updated = $1 WHERE id = ANY($2)")
            .bind(now())
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(docs)
    }

    async fn requeue(&self, ids: &[String]) -> Result<(), KbError> {
        sqlx::query("UPDATE documents SET status = 'queued' WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn write_chunks(&self, docs: &[DocumentChunks<'_>]) -> Result<Vec<Vec<i64>>, KbError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            sqlx::query("DELETE FROM chunks WHERE document = $1")
                .bind(doc.document)
                .execute(&mut *tx)
                .await?;
            let mut ids = Vec::with_capacity(doc.chunks.len());
            for (ord, c) in doc.chunks.iter().enumerate() {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO chunks (kb, document, ord, label, text, page, start, \"end\", vector) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            sqlx::query("UPDATE documents SET chunks = $1 WHERE id = $2")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE documents SET status = 'ready', updated = $1 WHERE id = ANY($2)")
            .bind(t)
            .bind(ready)
            .execute(&mut *tx)
            .await?;
        for (id, reason) in failed {
            sqlx::query(
                "UPDATE documents SET status = 'failed', error = $1, updated = $2 WHERE id = $3",
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
             WHERE c.kb = $1 AND d.status = 'ready' ORDER BY c.id"
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
            " FROM chunks c JOIN documents d ON d.id = c.document WHERE c.kb = $1 \
             AND d.status = 'ready' AND c.document = ANY($2) ORDER BY c.id"
        ))
        .bind(kb)
        .bind(documents)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_chunk).collect()
    }

    async fn passages(&self, kb: &str, ids: &[i64]) -> Result<Vec<Passage>, KbError> {
        let rows = sqlx::query(
            "SELECT c.id, c.document, d.name, c.label, c.text, c.page, c.start, c.\"end\" \
             FROM chunks c JOIN documents d ON d.id = c.document \
             WHERE c.kb = $1 AND c.id = ANY($2)",
        )
        .bind(kb)
        .bind(ids)
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
