"""The conversation digest: a request that continues a recorded conversation is recognised by
the digest of its system prompt and earlier turns, so the server appends to that conversation
(and a tape is found again on replay) instead of starting a new one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def thread_key(system: str | None, turns: Iterable[Any]) -> str:
    """A digest of a conversation's system prompt and turns (see :func:`turn_key`), to
    recognise its continuation."""
    data = json.dumps([system or "", *turns], ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def _tool_part(block: Any) -> list[Any] | None:
    """What identifies a tool call or result in a turn: ids, names, input, result text. Thinking
    is left out (clients and protocols that cannot carry it drop it when they send a reply back)."""
    if isinstance(block, dict):
        kind = block.get("type")
        if kind == "tool_use":
            block_id, name, data = block.get("id"), block.get("name"), block.get("input")
            return ["tool_use", block_id, name, json.dumps(data, sort_keys=True)]
        return None
    if block.type == "tool_use":
        return ["tool_use", block.id, block.name, json.dumps(block.input, sort_keys=True)]
    if block.type == "tool_result":
        return ["tool_result", block.tool_use_id, block.text, block.is_error]
    return None


def turn_key(role: str, text: str, blocks: Iterable[Any] = ()) -> Any:
    """One turn as :func:`thread_key` digests it: ``(role, text)`` when it holds no tool call
    or result (as before tools existed, so older keys still match), else with those too.
    ``blocks`` are a request turn's blocks or a recorded reply's block dicts."""
    tools = [part for part in map(_tool_part, blocks) if part is not None]
    return (role, text, tools) if tools else (role, text)


def request_turn_keys(request: Any) -> list[Any]:
    """Every turn of ``request`` (a MessageRequest) as :func:`turn_key` digests it."""
    return [turn_key(turn.role, turn.content, turn.blocks) for turn in request.messages]
