"""Peer for the embeddings benchmark: onnxruntime running all-MiniLM-L6-v2.

There is no ONNX file for this model here and no torch, so the BERT graph is built with onnx.helper
straight from the same model.safetensors Enclave serves (opset 20: LayerNormalization, Gelu),
saved as IR version 10. Inputs are tokenized with the same tokenizer.json, sorted by length and
padded per batch, as Enclave does. Prints one JSON object with sentences/s at batch 1 and 32.

usage: python peer_onnx.py MODEL_DIR SENTENCES.txt THREADS
"""
import json
import math
import sys
import time

import numpy as np
from common import peak_rss_mb
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def build_graph(weights, layers=6, heads=12, eps=1e-12):
    d = weights["embeddings.word_embeddings.weight"].shape[1]
    hd = d // heads
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(np.float32) if arr.dtype != np.int64 else arr), name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    init("word", weights["embeddings.word_embeddings.weight"])
    init("pos", weights["embeddings.position_embeddings.weight"])
    init("type0", weights["embeddings.token_type_embeddings.weight"][0])
    init("shape_heads", np.array([0, 0, heads, hd], dtype=np.int64))
    init("shape_model", np.array([0, 0, d], dtype=np.int64))
    init("scale", np.array(1.0 / math.sqrt(hd), dtype=np.float32))
    init("one", np.array(1.0, dtype=np.float32))
    init("big", np.array(1e9, dtype=np.float32))
    init("axes12", np.array([1, 2], dtype=np.int64))

    x = node("Gather", ["word", "input_ids"], "we")
    p = node("Gather", ["pos", "position_ids"], "pe")
    x = node("Add", [x, p], "e1")
    x = node("Add", [x, "type0"], "e2")
    g = init("ln_e_w", weights["embeddings.LayerNorm.weight"])
    b = init("ln_e_b", weights["embeddings.LayerNorm.bias"])
    x = node("LayerNormalization", [x, g, b], "e3", axis=-1, epsilon=eps)
    mf = node("Cast", ["attention_mask"], "mf", to=TensorProto.FLOAT)
    mb = node("Sub", [mf, "one"], "mb0")
    mb = node("Mul", [mb, "big"], "mb1")
    mb = node("Unsqueeze", [mb, "axes12"], "mask_bias")
    for i in range(layers):
        pre = f"encoder.layer.{i}."

        def dense(inp, name, out):
            w = init(out + "_w", weights[pre + name + ".weight"].T)
            bb = init(out + "_b", weights[pre + name + ".bias"])
            return node("Add", [node("MatMul", [inp, w], out + "_mm"), bb], out)

        q = dense(x, "attention.self.query", f"l{i}q")
        k = dense(x, "attention.self.key", f"l{i}k")
        v = dense(x, "attention.self.value", f"l{i}v")
        q = node("Transpose", [node("Reshape", [q, "shape_heads"], f"l{i}qr")], f"l{i}qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, "shape_heads"], f"l{i}kr")], f"l{i}kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, "shape_heads"], f"l{i}vr")], f"l{i}vt", perm=[0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [q, k], f"l{i}s0"), "scale"], f"l{i}s1")
        s = node("Softmax", [node("Add", [s, mb], f"l{i}s2")], f"l{i}p", axis=-1)
        c = node("Transpose", [node("MatMul", [s, v], f"l{i}c0")], f"l{i}c1", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, "shape_model"], f"l{i}c2")
        a = dense(c, "attention.output.dense", f"l{i}ao")
        g = init(f"l{i}ln1g", weights[pre + "attention.output.LayerNorm.weight"])
        b = init(f"l{i}ln1b", weights[pre + "attention.output.LayerNorm.bias"])
        x = node("LayerNormalization", [node("Add", [x, a], f"l{i}r1"), g, b], f"l{i}x1", axis=-1, epsilon=eps)
        h = node("Gelu", [dense(x, "intermediate.dense", f"l{i}up")], f"l{i}gelu")
        h = dense(h, "output.dense", f"l{i}down")
        g = init(f"l{i}ln2g", weights[pre + "output.LayerNorm.weight"])
        b = init(f"l{i}ln2b", weights[pre + "output.LayerNorm.bias"])
        x = node("LayerNormalization", [node("Add", [x, h], f"l{i}r2"), g, b], f"l{i}x2", axis=-1, epsilon=eps)
    nodes[-1].output[0] = "hidden"
    graph = helper.make_graph(
        nodes,
        "minilm",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "n"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "n"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "n", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model.SerializeToString()


def main():
    model_dir, sentences_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    weights = load_file(f"{model_dir}/model.safetensors")
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(build_graph(weights), opts, providers=["CPUExecutionProvider"])
    sentences = [s for s in open(sentences_path, encoding="utf-8").read().splitlines() if s]

    def embed(batch):
        ids = [tok.encode(s).ids for s in batch]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [None] * len(ids)
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            n = max(len(ids[i]) for i in idx)
            arr = np.zeros((len(idx), n), dtype=np.int64)
            mask = np.zeros((len(idx), n), dtype=np.int64)
            for r, i in enumerate(idx):
                arr[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            h = sess.run(["hidden"], {"input_ids": arr, "position_ids": np.arange(n, dtype=np.int64), "attention_mask": mask})[0]
            m = mask[:, :, None].astype(np.float32)
            v = (h * m).sum(1) / m.sum(1)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            for r, i in enumerate(idx):
                out[i] = v[r]
        return out

    embed(sentences[:32])  # warm-up
    single = sentences[:64]
    t = time.perf_counter()
    for s in single:
        embed([s])
    b1 = len(single) / (time.perf_counter() - t)
    t = time.perf_counter()
    for start in range(0, len(sentences), 32):
        embed(sentences[start : start + 32])
    b32 = len(sentences) / (time.perf_counter() - t)
    print(json.dumps({"embed_b1": b1, "embed_b32": b32, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
