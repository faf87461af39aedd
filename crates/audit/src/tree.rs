//! The Merkle tree as its stored hashes (the tlog model: every complete subtree's hash, appended in
//! order as records arrive), so appends cost O(log n) and proofs read O(log n) hashes.

use tlog_tiles::tlog::{
    self, Hash, HashReader, RecordProof, TreeProof, record_hash, stored_hash_count,
    stored_hashes_for_record_hash,
};

/// Stored hashes in memory. The file-backed log keeps the same sequence on disk.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    hashes: Vec<Hash>,
    size: u64,
}

struct Reader<'a>(&'a [Hash]);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.0.get(i).copied())
                    .ok_or_else(|| tlog::Error::InvalidInput(format!("no stored hash {i}")))
            })
            .collect()
    }
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds a record; returns the stored hashes it added (to persist them) and its index.
    pub fn append(&mut self, data: &[u8]) -> Result<(u64, Vec<Hash>), tlog::Error> {
        self.append_hash(record_hash(data))
    }

    /// Adds a leaf by its hash.
    pub fn append_hash(&mut self, leaf: Hash) -> Result<(u64, Vec<Hash>), tlog::Error> {
        let index = self.size;
        let new = stored_hashes_for_record_hash(index, leaf, &Reader(&self.hashes))?;
        self.hashes.extend_from_slice(&new);
        self.size += 1;
        debug_assert_eq!(self.hashes.len() as u64, stored_hash_count(self.size));
        Ok((index, new))
    }

    /// The root of the tree of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash, tlog::Error> {
        self.check(size)?;
        tlog::tree_hash(size, &Reader(&self.hashes))
    }

    /// The leaf hash of record `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let at = tlog::stored_hash_index(0, index);
        usize::try_from(at)
            .ok()
            .and_then(|i| self.hashes.get(i))
            .copied()
    }

    /// Proof that record `index` is in the tree of `size` records.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<RecordProof, tlog::Error> {
        self.check(size)?;
        tlog::prove_record(size, index, &Reader(&self.hashes))
    }

    /// Proof that the tree of `from` records is a prefix of the tree of `to` records.
    pub fn consistency(&self, from: u64, to: u64) -> Result<TreeProof, tlog::Error> {
        self.check(to)?;
        if from > to {
            return Err(tlog::Error::InvalidInput("from > to".into()));
        }
        tlog::prove_tree(to, from, &Reader(&self.hashes))
    }

    fn check(&self, size: u64) -> Result<(), tlog::Error> {
        if size > self.size {
            return Err(tlog::Error::InvalidInput(format!(
                "the tree has {} records, not {size}",
                self.size
            )));
        }
        Ok(())
    }

    /// The stored hashes, in order.
    pub fn stored(&self) -> &[Hash] {
        &self.hashes
    }
}

/// Verifies that `leaf` is record `index` of the tree of `size` records with root `root`.
pub fn verify_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), tlog::Error> {
    tlog::check_record(&proof.to_vec(), size, root, index, leaf)
}

/// Verifies that the tree of `from` records with root `from_root` is a prefix of the tree of `to`
/// records with root `to_root`.
pub fn verify_consistency(
    proof: &[Hash],
    from: u64,
    from_root: Hash,
    to: u64,
    to_root: Hash,
) -> Result<(), tlog::Error> {
    tlog::check_tree(&proof.to_vec(), to, to_root, from, from_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(n: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.append(format!("record {i}").as_bytes()).unwrap();
        }
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_inclusion_proof_verifies_and_an_altered_one_fails(n in 1u64..300, pick in any::<u64>(), flip in any::<u8>()) {
            let t = tree(n);
            let size = 1 + pick % n;
            let index = pick.rotate_left(17) % size;
            let root = t.root(size).unwrap();
            let leaf = t.leaf(index).unwrap();
            let proof = t.inclusion(index, size).unwrap();
            prop_assert!(verify_inclusion(&proof, size, root, index, leaf).is_ok());
            let mut bad_leaf = leaf;
            bad_leaf.0[usize::from(flip % 32)] ^= 1;
            prop_assert!(verify_inclusion(&proof, size, root, index, bad_leaf).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = usize::from(flip) % bad.len();
                bad[k].0[0] ^= 0x80;
                prop_assert!(verify_inclusion(&bad, size, root, index, leaf).is_err());
            }
        }

        #[test]
        fn consistency_proofs_verify_between_any_two_sizes(n in 1u64..300, a in any::<u64>(), b in any::<u64>()) {
            let t = tree(n);
            let (mut from, mut to) = (1 + a % n, 1 + b % n);
            if from > to { std::mem::swap(&mut from, &mut to); }
            let proof = t.consistency(from, to).unwrap();
            let (r1, r2) = (t.root(from).unwrap(), t.root(to).unwrap());
            prop_assert!(verify_consistency(&proof, from, r1, to, r2).is_ok());
            let mut bad = r1;
            bad.0[3] ^= 1;
            prop_assert!(verify_consistency(&proof, from, bad, to, r2).is_err());
        }
    }
}
