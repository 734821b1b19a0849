"""Stream tapes: one backend stream per JSON-lines file, for ``serve --record`` and ``replay/``.

Not the history (:mod:`.recording`): history keeps conversations for people to read back; a tape
keeps one stream exactly — every canonical event with its time since the request — so a stream
recorded once from a real backend can be served again offline, over any protocol. The two share
the conversation digest (:func:`~streamchat.recording.digest.thread_key`) that recognises a request.

A tape, line by line::

    {"tape": 1, "key": "<sha256>", "recorded_at": "…", "model": ..., "provider": ..., "request": {}}
    {"t": 0.0123, "event": {"type": "message_start", ...}}     # one line per event
    {"t": 0.0130, "event": {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "tool_use", "id": "toolu_…", ...}}}
    {"t": 0.2, "raise": {"type": "overloaded_error", "message": "Overloaded"}}   # an exception
    {"end": "complete" | "error" | "raise", "t": 0.9, "usage": {"input_tokens": 9, ...}}

Every canonical event is kept as sent, tool calls (ids, names, input fragments) and thinking (text
and signature) included, so a replay serves them to any protocol. Only the canonical request is
written (messages with their tool calls and results, system, tools, sampling parameters): no
headers, so no API keys or request signatures can end up in a tape.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import StreamchatError
from .events import StreamEvent, close_events
from .recording.digest import request_turn_keys, thread_key
from .request import MessageRequest

TAPE_VERSION = 1
SUFFIX = ".jsonl"
log = logging.getLogger("streamchat.tape")
_numbers = itertools.count(1)


def request_key(request: MessageRequest) -> str:
    """What a replay matches on: system prompt, turns (their text, tool calls and tool results,
    so an agent loop's second request finds the tape of its own step) and the tools offered;
    not the model (protocols name models differently, and a tape recorded from Bedrock must
    answer the Anthropic SDK), nor thinking or tool_choice settings, which not every protocol
    can express. A text-only request without tools keys as it did before tools existed."""
    turns: list[Any] = request_turn_keys(request)
    if request.tools:
        tools = [[t.name, t.description, t.input_schema] for t in request.tools]
        turns.append({"tools": json.dumps(tools, sort_keys=True, ensure_ascii=False)})
    return thread_key(request.system, turns)


def request_record(request: MessageRequest) -> dict[str, Any]:
    """The canonical request as a tape's header keeps it: a text-only turn as ``{role,
    content}``, a turn with tool calls, results or thinking with its ``blocks`` too; tool
    settings only when tools are offered."""
    record = asdict(request)
    record["messages"] = [
        {"role": turn.role, "content": turn.content}
        | ({"blocks": [block.to_dict() for block in turn.blocks]} if turn.blocks else {})
        for turn in request.messages
    ]
    if not request.tools:
        del record["tools"], record["tool_choice"]
    for name in ("thinking", "output_format"):
        if record[name] is None:
            del record[name]
    return record


@dataclass(slots=True)
class Tape:
    """A tape read back: ``steps`` are ``(seconds since the request, event dict)``."""

    path: Path
    key: str
    header: dict[str, Any]
    steps: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    raised: tuple[float, str, str] | None = None  # (t, error type, message)
    end: dict[str, Any] = field(default_factory=dict)


def read_tape(path: Path) -> Tape:
    """Parse one tape; ``ValueError`` names the file and line when it is not one."""
    tape: Tape | None = None
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            try:
                record = json.loads(line)
                if tape is None:
                    if record.get("tape") != TAPE_VERSION:
                        raise ValueError(f"not a version {TAPE_VERSION} tape header")
                    tape = Tape(path, record["key"], record)
                elif "event" in record:
                    tape.steps.append((float(record["t"]), record["event"]))
                elif "raise" in record:
                    error = record["raise"]
                    tape.raised = (float(record["t"]), error["type"], error["message"])
                elif "end" in record:
                    tape.end = record
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    if tape is None:
        raise ValueError(f"{path}: empty tape")
    return tape


def load_tapes(directory: str | os.PathLike[str]) -> list[Tape]:
    """Every tape in ``directory``, in recording order (file names start with the time)."""
    return [read_tape(path) for path in sorted(Path(directory).glob(f"*{SUFFIX}"))]


def _usage(events: list[dict[str, Any]]) -> dict[str, int]:
    usage = {"input_tokens": 0, "output_tokens": 0}
    for event in events:
        if event["type"] == "message_start":
            usage["input_tokens"] = event["message"]["usage"]["input_tokens"]
        elif event["type"] == "message_delta":
            usage["output_tokens"] = event["usage"]["output_tokens"]
            if event["usage"].get("input_tokens") is not None:
                usage["input_tokens"] = event["usage"]["input_tokens"]
    return usage


def _write(directory: Path, key: str, lines: list[dict[str, Any]]) -> None:
    """Write the whole tape at once and rename it into place: a replay never reads half."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"{stamp}-{os.getpid()}-{next(_numbers):06d}-{key[:12]}{SUFFIX}"
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{name}.partial"
        partial.write_text(body, encoding="utf-8")
        os.replace(partial, directory / name)
    except OSError as error:
        log.warning("cannot write a stream tape to %s: %s", directory, error)


def record_tape(
    directory: str | os.PathLike[str],
    request: MessageRequest,
    events: AsyncIterator[StreamEvent],
    *,
    provider: str,
) -> AsyncIterator[StreamEvent]:
    """Pass ``events`` through unchanged, writing them to a new tape in ``directory`` once the
    stream has ended (finished, in-stream error, or refused with an error). A stream the client
    abandoned is not written: it is not what the backend would have sent. Times count from now.
    """
    started = time.perf_counter()
    key = request_key(request)
    header = {
        "tape": TAPE_VERSION,
        "key": key,
        "recorded_at": datetime.now(UTC).isoformat(),
        "model": request.model,
        "provider": provider,
        "request": request_record(request),
    }
    return _record(Path(directory), key, header, events, started)


async def _record(
    directory: Path,
    key: str,
    header: dict[str, Any],
    events: AsyncIterator[StreamEvent],
    started: float,
) -> AsyncIterator[StreamEvent]:
    lines: list[dict[str, Any]] = [header]
    seen: list[dict[str, Any]] = []
    outcome: str | None = None
    try:
        async for event in events:
            data = event.to_dict()
            seen.append(data)
            lines.append({"t": round(max(0.0, event.timestamp - started), 6), "event": data})
            if event.type in ("message_stop", "error"):
                outcome = "complete" if event.type == "message_stop" else "error"
            yield event
    except StreamchatError as error:
        t = round(time.perf_counter() - started, 6)
        lines.append({"t": t, "raise": {"type": error.error_type, "message": error.message}})
        outcome = "raise"
        raise
    finally:
        try:
            await close_events(events)
        finally:
            if outcome is not None:
                last = max((line.get("t", 0.0) for line in lines[1:]), default=0.0)
                lines.append({"end": outcome, "t": last, "usage": _usage(seen)})
                # shielded: a client that leaves right after the last event still gets a tape
                await asyncio.shield(asyncio.to_thread(_write, directory, key, lines))
