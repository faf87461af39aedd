"""Labels, clearances and sovereign routing through the official `openai` SDK, unchanged.

Run by crates/enclave/tests/labels.rs, which starts Enclave with an outside `eu` deployment
(`eu-chat`, accredited UNCLASSIFIED) backed by a recording upstream, and checks afterwards what
that upstream received.
"""

import os

import openai
import pytest

BASE = os.environ["ENCLAVE_BASE_URL"] + "/v1"
CHAT = "smollm2-135m-instruct"
IBAN = os.environ["IBAN"]


def client(key_var):
    return openai.OpenAI(base_url=BASE, api_key=os.environ[key_var], max_retries=0)


def ask(key_var, content, model=CHAT, **kw):
    return client(key_var).chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=4, **kw
    )


def test_a_secret_caller_is_refused_a_top_secret_request():
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_SECRET", "hello", extra_headers={"Enclave-Label": "TOP SECRET"})
    assert e.value.status_code == 403
    assert e.value.code == "label_exceeds_clearance"
    assert "TOP SECRET" in str(e.value) and "above SECRET" in str(e.value)


def test_a_label_may_be_declared_in_metadata():
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_SECRET", "hello", metadata={"enclave_label": "S//SI"})
    assert e.value.code == "label_exceeds_clearance"
    assert "SI" in str(e.value)


def test_a_quoted_top_secret_portion_raises_the_label_and_is_refused():
    prompt = "Summarize this for me: (TS//SI) The convoy leaves the northern depot at 0400."
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_SECRET", prompt)
    assert e.value.code == "label_exceeds_clearance"
    assert "TOP SECRET//SI" in str(e.value)


def test_an_earlier_turn_pins_the_whole_conversation():
    messages = [
        {"role": "user", "content": "(S) The convoy leaves at 0400."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Now just say hello."},
    ]
    with pytest.raises(openai.PermissionDeniedError) as e:
        client("KEY_EU").chat.completions.create(model=CHAT, messages=messages, max_tokens=4)
    assert e.value.code == "label_exceeds_clearance"


def test_an_allowed_answer_carries_its_label():
    raw = client("KEY_SECRET").chat.completions.with_raw_response.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=4,
        extra_headers={"Enclave-Label": "S//NF"},
    )
    assert raw.headers["enclave-label"] == "SECRET//NOFORN"
    completion = raw.parse()
    assert completion.choices[0].message.content is not None
    info = completion.model_extra["enclave"]
    assert info == {
        "label": "SECRET//NOFORN",
        "deployment": "embedded-chat",
        "jurisdiction": "enclave",
        "redacted": False,
    }


def test_a_malformed_label_is_a_clear_400():
    with pytest.raises(openai.BadRequestError) as e:
        ask("KEY_SECRET", "hello", extra_headers={"Enclave-Label": "SECRET//BOGUS"})
    assert e.value.code == "invalid_label"
    assert "column 9" in str(e.value) and "BOGUS" in str(e.value)


def test_personal_data_is_redacted_for_the_eu_and_restored_in_the_answer():
    prompt = f"Please pay invoice 2024-117 to IBAN {IBAN} and confirm to max.mustermann@example.org."
    completion = ask("KEY_EU", prompt, model="eu-chat")
    content = completion.choices[0].message.content
    # The upstream echoed placeholders; the caller sees the originals.
    assert IBAN in content and "max.mustermann@example.org" in content
    assert "[IBAN_1]" not in content
    assert completion.model_extra["enclave"]["redacted"] is True
    assert completion.model_extra["enclave"]["deployment"] == "cloud-eu"
    assert completion.model_extra["enclave"]["jurisdiction"] == "eu"


def test_streamed_answers_are_restored_too():
    prompt = f"Transfer to {IBAN}, receipt to max.mustermann@example.org."
    stream = client("KEY_EU").chat.completions.create(
        model="eu-chat",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert IBAN in text and "max.mustermann@example.org" in text, text
    assert "[IBAN" not in text
    assert usage is not None and usage.completion_tokens == 7


def test_a_tenant_without_redaction_keeps_personal_data_home():
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_STRICT", f"Pay {IBAN}", model="eu-chat")
    assert e.value.code == "no_accredited_deployment"
    assert "cloud-eu" in str(e.value) and "personal data" in str(e.value)


def test_classified_content_is_never_redacted_and_sent():
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_EU_SECRET", "(S) The convoy leaves at 0400. Translate.", model="eu-chat")
    assert e.value.code == "no_accredited_deployment"
    assert "accredited only to UNCLASSIFIED" in str(e.value)


def test_auditors_may_not_call_models_and_do_not_see_them():
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_AUDITOR", "hello")
    assert e.value.code == "forbidden_by_policy"
    assert [m.id for m in client("KEY_AUDITOR").models.list()] == []
    assert CHAT in [m.id for m in client("KEY_EU").models.list()]


# Label integrity: markings Enclave cannot read, look-alike spellings and releasability by nation.
# KEY_EU is cleared UNCLASSIFIED and may use the EU provider (nation DEU); none of these may
# reach it (the Rust side asserts the provider saw only the two allowed requests).

NOT_FOR_DEU = [
    "(U//NF) The convoy leaves at dawn.",
    "UNCLASSIFIED//NOFORN\nThe convoy leaves at dawn.",
    "(U//REL TO USA, GBR) The convoy leaves at dawn.",
]


@pytest.mark.parametrize("prompt", NOT_FOR_DEU)
def test_content_not_releasable_to_the_provider_nation_never_reaches_it(prompt):
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_EU", prompt, model="eu-chat")
    assert e.value.code == "no_accredited_deployment"
    assert "eu-chat" in str(e.value) or "cloud-eu" in str(e.value)


LOOK_ALIKES = [
    "(s) The convoy leaves at dawn.",
    "( S ) The convoy leaves at dawn.",
    "\uff08S\uff09 The convoy leaves at dawn.",
    "(S\u200b) The convoy leaves at dawn.",
    "(\u0405) The convoy leaves at dawn.",
    "&#40;S&#41; The convoy leaves at dawn.",
    "(S\n) The convoy leaves at dawn.",
    "(TS//SCI) The convoy leaves at dawn.",
    "(TS//NOFORN//SCI) The convoy leaves at dawn.",
    "(S//FOUO) The convoy leaves at dawn.",
    "(S//LIMDIS) The convoy leaves at dawn.",
]


@pytest.mark.parametrize("prompt", LOOK_ALIKES)
def test_look_alike_and_umbrella_markings_are_read_at_their_level(prompt):
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask("KEY_EU", prompt, model="eu-chat")
    assert e.value.code == "label_exceeds_clearance"


@pytest.mark.parametrize(
    "prompt, token",
    [("(S//ORCON//XYZ) The convoy.", "XYZ"), ("(S//REL) The convoy.", "REL")],
)
def test_an_unknown_control_is_refused_naming_it(prompt, token):
    with pytest.raises(openai.BadRequestError) as e:
        ask("KEY_EU", prompt, model="eu-chat")
    assert e.value.code == "unrecognized_marking"
    assert f"`{token}`" in str(e.value)


def test_markings_in_tool_call_arguments_count_too():
    with pytest.raises(openai.PermissionDeniedError) as e:
        client("KEY_EU").chat.completions.create(
            model="eu-chat",
            max_tokens=4,
            messages=[
                {"role": "user", "content": "Look it up."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"q": "(\u0405//NF) convoy"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "nothing found"},
            ],
        )
    assert e.value.code == "label_exceeds_clearance"
