//! Sentence embeddings: all-MiniLM-L6-v2 (BERT) on candle, mean-pooled and L2-normalised, as
//! sentence-transformers computes them.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::{Tokenizer, TruncationParams};

use crate::EngineError;
use crate::bert::{self, Bert, BertConfig};

/// The longest input the model was trained to read, in tokens (sentence-transformers'
/// `max_seq_length` for this model); longer inputs are truncated, as the reference does.
pub const MAX_TOKENS: usize = 256;

/// Inputs per forward pass. Larger batches pad more and gain nothing on two cores.
const MAX_BATCH: usize = 32;

/// The embedding model.
pub struct EmbeddingEngine {
    model: Bert,
    tokenizer: Tokenizer,
    dims: usize,
    /// One forward pass at a time: candle already spreads a pass over every core, and two passes
    /// at once would only fight over them.
    running: Mutex<()>,
    device: Device,
}

/// An input to embed: text, or token ids of this model's vocabulary.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// Vectors and the tokens they cost.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

impl EmbeddingEngine {
    /// Loads the model from a directory holding `model.safetensors`, `tokenizer.json` and
    /// `config.json`.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let load =
            |what: &str, e: &dyn std::fmt::Display| EngineError::Load(format!("{what}: {e}"));
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| EngineError::io(&config_path, e))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| load("config.json", &e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load("tokenizer.json", &e))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load("tokenizer truncation", &e))?;
        // tokenizer.json pads to a fixed 128; batches are padded here, to their longest input.
        tokenizer.with_padding(None);
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        // Read into memory rather than mmap: candle's mmap constructor is `unsafe` (the file could
        // change underneath), and 90 MB read once at start-up costs nothing that matters.
        let bytes = std::fs::read(&weights).map_err(|e| EngineError::io(&weights, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| load("model.safetensors", &e))?;
        let model = Bert::load(&vb, &config).map_err(|e| load("BERT weights", &e))?;
        Ok(Self {
            model,
            tokenizer,
            dims: config.hidden_size,
            running: Mutex::new(()),
            device,
        })
    }

    /// The text token ids stand for, so content sent as ids is inspected like text. Ids outside
    /// the vocabulary decode to nothing.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// Width of every vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Embeds inputs in order. Blocking: call it from a blocking thread.
    ///
    /// Inputs are sorted by length and cut into batches of similar lengths, so little compute
    /// goes to padding; results come back in the caller's order.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Embeddings, EngineError> {
        let ids = self.ids(inputs)?;
        let tokens = ids.iter().map(Vec::len).sum();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut vectors = vec![Vec::new(); ids.len()];
        for batch in order.chunks(MAX_BATCH) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in batch.iter().zip(self.forward(&rows)?) {
                vectors[i] = v;
            }
        }
        Ok(Embeddings { vectors, tokens })
    }

    fn ids(&self, chunk: &[EmbedInput]) -> Result<Vec<Vec<u32>>, EngineError> {
        let cls = self.tokenizer.token_to_id("[CLS]").unwrap_or(101);
        let sep = self.tokenizer.token_to_id("[SEP]").unwrap_or(102);
        let vocab = self.tokenizer.get_vocab_size(true) as u32;
        chunk
            .iter()
            .map(|input| match input {
                EmbedInput::Text(text) => self
                    .tokenizer
                    .encode(text.as_str(), true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| EngineError::Embed(e.to_string())),
                EmbedInput::Tokens(ids) => {
                    if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
                        return Err(EngineError::InvalidToken { token: *bad, vocab });
                    }
                    let mut v = Vec::with_capacity(ids.len().min(MAX_TOKENS - 2) + 2);
                    v.push(cls);
                    v.extend(ids.iter().take(MAX_TOKENS - 2));
                    v.push(sep);
                    Ok(v)
                }
            })
            .collect()
    }

    fn forward(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let err = |e: candle_core::Error| EngineError::Embed(e.to_string());
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let _guard = self
            .running
            .lock()
            .map_err(|_| EngineError::Embed("a previous embedding pass panicked".into()))?;
        let (ids, mask) = bert::pad(rows, &self.device).map_err(err)?;
        let hidden = self.model.forward(&ids, &mask).map_err(err)?;
        bert::mean_pool_normalize(&hidden, &mask)
            .map_err(err)?
            .to_vec2::<f32>()
            .map_err(err)
    }
}
