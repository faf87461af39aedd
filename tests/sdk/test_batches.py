"""OpenAI's Batch API through the official `openai` package, unchanged: a file of chat lines and
a file of embedding lines answered in the background, output and error files keyed by
`custom_id`, labels carried from the file to every line. Run by `crates/enclave/tests/batches.rs`,
which passes ENCLAVE_BASE_URL, ENCLAVE_KEY (cleared SECRET) and MOCK_STATS (the mock upstream's
counters: requests per deployment).
"""
import io
import json
import os
import time

import httpx
import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]


@pytest.fixture
def oa():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=os.environ["ENCLAVE_KEY"], max_retries=0)


def upload(oa, lines):
    body = ("\n".join(json.dumps(l) for l in lines) + "\n").encode()
    return oa.files.create(file=("batch.jsonl", io.BytesIO(body)), purpose="batch")


def chat_line(i, text, model="mock"):
    return {"custom_id": f"c-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}}


def wait(oa, batch_id, seconds=90):
    deadline = time.time() + seconds
    while True:
        b = oa.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        assert time.time() < deadline, b
        time.sleep(0.2)


def by_deployment():
    return httpx.get(os.environ["MOCK_STATS"]).json()["by_scenario"]


def test_a_chat_batch_runs_in_the_background_with_outputs_and_errors_by_custom_id(oa):
    lines = [chat_line(i, f"question {i}") for i in range(6)]
    lines.append(chat_line(6, "to a model that is not there", model="no-such-model"))
    f = upload(oa, lines)
    b = oa.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                          metadata={"case": "chat"})
    assert b.status == "validating" and b.metadata == {"case": "chat"}
    b = wait(oa, b.id)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (7, 6, 1)
    out = [json.loads(l) for l in oa.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == [f"c-{i}" for i in range(6)]
    for o in out:
        assert o["response"]["status_code"] == 200
        n = o["custom_id"].split("-")[1]
        assert o["response"]["body"]["choices"][0]["message"]["content"] == f"You said: question {n}"
    errors = [json.loads(l) for l in oa.files.content(b.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["c-6"]
    assert errors[0]["response"]["status_code"] == 404 and errors[0]["error"]["code"] == "model_not_found"
    assert b.id in [x.id for x in oa.batches.list().data]
    with pytest.raises(openai.ConflictError):
        oa.batches.cancel(b.id)


def test_an_embeddings_batch(oa):
    lines = [{"custom_id": f"e-{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "mock-embed", "input": f"text {i}"}} for i in range(3)]
    f = upload(oa, lines)
    # Enclave's priority travels as an extra field of the request and shows under `enclave`.
    b = oa.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h",
                          extra_body={"priority": "high"})
    assert b.model_extra["enclave"]["priority"] == "high"
    with pytest.raises(openai.BadRequestError) as e:
        oa.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h",
                          extra_body={"priority": "urgent"})
    assert e.value.body["param"] == "priority" or "priority" in e.value.body["message"]
    b = wait(oa, b.id)
    assert b.status == "completed" and b.request_counts.completed == 3, b
    out = [json.loads(l) for l in oa.files.content(b.output_file_id).text.splitlines()]
    assert all(len(o["response"]["body"]["data"][0]["embedding"]) == 8 for o in out)


def test_every_line_carries_the_files_label_and_goes_only_where_it_may(oa):
    before = by_deployment()
    # One SECRET line makes the whole file SECRET: every line is sent at SECRET, so none may go
    # to the deployment accredited UNCLASSIFIED, though it is first in the operator's order.
    lines = [chat_line(i, f"plain question {i}") for i in range(4)] + [chat_line(4, "(S) The convoy leaves at dawn.")]
    f = upload(oa, lines)
    b = wait(oa, oa.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert b.status == "completed" and b.request_counts.completed == 5, b
    after = by_deployment()
    assert after.get("ok-low", 0) == before.get("ok-low", 0), (before, after)
    assert after.get("ok-high", 0) - before.get("ok-high", 0) == 5, (before, after)
    raw = oa.files.with_raw_response.retrieve(b.output_file_id)
    assert raw.headers["enclave-label"] == "SECRET"
    # A file with nothing above UNCLASSIFIED may go to either (the operator's weights share it).
    plain = upload(oa, [chat_line(i, f"plain {i}") for i in range(8)])
    b = wait(oa, oa.batches.create(input_file_id=plain.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert b.status == "completed" and b.request_counts.completed == 8, b
    last = by_deployment()
    sent = sum(last.get(d, 0) - after.get(d, 0) for d in ("ok-low", "ok-high"))
    assert sent == 8, (after, last)
    assert oa.files.with_raw_response.retrieve(b.output_file_id).headers["enclave-label"] == "UNCLASSIFIED"


def test_a_batch_is_refused_naming_the_line_whose_url_differs(oa):
    lines = [chat_line(0, "fine"), {"custom_id": "x", "method": "POST", "url": "/v1/embeddings",
                                    "body": {"model": "mock-embed", "input": "x"}}]
    with pytest.raises(openai.BadRequestError) as e:
        oa.batches.create(input_file_id=upload(oa, lines).id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "line 2" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        oa.batches.create(input_file_id=upload(oa, [chat_line(0, "x")]).id, endpoint="/v1/chat/completions",
                          completion_window="1h")


def test_a_running_batch_can_be_cancelled(oa):
    # Enough lines that twelve at a time (40 ms each) run for seconds, not the half second below.
    lines = [chat_line(i, f"slow {i}", model="slowmock") for i in range(600)]
    b = oa.batches.create(input_file_id=upload(oa, lines).id, endpoint="/v1/chat/completions", completion_window="24h")
    time.sleep(0.5)
    c = oa.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled")
    b = wait(oa, b.id)
    assert b.status == "cancelled" and b.request_counts.completed < 600, b
