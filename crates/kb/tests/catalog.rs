//! The behaviour every knowledge-base `Catalog` must have: the same `check_*` functions run
//! against SQLite and against PostgreSQL (a real PostgreSQL 15 cluster the test makes with
//! `initdb`), where servers racing to ingest never take one document twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use enclave_kb::KbError;
use enclave_kb::catalog::{
    Catalog, DocumentChunks, NewChunk, NewDocument, NewKb, PgCatalog, QueuedDocument, SqliteCatalog,
};

fn kb(id: &str, tenant: &str, name: &str, created: i64) -> NewKb {
    NewKb {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        max_label: "SECRET".into(),
        default_label: Some("UNCLASSIFIED".into()),
        created,
    }
}

fn doc(id: &str, kb: &str, created: i64) -> NewDocument {
    NewDocument {
        id: id.into(),
        kb: kb.into(),
        name: format!("{id}.txt"),
        format: "text".into(),
        label: "SECRET".into(),
        given_label: Some("UNCLASSIFIED".into()),
        text: format!("(S) the text of {id}"),
        pages: vec![0],
        sha256: "ab".repeat(32),
        bytes: 42,
        uploader: "key_1".into(),
        created,
    }
}

fn chunk<'a>(label: &'a str, text: &'a str, vector: &'a [f32]) -> NewChunk<'a> {
    NewChunk {
        label,
        text,
        page: Some(1),
        start: 0,
        end: text.len() as u64,
        vector,
    }
}

async fn check_knowledge_bases_are_per_tenant(c: &dyn Catalog) {
    c.create(&kb("kb_1", "t_a", "cases", 10)).await.unwrap();
    c.create(&kb("kb_2", "t_a", "forms", 11)).await.unwrap();
    // The same name in another tenant is another knowledge base.
    c.create(&kb("kb_3", "t_b", "cases", 12)).await.unwrap();
    assert!(matches!(
        c.create(&kb("kb_4", "t_a", "cases", 13)).await,
        Err(KbError::Exists(name)) if name == "cases"
    ));
    assert_eq!(
        c.resolve("t_a", "cases").await.unwrap().as_deref(),
        Some("kb_1")
    );
    assert_eq!(
        c.resolve("t_a", "kb_2").await.unwrap().as_deref(),
        Some("kb_2")
    );
    assert_eq!(
        c.resolve("t_b", "cases").await.unwrap().as_deref(),
        Some("kb_3")
    );
    // Another tenant's knowledge base does not resolve, by name or by id.
    assert_eq!(c.resolve("t_b", "kb_1").await.unwrap(), None);
    assert_eq!(c.resolve("t_b", "forms").await.unwrap(), None);
    assert_eq!(c.list("t_a").await.unwrap(), ["kb_1", "kb_2"]);
    assert_eq!(c.list("t_b").await.unwrap(), ["kb_3"]);
    assert!(c.list("t_c").await.unwrap().is_empty());
    assert_eq!(c.all().await.unwrap(), ["kb_1", "kb_2", "kb_3"]);
    let got = c.get("kb_1").await.unwrap().unwrap();
    assert_eq!(
        (
            got.tenant.as_str(),
            got.name.as_str(),
            got.max_label.as_str()
        ),
        ("t_a", "cases", "SECRET")
    );
    assert_eq!(got.default_label.as_deref(), Some("UNCLASSIFIED"));
    assert_eq!((got.created, got.chunks), (10, 0));
    assert_eq!(got.documents, Default::default());
    assert_eq!(c.get("kb_none").await.unwrap(), None);
}

async fn check_documents_and_ingestion(c: &dyn Catalog) {
    c.create(&kb("kb_d", "t_a", "docs", 20)).await.unwrap();
    c.create(&kb("kb_e", "t_a", "other", 21)).await.unwrap();
    for (i, id) in ["doc_1", "doc_2", "doc_3"].iter().enumerate() {
        c.add_document(&doc(id, "kb_d", 100 + i as i64))
            .await
            .unwrap();
    }
    let d1 = c.document("kb_d", "doc_1").await.unwrap().unwrap();
    assert_eq!(
        (d1.status.as_str(), d1.label.as_str(), d1.bytes, d1.pages),
        ("queued", "SECRET", 42, 1)
    );
    assert_eq!(d1.knowledge_base, "kb_d");
    // A document is found only in its own knowledge base.
    assert_eq!(c.document("kb_e", "doc_1").await.unwrap(), None);
    let names: Vec<String> = c
        .documents("kb_d")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(names, ["doc_1", "doc_2", "doc_3"]);
    assert!(c.documents("kb_e").await.unwrap().is_empty());

    // Claiming takes the oldest queued documents and marks them indexing.
    let claimed = c.claim(2).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["doc_1", "doc_2"]);
    assert_eq!(
        claimed[0],
        QueuedDocument {
            id: "doc_1".into(),
            kb: "kb_d".into(),
            text: "(S) the text of doc_1".into(),
            pages: vec![0],
            given_label: Some("UNCLASSIFIED".into()),
        }
    );
    let counts = c.get("kb_d").await.unwrap().unwrap().documents;
    assert_eq!((counts.queued, counts.indexing), (1, 2));
    // What is claimed is not claimed twice.
    let next = c.claim(10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, "doc_3");
    assert!(c.claim(10).await.unwrap().is_empty());
    // An embedder that is not ready sends a batch back.
    c.requeue(&["doc_3".into()]).await.unwrap();
    assert_eq!(
        c.document("kb_d", "doc_3").await.unwrap().unwrap().status,
        "queued"
    );

    let v = [0.5f32, -0.25, 1.0];
    let written = c
        .write_chunks(&[
            DocumentChunks {
                document: "doc_1",
                kb: "kb_d",
                chunks: vec![
                    chunk("SECRET", "first", &v),
                    chunk("UNCLASSIFIED", "second", &v),
                ],
            },
            DocumentChunks {
                document: "doc_2",
                kb: "kb_d",
                chunks: vec![chunk("SECRET", "third", &v)],
            },
        ])
        .await
        .unwrap();
    assert_eq!(written.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    // Chunks of documents not yet ready are not loaded into indexes.
    assert!(c.ready_chunks("kb_d").await.unwrap().is_empty());
    c.finish(&["doc_1".into()], &[("doc_2".into(), "unreadable".into())])
        .await
        .unwrap();
    let ready = c.ready_chunks("kb_d").await.unwrap();
    assert_eq!(ready.len(), 2);
    assert_eq!(ready[0].id, written[0][0]);
    assert_eq!(
        (ready[0].text.as_str(), ready[0].label.as_str()),
        ("first", "SECRET")
    );
    assert_eq!(ready[1].label, "UNCLASSIFIED");
    assert_eq!(ready[0].vector, v, "vectors come back bit for bit");
    let failed = c.document("kb_d", "doc_2").await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("failed", Some("unreadable"))
    );
    let d1 = c.document("kb_d", "doc_1").await.unwrap().unwrap();
    assert_eq!((d1.status.as_str(), d1.chunks), ("ready", 2));
    let record = c.get("kb_d").await.unwrap().unwrap();
    assert_eq!(record.chunks, 3);
    assert_eq!(
        (
            record.documents.ready,
            record.documents.failed,
            record.documents.queued
        ),
        (1, 1, 1)
    );

    // Passages are found by id within their knowledge base only.
    let mut passages = c
        .passages("kb_d", &[written[0][1], written[0][0], 999_999])
        .await
        .unwrap();
    passages.sort_by_key(|p| p.id);
    assert_eq!(passages.len(), 2);
    assert_eq!(passages[0].document_name, "doc_1.txt");
    assert_eq!(
        (passages[1].text.as_str(), passages[1].page, passages[1].end),
        ("second", Some(1), 6)
    );
    assert!(
        c.passages("kb_e", &[written[0][0]])
            .await
            .unwrap()
            .is_empty()
    );

    // Writing a document's chunks again replaces them.
    let again = c
        .write_chunks(&[DocumentChunks {
            document: "doc_1",
            kb: "kb_d",
            chunks: vec![chunk("SECRET", "only", &v)],
        }])
        .await
        .unwrap();
    let ready = c.ready_chunks("kb_d").await.unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, again[0][0]);
    // A follower's read: the ready chunks of the documents it names, none of another's.
    let named = c
        .document_chunks("kb_d", &["doc_1".to_string(), "doc_none".to_string()])
        .await
        .unwrap();
    assert_eq!(named, ready);
    assert!(
        c.document_chunks("kb_e", &["doc_1".to_string()])
            .await
            .unwrap()
            .is_empty()
    );

    // Deleting needs the right knowledge base, and says which chunks went.
    assert!(matches!(
        c.delete_document("kb_e", "doc_1").await,
        Err(KbError::NoDocument(_))
    ));
    assert!(c.document("kb_d", "doc_1").await.unwrap().is_some());
    assert_eq!(c.delete_document("kb_d", "doc_1").await.unwrap(), again[0]);
    assert_eq!(c.document("kb_d", "doc_1").await.unwrap(), None);
    assert!(c.ready_chunks("kb_d").await.unwrap().is_empty());
}

async fn check_interrupted_ingestion_is_requeued(c: &dyn Catalog) {
    c.create(&kb("kb_r", "t_r", "r", 30)).await.unwrap();
    c.add_document(&doc("doc_r", "kb_r", 300)).await.unwrap();
    let claimed = c.claim(16).await.unwrap();
    assert!(claimed.iter().any(|d| d.id == "doc_r"));
    let v = [1.0f32];
    c.write_chunks(&[DocumentChunks {
        document: "doc_r",
        kb: "kb_r",
        chunks: vec![chunk("SECRET", "half done", &v)],
    }])
    .await
    .unwrap();
    // A crash here: the document is indexing with chunks written.
    let (documents, chunks) = c.requeue_interrupted().await.unwrap();
    assert!(documents >= 1 && chunks >= 1, "{documents} {chunks}");
    let d = c.document("kb_r", "doc_r").await.unwrap().unwrap();
    assert_eq!((d.status.as_str(), d.chunks), ("queued", 0));
    assert_eq!(c.get("kb_r").await.unwrap().unwrap().chunks, 0);
    assert_eq!(c.requeue_interrupted().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn sqlite_catalog_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let c = SqliteCatalog::open(&path).await.unwrap();
    check_knowledge_bases_are_per_tenant(&c).await;
    check_documents_and_ingestion(&c).await;
    check_interrupted_ingestion_is_requeued(&c).await;
    drop(c);
    // Everything is on disk: a reopened catalog has it.
    let c = SqliteCatalog::open(&path).await.unwrap();
    assert_eq!(c.list("t_a").await.unwrap().len(), 4);
    assert_eq!(c.documents("kb_d").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_conformance() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let url = cluster.create_database("catalog").unwrap();
    let c = PgCatalog::open(&url, 4)
        .await
        .unwrap()
        .abandoned_after(std::time::Duration::ZERO);
    check_knowledge_bases_are_per_tenant(&c).await;
    check_documents_and_ingestion(&c).await;
    check_interrupted_ingestion_is_requeued(&c).await;
    // A second server on the same database sees it all (and migrating again changes nothing).
    let other = PgCatalog::open(&url, 4).await.unwrap();
    assert_eq!(other.list("t_a").await.unwrap().len(), 4);
    assert_eq!(other.documents("kb_d").await.unwrap().len(), 2);
    // A document indexing on a live server is not taken from it by another starting.
    other
        .add_document(&doc("doc_live", "kb_r", 400))
        .await
        .unwrap();
    assert!(
        other
            .claim(16)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == "doc_live")
    );
    let fresh = PgCatalog::open(&url, 4).await.unwrap();
    assert_eq!(fresh.requeue_interrupted().await.unwrap(), (0, 0));

    // Three servers claiming at once never take one document twice.
    for i in 0..60 {
        c.add_document(&doc(&format!("doc_race_{i}"), "kb_r", 500 + i))
            .await
            .unwrap();
    }
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(PgCatalog::open(&url, 4).await.unwrap());
    }
    let claims = futures::future::join_all(servers.iter().map(|s| async move {
        let mut mine = Vec::new();
        loop {
            let got = s.claim(4).await.unwrap();
            if got.is_empty() {
                break mine;
            }
            mine.extend(got.into_iter().map(|d| d.id));
        }
    }))
    .await;
    let mut all: Vec<String> = claims.into_iter().flatten().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (60, 60), "every document claimed once");
}
