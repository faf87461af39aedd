//! Following a catalog other servers share: each server keeps its own indexes (full text,
//! vectors) and, once a second, takes in the documents other servers made ready and lets go of
//! those they deleted, so a document added through any server is searchable through every one
//! within about a second. A deleted document's vectors may linger until the next start, but
//! its passages come from the catalog at search time, so it is never shown.

use std::collections::HashSet;

use super::*;
use crate::catalog::StoredChunk;

/// How often a server looks at the shared catalog.
const EVERY: Duration = Duration::from_secs(1);

impl KnowledgeBases {
    pub(super) async fn follow(
        inner: std::sync::Weak<Inner>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let this = Self {
                inner,
                worker: Arc::default(),
            };
            if let Err(e) = this.follow_once().await {
                tracing::warn!(error = %e, "cannot follow the shared knowledge-base catalog");
            }
        }
    }

    /// Brings every open index level with the catalog.
    async fn follow_once(&self) -> Result<(), KbError> {
        let open: Vec<(String, Arc<KbIndex>)> = lock(&self.inner.open)
            .iter()
            .map(|(kb, i)| (kb.clone(), Arc::clone(i)))
            .collect();
        for (kb, index) in open {
            let documents = self.inner.catalog.documents(&kb).await?;
            let ready: HashSet<&str> = documents
                .iter()
                .filter(|d| d.status == "ready")
                .map(|d| d.id.as_str())
                .collect();
            // Gone: deleted from the catalog. (A document this server is indexing is in its
            // index a moment before the catalog calls it ready; it is not gone.)
            let listed: HashSet<&str> = documents.iter().map(|d| d.id.as_str()).collect();
            let (new, gone): (HashSet<String>, Vec<String>) = {
                let known = lock(&index.documents);
                (
                    ready
                        .iter()
                        .filter(|d| !known.contains(**d))
                        .map(|d| (*d).to_string())
                        .collect(),
                    known
                        .iter()
                        .filter(|d| !listed.contains(d.as_str()))
                        .cloned()
                        .collect(),
                )
            };
            if new.is_empty() && gone.is_empty() {
                continue;
            }
            let chunks: Vec<StoredChunk> = if new.is_empty() {
                Vec::new()
            } else {
                let new: Vec<String> = new.iter().cloned().collect();
                self.inner.catalog.document_chunks(&kb, &new).await?
            };
            let scheme = self.inner.scheme.clone();
            tracing::debug!(kb = %kb, added = new.len(), removed = gone.len(), "following the shared catalog");
            tokio::task::spawn_blocking(move || -> Result<(), KbError> {
                for doc in &gone {
                    index.text.delete_document(doc);
                }
                for doc in &new {
                    index.text.delete_document(doc);
                }
                let rows: Vec<TextRow<'_>> = chunks
                    .iter()
                    .map(|c| TextRow {
                        chunk: c.id,
                        document: &c.document,
                        label: &c.label,
                        text: &c.text,
                    })
                    .collect();
                index.text.add(&rows)?;
                index.text.commit()?;
                let mut labels = write(&index.labels);
                let mut batch = Vec::with_capacity(chunks.len());
                for c in &chunks {
                    let label = scheme.parse(&c.label).map_err(|e| {
                        KbError::Storage(format!("stored label `{}`: {e}", c.label))
                    })?;
                    batch.push((c.id, labels.id(&c.label, &label), c.vector.as_slice()));
                }
                drop(labels);
                write(&index.vectors).add(&batch);
                let mut known = lock(&index.documents);
                for doc in gone {
                    known.remove(&doc);
                }
                known.extend(new);
                drop(known);
                build_graph_in_background(&index);
                Ok(())
            })
            .await??;
        }
        Ok(())
    }
}
