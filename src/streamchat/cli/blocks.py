"""What ``ask`` and ``chat`` show of a reply's blocks, sans-IO: canonical events in, pieces out.

Text is the answer. A tool call is shown compactly, as it streams: ``⚙ get_weather(`` at its
start, its JSON input fragments as they arrive, ``)`` at its end — one line a person reads as a
call. Thinking is reasoning, not the answer: each front end shows it apart (dimmed, or on stderr).
"""

from __future__ import annotations

import json
from typing import Any, Literal

TOOL_MARK = "⚙"
# messages.stream() interleaves the Anthropic SDK's helper events; they repeat the deltas
HELPER_EVENTS = frozenset({"text", "input_json", "thinking", "signature"})

Piece = tuple[Literal["text", "tool_start", "tool", "tool_end", "thinking", "thinking_end"], str]


class ReplyView:
    """Feed each event; get ``(kind, text)`` pieces to show. O(1) per event; helper events
    (``text``, ``input_json``…) that ``messages.stream()`` interleaves are ignored."""

    def __init__(self) -> None:
        self._kinds: dict[int, str] = {}  # block index -> block type
        self._given: dict[int, Any] = {}  # a tool call's input given whole at its start
        self._streamed: set[int] = set()  # tool calls whose input arrived as fragments

    def feed(self, event: Any) -> list[Piece]:
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [("text", delta.text)] if delta.text else []
            if delta.type == "input_json_delta":
                self._streamed.add(event.index)
                return [("tool", delta.partial_json)] if delta.partial_json else []
            if delta.type == "thinking_delta":
                return [("thinking", delta.thinking)] if delta.thinking else []
            return []  # signature_delta: nothing a person reads
        if kind == "content_block_start":
            block = event.content_block
            self._kinds[event.index] = block.type
            if block.type == "tool_use":
                if block.input:
                    self._given[event.index] = block.input
                return [("tool_start", f"{TOOL_MARK} {block.name}(")]
            if block.type == "text" and block.text:
                return [("text", block.text)]
            if block.type == "thinking" and block.thinking:
                return [("thinking", block.thinking)]
            return []
        if kind == "content_block_stop":
            block_kind = self._kinds.pop(event.index, None)
            if block_kind == "tool_use":
                given = self._given.pop(event.index, None)
                whole = "" if event.index in self._streamed or given is None else given
                self._streamed.discard(event.index)
                text = json.dumps(whole, ensure_ascii=False) if whole else ""
                return [("tool_end", f"{text})")]
            if block_kind == "thinking":
                return [("thinking_end", "")]
        return []

    def close(self) -> list[Piece]:
        """A reply cut short inside a tool call or thinking: close what is open."""
        pieces: list[Piece] = []
        for block_kind in self._kinds.values():
            if block_kind == "tool_use":
                pieces.append(("tool_end", ")"))
            elif block_kind == "thinking":
                pieces.append(("thinking_end", ""))
        self._kinds.clear()
        return pieces
