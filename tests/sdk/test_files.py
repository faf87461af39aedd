"""OpenAI's Files API through the official `openai` package, unchanged: upload, list, retrieve,
read back and delete, with labels. Run by `crates/enclave/tests/files_sdk.rs`, which passes
ENCLAVE_BASE_URL, ENCLAVE_KEY (cleared SECRET) and ENCLAVE_LOW_KEY (cleared UNCLASSIFIED) of one
tenant.
"""
import io
import json
import os

import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]


def client(var, label=None):
    headers = {"Enclave-Label": label} if label else {}
    return openai.OpenAI(base_url=BASE + "/v1", api_key=os.environ[var], max_retries=0,
                         default_headers=headers)


def batch_line(i, content, url="/v1/chat/completions"):
    return json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": url,
                       "body": {"model": "mock", "messages": [{"role": "user", "content": content}]}})


def jsonl(lines):
    return ("\n".join(lines) + "\n").encode()


def test_a_file_is_kept_at_the_label_its_content_reaches_and_read_only_by_cleared_callers():
    high, low = client("ENCLAVE_KEY"), client("ENCLAVE_LOW_KEY")
    body = jsonl([batch_line(1, "Where is the depot?"), batch_line(2, "(S) The convoy leaves at dawn.")])
    raw = high.files.with_raw_response.create(file=("lines.jsonl", io.BytesIO(body)), purpose="batch")
    f = raw.parse()
    assert raw.headers["enclave-label"] == "SECRET"
    assert f.object == "file" and f.purpose == "batch" and f.bytes == len(body) and f.filename == "lines.jsonl"
    assert high.files.retrieve(f.id).id == f.id
    assert high.files.content(f.id).read() == body
    assert f.id in [x.id for x in high.files.list(purpose="batch").data]
    # An UNCLASSIFIED reader of the same tenant is told there is no such file.
    with pytest.raises(openai.NotFoundError):
        low.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        low.files.content(f.id)
    assert f.id not in [x.id for x in low.files.list().data]
    deleted = high.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        high.files.retrieve(f.id)


def test_a_declared_label_is_a_floor_and_a_file_above_clearance_is_refused():
    declared = client("ENCLAVE_KEY", label="CONFIDENTIAL")
    raw = declared.files.with_raw_response.create(
        file=("plain.jsonl", io.BytesIO(jsonl([batch_line(1, "hello")]))), purpose="batch")
    assert raw.headers["enclave-label"] == "CONFIDENTIAL"
    with pytest.raises(openai.PermissionDeniedError) as e:
        client("ENCLAVE_LOW_KEY").files.create(
            file=("s.jsonl", io.BytesIO(jsonl([batch_line(1, "(S) secret")]))), purpose="batch")
    assert e.value.body["code"] == "label_exceeds_clearance"


@pytest.mark.parametrize("lines, words", [
    (["{not json"], "line 1: not valid JSON"),
    ([batch_line(1, "a"), batch_line(1, "b")], "line 2: `custom_id` `req-1` is already used by line 1"),
    ([batch_line(1, "a", url="/v1/images")], "line 1: `url` `/v1/images`"),
    ([json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/embeddings", "body": {}})], "line 1: `method` must be `POST`"),
    ([batch_line(1, "fine"), "[1, 2]"], "line 2: a line must be a JSON object"),
])
def test_bad_batch_files_are_refused_naming_the_line(lines, words):
    with pytest.raises(openai.BadRequestError) as e:
        client("ENCLAVE_KEY").files.create(file=("bad.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert words in e.value.body["message"], e.value.body


def test_training_files_are_checked_for_their_shape():
    good = json.dumps({"messages": [{"role": "user", "content": "Form?"}, {"role": "assistant", "content": "FORM 7"}]})
    f = client("ENCLAVE_KEY").files.create(file=("train.jsonl", io.BytesIO(jsonl([good]))), purpose="fine-tune")
    assert f.purpose == "fine-tune"
    unanswered = json.dumps({"messages": [{"role": "user", "content": "Form?"}]})
    with pytest.raises(openai.BadRequestError) as e:
        client("ENCLAVE_KEY").files.create(file=("t.jsonl", io.BytesIO(jsonl([good, unanswered]))), purpose="fine-tune")
    assert "line 2" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client("ENCLAVE_KEY").files.create(file=("t.jsonl", io.BytesIO(jsonl([good]))), purpose="assistants")


def test_an_unknown_control_in_a_file_is_refused_not_ignored():
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client("ENCLAVE_KEY").files.create(
            file=("x.jsonl", io.BytesIO(jsonl([batch_line(1, "(S//XYZZY) hidden")]))), purpose="batch")
    assert e.value.body["code"] == "unrecognized_marking" and "line 1" in e.value.body["message"]
    # A marking spelled with JSON escapes is read as the marking it is.
    escaped = '{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": "\\u0028S\\u0029 escaped"}}'
    with pytest.raises(openai.PermissionDeniedError):
        client("ENCLAVE_LOW_KEY").files.create(file=("e.jsonl", io.BytesIO(jsonl([escaped]))), purpose="batch")
