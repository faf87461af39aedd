#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
//! The service end to end on a real catalog and real indexes, with a small deterministic
//! embedder (hashed words) standing in for MiniLM: these tests are about labels, ingestion and
//! consistency, not retrieval quality (the evaluation set measures that with the real model).

use std::sync::Arc;
use std::time::Duration;

use enclave_kb::{EmbedError, Embedder, KbError, KnowledgeBases, Mode, Upload};
use enclave_label::{Label, Scheme};

struct Hashed;

impl Embedder for Hashed {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                for w in t
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w
                        .to_lowercase()
                        .bytes()
                        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
                    v[(h % 64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

fn scheme() -> Scheme {
    Scheme::builtin("US").unwrap()
}

fn label(s: &str) -> Label {
    scheme().parse(s).unwrap()
}

fn upload(name: &str, text: &str, given: Option<&str>, clearance: &str) -> Upload {
    Upload {
        name: name.into(),
        media_type: None,
        bytes: text.as_bytes().to_vec(),
        label: given.map(label),
        uploader: "key_test".into(),
        clearance: label(clearance),
    }
}

async fn settle(kbs: &KnowledgeBases, tenant: &str, kb: &str) {
    for _ in 0..200 {
        let info = kbs.get(tenant, kb).await.unwrap();
        if info.documents.queued == 0 && info.documents.indexing == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ingestion did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_ingestion_search_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = KnowledgeBases::open(dir.path(), scheme(), Arc::new(Hashed), 64)
        .await
        .unwrap();
    let ts = label("TS//SI");
    let kb = kbs
        .create("agency", "reports", &label("S"), None, &ts)
        .await
        .unwrap();
    // A maximum above the creator's clearance is refused.
    assert!(matches!(
        kbs.create("agency", "x", &label("TS"), None, &label("S"))
            .await,
        Err(KbError::AboveClearance(_))
    ));
    assert!(matches!(
        kbs.create("agency", "reports", &label("S"), None, &ts)
            .await,
        Err(KbError::Exists(_))
    ));

    let mixed = "(U) The harbour crane inspection is due in March.\n\n(S) The harbour crane hides a radar relay.\n\n(C) Crane maintenance contracts are renewed yearly.";
    let doc = kbs
        .add(
            "agency",
            "reports",
            upload("mixed.txt", mixed, None, "TS//SI"),
        )
        .await
        .unwrap();
    assert_eq!(doc.label, "SECRET");
    kbs.add(
        "agency",
        &kb.id,
        upload(
            "plain.md",
            "Crane schedules for the harbour.",
            Some("U"),
            "S",
        ),
    )
    .await
    .unwrap();
    // Unmarked and no label given: refused, nothing stored.
    assert!(matches!(
        kbs.add(
            "agency",
            "reports",
            upload("bare.txt", "no marks here", None, "S")
        )
        .await,
        Err(KbError::Unlabelled { .. })
    ));
    // Above the uploader's clearance, and above the knowledge base's maximum.
    assert!(matches!(
        kbs.add(
            "agency",
            "reports",
            upload("s.txt", "SECRET\n\nCrane.", None, "C")
        )
        .await,
        Err(KbError::AboveClearance(_))
    ));
    assert!(matches!(
        kbs.add(
            "agency",
            "reports",
            upload("ts.txt", "TOP SECRET\n\nCrane.", None, "TS")
        )
        .await,
        Err(KbError::AboveMaximum(_))
    ));
    assert!(matches!(
        kbs.add("agency", "reports", upload("a.exe", "x", Some("U"), "S"))
            .await,
        Err(KbError::Unreadable { .. })
    ));
    // Another tenant cannot see it.
    assert!(matches!(
        kbs.get("other", &kb.id).await,
        Err(KbError::NoKnowledgeBase(_))
    ));
    settle(&kbs, "agency", "reports").await;
    let info = kbs.get("agency", "reports").await.unwrap();
    assert_eq!(info.documents.ready, 2);
    assert_eq!(info.chunks, 4);
    assert_eq!(info.indexed_text, 4);
    assert_eq!(info.indexed_vectors, 4);

    for mode in [Mode::Hybrid, Mode::Vector, Mode::Text] {
        let u = kbs
            .search(
                "agency",
                "reports",
                &label("U"),
                "harbour crane radar",
                5,
                mode,
            )
            .await
            .unwrap();
        assert!(!u.is_empty(), "{mode:?}");
        assert!(
            u.iter().all(|h| h.label == "UNCLASSIFIED"),
            "{mode:?}: {u:?}"
        );
        let s = kbs
            .search(
                "agency",
                "reports",
                &label("S"),
                "harbour crane radar",
                5,
                mode,
            )
            .await
            .unwrap();
        assert!(s.iter().any(|h| h.text.contains("radar relay")), "{mode:?}");
    }
    let hits = kbs
        .search(
            "agency",
            "reports",
            &label("S"),
            "radar relay",
            1,
            Mode::Hybrid,
        )
        .await
        .unwrap();
    assert_eq!(hits[0].document, doc.id);
    let span = &mixed[hits[0].start as usize..hits[0].end as usize];
    assert!(
        span.contains("radar relay"),
        "offsets point into the document: {span}"
    );

    kbs.delete("agency", "reports", &doc.id).await.unwrap();
    let info = kbs.get("agency", "reports").await.unwrap();
    assert_eq!(
        (info.chunks, info.indexed_text, info.indexed_vectors),
        (1, 1, 1)
    );
    let after = kbs
        .search(
            "agency",
            "reports",
            &label("TS//SI"),
            "radar relay crane",
            10,
            Mode::Hybrid,
        )
        .await
        .unwrap();
    assert!(after.iter().all(|h| h.document != doc.id));
    drop(kbs);

    // The worker lets go of the indexes within its one-second wait.
    let mut reopened = None;
    for _ in 0..40 {
        match KnowledgeBases::open(dir.path(), scheme(), Arc::new(Hashed), 64).await {
            Ok(k) => {
                reopened = Some(k);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let reopened = reopened.expect("reopen");
    let info = reopened.get("agency", "reports").await.unwrap();
    assert_eq!(
        (info.chunks, info.indexed_text, info.indexed_vectors),
        (1, 1, 1)
    );
    let hits = reopened
        .search(
            "agency",
            "reports",
            &label("U"),
            "crane schedules",
            5,
            Mode::Hybrid,
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
}
