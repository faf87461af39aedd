"""The official `openai` and `anthropic` Python packages, unchanged, against `enclave serve` in
front of the mock upstream: one deployment speaking OpenAI's protocol, one Anthropic's; both
surfaces, streamed and not, with tool calls, quotas and errors.

Run by `crates/enclave/tests/upstream_sdks.rs`, which starts the mock and the server and passes
ENCLAVE_BASE_URL, ENCLAVE_KEY and ENCLAVE_LIMITED_KEY (a key allowed one request per minute).
"""
import json
import os

import anthropic
import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]
KEY = os.environ["ENCLAVE_KEY"]
MODELS = ["mock-openai", "mock-anthropic"]
WEATHER = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}


@pytest.fixture
def oa():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def an():
    return anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_openai_chat(oa, model):
    r = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello world"}])
    assert r.choices[0].message.content == "You said: hello world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_openai_stream(oa, model):
    chunks = list(
        oa.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello world"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello world"
    assert chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_calls(oa, model, stream):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Weather", "parameters": WEATHER}}]
    messages = [{"role": "user", "content": "weather in Oslo"}]
    if stream:
        name, args, call_id, finish = "", "", None, None
        for c in oa.chat.completions.create(model=model, messages=messages, tools=tools, stream=True):
            if not c.choices:
                continue
            for tc in c.choices[0].delta.tool_calls or []:
                call_id = tc.id or call_id
                name += (tc.function.name or "") if tc.function else ""
                args += (tc.function.arguments or "") if tc.function else ""
            finish = c.choices[0].finish_reason or finish
    else:
        r = oa.chat.completions.create(model=model, messages=messages, tools=tools)
        call = r.choices[0].message.tool_calls[0]
        name, args, call_id, finish = call.function.name, call.function.arguments, call.id, r.choices[0].finish_reason
    assert finish == "tool_calls"
    assert name == "lookup"
    assert json.loads(args) == {"query": "weather in Oslo"}
    # The result goes back and the model answers from it.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "snow"},
    ]
    r = oa.chat.completions.create(model=model, messages=messages, tools=tools)
    assert r.choices[0].message.content == "The tool said: snow"


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_messages(an, model):
    m = an.messages.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello world"}],
        stop_sequences=["###"],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "You said: hello world"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 4
    short = an.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "hello world"}])
    assert short.stop_reason == "max_tokens" and short.content[0].text == "You said:"


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_stream(an, model):
    with an.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hello world"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "You said: hello world"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    events = [e.type for e in an.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_use(an, model, stream):
    tools = [{"name": "lookup", "description": "Weather", "input_schema": WEATHER}]
    messages = [{"role": "user", "content": "weather in Oslo"}]
    if stream:
        with an.messages.stream(model=model, max_tokens=64, messages=messages, tools=tools) as s:
            m = s.get_final_message()
    else:
        m = an.messages.create(model=model, max_tokens=64, messages=messages, tools=tools)
    assert m.stop_reason == "tool_use"
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "lookup" and use.input == {"query": "weather in Oslo"}
    messages += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "snow"}]},
    ]
    m = an.messages.create(model=model, max_tokens=64, messages=messages, tools=tools)
    assert m.content[0].text == "The tool said: snow"


def test_anthropic_errors_are_typed():
    bad = anthropic.Anthropic(base_url=BASE, api_key="ek_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="mock-openai", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    good = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        good.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_quota_refusals_reach_both_sdks_as_rate_limit_errors():
    limited = os.environ["ENCLAVE_LIMITED_KEY"]
    oa = openai.OpenAI(base_url=BASE + "/v1", api_key=limited, max_retries=0)
    oa.chat.completions.create(model="mock-openai", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError) as e:
        oa.chat.completions.create(model="mock-openai", messages=[{"role": "user", "content": "two"}])
    assert "requests per minute" in str(e.value)
    assert e.value.response.headers["retry-after"]
    an = anthropic.Anthropic(base_url=BASE, api_key=limited, max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        an.messages.create(model="mock-anthropic", max_tokens=5, messages=[{"role": "user", "content": "x"}])


# The Responses API (`client.responses`), through both upstream protocols.

LOOKUP = [{
    "type": "function",
    "name": "lookup",
    "description": "Looks a place up.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}]


@pytest.mark.parametrize("model", MODELS)
def test_responses_text_and_retrieve(oa, model):
    r = oa.responses.create(model=model, input="hello world", instructions="Answer plainly.")
    assert r.status == "completed"
    assert r.output_text == "You said: hello world"
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    again = oa.responses.retrieve(r.id)
    assert again.output_text == r.output_text
    items = oa.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    oa.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(r.id)


@pytest.mark.parametrize("model", MODELS)
def test_responses_function_tools_over_turns(oa, model):
    first = oa.responses.create(model=model, input="Where is the harbour?", tools=LOOKUP)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    assert "query" in json.loads(calls[0].arguments)
    second = oa.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=LOOKUP,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "pier 4"}],
    )
    assert "pier 4" in second.output_text
    # The same without a stored response: the whole context sent again.
    third = oa.responses.create(
        model=model,
        store=False,
        tools=LOOKUP,
        input=[{"role": "user", "content": "Where is the harbour?"}, calls[0].model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "pier 5"}],
    )
    assert "pier 5" in third.output_text


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream(oa, model):
    with oa.responses.stream(model=model, input="hello stream") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == "You said: hello stream"
    events = list(oa.responses.create(model=model, input="call it", tools=LOOKUP, stream=True))
    assert "response.function_call_arguments.delta" in [e.type for e in events]
    done = events[-1].response
    assert done.output[0].type == "function_call" and done.output[0].name == "lookup"
