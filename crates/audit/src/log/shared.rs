//! A log whose records several servers share (a [`Storage`] that is [`Storage::shared`]): the
//! store places each batch after every server's records so far and hands back those this server
//! had not seen; an idle writer follows the others' appends.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::{Append, AuditLog, LogError, State, Storage, Writer};
use crate::key::LogKey;
use crate::open::Journal;
use crate::tree::Tree;

impl AuditLog {
    /// Opens a shared log (see [`Storage::shared`]) to read and export only.
    pub fn read_only_shared(mut storage: Box<dyn Storage>, key: LogKey) -> Result<Self, LogError> {
        let records = storage
            .all_records()
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
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

    /// Opens the log whose signing key and journal of open calls are in `dir` but whose records
    /// are in `storage` (a database several servers share).
    pub fn open_shared(
        dir: &Path,
        origin: &str,
        storage: Box<dyn Storage>,
    ) -> Result<Self, LogError> {
        let unavailable = |e: std::io::Error| LogError::Unavailable(e.to_string());
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let key = LogKey::load_or_create(&dir.join("log.key"), origin)?;
        let journal = Journal::recover(dir).map_err(unavailable)?;
        Self::start(storage, Some(journal), key)
    }
}

impl Writer {
    /// Appends a batch to a shared log: the store places it after every server's records so far
    /// and hands back those this server had not seen, which enter the tree first.
    pub(super) fn append_shared(&mut self, appends: Vec<Append>) {
        let known = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tree
            .size();
        let records: Vec<Vec<u8>> = appends.iter().map(|a| a.0.clone()).collect();
        let others = match self.storage.append_records(known, &records) {
            Ok(others) => others,
            Err(e) => {
                tracing::error!(error = %e, records = appends.len(), "audit log write failed; failing the calls");
                self.healthy.store(false, Ordering::SeqCst);
                for (_, ack, _) in appends {
                    let _ = ack.send(Err(LogError::Unavailable(e.to_string())));
                }
                return;
            }
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(true, Ordering::SeqCst);
        let closed: Vec<u64> = appends.iter().filter_map(|a| a.2).collect();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for bytes in others {
            if s.tree.append(&bytes).is_ok() {
                s.records.push(bytes);
            }
        }
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
        if let Some(journal) = self.journal.as_mut()
            && let Err(e) = journal.close(&closed)
        {
            tracing::warn!(error = %e, "audit journal: cannot note closed calls; the next start finds their records in the log");
        }
    }

    /// Takes in the records other servers appended to a shared log since this server's last.
    pub(super) fn follow(&mut self) {
        let known = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tree
            .size();
        match self.storage.records_since(known) {
            Ok(new) if !new.is_empty() => {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                // Only this thread appends, so the tree is still `known` long.
                for bytes in new {
                    if s.tree.append(&bytes).is_ok() {
                        s.records.push(bytes);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit log: cannot follow the shared log"),
        }
    }
}
