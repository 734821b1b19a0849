"""Request validation: every bad input is an InvalidRequestError that names the offending field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamchat.errors import InvalidRequestError
from streamchat.request import MAX_STOP_SEQUENCES, Turn, build_request

USER = {"role": "user", "content": "hello"}


def build(**overrides: Any):
    params: dict[str, Any] = {"model": "m", "messages": [USER], **overrides}
    return build_request(**params)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": ["hello"]}, "messages.0"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),  # no user turn
        ({"messages": [USER, {"role": "robot", "content": "x"}, USER]}, "messages.1.role"),
        ({"messages": [{"content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [USER, {"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [1]}]}, "messages.0.content.0"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 1_000_000}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": 10.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": "lucky"}, "seed"),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"stop_sequences": [7]}, "stop_sequences"),
        ({"stop_sequences": ["x"] * (MAX_STOP_SEQUENCES + 1)}, "stop_sequences"),
        ({"system": [{"type": "image", "source": {}}]}, "system.0"),
    ],
)
def test_bad_input_raises_invalid_request_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build(**overrides)
    assert info.value.message.startswith(f"{field}:"), info.value.message
    assert info.value.status_code == 400


def test_last_message_must_be_from_the_user() -> None:
    with pytest.raises(InvalidRequestError, match="last message must have role 'user'"):
        build(messages=[USER, {"role": "assistant", "content": "hi"}])


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "source": {"type": "base64", "data": "..."}},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        {"image": {"format": "png"}},  # Bedrock image block
        {"type": "text", "text": None},
    ],
)
def test_unsupported_or_misplaced_content_blocks_are_rejected(block: Any) -> None:
    content = [{"type": "text", "text": "look: "}, block]
    with pytest.raises(InvalidRequestError) as info:
        build(messages=[{"role": "user", "content": content}])
    assert re.match(r"messages\.0\.content\.1[:.]", info.value.message)


def test_plain_string_content_is_accepted() -> None:
    request = build(messages=[{"role": "user", "content": "Write me a sonnet"}])
    assert request.messages == [Turn("user", "Write me a sonnet")]


def test_bedrock_style_text_blocks_are_accepted() -> None:
    request = build(
        messages=[{"role": "user", "content": [{"text": "hello "}, {"text": "world"}]}],
        system=[{"text": "Be brief."}],
    )
    assert request.messages == [Turn("user", "hello world")]
    assert request.system == "Be brief."


def test_anthropic_text_blocks_are_accepted() -> None:
    request = build(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
            {"role": "user", "content": {"type": "text", "text": "sup"}},
        ]
    )
    assert request.messages == [
        Turn("user", "hi"),
        Turn("assistant", "Hello!"),
        Turn("user", "sup"),
    ]


def test_valid_request_keeps_every_parameter() -> None:
    request = build_request(
        model="m",
        messages=(USER,),
        max_tokens=40,
        system="sys",
        temperature=0,
        top_p=0.5,
        top_k=7,
        stop_sequences="END",
        seed=3,
    )
    assert (request.model, request.max_tokens, request.system) == ("m", 40, "sys")
    assert (request.temperature, request.top_p, request.top_k, request.seed) == (0.0, 0.5, 7, 3)
    assert request.stop_sequences == ["END"]


def test_temperature_bounds_are_inclusive() -> None:
    assert build(temperature=0).temperature == 0.0
    assert build(temperature=2).temperature == 2.0


def test_max_tokens_limit_can_be_lowered_by_the_caller() -> None:
    assert build(max_tokens=100, max_tokens_limit=100).max_tokens == 100
    with pytest.raises(InvalidRequestError, match="max_tokens: must be between 1 and 100"):
        build(max_tokens=101, max_tokens_limit=100)


def test_empty_system_prompt_becomes_none() -> None:
    assert build(system="").system is None
    assert build(system=[]).system is None
