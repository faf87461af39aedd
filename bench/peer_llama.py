"""Peer for the chat benchmark: llama.cpp itself, through llama-cpp-python, on the same GGUF.

Measures, with the same thread count as Enclave:
- prompt tokens/s and time to first token for a 512-token prompt (eval + first greedy token);
- decode tokens/s at 1 stream (greedy, 128 tokens);
- aggregate decode tokens/s at 4 and 16 streams with llama.cpp's raw batched decode: one context
  with one sequence per stream, one llama_decode per step carrying a token of every stream
  (prompts prefilled in one batch first; time includes the prefill, as Enclave's does).
Prints one JSON object.

usage: python peer_llama.py MODEL.gguf PROMPTS.json THREADS
  PROMPTS.json: {"long": [512 token ids], "short": [[ids], ...], "max_tokens": 128}
"""
import ctypes
import json
import sys
import time

import llama_cpp
import numpy as np
from common import peak_rss_mb
from llama_cpp import Llama


def greedy(ctx, i, n_vocab):
    logits = llama_cpp.llama_get_logits_ith(ctx, i)
    return int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))


def batched(model, prompts, max_tokens, threads, n_vocab):
    n = len(prompts)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n * 512
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = n
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def submit(items):
        batch.n_tokens = len(items)
        for j, (tok, pos, seq, want) in enumerate(items):
            batch.token[j] = tok
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = want
        assert llama_cpp.llama_decode(ctx, batch) == 0

    t = time.perf_counter()
    items = []
    for s, p in enumerate(prompts):
        items += [(tok, pos, s, int(pos == len(p) - 1)) for pos, tok in enumerate(p)]
    last = []
    for start in range(0, len(items), 512):
        chunk = items[start : start + 512]
        submit(chunk)
        last += [(j, s) for j, (_, _, s, want) in enumerate(chunk) if want]
    nxt = {s: greedy(ctx, j, n_vocab) for j, s in last}
    generated = n
    pos = {s: len(p) for s, p in enumerate(prompts)}
    for _ in range(max_tokens - 1):
        submit([(nxt[s], pos[s], s, 1) for s in range(n)])
        for s in range(n):
            pos[s] += 1
            nxt[s] = greedy(ctx, s, n_vocab)
        generated += n
    dt = time.perf_counter() - t
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return generated / dt


def main():
    model_path, prompts_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = json.load(open(prompts_path))
    llm = Llama(model_path=model_path, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()
    long = spec["long"]
    max_tokens = spec["max_tokens"]

    # Warm-up, then the 512-token prompt.
    llm.reset(); llm.eval(long[:64])
    llm.reset()
    t = time.perf_counter()
    llm.eval(long)
    greedy(ctx, -1, n_vocab)
    ttft = time.perf_counter() - t
    prompt_tps = len(long) / ttft

    # One stream: greedy decode after a short prompt.
    llm.reset()
    llm.eval(spec["short"][0])
    tok = greedy(ctx, -1, n_vocab)
    t = time.perf_counter()
    for _ in range(max_tokens - 1):
        llm.eval([tok])
        tok = greedy(ctx, -1, n_vocab)
    decode1 = (max_tokens - 1) / (time.perf_counter() - t)

    model = llm._model.model
    agg4 = batched(model, spec["short"][:4], max_tokens, threads, n_vocab)
    agg16 = batched(model, spec["short"][:16], max_tokens, threads, n_vocab)
    print(json.dumps({
        "prompt_tps": prompt_tps,
        "ttft_s": ttft,
        "decode_1": decode1,
        "decode_4": agg4,
        "decode_16": agg16,
        "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
