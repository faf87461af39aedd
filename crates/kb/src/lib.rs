//! Knowledge bases: agency documents turned into labelled passages for retrieval.
//!
//! This crate owns how a document's markings become the labels of its parts: [`segment`] reads
//! banner and portion markings into labelled paragraphs, [`chunk`] packs paragraphs into
//! passages that never mix two labels. It must never give a passage a label lower than a marking
//! in its text or in its document's banner; a document with no marking and no given label is
//! refused rather than guessed.

pub mod segment;

pub use segment::{Chunk, Paragraph, SegmentError, Segmented, chunk, segment};
