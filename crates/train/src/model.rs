//! A llama-architecture model read from its GGUF file, with low-rank adapters on the attention's
//! query and value projections, as candle computes it (and differentiates it) on the CPU.
//!
//! The base weights are dequantized once and never change; only the adapters are variables, so
//! backpropagation reaches no further down than the lowest adapted layer. The computation is the
//! one llama.cpp runs for this architecture (RMS norm, rotary positions on interleaved pairs —
//! GGUF stores the query and key rows permuted for that — grouped-query attention, SwiGLU), so an
//! adapter trained here means the same thing when llama.cpp applies it.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{D, DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::TrainError;

/// The shape of a llama-architecture model, from its GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub architecture: String,
    pub layers: usize,
    pub embedding: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
}

struct Layer {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The frozen base model.
pub struct Base {
    pub shape: Shape,
    embed: Tensor,
    /// The output projection: `output.weight`, or the embedding when they are tied.
    output: Tensor,
    norm: Tensor,
    layers: Vec<Layer>,
    device: Device,
}

/// Which projection an adapter changes, by its GGUF tensor name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Query,
    Value,
}

impl Target {
    pub fn tensor_name(self) -> &'static str {
        match self {
            Target::Query => "attn_q",
            Target::Value => "attn_v",
        }
    }
}

/// One low-rank adapter: `W + (alpha / rank) · B·A`, with `A` of shape (rank, in) and `B` of
/// shape (out, rank). `B` starts at zero, so training starts from the base model exactly.
pub struct Adapter {
    pub layer: usize,
    pub target: Target,
    pub a: Var,
    pub b: Var,
}

/// The adapters being trained, and their scale.
pub struct Adapters {
    pub rank: usize,
    pub alpha: f32,
    pub list: Vec<Adapter>,
}

impl Adapters {
    /// Adapters on the query and value projections of the top `layers` layers (all when 0 or
    /// more than the model has), `A` drawn from a seeded uniform (±1/√in).
    pub fn new(
        base: &Base,
        rank: usize,
        alpha: f32,
        layers: usize,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let n = base.layers.len();
        let first = if layers == 0 || layers >= n {
            0
        } else {
            n - layers
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut list = Vec::new();
        for layer in first..n {
            for target in [Target::Query, Target::Value] {
                let w = base.weight(layer, target);
                let (out, inp) = w.dims2()?;
                let bound = 1.0 / (inp as f32).sqrt();
                let values: Vec<f32> = (0..rank * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(values, (rank, inp), &base.device)?)?;
                let b = Var::zeros((out, rank), DType::F32, &base.device)?;
                list.push(Adapter {
                    layer,
                    target,
                    a,
                    b,
                });
            }
        }
        Ok(Self { rank, alpha, list })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.list
            .iter()
            .flat_map(|a| [a.a.clone(), a.b.clone()])
            .collect()
    }

    fn scale(&self) -> f64 {
        f64::from(self.alpha) / self.rank as f64
    }

    fn find(&self, layer: usize, target: Target) -> Option<&Adapter> {
        self.list
            .iter()
            .find(|a| a.layer == layer && a.target == target)
    }
}

fn meta<'a>(
    content: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a gguf_file::Value, TrainError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| TrainError::Model(format!("the GGUF file has no `{key}`")))
}

impl Base {
    /// Reads and dequantizes a llama-architecture GGUF onto the CPU.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Self::load_on(path, &Device::Cpu)
    }

    /// Reads and dequantizes a llama-architecture GGUF onto `device` (the trainer runs where its
    /// tensors are: a GPU device trains there).
    pub fn load_on(path: &Path, device: &Device) -> Result<Self, TrainError> {
        let io = |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let content = gguf_file::Content::read(&mut file)?;
        let architecture = meta(&content, "general.architecture")?.to_string()?.clone();
        if architecture != "llama" {
            return Err(TrainError::Model(format!(
                "fine-tuning supports the llama architecture; this model is `{architecture}`"
            )));
        }
        let key = |k: &str| format!("{architecture}.{k}");
        let layers = meta(&content, &key("block_count"))?.to_u32()? as usize;
        let embedding = meta(&content, &key("embedding_length"))?.to_u32()? as usize;
        let heads = meta(&content, &key("attention.head_count"))?.to_u32()? as usize;
        let kv_heads = match content.metadata.get(&key("attention.head_count_kv")) {
            Some(v) => v.to_u32()? as usize,
            None => heads,
        };
        let rms_eps =
            f64::from(meta(&content, &key("attention.layer_norm_rms_epsilon"))?.to_f32()?);
        let rope_base = match content.metadata.get(&key("rope.freq_base")) {
            Some(v) => v.to_f32()?,
            None => 10_000.0,
        };
        if heads == 0
            || !embedding.is_multiple_of(heads)
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(TrainError::Model(format!(
                "unsupported attention shape: {embedding} wide, {heads} heads, {kv_heads} key/value heads"
            )));
        }
        let device = device.clone();
        let mut tensor = |name: &str| -> Result<Tensor, TrainError> {
            let q = content.tensor(&mut file, name, &device)?;
            Ok(q.dequantize(&device)?.to_dtype(DType::F32)?.contiguous()?)
        };
        let embed = tensor("token_embd.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            tensor("output.weight")?
        } else {
            embed.clone()
        };
        let norm = tensor("output_norm.weight")?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let t = |n: &str| format!("blk.{i}.{n}.weight");
            blocks.push(Layer {
                attn_norm: tensor(&t("attn_norm"))?,
                q: tensor(&t("attn_q"))?,
                k: tensor(&t("attn_k"))?,
                v: tensor(&t("attn_v"))?,
                o: tensor(&t("attn_output"))?,
                ffn_norm: tensor(&t("ffn_norm"))?,
                gate: tensor(&t("ffn_gate"))?,
                up: tensor(&t("ffn_up"))?,
                down: tensor(&t("ffn_down"))?,
            });
        }
        Ok(Self {
            shape: Shape {
                architecture,
                layers,
                embedding,
                heads,
                kv_heads,
                head_dim: embedding / heads,
                rms_eps,
                rope_base,
            },
            embed,
            output,
            norm,
            layers: blocks,
            device,
        })
    }

    fn weight(&self, layer: usize, target: Target) -> &Tensor {
        match target {
            Target::Query => &self.layers[layer].q,
            Target::Value => &self.layers[layer].v,
        }
    }

    /// Mean cross-entropy of predicting `ids[first_target..]`, each from the tokens before it.
    pub fn loss(
        &self,
        adapters: &Adapters,
        ids: &[u32],
        first_target: usize,
    ) -> Result<Tensor, TrainError> {
        let n = ids.len();
        if n < 2 || first_target == 0 || first_target >= n {
            return Err(TrainError::Data(format!(
                "an example needs prompt and answer tokens ({n} tokens, answer from {first_target})"
            )));
        }
        let input = Tensor::new(&ids[..n - 1], &self.device)?;
        let hidden = self.hidden(adapters, &input)?;
        // Only the positions that predict an answer token reach the (vocabulary-wide) output.
        let rows = hidden.narrow(0, first_target - 1, n - first_target)?;
        let logits = rows.matmul(&self.output.t()?)?;
        let targets = Tensor::new(&ids[first_target..], &self.device)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    }

    /// The final normed hidden states, one row per input token.
    fn hidden(&self, adapters: &Adapters, input: &Tensor) -> Result<Tensor, TrainError> {
        let s = &self.shape;
        let t = input.dim(0)?;
        let mut x = self.embed.index_select(input, 0)?;
        let (cos, sin) = self.rope(t)?;
        let mask = causal_mask(t, &self.device)?;
        let scale = adapters.scale();
        for (i, l) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &l.attn_norm, s.rms_eps)?;
            let project = |w: &Tensor, target: Option<Target>| -> Result<Tensor, TrainError> {
                let mut y = h.matmul(&w.t()?)?;
                if let Some(a) = target.and_then(|tg| adapters.find(i, tg)) {
                    let delta = h
                        .matmul(&a.a.as_tensor().t()?)?
                        .matmul(&a.b.as_tensor().t()?)?;
                    y = (y + (delta * scale)?)?;
                }
                Ok(y)
            };
            let q = project(&l.q, Some(Target::Query))?;
            let k = project(&l.k, None)?;
            let v = project(&l.v, Some(Target::Value))?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
                Ok(y.reshape((t, n, s.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?)
            };
            let q = rope(&heads(q, s.heads)?, &cos, &sin)?;
            let k = rope(&heads(k, s.kv_heads)?, &cos, &sin)?;
            let v = heads(v, s.kv_heads)?;
            let group = s.heads / s.kv_heads;
            let k = repeat_kv(&k, group)?;
            let v = repeat_kv(&v, group)?;
            let scores = (q.matmul(&k.t()?)? / (s.head_dim as f64).sqrt())?;
            let scores = scores.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let att = probs
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((t, s.embedding))?;
            x = (x + att.matmul(&l.o.t()?)?)?;
            let h = rms_norm(&x, &l.ffn_norm, s.rms_eps)?;
            let gate = h.matmul(&l.gate.t()?)?.silu()?;
            let up = h.matmul(&l.up.t()?)?;
            x = (x + (gate * up)?.matmul(&l.down.t()?)?)?;
        }
        rms_norm(&x, &self.norm, s.rms_eps)
    }

    /// Cosines and sines of each position's angle for each pair, (t, head_dim / 2).
    fn rope(&self, t: usize) -> Result<(Tensor, Tensor), TrainError> {
        let half = self.shape.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / self
                    .shape
                    .rope_base
                    .powf(2.0 * i as f32 / self.shape.head_dim as f32)
            })
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), &self.device)?;
        let pos = Tensor::arange(0u32, t as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let angles = pos.broadcast_mul(&inv)?;
        Ok((angles.cos()?, angles.sin()?))
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor, TrainError> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
}

/// Rotary positions on interleaved pairs (llama.cpp's "normal" rope), built from plain tensor
/// operations so candle differentiates it. `x` is (heads, t, head_dim).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, TrainError> {
    let (h, t, d) = x.dims3()?;
    let pairs = x.reshape((h, t, d / 2, 2))?;
    let x0 = pairs.narrow(3, 0, 1)?.squeeze(3)?;
    let x1 = pairs.narrow(3, 1, 1)?.squeeze(3)?;
    let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    Ok(Tensor::stack(&[r0, r1], 3)?.reshape((h, t, d))?)
}

/// Each key/value head repeated for the `group` query heads that share it.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor, TrainError> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (h, t, d) = x.dims3()?;
    Ok(x.reshape((h, 1, t, d))?
        .broadcast_as((h, group, t, d))?
        .contiguous()?
        .reshape((h * group, t, d))?)
}

/// 0 on and below the diagonal, a large negative number above it (not −∞, which makes NaN
/// gradients through the softmax of a fully masked row).
fn causal_mask(t: usize, device: &Device) -> Result<Tensor, TrainError> {
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (t, t), device)?)
}
