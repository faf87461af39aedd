//! The full-text index of one knowledge base: BM25 over chunk text (`tantivy`), with the label
//! filter as a required clause of the query itself, so the top `k` are `k` visible chunks.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// The analyzer for chunk text and queries: words, lower-cased, English stop words dropped (a
/// question's "what", "is", "the" would otherwise match every passage and drown the words that
/// matter), stemmed.
const ANALYZER: &str = "en_stem_stop";

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// Memory the writer may buffer before it flushes a segment.
const WRITER_BYTES: usize = 50_000_000;

pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    chunk: Field,
    doc: Field,
    label: Field,
    text: Field,
}

/// One chunk to index.
pub struct TextRow<'a> {
    pub chunk: i64,
    pub document: &'a str,
    pub label: &'a str,
    pub text: &'a str,
}

impl TextIndex {
    /// Opens the index in `dir`, creating it if absent.
    pub fn open(dir: &Path) -> tantivy::Result<Self> {
        let mut builder = Schema::builder();
        let chunk = builder.add_i64_field("chunk", INDEXED | FAST);
        let doc = builder.add_text_field("doc", STRING);
        let label = builder.add_text_field("label", STRING);
        let text = builder.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let schema = builder.build();
        std::fs::create_dir_all(dir)?;
        let directory = MmapDirectory::open(dir)?;
        let index = Index::open_or_create(directory, schema)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            chunk,
            doc,
            label,
            text,
        })
    }

    /// Adds chunks; they become searchable at the next [`TextIndex::commit`].
    pub fn add(&self, rows: &[TextRow<'_>]) -> tantivy::Result<()> {
        let writer = self.lock();
        for row in rows {
            let mut d = TantivyDocument::default();
            d.add_i64(self.chunk, row.chunk);
            d.add_text(self.doc, row.document);
            d.add_text(self.label, row.label);
            d.add_text(self.text, row.text);
            writer.add_document(d)?;
        }
        Ok(())
    }

    /// Removes every chunk of a document (at the next commit).
    pub fn delete_document(&self, document: &str) {
        self.lock()
            .delete_term(Term::from_field_text(self.doc, document));
    }

    /// Removes everything (at the next commit).
    pub fn clear(&self) -> tantivy::Result<()> {
        self.lock().delete_all_documents().map(|_| ())
    }

    /// Makes what was added and deleted durable and visible to searches.
    pub fn commit(&self) -> tantivy::Result<()> {
        self.lock().commit()?;
        self.reader.reload()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the writer leaves it usable: tantivy's own state is consistent
        // between calls.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunks searchable now.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` best chunks for `query` by BM25 among chunks whose label is one of `visible`,
    /// best first, with their scores.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        visible: &[&str],
    ) -> tantivy::Result<Vec<(i64, f32)>> {
        if visible.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        // Free text from users: parse leniently (an unmatched quote is not an error).
        let (text_query, _) = parser.parse_query_lenient(query);
        let filter =
            TermSetQuery::new(visible.iter().map(|l| Term::from_field_text(self.label, l)));
        let query = BooleanQuery::new(vec![
            (Occur::Must, text_query),
            (Occur::Must, Box::new(filter) as Box<dyn Query>),
        ]);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k))?;
        let mut out = Vec::with_capacity(top.len());
        for (
            score,
            DocAddress {
                segment_ord,
                doc_id,
            },
        ) in top
        {
            let column = searcher
                .segment_reader(segment_ord)
                .fast_fields()
                .i64("chunk")?;
            if let Some(chunk) = column.first(doc_id) {
                out.push((chunk, score));
            }
        }
        Ok(out)
    }

    /// How many indexed chunks belong to `document` (for consistency checks).
    pub fn count_document(&self, document: &str) -> tantivy::Result<usize> {
        let q = tantivy::query::TermQuery::new(
            Term::from_field_text(self.doc, document),
            IndexRecordOption::Basic,
        );
        self.reader.searcher().search(&q, &Count)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn bm25_with_the_label_filter_inside_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open(dir.path()).unwrap();
        let mut rows = Vec::new();
        let texts: Vec<String> = (0..30)
            .map(|i| {
                if i < 20 {
                    format!("satellite imagery anomaly report number {i} satellite satellite")
                } else {
                    format!("routine note {i} mentions a satellite once")
                }
            })
            .collect();
        for (i, t) in texts.iter().enumerate() {
            rows.push(TextRow {
                chunk: i as i64,
                document: if i < 20 { "secret-doc" } else { "open-doc" },
                label: if i < 20 { "S" } else { "U" },
                text: t,
            });
        }
        index.add(&rows).unwrap();
        index.commit().unwrap();
        assert_eq!(index.len(), 30);
        // The twenty best matches are secret; a U reader still gets five U hits.
        let hits = index.search("satellite", 5, &["U"]).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|(c, _)| *c >= 20));
        let top = index.search("satellite", 1, &["U", "S"]).unwrap();
        assert!(top[0].0 < 20);
        // Stemming: "anomalies" finds "anomaly".
        assert_eq!(index.search("anomalies", 50, &["S"]).unwrap().len(), 20);
        // Unbalanced quotes are not an error.
        assert!(index.search("\"satellite", 5, &["U"]).is_ok());

        index.delete_document("secret-doc");
        index.commit().unwrap();
        assert_eq!(index.len(), 10);
        assert_eq!(index.count_document("secret-doc").unwrap(), 0);
        drop(index);
        let reopened = TextIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 10);
    }
}
