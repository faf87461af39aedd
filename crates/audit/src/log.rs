//! The durable log: records appended to one file by one writer thread, in batches (group commit:
//! one `fdatasync` for every record that arrived while the previous batch was syncing). A record
//! enters the tree, and so any checkpoint, proof or acknowledgement, only after its batch is on
//! disk.
//!
//! File format (`records.log`): for each record, its length as 4 bytes little-endian, then its
//! canonical bytes. A torn tail (a crash mid-write, never acknowledged) is cut off at open.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use tlog_tiles::tlog::Hash;
use tokio::sync::oneshot;

use crate::key::{KeyError, LogKey};
use crate::open::{Journal, Unclosed, interrupted, same_call};
use crate::record::Record;
use crate::tree::Tree;

mod shared;

/// Where records are stored. The file is the real one for one server; a database several
/// servers share is the other (it sequences every server's records into one log); tests add one
/// that loses unsynced writes.
pub trait Storage: Send + 'static {
    /// Appends bytes (not yet durable).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes every appended byte durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Everything stored.
    fn read_all(&mut self) -> std::io::Result<Vec<u8>>;
    /// Cuts the store to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;

    /// Whether other servers append to this store too. A shared store takes records through
    /// [`Storage::append_records`] and is followed with [`Storage::records_since`]; the byte
    /// methods serve only a store this process alone writes.
    fn shared(&self) -> bool {
        false
    }

    /// A shared store: makes `records` durable as the next records of the one log, after every
    /// record stored so far by any server, and returns the records other servers stored from
    /// index `known` up to them (they precede `records` in the log). Nothing is stored on error.
    fn append_records(&mut self, known: u64, records: &[Vec<u8>]) -> std::io::Result<Vec<Vec<u8>>> {
        let _ = (known, records);
        Err(std::io::Error::other("this store is written as bytes"))
    }

    /// A shared store: the records stored from index `from` on, in order.
    fn records_since(&mut self, from: u64) -> std::io::Result<Vec<Vec<u8>>> {
        let _ = from;
        Ok(Vec::new())
    }

    /// A shared store: every record, in order (instead of [`Storage::read_all`]'s bytes).
    fn all_records(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        self.records_since(0)
    }
}

/// The records file.
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Self { file })
    }
}

impl Storage for FileStorage {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut out)?;
        Ok(out)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("the audit log cannot write: {0}")]
    Unavailable(String),
    #[error("the audit log is closed")]
    Closed,
    #[error("{0}")]
    Proof(String),
    #[error("{0}")]
    Key(String),
}

impl From<KeyError> for LogError {
    fn from(e: KeyError) -> Self {
        LogError::Key(e.to_string())
    }
}

/// A record to append, where to acknowledge it, and the open call it closes.
type Append = (Vec<u8>, oneshot::Sender<Result<u64, LogError>>, Option<u64>);

/// How often an idle writer follows a shared log.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Work for the writer thread.
enum Job {
    /// A record to append; `closes` names the open call it ends.
    Append {
        bytes: Vec<u8>,
        ack: oneshot::Sender<Result<u64, LogError>>,
        closes: Option<u64>,
    },
    /// A call to promise a record for (see [`crate::open`]).
    Open(Opening),
}

/// A call to promise a record for, and where to say when the promise is durable.
struct Opening {
    id: u64,
    /// The start of the call's journal line, serialised by the caller (see [`crate::open`]).
    line: Vec<u8>,
    ack: oneshot::Sender<Result<(), LogError>>,
}

struct State {
    tree: Tree,
    /// Each record's canonical bytes, by index.
    records: Vec<Vec<u8>>,
}

/// The audit log. Cheap to share (`Arc` inside); appends from any task.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Job>,
    next_call: Arc<std::sync::atomic::AtomicU64>,
    batches: Arc<std::sync::atomic::AtomicU64>,
    state: Arc<Mutex<State>>,
    healthy: Arc<AtomicBool>,
    key: Arc<LogKey>,
}

/// Complete records stored in `dir`'s log after byte `offset`, and the offset after them: for
/// following a log another process writes.
pub fn read_records_from(dir: &Path, offset: u64) -> std::io::Result<(Vec<Vec<u8>>, u64)> {
    let mut file = File::open(dir.join("records.log"))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (records, used) = parse_records(&bytes);
    Ok((records, offset + used))
}

/// Splits stored bytes into complete records; returns them and the length they cover.
fn parse_records(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at..at + 4]);
        let len = u32::from_le_bytes(len) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        records.push(body.to_vec());
        at += 4 + len;
    }
    (records, at as u64)
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`: `records.log`, the signing key `log.key`, and the
    /// journal of open calls. Calls a stop left open get their records first.
    pub fn open(dir: &Path, origin: &str) -> Result<Self, LogError> {
        let unavailable = |e: std::io::Error| LogError::Unavailable(e.to_string());
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let key = LogKey::load_or_create(&dir.join("log.key"), origin)?;
        let storage = FileStorage::open(&dir.join("records.log")).map_err(unavailable)?;
        let journal = Journal::recover(dir).map_err(unavailable)?;
        Self::start(Box::new(storage), Some(journal), key)
    }

    /// Opens the log in `dir` to read and export only, beside a server that may be writing: a
    /// partial last record is ignored, never cut, and appends are refused.
    pub fn open_read_only(dir: &Path, origin: &str) -> Result<Self, LogError> {
        let key = LogKey::load_or_create(&dir.join("log.key"), origin)?;
        let bytes = std::fs::read(dir.join("records.log"))
            .map_err(|e| LogError::Unavailable(format!("{}: {e}", dir.display())))?;
        let (records, _) = parse_records(&bytes);
        let mut tree = Tree::new();
        for r in &records {
            tree.append(r)
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
        }
        let (tx, _) = mpsc::channel();
        Ok(Self {
            tx,
            next_call: Arc::default(),
            batches: Arc::default(),
            state: Arc::new(Mutex::new(State { tree, records })),
            healthy: Arc::new(AtomicBool::new(true)),
            key: Arc::new(key),
        })
    }

    /// Opens a log over any storage (tests use one that loses unsynced writes), without a
    /// journal: [`AuditLog::open_call`] then promises nothing across a stop.
    pub fn with_storage(storage: Box<dyn Storage>, key: LogKey) -> Result<Self, LogError> {
        Self::start(storage, None, key)
    }

    fn start(
        mut storage: Box<dyn Storage>,
        journal: Option<(Journal, Vec<Unclosed>)>,
        key: LogKey,
    ) -> Result<Self, LogError> {
        let unavailable = |e: std::io::Error| LogError::Unavailable(e.to_string());
        let shared = storage.shared();
        let (bytes, (mut records, mut good)) = if shared {
            (Vec::new(), (storage.all_records().map_err(unavailable)?, 0))
        } else {
            let bytes = storage.read_all().map_err(unavailable)?;
            let parsed = parse_records(&bytes);
            (bytes, parsed)
        };
        if !shared && good < bytes.len() as u64 {
            tracing::warn!(
                cut = bytes.len() as u64 - good,
                "audit log: cutting a torn tail that was never acknowledged"
            );
            storage.truncate(good).map_err(unavailable)?;
        }
        let journal = match journal {
            Some((mut journal, unclosed)) => {
                // Calls the last stop cut: their provisional records, unless already written.
                let mut buf = Vec::new();
                let mut cut = Vec::new();
                for call in unclosed {
                    let from = usize::try_from(call.at).unwrap_or(usize::MAX);
                    let written = records
                        .get(from..)
                        .is_some_and(|rs| rs.iter().any(|r| same_call(r, &call.record)));
                    if written {
                        continue;
                    }
                    tracing::warn!(time = %call.record.time, operation = %call.record.operation, "audit log: recording a call the last stop cut");
                    let bytes = interrupted(call.record).canonical();
                    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                    buf.extend_from_slice(&len.to_le_bytes());
                    buf.extend_from_slice(&bytes);
                    cut.push(bytes);
                }
                if shared && !cut.is_empty() {
                    let others = storage
                        .append_records(records.len() as u64, &cut)
                        .map_err(unavailable)?;
                    records.extend(others);
                    records.extend(cut);
                } else if !buf.is_empty() {
                    records.extend(cut);
                    storage
                        .append(&buf)
                        .and_then(|()| storage.sync())
                        .map_err(unavailable)?;
                    good += buf.len() as u64;
                }
                journal.clear().map_err(unavailable)?;
                Some(journal)
            }
            None => None,
        };
        let mut tree = Tree::new();
        for r in &records {
            tree.append(r)
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
        }
        let state = Arc::new(Mutex::new(State { tree, records }));
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        let batches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        {
            let state = Arc::clone(&state);
            let healthy = Arc::clone(&healthy);
            let batches = Arc::clone(&batches);
            let writer = Writer {
                storage,
                journal,
                durable: good,
                state,
                healthy,
                batches,
            };
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(unavailable)?;
        }
        Ok(Self {
            tx,
            next_call: Arc::default(),
            batches,
            state,
            healthy,
            key: Arc::new(key),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a writer panicked mid-update; the data is append-only and the
        // tree is updated after the records, so reading on is safe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; resolves with its index once it is durable.
    pub async fn append(&self, record: &Record) -> Result<u64, LogError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Append {
                bytes: record.canonical(),
                ack,
                closes: None,
            })
            .map_err(|_| LogError::Closed)?;
        done.await.map_err(|_| LogError::Closed)?
    }

    /// Promises a record for a call whose outcome is known only when it ends (a streamed
    /// answer). Resolves once the promise is durable: should the process die before
    /// [`OpenCall::close`], the next open appends `provisional` marked
    /// [`crate::open::INTERRUPTED`]. Dropping the [`OpenCall`] appends it so marked now.
    pub async fn open_call(&self, provisional: Record) -> Result<OpenCall, LogError> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Open(Opening {
                id,
                line: crate::open::line_start(id, &provisional),
                ack,
            }))
            .map_err(|_| LogError::Closed)?;
        // Built before the promise is durable: should this future be dropped meanwhile, the call
        // still gets one record.
        let call = OpenCall {
            tx: self.tx.clone(),
            id,
            provisional: Some(provisional),
        };
        done.await.map_err(|_| LogError::Closed)??;
        Ok(call)
    }

    /// Batches written since open (each one `fdatasync`).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Whether the last batch reached the disk.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    pub fn size(&self) -> u64 {
        self.state().tree.size()
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A signed checkpoint of the current tree.
    pub fn checkpoint(&self) -> Result<String, LogError> {
        let (size, root) = {
            let s = self.state();
            let size = s.tree.size();
            (
                size,
                s.tree
                    .root(size)
                    .map_err(|e| LogError::Proof(e.to_string()))?,
            )
        };
        Ok(self.key.checkpoint(size, root)?)
    }

    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        self.state()
            .tree
            .root(size)
            .map_err(|e| LogError::Proof(e.to_string()))
    }

    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        if index >= size {
            return Err(LogError::Proof(format!(
                "index {index} is not below tree size {size}"
            )));
        }
        self.state()
            .tree
            .inclusion(index, size)
            .map_err(|e| LogError::Proof(e.to_string()))
    }

    /// The leaf hash of record `index`, as the tree holds it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.state().tree.leaf(index)
    }

    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        self.state()
            .tree
            .consistency(from, to)
            .map_err(|e| LogError::Proof(e.to_string()))
    }

    /// Records `from..to` (clamped), with their indices.
    pub fn records(&self, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        let s = self.state();
        let to = to.min(s.records.len() as u64);
        (from..to)
            .filter_map(|i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|u| s.records.get(u))
                    .map(|r| (i, r.clone()))
            })
            .collect()
    }

    /// Writes an export an auditor verifies offline: `records.jsonl` (each line a record's
    /// canonical bytes), `leaf-hashes.txt` (hex, one per line) and `checkpoint` (signed).
    pub fn export(&self, out: &Path) -> Result<PathBuf, LogError> {
        let io = |e: std::io::Error| LogError::Unavailable(e.to_string());
        std::fs::create_dir_all(out).map_err(io)?;
        let checkpoint = self.checkpoint()?;
        let s = self.state();
        let mut records = Vec::new();
        let mut leaves = String::new();
        let size = s.tree.size();
        for (i, r) in s.records.iter().enumerate().take(size as usize) {
            records.extend_from_slice(r);
            records.push(b'\n');
            if let Some(h) = s.tree.leaf(i as u64) {
                leaves.push_str(&hex::encode(h.0));
                leaves.push('\n');
            }
        }
        drop(s);
        std::fs::write(out.join("records.jsonl"), records).map_err(io)?;
        std::fs::write(out.join("leaf-hashes.txt"), leaves).map_err(io)?;
        std::fs::write(out.join("checkpoint"), checkpoint).map_err(io)?;
        Ok(out.to_path_buf())
    }
}

/// A call promised a record by [`AuditLog::open_call`].
pub struct OpenCall {
    tx: Sender<Job>,
    id: u64,
    /// Taken when the call's record is sent.
    provisional: Option<Record>,
}

impl OpenCall {
    /// The record the call was opened with.
    pub fn provisional(&self) -> Option<&Record> {
        self.provisional.as_ref()
    }

    /// Appends the call's record; the future resolves with its index once it is durable. The
    /// record is sent at once, so dropping the future does not lose it.
    pub fn close(
        mut self,
        record: &Record,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + use<> {
        self.provisional = None;
        let (ack, done) = oneshot::channel();
        let sent = self
            .tx
            .send(Job::Append {
                bytes: record.canonical(),
                ack,
                closes: Some(self.id),
            })
            .map_err(|_| LogError::Closed);
        async move {
            sent?;
            done.await.map_err(|_| LogError::Closed)?
        }
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        if let Some(record) = self.provisional.take() {
            let (ack, _) = oneshot::channel();
            let _ = self.tx.send(Job::Append {
                bytes: interrupted(record).canonical(),
                ack,
                closes: Some(self.id),
            });
        }
    }
}

/// The writer thread's state.
struct Writer {
    storage: Box<dyn Storage>,
    journal: Option<Journal>,
    /// Bytes of `storage` known durable.
    durable: u64,
    state: Arc<Mutex<State>>,
    healthy: Arc<AtomicBool>,
    batches: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    /// Takes every waiting job, writes them in one go, syncs once, then makes the records
    /// visible and acknowledges them.
    fn run(mut self, rx: Receiver<Job>) {
        // Set when a failed batch could not be cut off the file: appending after it would let
        // unacknowledged records reappear at restart, so nothing more is written until then.
        let mut poisoned = false;
        let shared = self.storage.shared();
        loop {
            let first = if shared {
                // A shared log is followed while idle, so this server's view (checkpoints,
                // proofs, exports) trails the other servers' appends by a fraction of a second.
                match rx.recv_timeout(FOLLOW_EVERY) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.follow();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut jobs = vec![first];
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
                if jobs.len() >= 65_536 {
                    break;
                }
            }
            let mut appends = Vec::with_capacity(jobs.len());
            let mut opens = Vec::new();
            for job in jobs {
                match job {
                    Job::Append { bytes, ack, closes } => appends.push((bytes, ack, closes)),
                    Job::Open(opening) => opens.push(opening),
                }
            }
            if !opens.is_empty() {
                self.open_calls(opens);
            }
            if appends.is_empty() {
                continue;
            }
            if shared {
                self.append_shared(appends);
                continue;
            }
            let mut buf = Vec::with_capacity(appends.iter().map(|a| a.0.len() + 4).sum());
            for (bytes, _, _) in &appends {
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(bytes);
            }
            let written = if poisoned {
                Err(std::io::Error::other(
                    "an earlier failed write could not be undone; restart to recover",
                ))
            } else {
                self.storage.append(&buf).and_then(|()| self.storage.sync())
            };
            if let Err(e) = written {
                tracing::error!(error = %e, records = appends.len(), "audit log write failed; failing the calls");
                self.healthy.store(false, Ordering::SeqCst);
                // Cut what may have reached the file, so the next batch follows the last
                // durable one; nothing of this batch was acknowledged. Open calls stay open.
                if !poisoned && self.storage.truncate(self.durable).is_err() {
                    poisoned = true;
                }
                for (_, ack, _) in appends {
                    let _ = ack.send(Err(LogError::Unavailable(e.to_string())));
                }
                continue;
            }
            self.durable += buf.len() as u64;
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.healthy.store(true, Ordering::SeqCst);
            let closed: Vec<u64> = appends.iter().filter_map(|a| a.2).collect();
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for (bytes, ack, _) in appends {
                let result = s
                    .tree
                    .append(&bytes)
                    .map_err(|e| LogError::Unavailable(e.to_string()));
                if result.is_ok() {
                    s.records.push(bytes);
                }
                let _ = ack.send(result.map(|(index, _)| index));
            }
            drop(s);
            // After the records are durable: a close line never outlives its record.
            if let Some(journal) = self.journal.as_mut()
                && let Err(e) = journal.close(&closed)
            {
                tracing::warn!(error = %e, "audit journal: cannot note closed calls; the next start finds their records in the log");
            }
        }
    }

    /// Makes the promises of a batch of opened calls durable, then acknowledges them.
    fn open_calls(&mut self, opens: Vec<Opening>) {
        let at = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tree
            .size();
        let result = match self.journal.as_mut() {
            Some(journal) => {
                let calls: Vec<(u64, &[u8])> =
                    opens.iter().map(|o| (o.id, o.line.as_slice())).collect();
                journal
                    .open(&calls, at)
                    .map_err(|e| LogError::Unavailable(e.to_string()))
            }
            None => Ok(()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, calls = opens.len(), "audit journal write failed; failing the calls");
            self.healthy.store(false, Ordering::SeqCst);
        }
        for o in opens {
            let _ = o.ack.send(result.clone());
        }
    }
}
