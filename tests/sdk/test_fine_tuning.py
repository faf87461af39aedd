"""OpenAI's fine-tuning API through the official `openai` package, unchanged: files, jobs, events,
checkpoints, the model served, and label lineage. Run by `crates/enclave/tests/fine_tuning_sdk.rs`,
which passes ENCLAVE_BASE_URL, ENCLAVE_KEY (cleared SECRET), ENCLAVE_LOW_KEY (cleared
UNCLASSIFIED) of one tenant, ENCLAVE_OTHER_KEY (another tenant, cleared SECRET) and
ENCLAVE_CASE_NOTES (the committed task: crates/train/testdata/case_notes).
"""
import io
import json
import os
import pathlib
import time

import httpx
import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]
DATA = pathlib.Path(os.environ["ENCLAVE_CASE_NOTES"])
MODEL = "smollm2-135m-instruct"


def client(var, label=None):
    headers = {"Enclave-Label": label} if label else {}
    return openai.OpenAI(base_url=BASE + "/v1", api_key=os.environ[var], max_retries=0,
                         default_headers=headers)


def upload(c, name, data):
    return c.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")


def wait(c, job_id, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def ask(c, model, text, max_tokens=24):
    r = c.chat.completions.create(model=model, temperature=0, max_tokens=max_tokens,
                                  messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content


def test_a_fine_tuned_model_learns_the_form_reports_its_steps_and_carries_its_lineage():
    c = client("ENCLAVE_KEY")
    train = upload(c, "train.jsonl", (DATA / "train.jsonl").read_bytes())
    valid = upload(c, "valid.jsonl", (DATA / "valid.jsonl").read_bytes())
    job = c.fine_tuning.jobs.create(
        model=MODEL, training_file=train.id, validation_file=valid.id, suffix="casenotes",
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": "auto"}}})
    assert job.object == "fine_tuning.job" and job.status == "queued" and job.model == MODEL
    assert job.id in [j.id for j in c.fine_tuning.jobs.list().data]
    done = wait(c, job.id)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    assert name.startswith(f"{name[:0]}ft:{MODEL}:default:casenotes:"), name
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert done.hyperparameters.n_epochs == 3
    # Billed as OpenAI bills fine-tuning (every token of every example, per epoch), and charged
    # to the tenant's usage as such.
    usage = httpx.get(BASE + "/v1/usage", headers={"Authorization": f"Bearer {os.environ['ENCLAVE_KEY']}"}).json()
    charged = sum(b["input_tokens"] for b in usage["data"] if b["model"] == f"training:{MODEL}")
    assert charged == done.trained_tokens, (charged, done.trained_tokens)
    assert done.hyperparameters.learning_rate_multiplier == 1.0

    # Events, newest first as OpenAI gives them: every step's training loss, validation before
    # training and after each epoch, both falling.
    events = list(reversed(c.fine_tuning.jobs.list_events(job.id, limit=100).data))
    steps = [e.data["train_loss"] for e in events if e.data and "train_loss" in e.data]
    valids = [e.data["valid_loss"] for e in events if e.data and "valid_loss" in e.data]
    assert len(steps) == 12 and len(valids) == 4, events
    assert steps[-1] < steps[0] * 0.5 and valids[-1] < valids[0] * 0.5, (steps, valids)
    assert events[-1].message == "The job has successfully completed"
    ckpts = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [k.step_number for k in ckpts] == [12, 8, 4]
    assert ckpts[0].fine_tuned_model_checkpoint == f"{name}:ckpt-step-12"
    assert ckpts[0].metrics.train_loss is not None

    # Served: listed, with its card, and it answers held-out requests in the trained form.
    assert name in [m.id for m in c.models.list().data]
    card = c.models.retrieve(name).model_extra["enclave"]
    assert card["label"] == "UNCLASSIFIED" and card["fine_tuning_job"] == job.id
    lineage = card["lineage"]
    assert lineage["base_model"] == MODEL and len(lineage["base_sha256"]) == 64
    assert {(f["id"], f["role"], f["label"]) for f in lineage["files"]} == {
        (train.id, "training", "UNCLASSIFIED"), (valid.id, "validation", "UNCLASSIFIED")}
    assert len(lineage["adapter_sha256"]) == 64 and lineage["valid_loss"] < valids[0]
    held_out = [json.loads(l)["messages"][0]["content"]
                for l in (DATA / "heldout.jsonl").read_text().splitlines()]
    answers = [ask(c, name, q) for q in held_out]
    in_form = [a for a in answers if a.lstrip().startswith("CASE NOTE | Topic:")]
    assert len(in_form) >= 5, answers
    base_answers = [ask(c, MODEL, q) for q in held_out[:2]]
    assert not any(a.lstrip().startswith("CASE NOTE") for a in base_answers), base_answers
    # Another tenant knows nothing of it.
    other = client("ENCLAVE_OTHER_KEY")
    assert name not in [m.id for m in other.models.list().data]
    with pytest.raises(openai.NotFoundError):
        ask(other, name, held_out[0])
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    # A checkpoint is callable by its name too (its engine starts at the first call, which the
    # SDK retries while it loads), at the model's label, and hidden from the other tenant.
    first = ckpts[-1].fine_tuned_model_checkpoint
    assert first == f"{name}:ckpt-step-4" and first not in [m.id for m in c.models.list().data]
    r = c.with_options(max_retries=8).chat.completions.with_raw_response.create(
        model=first, max_tokens=8, messages=[{"role": "user", "content": held_out[0]}])
    assert r.headers["enclave-label"] == "UNCLASSIFIED"
    assert r.parse().choices[0].message.content
    assert c.models.retrieve(first).model_extra["enclave"]["fine_tuning_job"] == job.id
    with pytest.raises(openai.NotFoundError):
        ask(other, first, held_out[0])


def test_a_secret_training_file_makes_a_secret_model_an_unclassified_key_can_neither_list_nor_call():
    high, low = client("ENCLAVE_KEY"), client("ENCLAVE_LOW_KEY")
    lines = (DATA / "train.jsonl").read_text().splitlines()[:4]
    f = client("ENCLAVE_KEY", label="SECRET").files.create(
        file=("secret.jsonl", io.BytesIO(("\n".join(lines) + "\n").encode())), purpose="fine-tune")
    job = high.fine_tuning.jobs.create(model=MODEL, training_file=f.id, suffix="secret",
                                       hyperparameters={"n_epochs": 1, "batch_size": 4})
    assert job.model_extra["enclave"]["label"] == "SECRET"
    # The UNCLASSIFIED reader of the same tenant cannot see the job...
    with pytest.raises(openai.NotFoundError):
        low.fine_tuning.jobs.retrieve(job.id)
    assert job.id not in [j.id for j in low.fine_tuning.jobs.list().data]
    done = wait(high, job.id)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    # ...nor list, read or call the model it made.
    assert name in [m.id for m in high.models.list().data]
    assert name not in [m.id for m in low.models.list().data]
    with pytest.raises(openai.NotFoundError):
        low.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        ask(low, name, "Where do I renew a passport?")
    # A cleared caller gets answers labelled at least SECRET, whatever the prompt says.
    raw = high.chat.completions.with_raw_response.create(
        model=name, max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
    assert raw.headers["enclave-label"].startswith("SECRET"), raw.headers["enclave-label"]
    # Deleting the training file never lowers the model's label.
    assert high.files.delete(f.id).deleted
    assert high.models.retrieve(name).model_extra["enclave"]["label"] == "SECRET"
    assert name not in [m.id for m in low.models.list().data]


def test_bad_jobs_are_refused_with_the_reason():
    c = client("ENCLAVE_KEY")
    good = upload(c, "t.jsonl", (DATA / "train.jsonl").read_bytes())
    unanswered = upload(c, "u.jsonl", json.dumps({"messages": [
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Thanks"}]}).encode() + b"\n")
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=good.id)
    assert "cannot be fine-tuned" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=MODEL, training_file=unanswered.id)
    assert "line 1" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=MODEL, training_file=good.id,
                                  hyperparameters={"n_epochs": 0})
    assert "n_epochs" in e.value.message
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.create(model=MODEL, training_file=good.id, suffix="no spaces allowed")
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.create(model=MODEL, training_file="file-nope")
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.retrieve("ftjob-nope")
    # A queued job can be cancelled, and then not again.
    job = c.fine_tuning.jobs.create(model=MODEL, training_file=good.id,
                                    hyperparameters={"n_epochs": 50})
    c.fine_tuning.jobs.cancel(job.id)
    assert wait(c, job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        c.fine_tuning.jobs.cancel(job.id)
