//! Retrieval quality on the committed evaluation set (`enclave_kb::eval`), with the real
//! MiniLM model: recall@5 and MRR for vector-only, BM25-only and hybrid search, printed as a
//! table (`cargo test -p enclave --test kb_eval -- --nocapture`). Hybrid must beat both.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use enclave_engine::EmbeddingEngine;
use enclave_engine::models::MINILM;
use enclave_kb::eval::{eval_set, score};
use enclave_kb::{KnowledgeBases, Mode, Upload};
use enclave_label::Scheme;
use enclave_service::Models;
use enclave_service::retrieval::EngineEmbedder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_retrieval_beats_vector_only_and_bm25_only() {
    let models = Arc::new(Models::default());
    let engine = EmbeddingEngine::load(&MINILM.dir(&common::models_dir())).unwrap();
    let _ = models.embedding.set(Arc::new(engine));
    let scheme = Scheme::builtin("US").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kbs = KnowledgeBases::open(
        dir.path(),
        scheme.clone(),
        Arc::new(EngineEmbedder(models)),
        384,
    )
    .await
    .unwrap();
    let u = scheme.parse("U").unwrap();
    kbs.create("eval", "eval", &u, None, &u).await.unwrap();
    let (docs, questions) = eval_set();
    for d in &docs {
        kbs.add(
            "eval",
            "eval",
            Upload {
                name: d.name.clone(),
                media_type: None,
                bytes: d.text.clone().into_bytes(),
                label: Some(u.clone()),
                uploader: "eval".into(),
                clearance: u.clone(),
            },
        )
        .await
        .unwrap();
    }
    for _ in 0..600 {
        let info = kbs.get("eval", "eval").await.unwrap();
        if info.documents.ready as usize == docs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut table = Vec::new();
    for (name, mode) in [
        ("vector", Mode::Vector),
        ("bm25", Mode::Text),
        ("hybrid", Mode::Hybrid),
    ] {
        let mut ranked = Vec::new();
        for q in &questions {
            let hits = kbs
                .search("eval", "eval", &u, &q.question, 10, mode)
                .await
                .unwrap();
            ranked.push(
                hits.into_iter()
                    .map(|h| h.document_name)
                    .collect::<Vec<_>>(),
            );
        }
        let (recall, mrr) = score(&ranked, &questions, 5);
        let by_kind = |kind: &str| {
            let (r, q): (Vec<_>, Vec<_>) = ranked
                .iter()
                .cloned()
                .zip(questions.iter().cloned())
                .filter(|(_, q)| q.kind == kind)
                .unzip();
            score(&r, &q, 5)
        };
        let (para_r, para_m) = by_kind("paraphrase");
        let (id_r, id_m) = by_kind("identifier");
        table.push((name, recall, mrr, para_r, para_m, id_r, id_m));
    }
    eprintln!(
        "\n{} questions over {} documents\n{:<8} {:>9} {:>7} | {:>18} {:>7} | {:>18} {:>7}",
        questions.len(),
        docs.len(),
        "mode",
        "recall@5",
        "MRR",
        "paraphrase rec@5",
        "MRR",
        "identifier rec@5",
        "MRR"
    );
    for (name, r, m, pr, pm, ir, im) in &table {
        eprintln!("{name:<8} {r:>9.3} {m:>7.3} | {pr:>18.3} {pm:>7.3} | {ir:>18.3} {im:>7.3}");
    }
    let (_, vr, vm, ..) = table[0];
    let (_, br, bm, ..) = table[1];
    let (_, hr, hm, ..) = table[2];
    assert!(
        hr > vr && hr > br,
        "hybrid recall@5 {hr:.3} must beat vector {vr:.3} and bm25 {br:.3}"
    );
    assert!(
        hm > vm && hm > bm,
        "hybrid MRR {hm:.3} must beat vector {vm:.3} and bm25 {bm:.3}"
    );
}
