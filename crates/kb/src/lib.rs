//! Knowledge bases: agency documents turned into labelled passages, indexed, and retrieved only
//! by readers whose label dominates them.
//!
//! This crate owns how a document's markings become the labels of its parts ([`segment`],
//! [`chunk`]), reading files ([`extract`]), the full-text ([`text`]) and vector ([`vectors`])
//! indexes with the label filter inside each search, and the service tying them together with a
//! background ingestion worker ([`service`]). It must never give a passage a label lower than a
//! marking in its text or its document's banner, never guess a label for an unmarked document,
//! and never return a passage its reader's label does not dominate. It knows nothing of HTTP.

pub mod catalog;
pub mod error;
pub mod eval;
pub mod extract;
pub mod segment;
pub mod service;
pub mod testdata;
pub mod text;
pub mod vectors;

pub use segment::{Chunk, Paragraph, SegmentError, Segmented, chunk, segment};
pub use service::{
    DocumentInfo, EmbedError, Embedder, Hit, KbError, KbInfo, KnowledgeBases, Mode, Upload,
};
