"""Tool calls and JSON output on the real embedded model (SmolLM2 via llama.cpp, no mocks):
grammar-constrained, so every forced call's input validates against its schema (jsonschema is
the judge).

Nothing here asserts what the model chooses (a city, a tool, how many calls, its words): only
what the code guarantees whatever it writes. ``max_tokens`` of a forced call is the grammar's
bound (:func:`embedded_model.forced_budget`), under which the call certainly closes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from embedded_model import GenerateSpy, call_budget, check_limit, digits_format, forced_budget
from streamchat import Client, InvalidRequestError, ModelError
from streamchat.providers import grammar, tool_prompt
from streamchat.providers.local import MAX_CALLS, LocalProvider
from streamchat.request import build_request
from tool_cases import CASES, covering, features

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
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        max_tokens=forced_budget([WEATHER]),
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
    assert not any(e.type == "content_block_delta" and e.delta.type == "text_delta" for e in events)
    message = stream.get_final_message()
    assert message.stop_reason == "tool_use"  # the budget covers the grammar's longest input
    (call,) = message.tool_calls
    assert call.input == json.loads("".join(fragments))
    jsonschema.validate(call.input, WEATHER["input_schema"])
    # token by token, not one blob at the end (no token spells a whole object)
    assert 1 < len(fragments) <= message.usage.output_tokens


def test_any_chooses_the_name_under_a_grammar_then_the_input(client: Client) -> None:
    message = client.messages.create(
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[WEATHER, TIME],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=forced_budget([WEATHER, TIME]),
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


def tokens_after_the_calls(spy: GenerateSpy, calls: int) -> int:
    """Tokens sampled after the last of ``calls`` inputs closed (the look for another call)."""
    end, closed = grammar.JSONEnd(), 0
    for i, token in enumerate(spy.tokens):
        if end.feed(spy.llama.detokenize([token]).decode(errors="replace")) >= 0:
            closed, end = closed + 1, grammar.JSONEnd()
            if closed == calls:
                return len(spy.tokens) - i - 1
    raise AssertionError(f"{closed} inputs closed, {calls} calls")


def test_parallel_calls_when_allowed_one_when_not(
    client: Client, local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How many calls the model makes is its choice; that it may make more is the code's: after
    a call it is asked whether another starts (up to MAX_CALLS); with parallel calls disabled
    not one token follows the call."""
    spy = GenerateSpy(local_model)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    events = list(
        client.messages.create(
            messages=TWO_CITIES,
            tools=[CITY],
            tool_choice={"type": "any"},
            max_tokens=forced_budget([CITY], parallel=True),
            temperature=0,
            stream=True,
        )
    )
    starts = [e for e in events if e.type == "content_block_start"]
    calls = len(starts)
    assert 1 <= calls <= MAX_CALLS
    assert [(e.index, e.content_block.type) for e in starts] == [
        (i, "tool_use") for i in range(calls)
    ]
    assert len({e.content_block.id for e in starts}) == calls
    for index in range(calls):
        fragments = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.index == index
        ]
        jsonschema.validate(json.loads("".join(fragments)), CITY["input_schema"])
    end = next(e for e in events if e.type == "message_delta")
    assert end.delta.stop_reason == "tool_use"
    assert end.usage.output_tokens == len(spy.text_tokens())
    if calls < MAX_CALLS:
        assert tokens_after_the_calls(spy, calls) >= 1  # it was asked whether another starts

    spy.tokens.clear()
    single = client.messages.create(
        messages=TWO_CITIES,
        tools=[CITY],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=forced_budget([CITY]),
        temperature=0,
    )
    (call,) = single.content
    assert call.type == "tool_use" and single.stop_reason == "tool_use"
    jsonschema.validate(call.input, CITY["input_schema"])
    assert tokens_after_the_calls(spy, 1) == 0


def test_forced_calls_over_every_schema_construct_validate(
    client: Client, local_model: LocalProvider
) -> None:
    """The cases of the fifty that use every schema construct at least twice (tool_cases.covering;
    benchmarks/tools.py runs all fifty), sampled (seeded) for more varied inputs than greedy
    decoding. A call whose grammar bound fits in the context certainly closes; one whose bound
    does not (long arrays of free strings) may be cut by the context, never be invalid.

    One at a time: on a busy 2-core machine, batched steps (whose threads wait for each other)
    cost more than they save."""
    chosen = covering(CASES)
    constructs = lambda cases: set().union(*(features(c.schema) for c in cases))  # noqa: E731
    assert constructs(chosen) == constructs(CASES) and len(chosen) < len(CASES) / 3
    window = min(local_model.n_ctx, local_model.engine.window)  # type: ignore[union-attr]
    failures = []
    for case in chosen:
        ask = {
            "messages": [{"role": "user", "content": case.prompt}],
            "tools": [case.tool],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        }
        room = window - local_model.count_tokens(build_request(model="m", **ask))
        budget = forced_budget([case.tool])
        seed = CASES.index(case)
        message = client.messages.create(**ask, max_tokens=budget, temperature=0.8, seed=seed)
        try:
            (call,) = message.content
            assert call.type == "tool_use" and call.name == case.name, call
            if budget <= room or message.stop_reason == "tool_use":
                assert message.stop_reason == "tool_use", message.stop_reason
                jsonschema.validate(call.input, case.schema)
            else:
                assert message.stop_reason == "max_tokens"
                assert message.usage.output_tokens == room
        except (AssertionError, jsonschema.ValidationError) as error:
            failures.append(f"{case.name}: {str(error)[:200]}")
    assert failures == []  # 100 %


def test_auto_answers_in_text_or_makes_a_valid_call(client: Client) -> None:
    """``auto``: text, calls, or text then calls, as the model chooses; the markup of a call never
    shows in the text, every call that closed validates, and the stop reason says how it ended."""
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
        kinds = [block.type for block in message.content]
        calls = kinds.count("tool_use")
        texts = kinds.count("text")
        assert texts <= 1 and kinds == ["text"] * texts + ["tool_use"] * calls, kinds
        assert calls <= MAX_CALLS and (texts or calls)
        check_limit(message.stop_reason, message.usage.output_tokens, 60)
        if message.stop_reason != "max_tokens":  # nothing was cut
            assert message.stop_reason == ("tool_use" if calls else "end_turn")
        for block in message.content:
            if block.type == "text":
                assert tool_prompt.CALL_OPEN not in block.text
            elif message.stop_reason != "max_tokens" or block is not message.content[-1]:
                jsonschema.validate(block.input, WEATHER["input_schema"])  # closed: valid


ANSWERING = [
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
]


def rendered(provider: LocalProvider, **fields: Any) -> tuple[str, int]:
    """The prompt the model reads for a request, and its length in tokens."""
    tokens, _ = provider.prompt_tokens(build_request(model="m", **fields))
    return provider.load().detokenize(tokens, special=True).decode(), len(tokens)


def test_tool_result_is_answered_in_text(client: Client, local_model: LocalProvider) -> None:
    """The result reaches the prompt (as text, the tools no longer offered), and the answer is
    text whose first character is neither a space nor a call's ``<`` (a grammar on the first
    token): what the model then says about the weather is its own business."""
    prompt, length = rendered(local_model, messages=ANSWERING, tools=[WEATHER])
    call = tool_prompt.call_text("get_weather", {"city": "Paris"})
    result = tool_prompt.RESULT_TEXT.format(text="18 degrees Celsius and sunny")
    assert prompt.index(call) < prompt.index(result)
    assert "<tools>" not in prompt  # answering: no tools to call again
    message = client.messages.create(
        messages=ANSWERING, tools=[WEATHER], max_tokens=40, temperature=0
    )
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == length
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")
    check_limit(message.stop_reason, message.usage.output_tokens, 40)
    assert message.text[:1].strip() and message.text[0] != "<", message.text


def test_tool_choice_none_answers_in_text(client: Client, local_model: LocalProvider) -> None:
    prompt, length = rendered(
        local_model, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert "<tools>" not in prompt  # ``none``: the tools are not shown
    message = client.messages.create(
        messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}, max_tokens=20, temperature=0
    )
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == length
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")
    check_limit(message.stop_reason, message.usage.output_tokens, 20)
    assert tool_prompt.CALL_OPEN not in message.text


def test_json_output_is_valid_against_its_schema(client: Client) -> None:
    words = {"type": "string", "maxLength": 24}
    schema = {
        "type": "object",
        "properties": {
            "name": words,
            "age": {"type": "integer"},
            "hobbies": {"type": "array", "items": words, "maxItems": 3},
            "indoor": {"type": "boolean"},
        },
        "required": ["name", "age", "hobbies", "indoor"],
    }
    for seed in range(3):
        message = client.messages.create(
            messages=[{"role": "user", "content": "Describe a cat called Felix."}],
            output_format={"type": "json_schema", "schema": schema},
            max_tokens=call_budget(schema),  # the grammar's longest object: it closes
            temperature=0.7,
            seed=seed,
        )
        assert message.stop_reason == "end_turn"
        assert [block.type for block in message.content] == ["text"]
        jsonschema.validate(json.loads(message.text), schema)


def test_json_object_output_is_an_object(client: Client) -> None:
    """Any object: no bound on its length, so it may be cut, but it is an object from its first
    character and, once closed, parses."""
    message = client.messages.create(
        messages=[{"role": "user", "content": "Give me a JSON object about Paris."}],
        output_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.text.startswith("{")
    check_limit(message.stop_reason, message.usage.output_tokens, 120)
    if message.stop_reason == "end_turn":
        assert isinstance(json.loads(message.text), dict)
    else:
        assert message.stop_reason == "max_tokens"
        with pytest.raises(json.JSONDecodeError):
            json.loads(message.text)  # cut, never repaired


def test_strict_schema_feature_the_grammar_cannot_enforce_is_refused_before_any_work(
    client: Client, sample_spy: SampleSpy
) -> None:
    tool = {
        "name": "lookup",
        "strict": True,
        "input_schema": {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    }
    with pytest.raises(InvalidRequestError) as info:
        client.messages.create(messages=ASK, tools=[tool], tool_choice={"type": "any"})
    assert info.value.message == (
        "tools.0.input_schema: JSON Schema keyword 'patternProperties' cannot be enforced"
        " with strict: true"
    )
    nested = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}
    with pytest.raises(InvalidRequestError, match=r"output_format.schema.properties.n: .*'multip"):
        client.messages.create(
            messages=ASK,
            output_format={"type": "json_schema", "schema": nested, "strict": True},
        )
    assert sample_spy.count == 0


# An input the grammar spells out to the last character, ten digits: at least ten tokens, since
# no token of this model holds two digits (test_no_token_holds_two_adjacent_digits), so a call
# certainly runs past a few tokens whatever the model would write.
CODE = {
    "name": "enter_code",
    "description": "Enter the door code",
    "input_schema": {
        "type": "object",
        "properties": {"code": {"const": "0123456789"}},
        "required": ["code"],
    },
}


def test_no_token_holds_two_adjacent_digits(local_model: LocalProvider) -> None:
    """What CODE and embedded_model.digits_format rely on: a run of n digits is n tokens."""
    llama = local_model.load()
    pieces = (llama.detokenize([token]) for token in range(llama.n_vocab()))
    assert not [piece for piece in pieces if re.search(rb"[0-9]{2}", piece)]


def test_max_tokens_cutting_a_call_keeps_the_partial_input(client: Client) -> None:
    def fragments(max_tokens: int) -> tuple[str, Any]:
        stream = client.messages.create(
            messages=ASK,
            tools=[CODE],
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

    whole, full = fragments(forced_budget([CODE], parallel=True))
    partial, message = fragments(3)  # the input takes ten tokens at least
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
    sample_spy.hold_after = 4  # the call takes ten tokens at least: it is still running then
    stream = client.messages.create(
        messages=ASK,
        tools=[CODE],
        tool_choice={"type": "any"},
        max_tokens=100,
        temperature=0,
        stream=True,
    )
    first = next(
        e for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert first.delta.partial_json
    assert sample_spy.holding.wait(timeout=60)
    stream.close()
    at_close = sample_spy.count
    sample_spy.release.set()
    deadline = time.monotonic() + 60
    while local_model.worker.busy and time.monotonic() < deadline:  # the run leaves the engine
        time.sleep(0.01)
    assert sample_spy.count - at_close <= 1
    again = client.messages.create(
        messages=ASK, output_format=digits_format(8), max_tokens=2, temperature=0
    )
    assert again.usage.output_tokens == 2  # the model is free again
    assert local_model.admission.count == 0


def test_grammars_are_compiled_once_per_schema(client: Client, local_model: LocalProvider) -> None:
    tool = {
        "name": "f",
        "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}},
    }
    ask = lambda: client.messages.create(  # noqa: E731
        messages=ASK,
        tools=[tool],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=forced_budget([tool]),
        temperature=0,
    )
    ask()
    assert local_model.grammars is not None
    compiles = local_model.grammars.compiles
    for _ in range(2):
        (call,) = ask().tool_calls
        jsonschema.validate(call.input, tool["input_schema"])
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
    assert provider._vocabulary is None
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
        messages=history, tools=[WEATHER], tool_choice={"type": "any"},
        max_tokens=forced_budget([WEATHER], parallel=True), temperature=0,
    )  # fmt: skip
    assert message.stop_reason == "tool_use"
    assert 1 <= len(message.tool_calls) <= MAX_CALLS
    for call in message.tool_calls:
        jsonschema.validate(call.input, WEATHER["input_schema"])
