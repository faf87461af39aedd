//! The vector index of one knowledge base: unit vectors by chunk, searched by cosine similarity
//! with the label filter applied while searching.
//!
//! Two ways to search, chosen per query: an exact scan over only the rows whose label the reader
//! may see (rows are kept in lists by label, so a restrictive filter scans less, never more), and
//! an HNSW graph (`hnsw_rs`) once the visible rows are too many to scan, searched with the filter
//! inside the graph walk so it returns `k` visible rows rather than `k` rows less the hidden ones.
//! `hnsw_rs` has no delete: deleted rows stay in the graph as tombstones the filter skips.

use std::collections::HashMap;

use hnsw_rs::prelude::{Distance, Hnsw};

/// Visible rows up to which a query scans them all (exact) instead of walking the graph.
pub const EXACT_MAX: usize = 20_000;

/// Graph parameters: neighbours per node, candidates while building, and the search width.
const M: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const EF_SEARCH: usize = 200;

/// A label's id inside one index (its position in the index's label table).
pub type LabelId = u32;

pub struct Vectors {
    dims: usize,
    chunk: Vec<i64>,
    data: Vec<f32>,
    label: Vec<LabelId>,
    alive: Vec<bool>,
    live: usize,
    by_label: HashMap<LabelId, Vec<u32>>,
    by_chunk: HashMap<i64, u32>,
    graph: Option<Hnsw<'static, f32, UnitDot>>,
    /// Rows `0..graph_rows` are in the graph.
    graph_rows: usize,
    building: bool,
    exact_max: usize,
}

/// The graph over a snapshot of the rows, built away from the index's lock
/// ([`Vectors::graph_job`], [`GraphJob::build`], [`Vectors::install`]).
pub struct GraphJob {
    dims: usize,
    rows: usize,
    data: Vec<f32>,
    alive: Vec<bool>,
}

/// A built graph waiting to be installed.
pub struct Graph {
    graph: Hnsw<'static, f32, UnitDot>,
    rows: usize,
}

impl GraphJob {
    /// Builds the graph (seconds to minutes: call it from a blocking thread, without the lock).
    pub fn build(self) -> Graph {
        let graph = Hnsw::new(
            M,
            (self.rows * 2).max(100_000),
            16,
            EF_CONSTRUCTION,
            UnitDot,
        );
        let batch: Vec<(&[f32], usize)> = (0..self.rows)
            .filter(|&r| self.alive[r])
            .map(|r| (&self.data[r * self.dims..(r + 1) * self.dims], r))
            .collect();
        graph.parallel_insert_slice(&batch);
        Graph {
            graph,
            rows: self.rows,
        }
    }
}

/// One hit: the chunk and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    pub chunk: i64,
    pub score: f32,
}

impl Vectors {
    pub fn new(dims: usize) -> Self {
        Self::with_exact_max(dims, EXACT_MAX)
    }

    /// An index that walks the graph once more than `exact_max` rows are visible (tests and the
    /// bench use a small value to exercise the graph).
    pub fn with_exact_max(dims: usize, exact_max: usize) -> Self {
        Self {
            dims,
            chunk: Vec::new(),
            data: Vec::new(),
            label: Vec::new(),
            alive: Vec::new(),
            live: 0,
            by_label: HashMap::new(),
            by_chunk: HashMap::new(),
            graph: None,
            graph_rows: 0,
            building: false,
            exact_max,
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Rows that are not deleted.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds rows. A vector of the wrong width is skipped (the caller embedded with another
    /// model); a chunk already present is replaced.
    pub fn add(&mut self, rows: &[(i64, LabelId, &[f32])]) {
        let first = self.chunk.len();
        for &(chunk, label, v) in rows {
            if v.len() != self.dims {
                continue;
            }
            self.remove(chunk);
            let row = self.chunk.len() as u32;
            self.chunk.push(chunk);
            self.data.extend_from_slice(v);
            self.label.push(label);
            self.alive.push(true);
            self.by_label.entry(label).or_default().push(row);
            self.by_chunk.insert(chunk, row);
            self.live += 1;
        }
        if self.graph.is_some() {
            self.insert_into_graph(first);
        }
    }

    fn insert_into_graph(&mut self, from: usize) {
        let Some(graph) = &self.graph else {
            return;
        };
        let dims = self.dims;
        let batch: Vec<(&[f32], usize)> = (from..self.chunk.len())
            .filter(|&r| self.alive[r])
            .map(|r| (&self.data[r * dims..(r + 1) * dims], r))
            .collect();
        graph.parallel_insert_slice(&batch);
        self.graph_rows = self.chunk.len();
    }

    /// Whether searches walk a graph (`graph`), one is being built (`building`; searches scan
    /// meanwhile), or every search is an exact scan (`exact`).
    pub fn mode(&self) -> &'static str {
        if self.graph.is_some() {
            "graph"
        } else if self.building {
            "building"
        } else {
            "exact"
        }
    }

    /// A graph to build, when there are more rows than a scan should cover and none is built or
    /// being built. Marks it as being built.
    pub fn graph_job(&mut self) -> Option<GraphJob> {
        if self.graph.is_some() || self.building || self.live <= self.exact_max {
            return None;
        }
        self.building = true;
        Some(GraphJob {
            dims: self.dims,
            rows: self.chunk.len(),
            data: self.data.clone(),
            alive: self.alive.clone(),
        })
    }

    /// Installs a built graph and adds the rows that arrived while it was built.
    pub fn install(&mut self, built: Graph) {
        self.graph = Some(built.graph);
        self.graph_rows = built.rows;
        self.building = false;
        self.insert_into_graph(built.rows);
    }

    /// Builds the graph here and now, if one is due (tests and benches).
    pub fn build_graph_now(&mut self) {
        if let Some(job) = self.graph_job() {
            let built = job.build();
            self.install(built);
        }
    }

    /// Deletes a chunk's row (a tombstone: the row stays, no search returns it).
    pub fn remove(&mut self, chunk: i64) -> bool {
        let Some(row) = self.by_chunk.remove(&chunk) else {
            return false;
        };
        let r = row as usize;
        self.alive[r] = false;
        self.live -= 1;
        if let Some(rows) = self.by_label.get_mut(&self.label[r]) {
            rows.retain(|&x| x != row);
        }
        true
    }

    /// The `k` visible rows nearest `query`, best first. `visible` says which labels the reader
    /// may see; rows of other labels are never returned, and never take a place in the top `k`.
    pub fn search(&self, query: &[f32], k: usize, visible: &[LabelId]) -> Vec<VectorHit> {
        if query.len() != self.dims || k == 0 {
            return Vec::new();
        }
        let count: usize = visible
            .iter()
            .filter_map(|l| self.by_label.get(l))
            .map(Vec::len)
            .sum();
        match &self.graph {
            Some(graph) if count > self.exact_max && self.graph_rows == self.chunk.len() => {
                let allowed: Vec<bool> = {
                    let mut a = vec![false; self.label.len()];
                    for l in visible {
                        for &r in self.by_label.get(l).map(Vec::as_slice).unwrap_or(&[]) {
                            a[r as usize] = true;
                        }
                    }
                    a
                };
                let filter = |id: &usize| allowed.get(*id).copied().unwrap_or(false);
                graph
                    .search_filter(query, k, EF_SEARCH.max(k), Some(&filter))
                    .into_iter()
                    .filter(|n| allowed.get(n.d_id).copied().unwrap_or(false))
                    .map(|n| VectorHit {
                        chunk: self.chunk[n.d_id],
                        score: 1.0 - n.distance,
                    })
                    .collect()
            }
            _ => self.exact(query, k, visible),
        }
    }

    /// Exact search over the visible rows only.
    pub fn exact(&self, query: &[f32], k: usize, visible: &[LabelId]) -> Vec<VectorHit> {
        let mut top = TopK::new(k);
        for l in visible {
            for &row in self.by_label.get(l).map(Vec::as_slice).unwrap_or(&[]) {
                let r = row as usize;
                let v = &self.data[r * self.dims..(r + 1) * self.dims];
                top.push(dot(query, v), r);
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|(score, r)| VectorHit {
                chunk: self.chunk[r],
                score,
            })
            .collect()
    }
}

/// Cosine distance between unit vectors, `1 - a·b`, with [`dot`]: `hnsw_rs`'s own `DistDot`
/// is a scalar loop unless its `simdeez` feature is on, and ours vectorises on stable Rust.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product written so the compiler vectorises it (eight independent sums).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

/// The best `k` (score, row) pairs seen, kept as a small sorted vector (k is at most a few
/// hundred, so insertion beats a heap's bookkeeping).
struct TopK {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    fn push(&mut self, score: f32, row: usize) {
        if self.items.len() == self.k && self.items.last().is_some_and(|l| l.0 >= score) {
            return;
        }
        let at = self.items.partition_point(|x| x.0 >= score);
        self.items.insert(at, (score, row));
        self.items.truncate(self.k);
    }

    fn into_sorted(self) -> Vec<(f32, usize)> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// Deterministic unit vectors around a few centres (like embeddings of related texts).
    pub fn clustered(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..32)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % centres.len()];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    #[test]
    fn filter_is_inside_the_search_not_after_it() {
        let vs = clustered(200, 16, 1);
        let mut index = Vectors::new(16);
        // Even rows are label 1 (hidden from the reader), odd rows label 0.
        let rows: Vec<(i64, LabelId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, (i % 2 == 0) as LabelId, v.as_slice()))
            .collect();
        index.add(&rows);
        // Query with a hidden row's own vector: the exact best match is hidden.
        let hits = index.search(&vs[0], 10, &[0]);
        assert_eq!(
            hits.len(),
            10,
            "k visible hits, not k minus the hidden ones"
        );
        assert!(hits.iter().all(|h| h.chunk % 2 == 1));
        let all = index.search(&vs[0], 10, &[0, 1]);
        assert_eq!(all[0].chunk, 0);
    }

    #[test]
    fn deleted_rows_are_never_returned() {
        let vs = clustered(50, 8, 2);
        let mut index = Vectors::new(8);
        let rows: Vec<(i64, LabelId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, 0, v.as_slice()))
            .collect();
        index.add(&rows);
        assert!(index.remove(7));
        assert!(!index.remove(7));
        assert_eq!(index.len(), 49);
        let hits = index.search(&vs[7], 50, &[0]);
        assert_eq!(hits.len(), 49);
        assert!(hits.iter().all(|h| h.chunk != 7));
    }

    #[test]
    fn graph_search_recalls_what_exact_search_finds_and_obeys_the_filter() {
        let dims = 32;
        let vs = clustered(4_000, dims, 3);
        let mut index = Vectors::with_exact_max(dims, 500);
        let rows: Vec<(i64, LabelId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, (i % 4 == 0) as LabelId, v.as_slice()))
            .collect();
        index.add(&rows);
        assert_eq!(index.mode(), "exact", "no graph until one is built");
        index.build_graph_now();
        assert_eq!(index.mode(), "graph");
        let queries = clustered(50, dims, 99);
        let mut found = 0;
        for q in &queries {
            let exact: Vec<i64> = index.exact(q, 10, &[0]).iter().map(|h| h.chunk).collect();
            let graph = index.search(q, 10, &[0]);
            assert_eq!(graph.len(), 10);
            assert!(
                graph.iter().all(|h| h.chunk % 4 != 0),
                "a hidden row came back"
            );
            found += graph.iter().filter(|h| exact.contains(&h.chunk)).count();
        }
        let recall = found as f64 / (queries.len() * 10) as f64;
        assert!(recall >= 0.9, "recall@10 {recall}");
    }
}
