//! Background ingestion: the worker that takes queued documents in batches, reads their
//! markings, chunks, embeds, and writes catalog, full-text and vector indexes together.

use super::*;
use crate::catalog::{DocumentChunks, NewChunk, QueuedDocument};

impl KnowledgeBases {
    /// The ingestion worker: batches of queued documents, oldest first, until `stop` is set or
    /// the last handle is dropped.
    pub(super) async fn work(
        inner: std::sync::Weak<Inner>,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if stop.is_cancelled() {
                tracing::info!("background task stopped: ingestion worker");
                return;
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let this = Self {
                inner,
                worker: Arc::default(),
            };
            match this.ingest_batch().await {
                Ok(0) => {
                    drop(this);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()) => {}
                    }
                }
                Ok(_) => {}
                Err(KbError::Embed(EmbedError::NotReady)) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "ingestion step failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Ingests one batch; returns how many documents it took.
    async fn ingest_batch(&self) -> Result<usize, KbError> {
        let catalog = &self.inner.catalog;
        let docs = catalog.claim(BATCH_DOCUMENTS).await?;
        if docs.is_empty() {
            return Ok(0);
        }
        // Segment, chunk and embed off the async threads.
        let inner = Arc::clone(&self.inner);
        type Prepared = Vec<(
            String,
            String,
            Result<Vec<(segment::Chunk, Option<u32>)>, String>,
        )>;
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        let prepared: Prepared = {
            let docs = docs.clone();
            let inner = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || {
                docs.into_iter()
                    .map(
                        |QueuedDocument {
                             id,
                             kb,
                             text,
                             pages,
                             given_label: given,
                         }| {
                            let given = match given.map(|g| inner.scheme.parse(&g)) {
                                Some(Ok(l)) => Some(l),
                                Some(Err(e)) => {
                                    return (id, kb, Err(format!("stored label: {e}")));
                                }
                                None => None,
                            };
                            let chunks = segment::segment(
                                &inner.scheme,
                                &inner.inspector,
                                &text,
                                given.as_ref(),
                            )
                            .map(|s| {
                                segment::chunk(&s.paragraphs, CHUNK_WORDS)
                                    .into_iter()
                                    .map(|c| {
                                        let page = Extracted::page_of(&pages, c.start);
                                        (c, page)
                                    })
                                    .collect()
                            })
                            .map_err(|e| e.to_string());
                            (id, kb, chunks)
                        },
                    )
                    .collect()
            })
            .await?
        };
        let texts: Vec<String> = prepared
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().ok())
            .flat_map(|c| c.iter().map(|(c, _)| c.text.clone()))
            .collect();
        let embedder = Arc::clone(&inner.embedder);
        let vectors = match tokio::task::spawn_blocking(move || embedder.embed(&texts)).await? {
            Ok(v) => v,
            Err(e) => {
                // Not ready yet, or failed: the batch goes back to the queue untouched.
                catalog.requeue(&ids).await?;
                return Err(e.into());
            }
        };
        let mut vectors = vectors.into_iter();
        let mut written: Vec<(String, String, Vec<Embedded>)> = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        for (id, kb, chunks) in prepared {
            match chunks {
                Ok(c) => {
                    let rows = c
                        .into_iter()
                        .map(|(chunk, page)| Embedded {
                            banner: self.banner(&chunk.label),
                            chunk,
                            page,
                            vector: vectors.next().unwrap_or_default(),
                        })
                        .collect();
                    written.push((id, kb, rows));
                }
                Err(reason) => failed.push((id, reason)),
            }
        }
        // One transaction for every chunk and vector of the batch.
        let to_write: Vec<DocumentChunks<'_>> = written
            .iter()
            .map(|(id, kb, rows)| DocumentChunks {
                document: id,
                kb,
                chunks: rows
                    .iter()
                    .map(|e| NewChunk {
                        label: &e.banner,
                        text: &e.chunk.text,
                        page: e.page,
                        start: e.chunk.start as u64,
                        end: e.chunk.end as u64,
                        vector: &e.vector,
                    })
                    .collect(),
            })
            .collect();
        let chunk_ids = catalog.write_chunks(&to_write).await?;
        drop(to_write);
        let added: Vec<(String, Vec<Stored>)> = written
            .into_iter()
            .zip(chunk_ids)
            .map(|((id, _, rows), ids)| {
                let stored = rows
                    .into_iter()
                    .zip(ids)
                    .map(|(e, chunk)| Stored {
                        chunk,
                        banner: e.banner,
                        label: e.chunk.label,
                        text: e.chunk.text,
                        vector: e.vector,
                    })
                    .collect();
                (id, stored)
            })
            .collect();
        // The indexes, per knowledge base: full text (committed), then vectors.
        let mut by_kb: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (id, _)) in added.iter().enumerate() {
            if let Some(d) = docs.iter().find(|d| &d.id == id) {
                by_kb.entry(d.kb.clone()).or_default().push(i);
            }
        }
        let added = Arc::new(added);
        for (kb, which) in by_kb {
            let index = self.index(&kb).await?;
            let added = Arc::clone(&added);
            tokio::task::spawn_blocking(move || -> Result<(), KbError> {
                for &i in &which {
                    let (doc, rows) = &added[i];
                    lock(&index.documents).insert(doc.clone());
                    index.text.delete_document(doc);
                    let text_rows: Vec<TextRow<'_>> = rows
                        .iter()
                        .map(|r| TextRow {
                            chunk: r.chunk,
                            document: doc,
                            label: &r.banner,
                            text: &r.text,
                        })
                        .collect();
                    index.text.add(&text_rows)?;
                }
                index.text.commit()?;
                let mut labels = write(&index.labels);
                let mut batch = Vec::new();
                for &i in &which {
                    for r in &added[i].1 {
                        batch.push((r.chunk, labels.id(&r.banner, &r.label), r.vector.as_slice()));
                    }
                }
                drop(labels);
                write(&index.vectors).add(&batch);
                build_graph_in_background(&index);
                Ok(())
            })
            .await??;
        }
        let chunks: u64 = added.iter().map(|(_, rows)| rows.len() as u64).sum();
        let ready: Vec<String> = added.iter().map(|(id, _)| id.clone()).collect();
        catalog.finish(&ready, &failed).await?;
        self.inner
            .progress
            .documents
            .fetch_add(docs.len() as u64, Ordering::Relaxed);
        self.inner
            .progress
            .chunks
            .fetch_add(chunks, Ordering::Relaxed);
        tracing::debug!(documents = docs.len(), chunks, "ingested a batch");
        Ok(docs.len())
    }
}

/// Starts building the vector graph of `index` on a blocking thread when one is due; searches
/// scan exactly until it is installed, so neither start-up nor ingestion waits for it.
pub(super) fn build_graph_in_background(index: &Arc<KbIndex>) {
    let Some(job) = write(&index.vectors).graph_job() else {
        return;
    };
    let index = Arc::clone(index);
    let build = move || {
        let built = job.build();
        write(&index.vectors).install(built);
        tracing::info!("vector graph built");
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(build);
        }
        Err(_) => build(),
    }
}

/// A chunk with its vector, on its way into the catalog.
struct Embedded {
    chunk: segment::Chunk,
    page: Option<u32>,
    banner: String,
    vector: Vec<f32>,
}

/// A chunk written to the catalog, on its way into the indexes.
struct Stored {
    chunk: i64,
    banner: String,
    label: Label,
    text: String,
    vector: Vec<f32>,
}
