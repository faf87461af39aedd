//! The offline verifier: recomputes every leaf and the tree from an export and checks it
//! against the signed checkpoint, trusting nothing the server wrote but the signature's key.

use std::path::Path;

use tlog_tiles::tlog::{EMPTY_HASH, Hash, node_hash, record_hash};

use crate::key::open_checkpoint;

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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let records_path = dir.join("records.jsonl");
    let leaves = leaf_hashes(&records_path, threads)
        .map_err(|_| VerifyError::Missing(records_path.display().to_string()))?;
    // The leaf hashes the log recorded locate a changed record; they are not trusted for the
    // verdict, which rests on the root alone.
    let logged_bytes = read("leaf-hashes.txt").unwrap_or_default();
    let logged: Vec<&[u8]> = logged_bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut hex_buf = [0u8; 64];
    for (i, leaf) in leaves.iter().enumerate() {
        if let Some(expected) = logged.get(i) {
            let matches =
                hex::encode_to_slice(leaf.0, &mut hex_buf).is_ok() && hex_buf[..] == **expected;
            if !matches {
                return Err(VerifyError::Record { index: i as u64 });
            }
        }
    }
    let found = leaves.len() as u64;
    if found < size {
        return Err(VerifyError::Truncated {
            signed: size,
            found,
        });
    }
    if logged.len() as u64 > found {
        return Err(VerifyError::Record { index: found });
    }
    let size_usize = usize::try_from(size).map_err(|_| VerifyError::Root { size })?;
    if root_parallel(&leaves[..size_usize], threads) != root {
        return Err(VerifyError::Root { size });
    }
    Ok(Verified {
        records: found,
        checkpoint_size: size,
    })
}

/// The leaf hash of every line of `path`, in order. The file is read in blocks while other threads
/// hash the blocks already read, so reading and hashing overlap and no copy of the whole export
/// is ever held.
fn leaf_hashes(path: &Path, threads: usize) -> std::io::Result<Vec<Hash>> {
    use std::io::Read as _;
    use std::sync::{Mutex, mpsc};
    const BLOCK: usize = 8 << 20;
    let mut file = std::fs::File::open(path)?;
    let (to_workers, blocks) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads * 2);
    let blocks = Mutex::new(blocks);
    let (to_main, hashed) = mpsc::channel::<(usize, Vec<Hash>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (blocks, to_main) = (&blocks, to_main.clone());
            scope.spawn(move || {
                loop {
                    let next = match blocks.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((i, block)) = next else { return };
                    let hashes = block
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(record_hash)
                        .collect();
                    if to_main.send((i, hashes)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(to_main);
        // The sender lives in this block only, so the workers stop however reading ends.
        let to_workers = to_workers;
        let mut read = || -> std::io::Result<()> {
            // Read whole lines per block: what follows the last newline waits for the next block.
            let mut carry: Vec<u8> = Vec::new();
            let mut index = 0;
            loop {
                let mut block = std::mem::take(&mut carry);
                let start = block.len();
                block.resize(start + BLOCK, 0);
                let n = file.read(&mut block[start..])?;
                block.truncate(start + n);
                if n == 0 {
                    if !block.is_empty() {
                        let _ = to_workers.send((index, block));
                    }
                    break;
                }
                if let Some(last) = block.iter().rposition(|b| *b == b'\n') {
                    carry = block.split_off(last + 1);
                    let _ = to_workers.send((index, block));
                    index += 1;
                } else {
                    carry = block;
                }
            }
            Ok(())
        };
        let result = read();
        drop(to_workers);
        result
    })?;
    let mut parts: Vec<(usize, Vec<Hash>)> = hashed.into_iter().collect();
    parts.sort_unstable_by_key(|(i, _)| *i);
    Ok(parts.into_iter().flat_map(|(_, h)| h).collect())
}

/// The root of `leaves`, its two largest subtrees computed on two threads when there are many:
/// MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n])) with k the largest power of two below n.
fn root_parallel(leaves: &[Hash], threads: usize) -> Hash {
    let n = leaves.len();
    if threads < 2 || n < (1 << 16) {
        return root_of(leaves);
    }
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    let (left, right) = leaves.split_at(k);
    std::thread::scope(|scope| {
        let l = scope.spawn(|| root_parallel(left, threads / 2));
        let r = root_parallel(right, threads - threads / 2);
        let l = l.join().unwrap_or(EMPTY_HASH);
        node_hash(l, r)
    })
}

/// The RFC 9162 root of `leaves`, with a stack of complete subtrees (O(log n) memory, no
/// allocation per leaf); `Tree` keeps every stored hash, which verification does not need.
fn root_of(leaves: &[Hash]) -> Hash {
    let mut stack: Vec<Hash> = Vec::with_capacity(64);
    for (i, leaf) in leaves.iter().enumerate() {
        let mut h = *leaf;
        let mut n = i;
        while n & 1 == 1 {
            if let Some(left) = stack.pop() {
                h = node_hash(left, h);
            }
            n >>= 1;
        }
        stack.push(h);
    }
    let mut iter = stack.into_iter().rev();
    let Some(mut acc) = iter.next() else {
        return EMPTY_HASH;
    };
    for left in iter {
        acc = node_hash(left, acc);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    #[test]
    fn the_split_root_equals_the_stack_root() {
        let leaves: Vec<Hash> = (0..70_001u32)
            .map(|i| record_hash(&i.to_le_bytes()))
            .collect();
        for n in [65_536, 65_537, 70_001] {
            assert_eq!(
                root_parallel(&leaves[..n], 2),
                root_of(&leaves[..n]),
                "size {n}"
            );
        }
    }

    #[test]
    fn the_stack_root_equals_the_tree_root_at_every_size() {
        let mut tree = Tree::new();
        let mut leaves = Vec::new();
        assert_eq!(root_of(&leaves), EMPTY_HASH);
        for i in 0..300u64 {
            tree.append(format!("r{i}").as_bytes()).unwrap();
            leaves.push(tree.leaf(i).unwrap());
            assert_eq!(
                root_of(&leaves),
                tree.root(i + 1).unwrap(),
                "size {}",
                i + 1
            );
        }
    }
}
