//! LoRA supervised fine-tuning of the embedded chat model, on the CPU, in Rust (candle).
//!
//! This crate owns reading a llama-architecture GGUF's weights ([`model::Base`]), the forward
//! pass with low-rank adapters on the attention's query and value projections, training them
//! with AdamW on tokenized chat examples whose loss counts only the answer ([`train::train`]),
//! and writing the result as a llama.cpp LoRA adapter ([`adapter::write`]) that the engine
//! serves over the unchanged base. The device is a parameter of the model (the CPU today), so a
//! GPU trainer can come later.
//!
//! It must never modify the base model's file and never read data it was not handed; it knows
//! nothing of labels, tenants or HTTP — the service decides who may train on what, and what a
//! trained model is labelled.

use std::path::PathBuf;

pub mod adapter;
pub mod model;
pub mod train;

/// Where training runs: the CPU today; a CUDA device where candle is built for it.
pub use candle_core::Device;
pub use model::{Adapters, Base, Shape};
pub use train::{Example, Outcome, Progress, Settings, train};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fine-tune this model: {0}")]
    Model(String),
    #[error("bad training data: {0}")]
    Data(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cancelled")]
    Cancelled,
    /// The listener refused to let training go on (for example, a quota is spent).
    #[error("{0}")]
    Refused(String),
}
