//! A BERT encoder (absolute positions, post-layer-norm, exact GELU) on candle tensors, for
//! sentence-embedding models such as all-MiniLM-L6-v2.
//!
//! Written here rather than taken from `candle-transformers` for two reasons: that crate compiles
//! every model it has (minutes of build on two cores, for one we use), and inference wants a
//! different shape than training code: query, key and value are one fused matrix (one GEMM
//! instead of three), and padding is masked with one additive bias per batch.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a Hugging Face `config.json` this encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn gelu() -> String {
    "gelu".into()
}

fn absolute() -> String {
    "absolute".into()
}

struct Layer {
    qkv: Linear,
    out: Linear,
    ln1: LayerNorm,
    up: Linear,
    down: Linear,
    ln2: LayerNorm,
}

pub struct Bert {
    word: Embedding,
    position: Tensor,
    token_type: Tensor,
    ln: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
}

fn linear(vb: &VarBuilder, name: &str, inp: usize, out: usize) -> candle_core::Result<Linear> {
    candle_nn::linear(inp, out, vb.pp(name))
}

fn layer_norm(
    vb: &VarBuilder,
    name: &str,
    size: usize,
    eps: f64,
) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb.pp(name))
}

impl Bert {
    pub fn load(vb: &VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        if c.hidden_act != "gelu" || c.position_embedding_type != "absolute" {
            return Err(candle_core::Error::Msg(format!(
                "unsupported BERT variant: activation `{}`, positions `{}`",
                c.hidden_act, c.position_embedding_type
            )));
        }
        let d = c.hidden_size;
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(c.vocab_size, d, e.pp("word_embeddings"))?;
        let position = e.get((c.max_position_embeddings, d), "position_embeddings.weight")?;
        let token_type = e.get((c.type_vocab_size, d), "token_type_embeddings.weight")?;
        let ln = layer_norm(&e, "LayerNorm", d, c.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention.self");
            let w = Tensor::cat(
                &[
                    a.get((d, d), "query.weight")?,
                    a.get((d, d), "key.weight")?,
                    a.get((d, d), "value.weight")?,
                ],
                0,
            )?;
            let b = Tensor::cat(
                &[
                    a.get(d, "query.bias")?,
                    a.get(d, "key.bias")?,
                    a.get(d, "value.bias")?,
                ],
                0,
            )?;
            layers.push(Layer {
                qkv: Linear::new(w, Some(b)),
                out: linear(&l, "attention.output.dense", d, d)?,
                ln1: layer_norm(&l, "attention.output.LayerNorm", d, c.layer_norm_eps)?,
                up: linear(&l, "intermediate.dense", d, c.intermediate_size)?,
                down: linear(&l, "output.dense", c.intermediate_size, d)?,
                ln2: layer_norm(&l, "output.LayerNorm", d, c.layer_norm_eps)?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            ln,
            layers,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    /// Hidden states `[batch, len, hidden]` for `ids` `[batch, len]`; `mask` is 1 for real tokens
    /// and 0 for padding, `[batch, len]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let d = self.heads * self.head_dim;
        let pos = self.position.narrow(0, 0, n)?;
        let tt = self.token_type.narrow(0, 0, 1)?;
        let mut x = self
            .word
            .forward(ids)?
            .broadcast_add(&pos)?
            .broadcast_add(&tt)?;
        x = self.ln.forward(&x)?;
        // Padding gets a large negative bias before the softmax: [b, 1, 1, n].
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, n))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((b, n, 3, self.heads, self.head_dim))?;
            let q = (qkv
                .narrow(2, 0, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?
                * scale)?;
            let k = qkv
                .narrow(2, 1, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = qkv
                .narrow(2, 2, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
            x = layer.ln1.forward(&(layer.out.forward(&ctx)? + &x)?)?;
            let h = layer.up.forward(&x)?.gelu_erf()?;
            x = layer.ln2.forward(&(layer.down.forward(&h)? + &x)?)?;
        }
        Ok(x)
    }
}

/// Mean over real tokens, then unit length: `[batch, hidden]`.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let mean = summed.broadcast_div(&m.sum(1)?)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

/// Builds `[batch, width]` id and mask tensors, padding with 0.
pub fn pad(rows: &[&[u32]], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(0u32, width - row.len()));
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.extend(std::iter::repeat_n(0u32, width - row.len()));
    }
    Ok((
        Tensor::from_vec(ids, (rows.len(), width), device)?,
        Tensor::from_vec(mask, (rows.len(), width), device)?,
    ))
}
