"""Reference prompts and greedy outputs from llama-cpp-python on the same GGUF file Enclave serves.

For each conversation in conversations.json: the chat template the GGUF carries is applied by
llama-cpp-python's own Jinja2 chat formatter, the prompt is tokenized as its chat-completion
handler does, and the first 32 tokens are generated greedily. Enclave's tests
(crates/engine/tests/reference.rs) must produce the same prompt tokens and the same text.

usage: python llama_reference.py MODEL.gguf conversations.json OUT.json
"""
import json
import sys

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
        generated = []
        llm.reset()
        for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            if llm._model.token_is_eog(token):
                break
            generated.append(token)
            if len(generated) == N_TOKENS:
                break
        text = llm.detokenize(generated).decode("utf-8", errors="replace")
        out.append({"name": conv["name"], "prompt_text": result.prompt, "prompt_tokens": prompt, "output_tokens": generated, "output_text": text})
        print(f"{conv['name']}: {len(prompt)} prompt tokens -> {text!r}")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
