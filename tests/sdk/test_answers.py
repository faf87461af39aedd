"""Answers are inspected like requests, through the official `openai` and `anthropic` packages,
unchanged. The deployment `mock-marked` is an outside model that opens every answer with a
US `(S)` portion mark its request did not carry.

Run by `crates/enclave/tests/upstream_sdks.rs`, which starts the mock and the server and passes
ENCLAVE_BASE_URL, ENCLAVE_LOW_KEY (cleared UNCLASSIFIED) and ENCLAVE_SECRET_KEY (cleared SECRET).
"""
import os

import anthropic
import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]
LOW = os.environ["ENCLAVE_LOW_KEY"]
SECRET = os.environ["ENCLAVE_SECRET_KEY"]
MESSAGES = [{"role": "user", "content": "Summarize the weekly report for the press office."}]


def client(key):
    return openai.OpenAI(base_url=BASE + "/v1", api_key=key, max_retries=0)


def test_a_higher_marking_in_the_answer_withholds_it_from_a_lower_cleared_key():
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(LOW).chat.completions.create(model="mock-marked", messages=MESSAGES)
    assert e.value.status_code == 403
    assert e.value.code == "label_exceeds_clearance"
    assert "SECRET" in e.value.message and "withheld" in e.value.message
    # Nothing of the answer is in the refusal.
    assert "source reports" not in e.value.message


def test_a_withheld_stream_ends_with_the_error_and_releases_none_of_the_marked_text():
    stream = client(LOW).chat.completions.create(model="mock-marked", messages=MESSAGES, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    assert "label_exceeds_clearance" in str(e.value.body)
    assert "(S)" not in text and "source reports" not in text


def test_a_cleared_key_gets_the_answer_labelled_at_its_marking():
    raw = client(SECRET).chat.completions.with_raw_response.create(model="mock-marked", messages=MESSAGES)
    assert raw.headers["enclave-label"] == "SECRET"
    r = raw.parse()
    assert r.choices[0].message.content.startswith("(S) The source reports:")
    text, last = "", None
    for chunk in client(SECRET).chat.completions.create(model="mock-marked", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.choices and chunk.choices[0].finish_reason:
            last = chunk
    assert text == r.choices[0].message.content
    # The header went out before the answer; the last chunk names the label the answer reached.
    assert last.model_extra["enclave"]["label"] == "SECRET"


def test_the_anthropic_surface_withholds_alike():
    an = anthropic.Anthropic(base_url=BASE, api_key=LOW, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        an.messages.create(model="mock-marked", max_tokens=64, messages=MESSAGES)


def test_an_unmarked_answer_is_untouched():
    r = client(LOW).chat.completions.create(model="mock-plain", messages=MESSAGES)
    assert r.choices[0].message.content == "You said: " + MESSAGES[0]["content"]
