//! Writing trained adapters as a llama.cpp LoRA adapter file (GGUF).
//!
//! llama.cpp reads `general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha`, and for each adapted weight `<name>.lora_a` (ggml shape
//! `[in, rank]`, candle's `(rank, in)`) and `<name>.lora_b` (ggml `[rank, out]`, candle's
//! `(out, rank)`); it scales `B·A` by `alpha / rank` as training did.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

use crate::TrainError;
use crate::model::{Adapters, Shape};

/// Writes `adapters` for a base of `shape` to `path` (through a temporary file, renamed into
/// place, so a reader never sees half an adapter).
pub fn write(path: &Path, shape: &Shape, adapters: &Adapters) -> Result<(), TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tensors = Vec::with_capacity(adapters.list.len() * 2);
    for a in &adapters.list {
        let name = format!("blk.{}.{}.weight", a.layer, a.target.tensor_name());
        tensors.push((
            format!("{name}.lora_a"),
            QTensor::quantize(a.a.as_tensor(), GgmlDType::F32)?,
        ));
        tensors.push((
            format!("{name}.lora_b"),
            QTensor::quantize(a.b.as_tensor(), GgmlDType::F32)?,
        ));
    }
    let arch = gguf_file::Value::String(shape.architecture.clone());
    let kind = gguf_file::Value::String("adapter".into());
    let lora = gguf_file::Value::String("lora".into());
    let alpha = gguf_file::Value::F32(adapters.alpha);
    let metadata = [
        ("general.architecture", &arch),
        ("general.type", &kind),
        ("adapter.type", &lora),
        ("adapter.lora.alpha", &alpha),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let partial = path.with_extension("partial");
    {
        let file = File::create(&partial).map_err(io)?;
        let mut w = BufWriter::new(file);
        gguf_file::write(&mut w, &metadata, &refs)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&partial, path).map_err(io)?;
    Ok(())
}
