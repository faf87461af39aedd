//! The offline verifier: recomputes every leaf and the tree from an export and checks it
//! against the signed checkpoint, trusting nothing the server wrote but the signature's key.

use std::path::Path;

use tlog_tiles::tlog::record_hash;

use crate::key::open_checkpoint;
use crate::tree::Tree;

/// Why an export does not verify, naming the first place that fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {0}")]
    Missing(String),
    #[error("the checkpoint: {0}")]
    Checkpoint(String),
    #[error(
        "record {index} does not match the hash the log holds for it: it was altered, deleted or reordered"
    )]
    Record { index: u64 },
    #[error(
        "the checkpoint covers {signed} records but the export holds {found}: records were removed"
    )]
    Truncated { signed: u64, found: u64 },
    #[error("the records do not produce the signed root of the {size}-record tree")]
    Root { size: u64 },
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoint_size: u64,
}

/// Verifies an export made by `AuditLog::export` against `public_key` (signed-note form).
pub fn verify_export(dir: &Path, public_key: &str) -> Result<Verified, VerifyError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|_| VerifyError::Missing(dir.join(name).display().to_string()))
    };
    let checkpoint = read("checkpoint")?;
    let (size, root) = open_checkpoint(&checkpoint, public_key).map_err(VerifyError::Checkpoint)?;
    let records = read("records.jsonl")?;
    let lines: Vec<&[u8]> = if records.is_empty() {
        Vec::new()
    } else {
        records
            .strip_suffix(b"\n")
            .unwrap_or(&records)
            .split(|b| *b == b'\n')
            .collect()
    };
    // The leaf hashes the log recorded locate a changed record; they are not trusted for the
    // verdict, which rests on the root alone.
    let logged: Vec<String> = read("leaf-hashes.txt")
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut tree = Tree::new();
    for (i, line) in lines.iter().enumerate() {
        let leaf = record_hash(line);
        if let Some(expected) = logged.get(i)
            && hex::encode(leaf.0) != *expected
        {
            return Err(VerifyError::Record { index: i as u64 });
        }
        tree.append_hash(leaf)
            .map_err(|_| VerifyError::Root { size })?;
    }
    let found = tree.size();
    if found < size {
        return Err(VerifyError::Truncated {
            signed: size,
            found,
        });
    }
    if logged.len() as u64 > found {
        return Err(VerifyError::Record { index: found });
    }
    let computed = tree.root(size).map_err(|_| VerifyError::Root { size })?;
    if computed != root {
        return Err(VerifyError::Root { size });
    }
    Ok(Verified {
        records: found,
        checkpoint_size: size,
    })
}
