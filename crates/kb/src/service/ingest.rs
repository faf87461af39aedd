//! Background ingestion: the worker that takes queued documents in batches, reads their
//! markings, chunks, embeds, and writes catalog, full-text and vector indexes together.

use super::*;

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
        let pool = &self.inner.pool;
        let rows = sqlx::query(
            "SELECT id, kb, name, text, pages, given_label FROM documents WHERE status = 'queued' ORDER BY created, id LIMIT ?",
        )
        .bind(BATCH_DOCUMENTS)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut docs = Vec::with_capacity(rows.len());
        for r in &rows {
            docs.push(Queued {
                id: r.try_get("id")?,
                kb: r.try_get("kb")?,
                text: r.try_get("text")?,
                pages: serde_json::from_str(&r.try_get::<String, _>("pages")?).unwrap_or_default(),
                given: r.try_get("given_label")?,
            });
        }
        for d in &docs {
            sqlx::query("UPDATE documents SET status = 'indexing', updated = ? WHERE id = ?")
                .bind(now())
                .bind(&d.id)
                .execute(pool)
                .await?;
        }
        // Segment, chunk and embed off the async threads.
        let inner = Arc::clone(&self.inner);
        type Prepared = Vec<(
            String,
            String,
            Result<Vec<(segment::Chunk, Option<u32>)>, String>,
        )>;
        let prepared: Prepared = {
            let docs = docs.clone();
            let inner = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || {
                docs.into_iter()
                    .map(
                        |Queued {
                             id,
                             kb,
                             text,
                             pages,
                             given,
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
                for d in &docs {
                    sqlx::query("UPDATE documents SET status = 'queued' WHERE id = ?")
                        .bind(&d.id)
                        .execute(pool)
                        .await?;
                }
                return Err(e.into());
            }
        };
        let mut vectors = vectors.into_iter();
        // One transaction for every chunk and vector of the batch.
        let mut tx = pool.begin().await?;
        let mut added: Vec<(String, Vec<Stored>)> = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        for (id, kb, chunks) in prepared {
            let chunks = match chunks {
                Ok(c) => c,
                Err(reason) => {
                    failed.push((id, reason));
                    continue;
                }
            };
            sqlx::query("DELETE FROM chunks WHERE document = ?")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            let mut rows = Vec::with_capacity(chunks.len());
            for (ord, (c, page)) in chunks.into_iter().enumerate() {
                let v = vectors.next().unwrap_or_default();
                let banner = self.banner(&c.label);
                let chunk_id = sqlx::query(
                    "INSERT INTO chunks (kb, document, ord, label, text, page, start, \"end\", vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&kb)
                .bind(&id)
                .bind(ord as i64)
                .bind(&banner)
                .bind(&c.text)
                .bind(page.map(i64::from))
                .bind(c.start as i64)
                .bind(c.end as i64)
                .bind(vector_bytes(&v))
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
                rows.push(Stored {
                    chunk: chunk_id,
                    banner,
                    label: c.label,
                    text: c.text,
                    vector: v,
                });
            }
            sqlx::query("UPDATE documents SET chunks = ? WHERE id = ?")
                .bind(rows.len() as i64)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            added.push((id, rows));
        }
        tx.commit().await?;
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
        let t = now();
        let mut chunks = 0u64;
        for (id, rows) in added.iter() {
            chunks += rows.len() as u64;
            sqlx::query("UPDATE documents SET status = 'ready', updated = ? WHERE id = ?")
                .bind(t)
                .bind(id)
                .execute(pool)
                .await?;
        }
        for (id, reason) in &failed {
            sqlx::query(
                "UPDATE documents SET status = 'failed', error = ?, updated = ? WHERE id = ?",
            )
            .bind(reason)
            .bind(t)
            .bind(id)
            .execute(pool)
            .await?;
        }
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

/// A queued document as the worker reads it.
#[derive(Clone)]
struct Queued {
    id: String,
    kb: String,
    text: String,
    pages: Vec<usize>,
    given: Option<String>,
}

/// A chunk written to the catalog, on its way into the indexes.
struct Stored {
    chunk: i64,
    banner: String,
    label: Label,
    text: String,
    vector: Vec<f32>,
}
