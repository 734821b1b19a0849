"""``/v1/responses`` judged by the unmodified ``openai`` SDK (its Responses types and helpers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

import openai
import pytest

from serving import serve_in_thread
from streamchat.providers import get_provider
from streamchat.providers.scripted import ScriptedProvider
from streamchat.server.common import ServerConfig

TEXT = "Responses stream one word at a time."
ECHO = "scripted?tag=responses-echo"
FIXED = "scripted?" + urlencode({"text": TEXT, "tag": "responses-fixed"})
WEATHER = {"city": "Paris", "days": 2}
TOOLS = "scripted?" + urlencode({"tool_input": json.dumps(WEATHER), "tag": "responses-tools"})
FAILING = "scripted?" + urlencode({"text": TEXT, "error_after": 2, "error": "overloaded_error"})
BUSY = "scripted?error_before=overloaded_error"
CACHED = "scripted?" + urlencode({"text": TEXT, "cache_read": 7, "tag": "responses-cached"})
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
FUNCTION = {"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": False}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    models = [FIXED, TOOLS, FAILING, BUSY, CACHED]
    with serve_in_thread(ServerConfig(default_model=ECHO, models=models)) as base:
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def provider(spec: str) -> ScriptedProvider:
    scripted = get_provider(spec)
    assert isinstance(scripted, ScriptedProvider)
    return scripted


def test_create_returns_a_completed_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model=FIXED, input="Say something", instructions="Be brief")
    assert response.object == "response" and response.id.startswith("resp_")
    assert (response.status, response.model, response.output_text) == ("completed", FIXED, TEXT)
    [item] = response.output
    assert (item.type, item.role, item.status) == ("message", "assistant", "completed")
    assert response.usage.output_tokens == len(TEXT.split())
    assert response.usage.total_tokens == response.usage.input_tokens + len(TEXT.split())
    assert provider(FIXED).requests[-1].system == "Be brief"


def test_usage_counts_prompt_cache_reads_inside_input_tokens_as_chat_completions_does(
    client: openai.OpenAI,
) -> None:
    """OpenAI counts cached tokens inside the prompt's total, in both APIs (Anthropic's
    ``input_tokens`` leave them out)."""
    prompt = "Say something"
    chat = client.chat.completions.create(
        model=CACHED, messages=[{"role": "user", "content": prompt}]
    ).usage
    response = client.responses.create(model=CACHED, input=prompt).usage
    streamed = list(client.responses.create(model=CACHED, input=prompt, stream=True))
    assert chat.prompt_tokens_details.cached_tokens == 7
    assert response.input_tokens_details.cached_tokens == 7
    assert response.input_tokens == chat.prompt_tokens > 7
    assert response.total_tokens == response.input_tokens + response.output_tokens
    assert streamed[-1].response.usage == response


def test_stream_emits_the_documented_event_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=FIXED, input="Say something", stream=True))
    kinds = [event.type for event in events]
    words = len(TEXT.split())
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * words,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert events[-1].response.output_text == TEXT
    assert events[0].response.id == events[-1].response.id


def test_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=FIXED, input="Say something") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == TEXT


def test_a_function_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=TOOLS, input="Weather in Paris?", tools=[FUNCTION], tool_choice="required"
    )
    [call] = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        WEATHER,
    )
    assert call.call_id.startswith("toolu_")
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"},
    ]
    answer = client.responses.create(model=TOOLS, input=items, tools=[FUNCTION])
    assert answer.output_text == "[turn 2] Tool result: 18 C"
    request = provider(TOOLS).requests[-1]
    assert request.messages[1].blocks[0].input == WEATHER


def test_streamed_function_call_arguments(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=TOOLS,
        input="Weather?",
        tools=[FUNCTION],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        fragments = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert len(fragments) > 1 and json.loads("".join(fragments)) == WEATHER
    assert json.loads(final.output[0].arguments) == WEATHER


def test_previous_response_id_continues_the_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=ECHO, input="My name is Ada.")
    second = client.responses.create(
        model=ECHO, input="What is my name?", previous_response_id=first.id
    )
    assert second.output_text == "[turn 2] You said: What is my name?"
    turns = provider(ECHO).requests[-1].messages
    assert [(t.role, t.content) for t in turns] == [
        ("user", "My name is Ada."),
        ("assistant", first.output_text),
        ("user", "What is my name?"),
    ]
    assert second.previous_response_id == first.id


def test_a_tool_result_continues_from_the_previous_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model=TOOLS, input="Weather?", tools=[FUNCTION])
    output = {"type": "function_call_output", "call_id": first.output[0].call_id, "output": "sunny"}
    answer = client.responses.create(
        model=TOOLS, input=[output], tools=[FUNCTION], previous_response_id=first.id
    )
    assert answer.output_text == "[turn 2] Tool result: sunny"


def test_retrieve_and_delete_a_stored_response(client: openai.OpenAI) -> None:
    created = client.responses.create(model=FIXED, input="Keep this")
    assert client.responses.retrieve(created.id).output_text == TEXT
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    created = client.responses.create(model=FIXED, input="Forget this", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_json_schema_format_reaches_the_model_as_json_output(client: openai.OpenAI) -> None:
    client.responses.create(
        model=FIXED,
        input="Paris weather as JSON",
        text={"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA}},
    )
    output_format = provider(FIXED).requests[-1].output_format
    assert output_format is not None and output_format.schema["required"] == ["city"]


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model=FIXED, input="Say something", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == " ".join(TEXT.split()[:3])


def test_a_failure_mid_stream_is_a_response_failed_event(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=FAILING, input="Say something", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "rate_limit_exceeded"
    assert events[-1].response.output[0].content[0].text == " ".join(TEXT.split()[:2])


@pytest.mark.parametrize(
    ("params", "error", "param"),
    [
        ({"max_output_tokens": 0}, openai.BadRequestError, "max_output_tokens"),
        ({"tools": [{"type": "web_search"}]}, openai.BadRequestError, "tools.0.type"),
        (
            {"tools": [FUNCTION], "tool_choice": {"type": "function", "name": "nope"}},
            openai.BadRequestError,
            "tool_choice.name",
        ),
        ({"previous_response_id": "resp_missing"}, openai.NotFoundError, None),
        (
            {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
            openai.BadRequestError,
            None,
        ),
        ({"model": BUSY}, openai.RateLimitError, None),
    ],
)
def test_bad_requests_get_openais_error_shape(client, params, error, param) -> None:
    with pytest.raises(error) as info:
        client.responses.create(**{"model": FIXED, "input": "hi", **params})
    body = info.value.body
    assert isinstance(body, dict) and body["message"]
    if param is not None:
        assert body["param"] == param
