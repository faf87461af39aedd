//! Sentence embeddings: all-MiniLM-L6-v2 (BERT) on candle, mean-pooled and L2-normalised, as
//! sentence-transformers computes them.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::EngineError;

/// The longest input the model was trained to read, in tokens (sentence-transformers'
/// `max_seq_length` for this model); longer inputs are truncated, as the reference does.
pub const MAX_TOKENS: usize = 256;

/// Inputs per forward pass. Larger batches pad more and gain nothing on two cores.
const MAX_BATCH: usize = 32;

/// The embedding model.
pub struct EmbeddingEngine {
    model: BertModel,
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
        let config: Config =
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
        let model = BertModel::load(vb, &config).map_err(|e| load("BERT weights", &e))?;
        Ok(Self {
            model,
            tokenizer,
            dims: config.hidden_size,
            running: Mutex::new(()),
            device,
        })
    }

    /// Width of every vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Counts the tokens an input costs, special tokens included.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EngineError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EngineError::Embed(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// Embeds inputs in order. Blocking: call it from a blocking thread.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Embeddings, EngineError> {
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        for chunk in inputs.chunks(MAX_BATCH) {
            let ids = self.ids(chunk)?;
            tokens += ids.iter().map(Vec::len).sum::<usize>();
            vectors.extend(self.forward(&ids)?);
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

    fn forward(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let err = |e: candle_core::Error| EngineError::Embed(e.to_string());
        let width = ids.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Ok(vec![]);
        }
        let n = ids.len();
        let mut flat = Vec::with_capacity(n * width);
        let mut mask = Vec::with_capacity(n * width);
        for row in ids {
            flat.extend(row.iter().copied());
            flat.extend(std::iter::repeat_n(0u32, width - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, width - row.len()));
        }
        let _guard = self
            .running
            .lock()
            .map_err(|_| EngineError::Embed("a previous embedding pass panicked".into()))?;
        let input = Tensor::from_vec(flat, (n, width), &self.device).map_err(err)?;
        let mask = Tensor::from_vec(mask, (n, width), &self.device).map_err(err)?;
        let types = input.zeros_like().map_err(err)?;
        let hidden = self
            .model
            .forward(&input, &types, Some(&mask))
            .map_err(err)?;
        // Mean over the real tokens only, then unit length.
        let maskf = mask
            .to_dtype(DType::F32)
            .map_err(err)?
            .unsqueeze(2)
            .map_err(err)?;
        let summed = hidden
            .broadcast_mul(&maskf)
            .map_err(err)?
            .sum(1)
            .map_err(err)?;
        let counts = maskf.sum(1).map_err(err)?;
        let mean = summed.broadcast_div(&counts).map_err(err)?;
        let norm = mean
            .sqr()
            .map_err(err)?
            .sum_keepdim(1)
            .map_err(err)?
            .sqrt()
            .map_err(err)?;
        let unit = mean
            .broadcast_div(&norm.clamp(1e-12, f64::MAX).map_err(err)?)
            .map_err(err)?;
        unit.to_vec2::<f32>().map_err(err)
    }
}
