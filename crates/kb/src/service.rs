//! Knowledge bases as a service: the catalog (SQLite, the source of truth), one full-text and
//! one vector index per knowledge base (derived, rebuilt from the catalog when they disagree),
//! the background ingestion worker, and label-filtered hybrid search.
//!
//! Ingestion of a batch: mark `indexing`; segment, chunk and embed; write the chunks and vectors
//! in one transaction; add them to the full-text index and commit it; add them to the vector
//! index; mark `ready`. A crash anywhere in between leaves the documents `indexing`: on open they
//! go back to `queued` with their chunks removed from every index, and are ingested again from
//! their stored text. So there are never duplicate chunks or vectors without a chunk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use enclave_label::{Label, Scheme};
use enclave_policy::Inspector;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, NewDocument, NewKb, Passage, SqliteCatalog, now};
use crate::extract::{self, ExtractError, Extracted, Format};
use crate::segment::{self, SegmentError};
use crate::text::{TextIndex, TextRow};
use crate::vectors::{LabelId, Vectors};

mod follow;
mod fusion;
mod ingest;

pub use crate::catalog::{DocumentCounts, DocumentInfo};
pub use crate::error::{EmbedError, KbError};
pub use fusion::{Fused, VECTOR_WEIGHT, fuse};
use ingest::build_graph_in_background;

/// Words per passage: about 160 MiniLM tokens, inside its 256-token window.
pub const CHUNK_WORDS: usize = 120;

/// Documents ingested together: one embedding batch, one transaction, one index commit.
const BATCH_DOCUMENTS: usize = 16;

/// Candidates each retriever contributes before fusion.
const CANDIDATES: usize = 50;

/// A ranked list of (chunk, score), best first.
type Scored = Vec<(i64, f32)>;

/// Turns texts into unit vectors. Blocking; called from blocking threads.
pub trait Embedder: Send + Sync {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// A knowledge base as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KbInfo {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub tenant: String,
    pub max_label: String,
    pub default_label: Option<String>,
    pub created: i64,
    pub documents: DocumentCounts,
    /// Chunks in the catalog, and in each index (equal once ingestion is idle).
    pub chunks: u64,
    pub indexed_text: u64,
    pub indexed_vectors: u64,
    /// How vector search runs: `exact` (a scan of the visible rows), `building` (a graph is being
    /// built; scans meanwhile) or `graph` (HNSW).
    pub vector_index: &'static str,
}

/// A file to add.
pub struct Upload {
    pub name: String,
    pub media_type: Option<String>,
    pub bytes: Vec<u8>,
    /// The label for a document without markings (and a floor for one with them).
    pub label: Option<Label>,
    /// Who uploads it: their key id (recorded) and clearance (the document may not exceed it).
    pub uploader: String,
    pub clearance: Label,
}

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Hybrid,
    Vector,
    Text,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hybrid" => Ok(Mode::Hybrid),
            "vector" => Ok(Mode::Vector),
            "text" | "bm25" => Ok(Mode::Text),
            other => Err(format!(
                "`mode` must be `hybrid`, `vector` or `text`; got `{other}`"
            )),
        }
    }
}

/// One passage found by a search.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub chunk: i64,
    pub document: String,
    pub document_name: String,
    pub label: String,
    #[serde(skip)]
    pub parsed_label: Label,
    pub text: String,
    pub page: Option<u32>,
    pub start: u64,
    pub end: u64,
    pub score: f32,
    pub vector_rank: Option<usize>,
    pub text_rank: Option<usize>,
    /// Cosine similarity to the question, where vector search found it.
    pub vector_score: Option<f32>,
    /// BM25 score, where full-text search found it.
    pub text_score: Option<f32>,
}

/// Ingestion progress since the process started, for progress displays and metrics.
#[derive(Debug, Default)]
pub struct Progress {
    pub documents: AtomicU64,
    pub chunks: AtomicU64,
}

/// The labels present in one knowledge base, each with a small id for the vector index.
#[derive(Default)]
struct Labels {
    list: Vec<(String, Label)>,
    ids: HashMap<String, LabelId>,
}

impl Labels {
    fn id(&mut self, banner: &str, label: &Label) -> LabelId {
        if let Some(id) = self.ids.get(banner) {
            return *id;
        }
        let id = self.list.len() as LabelId;
        self.list.push((banner.to_string(), label.clone()));
        self.ids.insert(banner.to_string(), id);
        id
    }
}

struct KbIndex {
    text: TextIndex,
    vectors: RwLock<Vectors>,
    labels: RwLock<Labels>,
    /// The documents whose chunks this index holds (to follow a shared catalog).
    documents: Mutex<std::collections::HashSet<String>>,
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    dir: PathBuf,
    scheme: Scheme,
    inspector: Inspector,
    embedder: Arc<dyn Embedder>,
    dims: usize,
    open: Mutex<HashMap<String, Arc<KbIndex>>>,
    wake: Arc<tokio::sync::Notify>,
    /// Set by [`KnowledgeBases::stop`]: the worker ends after the batch in hand.
    stop: tokio_util::sync::CancellationToken,
    progress: Progress,
}

/// The knowledge bases of this node. Cheap to clone.
#[derive(Clone)]
pub struct KnowledgeBases {
    inner: Arc<Inner>,
    /// The ingestion worker, awaited by [`KnowledgeBases::stop`].
    worker: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl KnowledgeBases {
    /// Opens the knowledge bases under `dir` with the embedded SQLite catalog (`catalog.db`
    /// there); see [`KnowledgeBases::open_with`].
    pub async fn open(
        dir: &Path,
        scheme: Scheme,
        embedder: Arc<dyn Embedder>,
        dims: usize,
    ) -> Result<Self, KbError> {
        std::fs::create_dir_all(dir).map_err(|e| KbError::Storage(e.to_string()))?;
        let catalog = SqliteCatalog::open(&dir.join("catalog.db")).await?;
        Self::open_with(dir, Arc::new(catalog), scheme, embedder, dims).await
    }

    /// Opens the knowledge bases of `catalog`, with their indexes under `dir`; repairs what a
    /// crash left half done, loads the indexes, and starts the ingestion worker (on the current
    /// Tokio runtime).
    pub async fn open_with(
        dir: &Path,
        catalog: Arc<dyn Catalog>,
        scheme: Scheme,
        embedder: Arc<dyn Embedder>,
        dims: usize,
    ) -> Result<Self, KbError> {
        std::fs::create_dir_all(dir).map_err(|e| KbError::Storage(e.to_string()))?;
        let inspector = Inspector::new(scheme.clone())
            .map_err(|e| KbError::Invalid(format!("the scheme's markings: {e}")))?;
        let inner = Arc::new(Inner {
            catalog,
            dir: dir.to_path_buf(),
            scheme,
            inspector,
            embedder,
            dims,
            open: Mutex::new(HashMap::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            stop: tokio_util::sync::CancellationToken::new(),
            progress: Progress::default(),
        });
        let kbs = Self {
            inner,
            worker: Arc::default(),
        };
        kbs.recover().await?;
        // The worker holds the service weakly: dropping the last handle stops it and releases
        // the indexes.
        let worker = Arc::downgrade(&kbs.inner);
        let wake = Arc::clone(&kbs.inner.wake);
        let stop = kbs.inner.stop.clone();
        let handle = tokio::spawn(async move { Self::work(worker, wake, stop).await });
        *kbs.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        if kbs.inner.catalog.shared() {
            // Other servers ingest into the same catalog: follow it.
            let (follower, stop) = (Arc::downgrade(&kbs.inner), kbs.inner.stop.clone());
            tokio::spawn(async move { Self::follow(follower, stop).await });
        }
        Ok(kbs)
    }

    /// Stops the ingestion worker once the batch in hand is written, and waits for it. Queued
    /// documents stay queued for the next start.
    pub async fn stop(&self) {
        self.inner.stop.cancel();
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "the ingestion worker ended badly");
        }
    }

    pub fn progress(&self) -> &Progress {
        &self.inner.progress
    }

    pub fn scheme(&self) -> &Scheme {
        &self.inner.scheme
    }

    /// Documents a crash left `indexing` go back to `queued`, their chunks gone; then every
    /// index is loaded and checked against the catalog.
    async fn recover(&self) -> Result<(), KbError> {
        let (requeued, stuck) = self.inner.catalog.requeue_interrupted().await?;
        if requeued > 0 {
            tracing::warn!(
                documents = requeued,
                chunks = stuck,
                "ingestion was interrupted; those documents are queued again"
            );
        }
        for id in self.inner.catalog.all().await? {
            self.index(&id).await?;
        }
        Ok(())
    }

    /// The open indexes of a knowledge base, loading (and repairing) them on first use.
    async fn index(&self, kb: &str) -> Result<Arc<KbIndex>, KbError> {
        if let Some(i) = lock(&self.inner.open).get(kb) {
            return Ok(Arc::clone(i));
        }
        let loaded = self.inner.catalog.ready_chunks(kb).await?;
        let dir = self.inner.dir.join("indexes").join(kb);
        let inner = Arc::clone(&self.inner);
        let kb_id = kb.to_string();
        let index = tokio::task::spawn_blocking(move || -> Result<KbIndex, KbError> {
            let text = TextIndex::open(&dir.join("text"))?;
            let mut labels = Labels::default();
            let mut vectors = Vectors::new(inner.dims);
            let mut batch = Vec::with_capacity(loaded.len());
            for c in &loaded {
                let banner = &c.label;
                let label = inner
                    .scheme
                    .parse(banner)
                    .map_err(|e| KbError::Storage(format!("stored label `{banner}`: {e}")))?;
                batch.push((c.id, labels.id(banner, &label), c.vector.as_slice()));
            }
            vectors.add(&batch);
            if text.len() != loaded.len() as u64 {
                tracing::warn!(
                    kb = %kb_id,
                    catalog = loaded.len(),
                    index = text.len(),
                    "the full-text index disagrees with the catalog; rebuilding it"
                );
                text.clear()?;
                let rows: Vec<TextRow<'_>> = loaded
                    .iter()
                    .map(|c| TextRow {
                        chunk: c.id,
                        document: &c.document,
                        label: &c.label,
                        text: &c.text,
                    })
                    .collect();
                text.add(&rows)?;
                text.commit()?;
            }
            let documents = loaded.iter().map(|c| c.document.clone()).collect();
            Ok(KbIndex {
                text,
                vectors: RwLock::new(vectors),
                labels: RwLock::new(labels),
                documents: Mutex::new(documents),
            })
        })
        .await??;
        let index = Arc::new(index);
        build_graph_in_background(&index);
        let mut open = lock(&self.inner.open);
        Ok(Arc::clone(
            open.entry(kb.to_string()).or_insert_with(|| index),
        ))
    }

    fn banner(&self, label: &Label) -> String {
        self.inner.scheme.banner(label)
    }

    fn parse_stored(&self, banner: &str) -> Result<Label, KbError> {
        self.inner
            .scheme
            .parse(banner)
            .map_err(|e| KbError::Storage(format!("stored label `{banner}`: {e}")))
    }

    fn dominates(&self, upper: &Label, lower: &Label) -> Result<(), String> {
        match self.inner.scheme.explain_shortfall(upper, lower) {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Creates a knowledge base for `tenant`. Its maximum may not exceed the creator's
    /// clearance.
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        max_label: &Label,
        default_label: Option<&Label>,
        clearance: &Label,
    ) -> Result<KbInfo, KbError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(KbError::Invalid(
                "`name` must be 1 to 128 characters, without `/` or control characters".into(),
            ));
        }
        self.dominates(clearance, max_label).map_err(|why| {
            KbError::AboveClearance(format!(
                "the maximum label {} is above your clearance {}: {why}",
                self.banner(max_label),
                self.banner(clearance)
            ))
        })?;
        if let Some(d) = default_label {
            self.dominates(max_label, d).map_err(|why| {
                KbError::AboveMaximum(format!(
                    "the default label {} is above the maximum {}: {why}",
                    self.banner(d),
                    self.banner(max_label)
                ))
            })?;
        }
        let id = format!("kb_{}", uuid::Uuid::now_v7().simple());
        self.inner
            .catalog
            .create(&NewKb {
                id: id.clone(),
                tenant: tenant.to_string(),
                name: name.to_string(),
                max_label: self.banner(max_label),
                default_label: default_label.map(|l| self.banner(l)),
                created: now(),
            })
            .await?;
        self.index(&id).await?;
        self.get(tenant, &id).await
    }

    /// The id of the knowledge base `id_or_name` of `tenant`. Another tenant's is "not found".
    pub async fn resolve(&self, tenant: &str, id_or_name: &str) -> Result<String, KbError> {
        self.inner
            .catalog
            .resolve(tenant, id_or_name)
            .await?
            .ok_or_else(|| KbError::NoKnowledgeBase(id_or_name.to_string()))
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<KbInfo>, KbError> {
        let ids = self.inner.catalog.list(tenant).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(tenant, &id).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, tenant: &str, id_or_name: &str) -> Result<KbInfo, KbError> {
        let id = self.resolve(tenant, id_or_name).await?;
        let kb = self
            .inner
            .catalog
            .get(&id)
            .await?
            .ok_or_else(|| KbError::NoKnowledgeBase(id_or_name.to_string()))?;
        let index = self.index(&id).await?;
        Ok(KbInfo {
            id: kb.id,
            object: "knowledge_base",
            name: kb.name,
            tenant: kb.tenant,
            max_label: kb.max_label,
            default_label: kb.default_label,
            created: kb.created,
            documents: kb.documents,
            chunks: kb.chunks,
            indexed_text: index.text.len(),
            indexed_vectors: read(&index.vectors).len() as u64,
            vector_index: read(&index.vectors).mode(),
        })
    }

    /// Checks a file and queues it: it is read and its labels found now, so a file that cannot
    /// be read or is labelled above what the uploader or the knowledge base may hold is refused
    /// here, before anything is stored; embedding and indexing happen in the background.
    pub async fn add(
        &self,
        tenant: &str,
        kb: &str,
        upload: Upload,
    ) -> Result<DocumentInfo, KbError> {
        let kb = self.resolve(tenant, kb).await?;
        let record = self
            .inner
            .catalog
            .get(&kb)
            .await?
            .ok_or_else(|| KbError::NoKnowledgeBase(kb.clone()))?;
        let max = self.parse_stored(&record.max_label)?;
        let given = match (&upload.label, record.default_label) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(d)) => Some(self.parse_stored(&d)?),
            (None, None) => None,
        };
        let name = upload.name.clone();
        let format = Format::detect(&upload.name, upload.media_type.as_deref()).ok_or_else(|| {
            KbError::Unreadable {
                name: name.clone(),
                reason: "unsupported format: send plain text (.txt), Markdown (.md), HTML (.html), PDF (.pdf) or DOCX (.docx)".into(),
            }
        })?;
        let sha = hex::encode(Sha256::digest(&upload.bytes));
        let size = upload.bytes.len();
        let inner = Arc::clone(&self.inner);
        let given_for_segment = given.clone();
        let (extracted, segmented) = tokio::task::spawn_blocking(move || {
            let extracted = extract::extract(format, &upload.bytes)?;
            let segmented = segment::segment(
                &inner.scheme,
                &inner.inspector,
                &extracted.text,
                given_for_segment.as_ref(),
            );
            Ok::<_, ExtractError>((extracted, segmented))
        })
        .await?
        .map_err(|e| KbError::Unreadable {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let segmented = segmented.map_err(|source| match source {
            SegmentError::Unrecognized { .. } => KbError::UnrecognizedMarking {
                name: name.clone(),
                source,
            },
            SegmentError::Unlabelled => KbError::Unlabelled {
                name: name.clone(),
                source,
            },
        })?;
        let label = segmented.label;
        self.dominates(&upload.clearance, &label).map_err(|why| {
            KbError::AboveClearance(format!(
                "`{name}` is labelled {} but your clearance is {}: {why}",
                self.banner(&label),
                self.banner(&upload.clearance)
            ))
        })?;
        self.dominates(&max, &label).map_err(|why| {
            KbError::AboveMaximum(format!(
                "`{name}` is labelled {} but this knowledge base holds at most {}: {why}",
                self.banner(&label),
                self.banner(&max)
            ))
        })?;
        let id = format!("doc_{}", uuid::Uuid::now_v7().simple());
        let t = now();
        self.inner
            .catalog
            .add_document(&NewDocument {
                id: id.clone(),
                kb: kb.clone(),
                name: upload.name.clone(),
                format: format.as_str().to_string(),
                label: self.banner(&label),
                given_label: given.as_ref().map(|l| self.banner(l)),
                text: extracted.text,
                pages: extracted.pages,
                sha256: sha,
                bytes: size as u64,
                uploader: upload.uploader.clone(),
                created: t,
            })
            .await?;
        self.inner.wake.notify_one();
        self.document(tenant, &kb, &id).await
    }

    pub async fn document(
        &self,
        tenant: &str,
        kb: &str,
        id: &str,
    ) -> Result<DocumentInfo, KbError> {
        let kb = self.resolve(tenant, kb).await?;
        self.inner
            .catalog
            .document(&kb, id)
            .await?
            .ok_or_else(|| KbError::NoDocument(id.to_string()))
    }

    pub async fn documents(&self, tenant: &str, kb: &str) -> Result<Vec<DocumentInfo>, KbError> {
        let kb = self.resolve(tenant, kb).await?;
        self.inner.catalog.documents(&kb).await
    }

    /// Removes a document: its text and chunks from the catalog, then its chunks from both
    /// indexes. Returns what was removed.
    pub async fn delete(&self, tenant: &str, kb: &str, id: &str) -> Result<DocumentInfo, KbError> {
        let info = self.document(tenant, kb, id).await?;
        let kb = info.knowledge_base.clone();
        let index = self.index(&kb).await?;
        let chunk_ids = self.inner.catalog.delete_document(&kb, id).await?;
        let doc = id.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), KbError> {
            lock(&index.documents).remove(&doc);
            index.text.delete_document(&doc);
            index.text.commit()?;
            let mut v = write(&index.vectors);
            for c in chunk_ids {
                v.remove(c);
            }
            Ok(())
        })
        .await??;
        Ok(info)
    }

    /// The `k` passages best matching `query` among those `ceiling` dominates. The filter is
    /// part of each index's search, so a reader gets `k` passages they may read when there are
    /// that many, however many better ones lie above them.
    pub async fn search(
        &self,
        tenant: &str,
        kb: &str,
        ceiling: &Label,
        query: &str,
        k: usize,
        mode: Mode,
    ) -> Result<Vec<Hit>, KbError> {
        let kb = self.resolve(tenant, kb).await?;
        let index = self.index(&kb).await?;
        let k = k.clamp(1, 100);
        let (banners, ids): (Vec<String>, Vec<LabelId>) = {
            let labels = read(&index.labels);
            labels
                .list
                .iter()
                .enumerate()
                .filter(|(_, (_, l))| self.dominates(ceiling, l).is_ok())
                .map(|(i, (b, _))| (b.clone(), i as LabelId))
                .unzip()
        };
        if banners.is_empty() || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let q = query.to_string();
        let idx = Arc::clone(&index);
        let (vector_hits, text_hits) =
            tokio::task::spawn_blocking(move || -> Result<(Scored, Scored), KbError> {
                let want = CANDIDATES.max(k);
                let vector_hits = if mode == Mode::Text {
                    Vec::new()
                } else {
                    let v = inner
                        .embedder
                        .embed(std::slice::from_ref(&q))?
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    read(&idx.vectors)
                        .search(&v, want, &ids)
                        .into_iter()
                        .map(|h| (h.chunk, h.score))
                        .collect()
                };
                let text_hits = if mode == Mode::Vector {
                    Vec::new()
                } else {
                    let visible: Vec<&str> = banners.iter().map(String::as_str).collect();
                    idx.text.search(&q, want, &visible)?
                };
                Ok((vector_hits, text_hits))
            })
            .await??;
        let fused = fuse(&vector_hits, &text_hits, k);
        self.hits(&kb, ceiling, &fused).await
    }

    /// Catalog rows for fused results, in order.
    async fn hits(&self, kb: &str, ceiling: &Label, fused: &[Fused]) -> Result<Vec<Hit>, KbError> {
        let ids: Vec<i64> = fused.iter().map(|f| f.chunk).collect();
        let by_id: HashMap<i64, Passage> = self
            .inner
            .catalog
            .passages(kb, &ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let mut out = Vec::with_capacity(fused.len());
        for f in fused {
            let Some(row) = by_id.get(&f.chunk) else {
                // Deleted between the index search and now.
                continue;
            };
            let label = self.parse_stored(&row.label)?;
            if self.dominates(ceiling, &label).is_err() {
                // The filter is inside both index searches; this cannot happen unless an index
                // is corrupt. Never deliver it.
                tracing::error!(
                    chunk = f.chunk,
                    "an index returned a passage above the reader's label; dropped"
                );
                continue;
            }
            out.push(Hit {
                chunk: row.id,
                document: row.document.clone(),
                document_name: row.document_name.clone(),
                label: row.label.clone(),
                parsed_label: label,
                text: row.text.clone(),
                page: row.page,
                start: row.start,
                end: row.end,
                score: f.score,
                vector_rank: f.vector_rank,
                text_rank: f.text_rank,
                vector_score: f.vector_score,
                text_score: f.text_score,
            });
        }
        Ok(out)
    }
}
