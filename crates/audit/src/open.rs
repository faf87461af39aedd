//! Calls whose record can only be written when they end (a streamed answer: its tokens and the
//! digest of what the client received are known at the end), promised durably when they start.
//!
//! The promise is a line in a journal beside the log: `{"open":id,"at":size,"record":{…}}` when
//! the call starts (synced before the call may answer), `{"close":id}` once its record is in the
//! log. At the next open, a call still open (the process died part-way) gets its provisional
//! record appended, marked [`INTERRUPTED`], unless the log already holds its record (the close
//! line was lost after the record was synced). So every call has exactly one record, even across
//! `kill -9`.
//!
//! Two journal files take turns: when the one in use grows past [`ROTATE_AT`], the calls still
//! open are copied into the other (synced), which becomes the one in use, and the first is
//! emptied. Recovery reads both, so a crash at any point of a turn loses no promise.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// The code of a record whose call was cut before its end was recorded.
pub const INTERRUPTED: &str = "stream_interrupted";

/// The journal file in use is rotated past this size.
const ROTATE_AT: u64 = 1 << 20;

const FILES: [&str; 2] = ["open-a.journal", "open-b.journal"];

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Open {
        open: u64,
        at: u64,
        record: Box<Record>,
    },
    Close {
        close: u64,
    },
}

/// A call promised and not yet closed, found at recovery.
#[derive(Debug)]
pub(crate) struct Unclosed {
    /// The log's size when the call was opened: its record, if written, is at or after it.
    pub at: u64,
    pub record: Record,
}

/// The provisional record of a call cut before its end was recorded (the server stopped, or
/// the task serving it was dropped), as it enters the log.
pub(crate) fn interrupted(mut record: Record) -> Record {
    record.status = 500;
    record.code = Some(INTERRUPTED.into());
    record.detail = Some(
        "the streamed answer was cut before its end was recorded (the server stopped part-way); what the client received is unknown"
            .into(),
    );
    record
}

/// Whether `bytes` (a stored record) is the final record of the call `r` promised: the same
/// start time (nanoseconds), node and operation.
pub(crate) fn same_call(bytes: &[u8], r: &Record) -> bool {
    let needle = format!("\"time\":\"{}\"", r.time);
    if memchr::memmem::find(bytes, needle.as_bytes()).is_none() {
        return false;
    }
    serde_json::from_slice::<Record>(bytes)
        .is_ok_and(|s| s.time == r.time && s.node == r.node && s.operation == r.operation)
}

/// The start of a call's open line, `{"open":ID,"record":{…},"at":`, serialised by the caller
/// so the writer thread only appends the log's size (not known before it writes).
pub(crate) fn line_start(id: u64, record: &Record) -> Vec<u8> {
    let canonical = record.canonical();
    let mut line = Vec::with_capacity(canonical.len() + 48);
    line.extend_from_slice(format!("{{\"open\":{id},\"record\":").as_bytes());
    line.extend_from_slice(&canonical);
    line.extend_from_slice(b",\"at\":");
    line
}

/// The journal the writer thread keeps.
pub(crate) struct Journal {
    files: [File; 2],
    /// Which file is in use.
    current: usize,
    len: u64,
    /// The open lines of calls not closed yet, by id.
    open: HashMap<u64, Vec<u8>>,
}

fn read_lines(file: &mut File) -> std::io::Result<Vec<Line>> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // A torn last line (a crash mid-write, never acknowledged) does not parse and is skipped.
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

impl Journal {
    /// Opens the journal in `dir` and takes out every call left open, emptying the files: the
    /// caller appends their records (durably) before taking new calls.
    pub(crate) fn recover(dir: &Path) -> std::io::Result<(Self, Vec<Unclosed>)> {
        let mut files = FILES.map(|name| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(dir.join(name))
        });
        let mut opened: HashMap<u64, Unclosed> = HashMap::new();
        let mut closed = Vec::new();
        for file in &mut files {
            let Ok(file) = file else { continue };
            for line in read_lines(file)? {
                match line {
                    Line::Open { open, at, record } => {
                        opened.insert(
                            open,
                            Unclosed {
                                at,
                                record: *record,
                            },
                        );
                    }
                    Line::Close { close } => closed.push(close),
                }
            }
        }
        for id in closed {
            opened.remove(&id);
        }
        let [a, b] = files;
        let journal = Self {
            files: [a?, b?],
            current: 0,
            len: 0,
            open: HashMap::new(),
        };
        let mut unclosed: Vec<Unclosed> = opened.into_values().collect();
        unclosed.sort_by(|x, y| x.record.time.cmp(&y.record.time));
        Ok((journal, unclosed))
    }

    /// Empties both files, once what they held is in the log.
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        for f in &mut self.files {
            f.set_len(0)?;
            f.sync_all()?;
        }
        self.len = 0;
        Ok(())
    }

    /// Writes the open lines of a batch (each `(id, line start)`; the log held `at` records
    /// when they arrived) and syncs them.
    pub(crate) fn open(&mut self, calls: &[(u64, &[u8])], at: u64) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let at = format!("{at}}}");
        for (id, start) in calls {
            let mut line = Vec::with_capacity(start.len() + at.len());
            line.extend_from_slice(start);
            line.extend_from_slice(at.as_bytes());
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            self.open.insert(*id, line);
        }
        let file = &mut self.files[self.current];
        file.write_all(&buf)?;
        file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Writes close lines (not synced: recovery finds a call's record in the log without them).
    pub(crate) fn close(&mut self, ids: &[u64]) -> std::io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for id in ids {
            self.open.remove(id);
            buf.extend_from_slice(format!("{{\"close\":{id}}}\n").as_bytes());
        }
        self.files[self.current].write_all(&buf)?;
        self.len += buf.len() as u64;
        if self.len > ROTATE_AT {
            self.rotate()?;
        }
        Ok(())
    }

    /// Copies the open calls into the other file, switches to it, then empties the first.
    fn rotate(&mut self) -> std::io::Result<()> {
        let next = 1 - self.current;
        let mut buf = Vec::new();
        for line in self.open.values() {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let file = &mut self.files[next];
        file.set_len(0)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        let old = std::mem::replace(&mut self.current, next);
        self.len = buf.len() as u64;
        self.files[old].set_len(0)?;
        self.files[old].sync_all()
    }
}
