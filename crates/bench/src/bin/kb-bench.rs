//! Knowledge-base figures, printed as tables:
//!
//! 1. Ingestion end to end (extract, mark, chunk, embed with the real MiniLM, write, index):
//!    pages/s and chunks/s, on generated multi-page PDFs.
//! 2. Search latency p50/p99 at 100,000 chunks, end to end through the service (label filter,
//!    both indexes, fusion, catalog rows), for an unrestricted reader and two restricted ones;
//!    beside it, the vector index alone and the exact scan it replaces (the peer, same run).
//! 3. Recall@10 of the vector index against exact search.
//!
//! The 100,000 chunks are generated: text drawn from a fixed vocabulary with a Zipf-like
//! distribution, and vectors that are sums of per-word random directions (so passages sharing
//! words lie close, as with a real model); embedding 100,000 passages with MiniLM would take
//! this machine half an hour and says nothing about the index. The query's own MiniLM
//! embedding time is measured separately and printed.
//!
//! Usage: cargo run --release -p enclave-bench --bin kb-bench -- [--chunks N] [--models-dir DIR]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use enclave_engine::models::MINILM;
use enclave_engine::{EmbedInput, EmbeddingEngine};
use enclave_kb::vectors::{LabelId, Vectors};
use enclave_kb::{EmbedError, Embedder, KnowledgeBases, Mode, Upload};
use enclave_label::{Label, Scheme};

#[derive(Debug, Parser)]
struct Args {
    /// Chunks in the search benchmark.
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Queries per configuration.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Documents in the ingestion benchmark (5 pages each).
    #[arg(long, default_value_t = 60)]
    documents: usize,
    /// Only the search and vector-index parts.
    #[arg(long)]
    skip_ingestion: bool,
    /// Where the MiniLM model is (as `enclave models pull` leaves it).
    #[arg(long, default_value = "target/test-models")]
    models_dir: PathBuf,
}

const DIMS: usize = 384;
const VOCABULARY: usize = 6_000;

/// A small deterministic generator (SplitMix64): the same corpus every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn word(i: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ran", "te", "vos", "qu", "zel", "dor", "an", "is", "pe", "tur", "bel",
        "om", "six",
    ];
    let mut s = String::new();
    let mut n = i + 17;
    while n > 0 {
        s.push_str(SYL[n % 16]);
        n /= 16;
    }
    s
}

/// A topic model standing in for a trained embedder: the vocabulary is split into topics; each
/// word's vector is its topic's direction plus a word-specific one, and a text's vector is the
/// normalised sum over its words. Passages mixing the same topics lie close, as passages about
/// the same subjects do under MiniLM.
struct Synthetic {
    words: Vec<Vec<f32>>,
    index: std::collections::HashMap<String, usize>,
}

const TOPICS: usize = 400;
const WORDS_PER_TOPIC: usize = VOCABULARY / TOPICS;

impl Synthetic {
    fn new() -> Self {
        let mut rng = Rng(7);
        let direction = |rng: &mut Rng| -> Vec<f32> {
            let v: Vec<f32> = (0..DIMS).map(|_| rng.unit() - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|x| x / n).collect()
        };
        let topics: Vec<Vec<f32>> = (0..TOPICS).map(|_| direction(&mut rng)).collect();
        let words: Vec<Vec<f32>> = (0..VOCABULARY)
            .map(|i| {
                let own = direction(&mut rng);
                topics[i / WORDS_PER_TOPIC]
                    .iter()
                    .zip(own)
                    .map(|(t, o)| t + 0.8 * o)
                    .collect()
            })
            .collect();
        let index = (0..VOCABULARY).map(|i| (word(i), i)).collect();
        Self { words, index }
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; DIMS];
        for w in text.split_whitespace() {
            if let Some(&i) = self.index.get(w.trim_end_matches('.')) {
                for (a, b) in v.iter_mut().zip(&self.words[i]) {
                    *a += b;
                }
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter().map(|x| x / n).collect()
    }
}

/// `n` words of a text about topics `main` (70%) and `second` (30%).
fn topical(rng: &mut Rng, main: usize, second: usize, n: usize) -> String {
    (0..n)
        .map(|i| {
            let t = if i * 10 < n * 7 { main } else { second };
            word(t * WORDS_PER_TOPIC + (rng.next() as usize) % WORDS_PER_TOPIC)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Embedder for Synthetic {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

struct Mini(EmbeddingEngine);

impl Embedder for Mini {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<EmbedInput> = texts.iter().cloned().map(EmbedInput::Text).collect();
        self.0
            .embed(&inputs)
            .map(|e| e.vectors)
            .map_err(|e| EmbedError::Failed(e.to_string()))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn upload(name: String, bytes: Vec<u8>, label: &Label) -> Upload {
    Upload {
        name,
        media_type: None,
        bytes,
        label: Some(label.clone()),
        uploader: "bench".into(),
        clearance: label.clone(),
    }
}

async fn settle(kbs: &KnowledgeBases, kb: &str, want: u64) -> Result<()> {
    loop {
        let info = kbs.get("bench", kb).await?;
        if info.documents.ready + info.documents.failed >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ingestion(args: &Args, scheme: &Scheme, out: &mut impl std::io::Write) -> Result<()> {
    let dir = MINILM.dir(&args.models_dir);
    let engine = match EmbeddingEngine::load(&dir) {
        Ok(e) => e,
        Err(e) => {
            writeln!(
                out,
                "ingestion: skipped, no MiniLM at {} ({e}); run `enclave models pull --models-dir {}`",
                dir.display(),
                args.models_dir.display()
            )?;
            return Ok(());
        }
    };
    let tmp = tempfile::tempdir()?;
    let kbs =
        KnowledgeBases::open(tmp.path(), scheme.clone(), Arc::new(Mini(engine)), DIMS).await?;
    let top = scheme.parse("TS")?;
    kbs.create("bench", "ingest", &top, None, &top).await?;
    let mut rng = Rng(11);
    let (prose, _) = enclave_kb::eval::eval_set();
    let mut files = Vec::new();
    for d in 0..args.documents {
        let pages: Vec<String> = (0..5)
            .map(|p| {
                let mark = ["(U)", "(C)", "(S)"][(d + p) % 3];
                // English prose (the evaluation set's passages), about 100 words a page.
                let words: Vec<&str> = (0..5)
                    .map(|_| prose[(rng.next() as usize) % prose.len()].text.as_str())
                    .collect();
                format!("{mark} Page {p} of report {d}. {}", words.join(" "))
            })
            .collect();
        let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
        files.push(enclave_kb::testdata::pdf(&refs));
    }
    let started = Instant::now();
    for (i, f) in files.into_iter().enumerate() {
        kbs.add(
            "bench",
            "ingest",
            upload(format!("report-{i}.pdf"), f, &top),
        )
        .await?;
    }
    settle(&kbs, "ingest", args.documents as u64).await?;
    let secs = started.elapsed().as_secs_f64();
    let info = kbs.get("bench", "ingest").await?;
    writeln!(
        out,
        "\nIngestion end to end ({} PDFs, {} pages, real MiniLM, 2 cores)\n{:<14} {:>10} {:>10} {:>10}",
        args.documents,
        args.documents * 5,
        "",
        "pages/s",
        "chunks/s",
        "seconds"
    )?;
    writeln!(
        out,
        "{:<14} {:>10.1} {:>10.1} {:>10.1}   ({} chunks, {} failed)",
        "enclave-kb",
        (args.documents * 5) as f64 / secs,
        info.chunks as f64 / secs,
        secs,
        info.chunks,
        info.documents.failed
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let scheme = Scheme::builtin("US").context("US scheme")?;
    let mut out = std::io::stdout().lock();
    if !args.skip_ingestion {
        ingestion(&args, &scheme, &mut out).await?;
    }

    // The search corpus: 2% U, 18% C, 80% S.
    let synthetic = Arc::new(Synthetic::new());
    let tmp = tempfile::tempdir()?;
    let kbs = KnowledgeBases::open(
        tmp.path(),
        scheme.clone(),
        Arc::clone(&synthetic) as Arc<dyn Embedder>,
        DIMS,
    )
    .await?;
    let (u, c, s) = (scheme.parse("U")?, scheme.parse("C")?, scheme.parse("S")?);
    kbs.create("bench", "search", &s, None, &s).await?;
    let mut rng = Rng(3);
    let per_doc = 50;
    let docs = args.chunks.div_ceil(per_doc);
    let mut texts = Vec::with_capacity(args.chunks);
    let built = Instant::now();
    for d in 0..docs {
        let label = match d % 50 {
            0 => &u,
            1..=9 => &c,
            _ => &s,
        };
        let mut body = String::new();
        for _ in 0..per_doc.min(args.chunks - d * per_doc) {
            // 100 words: one paragraph per chunk (two would pass the 120-word chunk size).
            let main = (rng.next() as usize) % TOPICS;
            let second = (rng.next() as usize) % TOPICS;
            let t = topical(&mut rng, main, second, 100);
            body.push_str(&t);
            body.push_str(".\n\n");
            texts.push((t, label.clone(), main, second));
        }
        kbs.add(
            "bench",
            "search",
            upload(format!("doc-{d}.txt"), body.into_bytes(), label),
        )
        .await?;
    }
    settle(&kbs, "search", docs as u64).await?;
    let ingested = built.elapsed().as_secs_f64();
    // The vector graph is built in the background; measure once it is in place.
    let mut info = kbs.get("bench", "search").await?;
    while info.vector_index == "building" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        info = kbs.get("bench", "search").await?;
    }
    writeln!(
        out,
        "\nSearch corpus: {} chunks in {} documents (2% U, 18% C, 80% S), ingested in {ingested:.0} s, vector {} ready after {:.0} s",
        info.chunks,
        docs,
        info.vector_index,
        built.elapsed().as_secs_f64()
    )?;

    // Queries: six words on the topics of a random chunk, as a question about it would be.
    let queries: Vec<String> = (0..args.queries)
        .map(|_| {
            let (_, _, main, second) = &texts[(rng.next() as usize) % texts.len()];
            topical(&mut rng, *main, *second, 6)
        })
        .collect();

    writeln!(
        out,
        "\nSearch latency, end to end through the service (k = 10; query embedding excluded)\n{:<28} {:>9} {:>9} {:>9} {:>12}",
        "reader", "visible", "p50 ms", "p99 ms", "vs unfiltered"
    )?;
    let mut unfiltered_p99 = 0.0;
    for (name, reader, share) in [
        ("SECRET (no filter)", &s, 1.0),
        ("CONFIDENTIAL (filter)", &c, 0.2),
        ("UNCLASSIFIED (restrictive)", &u, 0.02),
    ] {
        let mut times = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let hits = kbs
                .search("bench", "search", reader, q, 10, Mode::Hybrid)
                .await?;
            times.push(t.elapsed());
            if hits.len() < 10 {
                writeln!(out, "warning: {} hits for {q:?}", hits.len())?;
            }
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        if unfiltered_p99 == 0.0 {
            unfiltered_p99 = p99;
        }
        writeln!(
            out,
            "{name:<28} {:>8.0}% {p50:>9.2} {p99:>9.2} {:>11.2}x",
            share * 100.0,
            p99 / unfiltered_p99
        )?;
    }

    // The vector index alone, beside the exact scan it replaces, and its recall.
    let mut graph = Vectors::new(DIMS);
    let vectors: Vec<(i64, LabelId, Vec<f32>)> = texts
        .iter()
        .enumerate()
        .map(|(i, (t, l, _, _))| {
            let id: LabelId = if *l == u {
                0
            } else if *l == c {
                1
            } else {
                2
            };
            (i as i64, id, synthetic.vector(t))
        })
        .collect();
    let rows: Vec<(i64, LabelId, &[f32])> = vectors
        .iter()
        .map(|(i, l, v)| (*i, *l, v.as_slice()))
        .collect();
    let t = Instant::now();
    graph.add(&rows);
    graph.build_graph_now();
    let graph_secs = t.elapsed().as_secs_f64();
    let qv: Vec<Vec<f32>> = queries.iter().map(|q| synthetic.vector(q)).collect();
    let all = [0, 1, 2];
    let (mut g, mut e) = (Vec::new(), Vec::new());
    let mut found = 0usize;
    for q in &qv {
        let t = Instant::now();
        let approx = graph.search(q, 10, &all);
        g.push(t.elapsed());
        let t = Instant::now();
        let exact = graph.exact(q, 10, &all);
        e.push(t.elapsed());
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|x| x.chunk == h.chunk))
            .count();
    }
    g.sort();
    e.sort();
    let recall = found as f64 / (qv.len() * 10) as f64;
    writeln!(
        out,
        "\nVector index alone at {} vectors (graph built in {graph_secs:.0} s)\n{:<24} {:>9} {:>9} {:>12}",
        vectors.len(),
        "",
        "p50 ms",
        "p99 ms",
        "recall@10"
    )?;
    writeln!(
        out,
        "{:<24} {:>9.3} {:>9.3} {:>12.3}",
        "HNSW (hnsw_rs, filter in)",
        percentile(&g, 0.5),
        percentile(&g, 0.99),
        recall
    )?;
    writeln!(
        out,
        "{:<24} {:>9.3} {:>9.3} {:>12.3}",
        "exact scan (peer)",
        percentile(&e, 0.5),
        percentile(&e, 0.99),
        1.0
    )?;
    writeln!(
        out,
        "HNSW vs exact scan: {:.1}x faster at p50",
        percentile(&e, 0.5) / percentile(&g, 0.5).max(1e-9)
    )?;

    // What embedding the question costs on top, with the real model.
    if let Ok(engine) = EmbeddingEngine::load(&MINILM.dir(&args.models_dir)) {
        let mut times = Vec::new();
        for q in queries.iter().take(100) {
            let t = Instant::now();
            engine.embed(&[EmbedInput::Text(q.clone())])?;
            times.push(t.elapsed());
        }
        times.sort();
        writeln!(
            out,
            "\nQuery embedding with MiniLM (added to every hybrid or vector search): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        )?;
    }
    Ok(())
}
