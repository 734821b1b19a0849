"""Every tool schema the real APIs accept (issue 22): the grammar enforces what a grammar can,
``jsonschema`` checks the rest after generation, ``strict`` refuses what the grammar cannot.

The corpus is what real clients send: schemas in the shape a coding agent's tools have (JSON
Schema 2020-12 from zod: ``$schema``, 2**53 bounds, ``exclusiveMinimum``, ``propertyNames``...),
the ``tools/list`` of three MCP servers from the npm registry (run here, over stdio), and what
Pydantic writes for typed Python functions (as pydantic-ai, openai-agents and langchain do). Each
schema is accepted, and a call forced on the embedded model validates against the original
schema (``jsonschema`` is the judge); nothing asserts what the model writes inside it.
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cache import npm_folder
from embedded_model import forced_budget
from streamchat import Client, InvalidRequestError
from streamchat.providers import grammar
from streamchat.providers.grammar import MAX_ITEMS, MAX_STRING, compile_schema, number_gbnf
from streamchat.providers.local import RESAMPLES, LocalProvider

MCP_DIR = Path(__file__).parent / ".mcp"  # npm packages, ignored by git
MCP_SERVERS = {  # package: arguments after its script
    "@modelcontextprotocol/server-filesystem@2026.8.31": ["/tmp"],
    "@modelcontextprotocol/server-memory@2026.8.31": [],
    "@modelcontextprotocol/server-everything@2026.8.31": ["stdio"],
}
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SAFE = 9007199254740991  # zod's int bounds: Number.MAX_SAFE_INTEGER
UNBUDGETED = 600  # max_tokens of a call whose grammar has no bound (a pattern's *, recursion)


def agent(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An input schema as a coding agent's zod tools give it."""
    return {
        "$schema": DRAFT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


STRING = {"type": "string", "description": "annotated"}
AGENT_TOOLS: dict[str, dict[str, Any]] = {
    "Read": agent(
        {
            "file_path": {"type": "string", "description": "absolute path"},
            "offset": {"type": "integer", "minimum": -SAFE, "maximum": SAFE},
            "limit": {"type": "integer", "exclusiveMinimum": 0, "maximum": SAFE},
        },
        ["file_path"],
    ),
    "Bash": agent(
        {
            "command": STRING,
            "timeout": {"type": "number", "maximum": 600000, "minimum": 1},
            "run_in_background": {"type": "boolean", "default": False},
        },
        ["command"],
    ),
    "Grep": agent(
        {
            "pattern": STRING,
            "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
            "-A": {"type": "number"},
            "-i": {"type": "boolean"},
            "head_limit": {"type": "integer", "minimum": 0, "maximum": SAFE},
            "glob": {"type": "string", "pattern": "^[*?a-z./{},-]{1,40}$"},
        },
        ["pattern"],
    ),
    "TodoWrite": agent(
        {
            "todos": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "content": {"type": "string", "minLength": 1},
                        "status": {"type": "string", "enum": ["pending", "in_progress", "done"]},
                        "activeForm": {"type": "string", "minLength": 1, "maxLength": 40},
                    },
                    "required": ["content", "status", "activeForm"],
                    "additionalProperties": False,
                },
            }
        },
        ["todos"],
    ),
    "WebFetch": agent(
        {"url": {"type": "string", "format": "uri"}, "prompt": STRING},
        ["url", "prompt"],
    ),
    "Task": agent(
        {
            "description": {"type": "string", "title": "Short", "examples": ["Find a bug"]},
            "env": {
                "type": "object",
                "propertyNames": {"type": "string"},
                "additionalProperties": {"type": "string", "maxLength": 20},
            },
            "mode": {"anyOf": [{"const": "plan"}, {"const": "act"}, {"type": "null"}]},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
        },
        ["description", "mode"],
    ),
    "AskUserQuestion": agent(
        {
            "questions": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": STRING,
                        "options": {
                            "type": "array",
                            "minItems": 2,
                            "maxItems": 3,
                            "items": {"type": "string", "maxLength": 30},
                        },
                        "multiSelect": {"type": "boolean"},
                    },
                    "required": ["question", "options", "multiSelect"],
                    "additionalProperties": False,
                },
            },
            "headers": {
                "type": "object",
                "propertyNames": {"enum": ["accept", "user-agent"]},
                "additionalProperties": {"type": "string", "maxLength": 20},
            },
        },
        ["questions"],
    ),
}
# Keywords no grammar enforces: accepted, checked after generation.
LOOSE_TOOLS: dict[str, dict[str, Any]] = {
    "pick": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "uniqueItems": True,
                "minItems": 2,
                "maxItems": 3,
            },
            "step": {"type": "integer", "minimum": -50, "maximum": 50, "multipleOf": 5},
        },
        "required": ["tags", "step"],
    },
    "branch": {
        "type": "object",
        "properties": {"kind": {"enum": ["a", "b"]}, "size": {"type": "integer"}},
        "required": ["kind", "size"],
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"properties": {"size": {"maximum": 10}}},
        "dependentRequired": {"size": ["kind"]},
        "not": {"required": ["other"]},
    },
}


class Address(BaseModel):
    street: str
    city: str
    postcode: str = Field(pattern=r"^[0-9]{5}$")


class Booking(BaseModel):
    """What typed agent frameworks send for ``def book(booking: Booking)``."""

    model_config = ConfigDict(extra="forbid")
    guests: int = Field(ge=1, le=12)
    nights: int = Field(gt=0, lt=30)
    price: float = Field(ge=0, le=10000)
    arrival: datetime
    room: Literal["single", "double", "suite"]
    note: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=4)
    address: Address
    extras: dict[str, int] = Field(default_factory=dict)


class Step(BaseModel):
    action: Literal["move", "wait"]
    seconds: float = Field(gt=-1.5, le=2.5)
    then: list[Step] = Field(default_factory=list, max_length=2)


PYDANTIC_TOOLS: dict[str, dict[str, Any]] = {
    "book": Booking.model_json_schema(),
    "plan": TypeAdapter(Step).json_schema(),
    "scores": TypeAdapter(dict[Literal["low", "high"], int]).json_schema(),
}


def to_regex(gbnf: str) -> str:
    """The Python regex of a rule in the subset :func:`number_gbnf` writes (literals, classes,
    counted repeats, groups, alternatives)."""
    return re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf).replace(" ", "")


def canonical(value: int) -> bool:
    return len(str(abs(value))) <= grammar.MAX_DIGITS


INTEGER_RANGES = [
    (0, None), (1, None), (None, 0), (None, -1), (None, None), (-5, 5), (7, 7), (13, 987),
    (-987, -13), (100, 1000), (19, 20), (5, 123456), (-1000, None), (0, SAFE), (-SAFE, SAFE),
    (1, SAFE),
]  # fmt: skip


@pytest.mark.parametrize(("low", "high"), INTEGER_RANGES)
def test_integer_ranges_are_exact_at_any_size_and_sign(low: int | None, high: int | None) -> None:
    rule = re.compile(to_regex(number_gbnf(low, high, True) or ""))
    rng = random.Random(f"{low}:{high}")
    values = [*range(-1100, 1100), SAFE, -SAFE, 10**15, 10**16 - 1, 10**16]
    values += [rng.randint(-(10**17), 10**17) for _ in range(2000)]
    values += [bound + d for bound in (low, high) if bound is not None for d in (-1, 0, 1)]
    for value in values:
        inside = (low is None or value >= low) and (high is None or value <= high)
        assert bool(rule.fullmatch(str(value))) == (inside and canonical(value)), value
    assert not rule.fullmatch("-0") and not rule.fullmatch("007")


@pytest.mark.parametrize(
    ("low", "high"), [(0, None), (0.5, 2.5), (-7.25, 3), (None, -2), (-3, -1), (-1e300, 1e300)]
)
def test_number_ranges_write_only_numbers_inside(low: float | None, high: float | None) -> None:
    rule = re.compile(to_regex(number_gbnf(low, high, False) or ""))
    rng = random.Random(f"{low}:{high}")
    matched = 0
    for _ in range(20000):
        text = repr(round(rng.uniform(-20, 20), rng.randint(0, 4)))
        if rule.fullmatch(text):
            matched += 1
            value = float(text)
            assert (low is None or value >= low) and (high is None or value <= high), text
    assert matched  # not an empty rule
    assert number_gbnf(0.2, 0.7, False) is None  # no integer inside: left to the check


def test_exclusive_bounds_of_both_drafts() -> None:
    for schema in (
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 10,
         "exclusiveMaximum": True},
    ):  # fmt: skip
        bounded = grammar.bound_schema(schema, "x")
        rule = re.compile(to_regex(bounded[grammar.GBNF]))
        assert [n for n in range(-20, 20) if rule.fullmatch(str(n))] == list(range(1, 10))


def test_annotations_are_ignored_and_all_of_merged() -> None:
    schema = {
        "$schema": DRAFT,
        "$id": "urn:x",
        "title": "T",
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}},
            {"properties": {"a": {"maximum": 5}, "b": {"type": "string"}}, "required": ["b"]},
        ],
    }
    bounded = grammar.bound_schema(schema, "x")
    assert not {"$schema", "$id", "title", "allOf"} & bounded.keys()
    assert bounded["required"] == ["b"] and set(bounded["properties"]) == {"a", "b"}
    rule = re.compile(to_regex(bounded["properties"]["a"][grammar.GBNF]))
    assert [n for n in range(-9, 9) if rule.fullmatch(str(n))] == list(range(6))
    assert compile_schema(schema, "x").loose == ()


def test_bounds_never_make_a_schema_unsatisfiable() -> None:
    long = grammar.bound_schema({"type": "string", "minLength": 200}, "x")
    assert long["maxLength"] == 200
    plain = grammar.bound_schema({"type": "string"}, "x")
    assert plain["maxLength"] == MAX_STRING
    many = grammar.bound_schema({"type": "array", "items": {}, "minItems": 20}, "x")
    assert many["maxItems"] == 20
    assert grammar.bound_schema({"type": "array"}, "x")["maxItems"] == MAX_ITEMS


def test_property_names_as_an_enum_spell_out_the_keys() -> None:
    schema = {
        "type": "object",
        "propertyNames": {"enum": ["x", "y"]},
        "additionalProperties": {"type": "integer"},
    }
    bounded = grammar.bound_schema(schema, "x")
    assert set(bounded["properties"]) == {"x", "y"} and bounded["additionalProperties"] is False
    assert compile_schema(schema, "x", strict=True).loose == ()
    pattern = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
    assert compile_schema(pattern, "s").loose == (("s", "propertyNames"),)


def test_loose_keywords_are_named_and_refused_under_strict() -> None:
    compiled = compile_schema(LOOSE_TOOLS["pick"], "tools.0.input_schema")
    assert compiled.loose == (
        ("tools.0.input_schema.properties.tags", "uniqueItems"),
        ("tools.0.input_schema.properties.step", "multipleOf"),
    )
    assert compiled.problem('{"tags": ["red", "red"], "step": 5}') is not None
    assert compiled.problem('{"tags": ["red", "blue"], "step": 5}') is None
    with pytest.raises(InvalidRequestError) as info:
        compile_schema(LOOSE_TOOLS["pick"], "tools.0.input_schema", strict=True)
    assert info.value.message == (
        "tools.0.input_schema.properties.tags: JSON Schema keyword 'uniqueItems' cannot be"
        " enforced with strict: true"
    )
    for schema in [*AGENT_TOOLS.values(), *PYDANTIC_TOOLS.values()]:
        compile_schema(schema, "x", strict=True)  # the grammar enforces all of these


# a test forcing many calls generates thousands of tokens: 40 s on a quiet 2-core machine, but
# several times that when other work shares the cores (llama.cpp's threads contend)
GENERATES_A_LOT = pytest.mark.timeout(1200)


def forced_calls(tools: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    """One call forced per tool on the embedded model (four at a time, as the engine batches
    them): ``{name: (input, stop reason)}``."""
    client = Client()

    def call(name: str) -> tuple[Any, str]:
        tool = {"name": name, "description": f"The {name} tool", "input_schema": tools[name]}
        message = client.messages.create(
            messages=[{"role": "user", "content": f"Call {name} with sensible arguments."}],
            tools=[tool],
            tool_choice={"type": "tool", "name": name},
            max_tokens=cost(tools[name]),
            temperature=0,
        )
        (block,) = [block for block in message.content if block.type == "tool_use"]
        return block.input, str(message.stop_reason)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(tools, pool.map(call, tools), strict=True))


def budgeted(tool: dict[str, Any]) -> bool:
    try:
        forced_budget([tool])
    except ValueError:  # an unbounded repeat (a pattern's *): no budget certainly closes it
        return False
    return True


def check_calls(tools: dict[str, dict[str, Any]], calls: dict[str, tuple[Any, str]]) -> None:
    for name, (value, stop_reason) in calls.items():
        assert stop_reason == "tool_use", (name, stop_reason)
        jsonschema.validate(value, tools[name])


@pytest.mark.model
@GENERATES_A_LOT
def test_agent_and_pydantic_tools_give_valid_calls(local_model: LocalProvider) -> None:
    tools = {**AGENT_TOOLS, **PYDANTIC_TOOLS}
    check_calls(tools, forced_calls(tools))


@pytest.mark.model
@GENERATES_A_LOT
def test_loose_schemas_are_checked_and_counted(local_model: LocalProvider) -> None:
    checks = local_model.schema_checks
    before = checks.valid + checks.resampled + checks.invalid
    calls = forced_calls(LOOSE_TOOLS)
    for name, (value, stop_reason) in calls.items():
        assert stop_reason == "tool_use"
        compiled = compile_schema(LOOSE_TOOLS[name], "x")
        assert compiled.problem(json.dumps(value)) is None or checks.invalid > 0
    assert checks.valid + checks.resampled + checks.invalid >= before + len(calls)


@pytest.mark.model
def test_const_and_enum_strings_with_escapes_are_written_as_json(
    local_model: LocalProvider,
) -> None:
    """A ``const`` or ``enum`` string's JSON text, escapes and all (a newline is ``\\n`` in
    JSON, never a raw newline; ``\\f`` is one GBNF must not refuse): the call holds the value."""
    odd = 'line\nbreak \f feed "quoted" back\\slash\ttab'
    schema = {
        "type": "object",
        "properties": {"c": {"const": odd}, "e": {"enum": [odd, "plain"]}},
        "required": ["c", "e"],
    }
    message = Client().messages.create(
        messages=[{"role": "user", "content": "Fill it in."}],
        tools=[{"name": "odd", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "odd"},
        max_tokens=200,
        temperature=0,
    )
    (block,) = message.content
    assert block.input["c"] == odd and block.input["e"] in (odd, "plain")


def test_a_call_that_never_validates_is_resampled_then_returned_and_logged(
    local_model: LocalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsatisfiable past the grammar: every try is rewound and sampled again (the sequence's
    cells cut back each time), then the last is returned as written, whole, and logged."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"],
        "not": {"required": ["n"]},
    }
    tool = {"name": "never", "input_schema": schema}
    invalid = local_model.schema_checks.invalid
    with caplog.at_level(logging.WARNING, logger="streamchat.local"):
        with Client().messages.stream(
            messages=[{"role": "user", "content": "Pick a digit."}],
            tools=[tool],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            max_tokens=200,
            temperature=0,
        ) as stream:
            deltas = [e.delta.partial_json for e in stream if e.type == "content_block_delta"]
            message = stream.get_final_message()
    (block,) = message.content
    assert len(deltas) == 1 and json.loads(deltas[0]) == block.input  # held back, then whole
    assert set(block.input) == {"n"} and 0 <= block.input["n"] <= 9
    assert message.stop_reason == "tool_use"
    assert local_model.schema_checks.invalid == invalid + 1
    assert f"after {1 + RESAMPLES} tries" in caplog.text
    # every try was generated, and usage counts them: the same call under a schema it meets at
    # once (the grammar is the same: "not" is checked after) reports a single try's tokens
    met = {key: value for key, value in schema.items() if key != "not"}
    once = Client().messages.create(
        messages=[{"role": "user", "content": "Pick a digit."}],
        tools=[{"name": "never", "input_schema": met}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        max_tokens=200,
        temperature=0,
    )
    assert message.usage.output_tokens >= once.usage.output_tokens + RESAMPLES * 3
    # The sequence goes on as usual afterwards (its cells were cut back, not corrupted).
    again = Client().messages.create(
        messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert again.usage.output_tokens >= 1


def mcp_tools() -> dict[str, dict[str, Any]]:
    """The ``tools/list`` of each MCP server, asked over stdio as an MCP client does."""
    npm_folder(MCP_DIR, list(MCP_SERVERS), "to run the MCP servers")
    tools: dict[str, dict[str, Any]] = {}
    for package, arguments in MCP_SERVERS.items():
        folder = MCP_DIR / "node_modules" / package.rpartition("@")[0]
        script = folder / json.loads((folder / "package.json").read_text())["bin"].popitem()[1]
        requests = [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "streamchat-tests", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        ]  # fmt: skip
        server = subprocess.Popen(
            ["node", str(script), *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
            server.stdin.flush()
            while (reply := json.loads(server.stdout.readline())).get("id") != 2:
                pass
        finally:
            server.kill()
            server.wait()
        for tool in reply["result"]["tools"]:
            tools[tool["name"]] = tool["inputSchema"]
    assert len(tools) >= 20
    return tools


def constructs(schema: Any) -> set[str]:
    """The keywords and types a schema uses (what its grammar is made of)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(f"type:{value}" if key == "type" else key)
            if key not in ("properties", "$defs", "definitions"):
                found |= constructs(value)
            else:
                for sub in value.values() if isinstance(value, dict) else ():
                    found |= constructs(sub)
    elif isinstance(schema, list):
        for item in schema:
            found |= constructs(item)
    return found - set(grammar.ANNOTATIONS)


def cover(tools: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Few tools that together use every construct of ``tools``: greedy, the most new constructs
    per token of the call's budget first (a call under a big schema takes a small model long)."""
    left, chosen = set().union(*map(constructs, tools.values())), {}
    while left:
        name = max(tools, key=lambda n: (len(constructs(tools[n]) & left) / cost(tools[n]), n))
        chosen[name] = tools[name]
        left -= constructs(tools[name])
    return chosen


def cost(schema: dict[str, Any]) -> int:
    """``max_tokens`` of a call forced under ``schema`` (see :func:`forced_calls`)."""
    tool = {"name": "t", "input_schema": schema}
    return max(forced_budget([tool]), 64) if budgeted(tool) else UNBUDGETED


@pytest.mark.model
@GENERATES_A_LOT
def test_mcp_servers_tools_give_valid_calls(local_model: LocalProvider) -> None:
    """Every tool of the three servers is accepted, strict included (the grammar enforces all of
    it); calls are forced for a few that use every construct the others do."""
    tools = mcp_tools()
    for name, schema in tools.items():
        compile_schema(schema, name, strict=True)
    chosen = cover(tools)
    assert len(chosen) < len(tools) / 2
    check_calls(chosen, forced_calls(chosen))


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    """Random valid JSON Schemas: every type, bounds of any size and sign, unions, merges, loose
    keywords and annotations, nested."""
    bound = st.one_of(st.integers(-(10**18), 10**18), st.floats(-1e6, 1e6, allow_nan=False))
    annotations = st.fixed_dictionaries(
        {}, optional={"title": st.text(max_size=5), "description": st.text(max_size=5)}
    )
    numbers = st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": bound,
            "maximum": bound,
            "exclusiveMinimum": bound,
            "exclusiveMaximum": bound,
            "multipleOf": st.sampled_from([2, 5]),
        },
    )
    strings = st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": st.integers(0, 150),
            "maxLength": st.integers(150, 300),
            "format": st.sampled_from(["date", "date-time", "uuid", "email", "uri"]),
            "pattern": st.sampled_from(["^[a-z]{1,8}$", "^(yes|no)$", "[0-9]", "^a(?=b)$"]),
        },
    )
    leaves = st.one_of(
        numbers,
        strings,
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.builds(
            lambda v: {"enum": v},
            st.lists(st.integers() | st.text(max_size=4), min_size=1, max_size=3, unique=True),
        ),
        st.builds(lambda v: {"const": v}, st.text(max_size=4)),
        st.just({}),
    )

    def nest(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        names = st.text("abcdefgh-_", min_size=1, max_size=6)
        objects = st.builds(
            lambda props, extra, data: {
                "type": "object",
                "properties": props,
                "required": data.draw(st.lists(st.sampled_from(list(props)), unique=True))
                if props
                else [],
                **extra,
            },
            st.dictionaries(names, inner, max_size=4),
            st.fixed_dictionaries(
                {},
                optional={
                    "additionalProperties": st.booleans() | inner,
                    "propertyNames": st.sampled_from(
                        [
                            {"type": "string"},
                            {"enum": ["x", "y"]},
                            {"pattern": "^[a-z]+$"},
                            {"maxLength": 10},
                        ]
                    ),
                    "minProperties": st.just(1),
                    "not": st.just({"required": ["zz"]}),
                },
            ),
            st.data(),
        )
        arrays = st.builds(
            lambda items, extra: {"type": "array", "items": items, **extra},
            inner,
            st.fixed_dictionaries(
                {},
                optional={
                    "minItems": st.integers(0, 12),
                    "maxItems": st.integers(12, 20),
                    "uniqueItems": st.booleans(),
                },
            ),
        )
        unions = st.builds(
            lambda k, opts: {k: opts},
            st.sampled_from(["anyOf", "oneOf", "allOf"]),
            st.lists(inner, min_size=1, max_size=3),
        )
        return st.one_of(objects, arrays, unions)

    tree = st.recursive(leaves, nest, max_leaves=12)
    return st.builds(lambda node, notes: {**node, **notes}, tree, annotations)


@pytest.mark.model
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas())
def test_any_valid_schema_compiles_to_a_grammar_llama_cpp_accepts(
    local_model: LocalProvider, schema: dict[str, Any]
) -> None:
    """Inside a tool's object or as a JSON output: accepted, and the grammar parses (a strict
    compile either succeeds with nothing loose or names a keyword)."""
    wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    compiled = compile_schema(wrapped, "schema")
    assert local_model.grammars is not None
    local_model.grammars.compile(compiled.gbnf, "schema")
    try:
        strict = compile_schema(wrapped, "schema", strict=True)
    except InvalidRequestError as error:
        assert compiled.loose and "cannot be enforced with strict: true" in error.message
    else:
        assert strict.loose == () == compiled.loose
