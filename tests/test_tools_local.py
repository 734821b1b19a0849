"""Tool calls and JSON output on the real embedded model (SmolLM2 via llama.cpp, no mocks):
grammar-constrained, so every forced call's input validates against its schema (jsonschema is
the judge)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from streamchat import Client, InvalidRequestError, ModelError
from streamchat.providers import grammar
from streamchat.providers.local import LocalProvider
from streamchat.request import build_request
from tool_cases import CASES

pytestmark = pytest.mark.model

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "description": "The current time in a timezone",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}
ASK = [{"role": "user", "content": "What's the weather in Paris for the next 3 days?"}]


@pytest.fixture
def client(local_model: LocalProvider) -> Client:
    return Client()


class SampleSpy:
    """Counts tokens sampled by the constrained path; ``hold_after=N`` pauses after the N-th."""

    def __init__(self, hold_after: int | None = None):
        self.count = 0
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()

    def wrap(self, sample: Any) -> Any:
        def spy(sampler: grammar.TokenSampler, ctx: Any, idx: int = -1) -> int:
            token = sample(sampler, ctx, idx)
            self.count += 1
            if self.count == self.hold_after:
                self.holding.set()
                assert self.release.wait(timeout=60), "the test never released generation"
            return token

        return spy


@pytest.fixture
def sample_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleSpy]:
    spy = SampleSpy()
    monkeypatch.setattr(grammar.TokenSampler, "sample", spy.wrap(grammar.TokenSampler.sample))
    yield spy


def test_forced_call_streams_a_valid_input_as_json_fragments(client: Client) -> None:
    stream = client.messages.create(
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    events = list(stream)
    starts = [e for e in events if e.type == "content_block_start"]
    assert len(starts) == 1
    block = starts[0].content_block
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_")
    fragments = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(fragments) > 3  # token by token, not one blob at the end
    assert not any(e.type == "content_block_delta" and e.delta.type == "text_delta" for e in events)
    message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    (call,) = message.tool_calls
    assert call.input == json.loads("".join(fragments))
    jsonschema.validate(call.input, WEATHER["input_schema"])
    assert call.input["city"] == "Paris"


def test_any_chooses_the_name_under_a_grammar_then_the_input(client: Client) -> None:
    message = client.messages.create(
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[WEATHER, TIME],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=60,
        temperature=0,
    )
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert call.type == "tool_use" and call.name in ("get_weather", "get_time")
    tool = WEATHER if call.name == "get_weather" else TIME
    jsonschema.validate(call.input, tool["input_schema"])


CITY = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TWO_CITIES = [  # a history with two calls in one turn shows this small model the format
    {"role": "user", "content": "What's the weather in Rome and in Oslo?"},
    {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "25 degrees"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "3 degrees"},
        ],
    },
    {"role": "assistant", "content": "Rome: 25 degrees, Oslo: 3 degrees."},
    {"role": "user", "content": "What's the weather in Paris and in London?"},
]


def test_parallel_calls_when_allowed_one_when_not(client: Client) -> None:
    events = list(
        client.messages.create(
            messages=TWO_CITIES,
            tools=[CITY],
            tool_choice={"type": "any"},
            max_tokens=80,
            temperature=0,
            stream=True,
        )
    )
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(e.index, e.content_block.type) for e in starts] == [(0, "tool_use"), (1, "tool_use")]
    assert starts[0].content_block.id != starts[1].content_block.id
    inputs = []
    for index in (0, 1):
        fragments = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.index == index
        ]
        inputs.append(json.loads("".join(fragments)))
        jsonschema.validate(inputs[-1], CITY["input_schema"])
    assert inputs == [{"city": "Paris"}, {"city": "London"}]
    single = client.messages.create(
        messages=TWO_CITIES,
        tools=[CITY],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=80,
        temperature=0,
    )
    assert [block.input for block in single.content] == [{"city": "Paris"}]
    assert single.stop_reason == "tool_use"


def test_every_forced_call_over_fifty_cases_validates(client: Client) -> None:
    failures = []
    for seed, case in enumerate(CASES):
        message = client.messages.create(
            messages=[{"role": "user", "content": case.prompt}],
            tools=[case.tool],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            max_tokens=160,
            temperature=0.8,  # sampled (seeded): more varied inputs than greedy decoding
            seed=seed,
        )
        calls = message.tool_calls
        try:
            assert message.stop_reason == "tool_use", message.stop_reason
            assert len(calls) == 1 and calls[0].name == case.name
            jsonschema.validate(calls[0].input, case.schema)
        except (AssertionError, jsonschema.ValidationError) as error:
            failures.append((case.name, str(error)[:200]))
    assert failures == []  # 100 %


def test_auto_answers_in_text_or_makes_a_valid_call(client: Client) -> None:
    seen = set()
    for seed in range(4):
        message = client.messages.create(
            messages=[
                {"role": "user", "content": "What's the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": "18 degrees Celsius and sunny",
                        }
                    ],
                },
                {"role": "assistant", "content": "It is 18 degrees Celsius and sunny in Paris."},
                {"role": "user", "content": "And what's the weather in London?"},
            ],
            tools=[WEATHER],
            max_tokens=60,
            temperature=0.7,
            seed=seed,
        )
        for block in message.content:
            if block.type == "tool_use":
                jsonschema.validate(block.input, WEATHER["input_schema"])
        kinds = [block.type for block in message.content]
        assert kinds in (["text"], ["tool_use"], ["text", "tool_use"]), kinds
        assert message.stop_reason == ("tool_use" if "tool_use" in kinds else "end_turn")
        seen.add(kinds[-1])
    assert "tool_use" in seen  # the few-shot history makes this model open a call


def test_tool_result_is_answered_in_text(client: Client) -> None:
    message = client.messages.create(
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "18 degrees Celsius and sunny",
                    }
                ],
            },
        ],
        tools=[WEATHER],
        max_tokens=40,
        temperature=0,
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert "18" in message.text, message.text


def test_tool_choice_none_answers_in_text(client: Client) -> None:
    message = client.messages.create(
        messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}, max_tokens=20, temperature=0
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_json_output_is_valid_against_its_schema(client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "hobbies": {"type": "array", "items": {"type": "string"}},
            "indoor": {"type": "boolean"},
        },
        "required": ["name", "age", "hobbies", "indoor"],
    }
    for seed in range(3):
        message = client.messages.create(
            messages=[{"role": "user", "content": "Describe a cat called Felix."}],
            output_format={"type": "json_schema", "schema": schema},
            max_tokens=120,
            temperature=0.7,
            seed=seed,
        )
        assert message.stop_reason == "end_turn"
        assert [block.type for block in message.content] == ["text"]
        jsonschema.validate(json.loads(message.text), schema)


def test_json_object_output_is_an_object(client: Client) -> None:
    message = client.messages.create(
        messages=[{"role": "user", "content": "Give me a JSON object about Paris."}],
        output_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
    )
    assert message.stop_reason == "end_turn"
    assert isinstance(json.loads(message.text), dict)


def test_unsupported_schema_feature_is_refused_before_any_work(
    client: Client, sample_spy: SampleSpy
) -> None:
    tool = {
        "name": "lookup",
        "input_schema": {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    }
    with pytest.raises(InvalidRequestError) as info:
        client.messages.create(messages=ASK, tools=[tool], tool_choice={"type": "any"})
    assert info.value.message == (
        "tools.0.input_schema: unsupported JSON Schema feature 'patternProperties'"
    )
    nested = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}
    with pytest.raises(InvalidRequestError, match=r"output_format.schema.properties.n: .*'multip"):
        client.messages.create(
            messages=ASK, output_format={"type": "json_schema", "schema": nested}
        )
    assert sample_spy.count == 0


def test_max_tokens_cutting_a_call_keeps_the_partial_input(client: Client) -> None:
    def fragments(max_tokens: int) -> tuple[str, Any]:
        stream = client.messages.create(
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "any"},
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        )
        parts = [
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        return "".join(parts), stream.get_final_message()

    whole, full = fragments(60)
    partial, message = fragments(3)
    assert full.stop_reason == "tool_use"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    (call,) = message.content
    assert call.type == "tool_use" and call.partial_json == partial
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial)  # exactly as generated: never repaired
    assert whole.startswith(partial) and len(partial) < len(whole)


def test_closing_a_constrained_call_stops_within_one_token(
    client: Client, local_model: LocalProvider, sample_spy: SampleSpy
) -> None:
    sample_spy.hold_after = 4
    stream = client.messages.create(
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        max_tokens=100,
        temperature=0,
        stream=True,
    )
    first = next(
        e for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert first.delta.partial_json
    assert sample_spy.holding.wait(timeout=30)
    stream.close()
    at_close = sample_spy.count
    sample_spy.release.set()
    deadline = time.monotonic() + 30
    while local_model.worker.busy and time.monotonic() < deadline:  # the run leaves the engine
        time.sleep(0.01)
    assert sample_spy.count - at_close <= 1
    again = client.messages.create(messages=ASK, max_tokens=2, temperature=0)
    assert again.usage.output_tokens == 2  # the model is free again
    assert local_model.admission.count == 0


def test_grammars_are_compiled_once_per_schema(client: Client, local_model: LocalProvider) -> None:
    tool = {
        "name": "f",
        "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}},
    }
    ask = lambda: client.messages.create(  # noqa: E731
        messages=ASK, tools=[tool], tool_choice={"type": "any"}, max_tokens=20, temperature=0
    )
    ask()
    assert local_model.grammars is not None
    compiles = local_model.grammars.compiles
    for _ in range(2):
        message = ask()
        jsonschema.validate(message.tool_calls[0].input, tool["input_schema"])
    assert local_model.grammars.compiles == compiles


def test_bounds_keep_a_small_model_from_looping() -> None:
    bounded = grammar.bound_schema(
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}},
        "x",
    )
    tags = bounded["properties"]["tags"]
    assert tags["maxItems"] == grammar.MAX_ITEMS
    assert tags["items"]["maxLength"] == grammar.MAX_STRING
    assert bounded["additionalProperties"] is False
    kept = grammar.bound_schema({"type": "array", "items": {}, "minItems": 20}, "x")
    assert kept["maxItems"] == 20  # never below what the schema demands


def test_base_model_refuses_tools_clearly() -> None:
    try:
        provider = LocalProvider("gemma3-270m")
    except ModelError:
        pytest.skip("gemma3-270m is not installed")
    request = build_request(model="gemma3-270m", messages=ASK, tools=[WEATHER])
    with pytest.raises(InvalidRequestError, match="model gemma3-270m cannot use tools"):
        provider.prompt_tokens(request)  # refused before the model is even loaded
    assert provider._llama is None
    with pytest.raises(InvalidRequestError, match=r"^tools: model gemma3-270m cannot use tools"):
        Client().messages.create(model="gemma3", messages=ASK, tools=[WEATHER], max_tokens=5)


# A GGUF whose own template renders tools (Qwen2.5's shape, condensed): streamchat passes the
# tools, calls and results to it in the transformers message shape instead of its own format.
TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{{ messages[0].content if messages[0].role == 'system' else 'You are a helpful assistant.' }}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags.<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content }}{% for call in message.tool_calls %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_a_template_that_renders_tools_gets_them(
    client: Client, local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=TOOLS_TEMPLATE, eos_token="<|im_end|>", bos_token="", add_generation_prompt=True
    )
    monkeypatch.setattr(local_model, "_formatter", formatter)
    monkeypatch.setattr(local_model, "_template_tools", True)
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "18 degrees Celsius and sunny"}]},
        {"role": "user", "content": "And in Rome?"},
    ]  # fmt: skip
    request = build_request(model="m", messages=history, tools=[WEATHER])
    tokens, _ = local_model.prompt_tokens(request)
    prompt = local_model.load().detokenize(tokens, special=True).decode()
    assert "# Tools\n<tools>" in prompt and '"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n18 degrees Celsius and sunny\n</tool_response>" in prompt
    message = client.messages.create(
        messages=history, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=60,
        temperature=0,
    )  # fmt: skip
    assert message.stop_reason == "tool_use"
    for call in message.tool_calls:
        jsonschema.validate(call.input, WEATHER["input_schema"])
