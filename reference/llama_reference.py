"""Reference prompts and greedy outputs from llama-cpp-python on the same GGUF file Enclave serves.

For each conversation in conversations.json: the chat template the GGUF carries is applied by
llama-cpp-python's own Jinja2 chat formatter, the prompt is tokenized as its chat-completion
handler does, and the first 32 tokens are generated greedily (argmax of the logits). With each
output token the gap between its logit and the runner-up's is kept: llama.cpp builds differ in
their kernels (repacked weights, accumulation order), so two correct engines may part ways where
two tokens are all but tied. Enclave's tests (crates/engine/tests/reference.rs) require the same
prompt tokens, and the same output up to the first near-tie where they part.

usage: python llama_reference.py MODEL.gguf conversations.json OUT.json
"""
import json
import sys

import numpy as np

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

N_TOKENS = 32


def main():
    model_path, conversations_path, out_path = sys.argv[1:4]
    llm = Llama(model_path=model_path, n_ctx=2048, n_threads=2, verbose=False, seed=0)
    template = llm.metadata["tokenizer.chat_template"]
    eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8")
    bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8")
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    out = []
    for conv in json.load(open(conversations_path, encoding="utf-8")):
        result = formatter(messages=conv["messages"])
        prompt = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        generated, gaps = [], []
        llm.reset()
        llm.eval(prompt)
        n_vocab = llm.n_vocab()
        while len(generated) < N_TOKENS:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
            order = np.argsort(-logits)
            token = int(order[0])
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                break
            generated.append(token)
            gaps.append(round(float(logits[order[0]] - logits[order[1]]), 5))
            llm.eval([token])
        text = llm.detokenize(generated).decode("utf-8", errors="replace")
        out.append({"name": conv["name"], "prompt_text": result.prompt, "prompt_tokens": prompt, "output_tokens": generated, "output_text": text, "top2_gaps": gaps})
        print(f"{conv['name']}: {len(prompt)} prompt tokens -> {text!r}")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
