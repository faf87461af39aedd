"""Agents through the official packages, unchanged: `openai`'s Responses API with `mcp` tools on
MCP servers an administrator registered, and the `openai-agents` package running a two-tool
agent, against `enclave serve` in front of the mock upstream's `agent` model (it obeys every
`CALL name {json}` line it reads, as an injected model would).

Run by `crates/enclave/tests/agents_sdk.rs`, which starts the server with two MCP servers
(`records`, accredited SECRET; `partner`, outside the enclave, accredited UNCLASSIFIED, whose
`send_email` writes) and passes ENCLAVE_BASE_URL, ENCLAVE_KEY (cleared SECRET) and MCP_SINK
(what `send_email` received).
"""
import json
import os

import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"]
KEY = os.environ["ENCLAVE_KEY"]
SINK = os.environ["MCP_SINK"]
RECORDS = {"type": "mcp", "server_label": "records", "allowed_tools": ["fetch"], "require_approval": "never"}
PARTNER = {"type": "mcp", "server_label": "partner", "allowed_tools": ["send_email"], "require_approval": "never"}


@pytest.fixture
def oa():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0,
                         default_headers={"Enclave-Label": "UNCLASSIFIED"})


def sent():
    if not os.path.exists(SINK):
        return []
    with open(SINK, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_an_mcp_tool_runs_inside_the_response_and_raises_its_label(oa):
    raw = oa.responses.with_raw_response.create(
        model="agent", input='CALL fetch {"name": "report"}', tools=[RECORDS])
    r = raw.parse()
    assert raw.headers["enclave-label"] == "SECRET"
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "message"]
    listed, call = r.output[0], r.output[1]
    assert listed.server_label == "records" and [t.name for t in listed.tools] == ["fetch"]
    assert call.name == "fetch" and call.output.startswith("(S) The convoy")
    assert "convoy" in r.output_text
    again = oa.responses.retrieve(r.id)
    assert [o.type for o in again.output] == [o.type for o in r.output]


def test_an_injected_instruction_to_mail_it_out_is_refused(oa):
    before = len(sent())
    r = oa.responses.create(model="agent", input='CALL fetch {"name": "memo"}', tools=[RECORDS, PARTNER])
    calls = [o for o in r.output if o.type == "mcp_call"]
    assert [c.name for c in calls] == ["fetch", "send_email"]
    assert calls[1].output is None and "not accredited" in calls[1].error
    assert len(sent()) == before


def test_a_writing_tool_asks_for_approval_and_runs_once_approved(oa):
    before = len(sent())
    first = oa.responses.create(model="agent", input='CALL fetch {"name": "notice"}', tools=[RECORDS, PARTNER])
    asked = [o for o in first.output if o.type == "mcp_approval_request"]
    assert len(asked) == 1 and asked[0].name == "send_email"
    assert len(sent()) == before
    second = oa.responses.create(
        model="agent", previous_response_id=first.id, tools=[RECORDS, PARTNER],
        input=[{"type": "mcp_approval_response", "approval_request_id": asked[0].id, "approve": True}])
    call = [o for o in second.output if o.type == "mcp_call"][0]
    assert call.name == "send_email" and call.error is None
    assert len(sent()) == before + 1


def test_a_streamed_run_through_the_sdk(oa):
    with oa.responses.stream(model="agent", input='CALL fetch {"name": "bulletin"}', tools=[RECORDS]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    for kind in ["response.mcp_list_tools.completed", "response.mcp_call.completed", "response.output_text.delta"]:
        assert kind in kinds, kinds
    assert "office is closed" in final.output_text


def test_the_openai_agents_package_runs_a_two_tool_agent():
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    seen = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(("weather", city))
        return f"Rain in {city}."

    @function_tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        seen.append(("time", city))
        return f"It is 09:00 in {city}."

    client = openai.AsyncOpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0,
                                default_headers={"Enclave-Label": "UNCLASSIFIED"})
    agent = Agent(
        name="desk officer",
        instructions="Use the tools to answer.",
        tools=[get_weather, get_time],
        model=OpenAIResponsesModel(model="agent", openai_client=client),
    )
    result = Runner.run_sync(agent, 'Weather and time in Bonn?\nCALL get_weather {"city": "Bonn"}\nCALL get_time {"city": "Bonn"}')
    assert seen == [("weather", "Bonn"), ("time", "Bonn")]
    assert "09:00" in result.final_output


def test_file_search_reads_knowledge_bases_as_the_caller_may():
    import time

    import httpx

    admin = httpx.Client(base_url=BASE, headers={"Authorization": "Bearer " + os.environ["ENCLAVE_ADMIN_KEY"]})
    kb = admin.post("/v1/knowledge-bases", json={"name": "harbour", "max_label": "TOP SECRET"})
    assert kb.status_code == 201, kb.text
    kb = kb.json()["id"]
    for name, text in [
        ("hours.txt", "(U) The harbour opens at six in the morning."),
        ("mines.txt", "(S) The harbour mines lie off pier four."),
        ("source.txt", "(TS) The harbour source is called ALBATROSS."),
    ]:
        r = admin.post(f"/v1/knowledge-bases/{kb}/documents", json={"name": name, "text": text})
        assert r.status_code < 300, r.text
    deadline = time.time() + 120
    while True:
        docs = admin.get(f"/v1/knowledge-bases/{kb}").json()["documents"]
        if docs["ready"] >= 3 and docs["queued"] == 0 and docs["indexing"] == 0:
            break
        assert time.time() < deadline, docs
        time.sleep(0.2)

    def search(key, label="UNCLASSIFIED"):
        client = openai.OpenAI(base_url=BASE + "/v1", api_key=key, max_retries=0,
                               default_headers={"Enclave-Label": label})
        raw = client.responses.with_raw_response.create(
            model="agent", input='CALL file_search {"query": "harbour"}',
            tools=[{"type": "file_search", "vector_store_ids": [kb], "max_num_results": 5}],
            include=["file_search_call.results"])
        return raw.headers["enclave-label"], raw.parse()

    # Cleared SECRET: the TOP SECRET passage is never retrieved; the answer rises to SECRET.
    label, r = search(KEY)
    found = [o for o in r.output if o.type == "file_search_call"][0]
    texts = " ".join(x.text for x in found.results)
    assert "pier four" in texts and "six in the morning" in texts
    assert "ALBATROSS" not in r.model_dump_json()
    assert label == "SECRET" and {x.attributes["label"] for x in found.results} == {"UNCLASSIFIED", "SECRET"}
    # Cleared UNCLASSIFIED: only the unclassified passage, at UNCLASSIFIED.
    low = admin.post("/v1/admin/keys", json={"role": "user", "clearance": "UNCLASSIFIED"})
    assert low.status_code in (200, 201), low.text
    label, r = search(low.json()["secret"])
    dumped = r.model_dump_json()
    assert "pier four" not in dumped and "ALBATROSS" not in dumped
    assert "six in the morning" in dumped and label == "UNCLASSIFIED"
