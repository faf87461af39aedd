"""Independent reference for Enclave's embeddings: all-MiniLM-L6-v2 as a plain numpy forward pass.

Reads the same model.safetensors and tokenizer.json that Enclave verified and extracted, runs BERT
(absolute positions, post-layer-norm, exact GELU), mean-pools over real tokens and normalises to
unit length, as sentence-transformers does. Writes the sentences and vectors to a JSON file that
Enclave's tests compare against (cosine >= 0.999).

usage: python3 minilm_numpy.py MODEL_DIR SENTENCES.txt OUT.json
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(weights, tok, text, heads=12, layers=6):
    ids = tok.encode(text).ids
    n = len(ids)
    w = lambda k: weights[k].astype(np.float64)
    x = w("embeddings.word_embeddings.weight")[ids]
    x = x + w("embeddings.position_embeddings.weight")[:n]
    x = x + w("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
    d = x.shape[1]
    hd = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = x @ w(p + "attention.self.query.weight").T + w(p + "attention.self.query.bias")
        k = x @ w(p + "attention.self.key.weight").T + w(p + "attention.self.key.bias")
        v = x @ w(p + "attention.self.value.weight").T + w(p + "attention.self.value.bias")
        q = q.reshape(n, heads, hd).transpose(1, 0, 2)
        k = k.reshape(n, heads, hd).transpose(1, 0, 2)
        v = v.reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, d)
        a = a @ w(p + "attention.output.dense.weight").T + w(p + "attention.output.dense.bias")
        x = layer_norm(x + a, w(p + "attention.output.LayerNorm.weight"), w(p + "attention.output.LayerNorm.bias"))
        h = gelu(x @ w(p + "intermediate.dense.weight").T + w(p + "intermediate.dense.bias"))
        h = h @ w(p + "output.dense.weight").T + w(p + "output.dense.bias")
        x = layer_norm(x + h, w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias"))
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir, sentences_path, out_path = sys.argv[1:4]
    weights = load_file(f"{model_dir}/model.safetensors")
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    # tokenizer.json pads every input to 128 tokens; sentence-transformers pads per batch and masks
    # padding out of the mean, which for one sentence at a time means no padding at all.
    tok.no_padding()
    tok.enable_truncation(256)
    sentences = [s for s in open(sentences_path, encoding="utf-8").read().splitlines() if s.strip()]
    out = [{"text": s, "embedding": [round(float(v), 7) for v in embed(weights, tok, s)]} for s in sentences]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(out)} reference embeddings to {out_path}")


if __name__ == "__main__":
    main()
