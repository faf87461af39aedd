"""The official `openai` Python package, unchanged, against a running `enclave serve`.

Run by `crates/enclave/tests/openai_sdk.rs`, which starts the server and passes
ENCLAVE_BASE_URL, ENCLAVE_KEY and ENCLAVE_REVOKED_KEY.
"""
import json
import math
import os
import pathlib

import httpx
import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"] + "/v1"
KEY = os.environ["ENCLAVE_KEY"]
CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "reference" / "minilm_reference.json"


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [CHAT, EMBED]
    assert client.models.retrieve(CHAT).id == CHAT


def test_chat(client):
    r = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
        max_tokens=8,
        temperature=0,
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 1 <= r.usage.completion_tokens <= 8


def test_chat_seed_is_reproducible(client):
    kwargs = dict(model=CHAT, messages=[{"role": "user", "content": "Invent a name for a ship."}], max_tokens=12, temperature=1.0, seed=7)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Describe a forest."}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    whole = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Describe a forest."}], max_tokens=10, temperature=0)
    assert text == whole.choices[0].message.content


def test_embeddings_match_the_numpy_reference(client):
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    # The SDK asks for base64 by default and decodes it itself.
    r = client.embeddings.create(model=EMBED, input=[x["text"] for x in ref])
    assert len(r.data) == len(ref)
    for item, want in zip(r.data, ref):
        got = item.embedding
        dot = sum(a * b for a, b in zip(got, want["embedding"]))
        assert len(got) == 384
        assert dot >= 0.999, (want["text"], dot)
    floats = client.embeddings.create(model=EMBED, input="hello", encoding_format="float")
    assert math.isclose(sum(v * v for v in floats.data[0].embedding), 1.0, rel_tol=1e-4)
    assert r.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    "call, error, code",
    [
        (lambda c: c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}]), openai.NotFoundError, "model_not_found"),
        (lambda c: c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], n=2), openai.BadRequestError, "unsupported_parameter"),
        (lambda c: c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], logprobs=True), openai.BadRequestError, "unsupported_parameter"),
        (lambda c: c.chat.completions.create(model=CHAT, messages=[]), openai.BadRequestError, "invalid_value"),
        (lambda c: c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], temperature=9), openai.BadRequestError, "invalid_value"),
        (lambda c: c.embeddings.create(model=EMBED, input="x", dimensions=12), openai.BadRequestError, "unsupported_parameter"),
        (lambda c: c.embeddings.create(model=EMBED, input=[123456789]), openai.UnprocessableEntityError, "unprocessable_input"),
    ],
)
def test_errors(client, call, error, code):
    with pytest.raises(error) as info:
        call(client)
    assert info.value.code == code
    assert info.value.body["message"]


def test_bad_and_revoked_keys():
    for key in ("ek_nope", os.environ["ENCLAVE_REVOKED_KEY"]):
        bad = openai.OpenAI(base_url=BASE, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_malformed_json_gets_openai_shaped_error():
    r = httpx.post(BASE + "/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
