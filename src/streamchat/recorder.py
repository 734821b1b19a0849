"""Recording replies into the history as they stream: O(1) per token, a write now and then.

:class:`ReplyRecorder` serves the CLI (sync); :func:`record_stream` wraps a server's async event
iterator in one line. Both are fail-soft: a history problem is reported once, never raised into
the stream being recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from .accumulate import parse_partial_json
from .errors import HistoryError, StreamchatError
from .events import StreamEvent, close_events
from .history import HistoryStore
from .metrics import Metrics, MetricsRecorder

log = logging.getLogger("streamchat.history")

FLUSH_SECONDS = 0.5  # a streaming reply's text reaches the database at least this often...
FLUSH_TOKENS = 256  # ...or after this many tokens, whichever comes first


class _Block:
    """One content block of a streaming reply: its fragments kept in a list (O(1) per token),
    joined only when the row is written."""

    __slots__ = ("id", "input", "kind", "name", "parts", "signature")

    def __init__(self, kind: str, id: str = "", name: str = "", input: Any = None) -> None:
        self.kind = kind
        self.id = id
        self.name = name
        self.input = input  # a tool call's input given whole at its start (rare)
        self.parts: list[str] = []  # text, thinking, or a tool call's JSON fragments
        self.signature: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        """The block as stored; a tool call cut short keeps its raw JSON in ``partial_json``
        beside the members that arrived whole (``input``)."""
        joined = "".join(self.parts)
        if self.kind == "text":
            return {"type": "text", "text": joined}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": joined, "signature": "".join(self.signature)}
        block: dict[str, Any] = {"type": "tool_use", "id": self.id, "name": self.name}
        if not joined:
            block["input"] = self.input if self.input is not None else {}
            return block
        try:
            block["input"] = json.loads(joined)
        except ValueError:
            block["input"] = parse_partial_json(joined)
            block["partial_json"] = joined
        return block


_DELTA_PARTS = {  # delta type -> (block kind, attribute holding its fragment)
    "text_delta": ("text", "text"),
    "input_json_delta": ("tool_use", "partial_json"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("thinking", "signature"),
}


class ReplyRecorder:
    """Writes one assistant reply as it streams: O(1) per token, a row write at most every
    ``flush_seconds`` or ``flush_tokens``. The row is created at the first token with
    ``interrupted=1`` and cleared only by a normal end, so a killed process leaves the truth."""

    def __init__(
        self,
        store: HistoryStore,
        conversation_id: int,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_tokens: int = FLUSH_TOKENS,
        on_error: Callable[[HistoryError], None] | None = None,
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.message_id: int | None = None
        self.flush_seconds = flush_seconds
        self.flush_tokens = flush_tokens
        self.on_error = on_error
        self.failed: HistoryError | None = None
        self._blocks: dict[int, _Block] = {}  # by stream index
        self._text_parts: list[str] = []  # every text fragment, in order: the searchable text
        self._pending = 0
        self._flushed_at = self._last_at = 0.0  # event timestamps (perf_counter)
        self._model: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._stop_reason: str | None = None
        self._error: str | None = None
        self._ended = False
        self._finished = False
        self._lock = threading.Lock()  # a flush still running in a worker thread vs. finish

    @property
    def text(self) -> str:
        return "".join(self._text_parts)

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        """Every block in order when the reply has more than text (tool calls, thinking);
        ``None`` for a text-only reply, which the ``text`` column holds whole."""
        if all(block.kind == "text" for block in self._blocks.values()):
            return None
        return [self._blocks[index].to_dict() for index in sorted(self._blocks)]

    @property
    def has_tool_calls(self) -> bool:
        return any(block.kind == "tool_use" for block in self._blocks.values())

    def _fields(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}

    def feed(self, event: StreamEvent) -> bool:
        """Take one event (no I/O); ``True`` when :meth:`flush` is due."""
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            block_kind, attribute = _DELTA_PARTS[delta.type]
            block = self._blocks.get(event.index)
            if block is None:  # a text block may start implicitly
                block = self._blocks[event.index] = _Block(block_kind)
            fragment = getattr(delta, attribute)
            if delta.type == "signature_delta":
                block.signature.append(fragment)
            else:
                block.parts.append(fragment)
                if block_kind == "text":
                    self._text_parts.append(fragment)
            self._pending += 1
            self._last_at = event.timestamp
            return (
                self.message_id is None
                or self._pending >= self.flush_tokens
                or event.timestamp - self._flushed_at >= self.flush_seconds
            )
        if kind == "content_block_start":
            start = event.content_block
            if start.type == "tool_use":
                given = start.input if start.input else None
                self._blocks[event.index] = _Block("tool_use", start.id, start.name, given)
            else:
                self._blocks[event.index] = block = _Block(start.type)
                if start.type == "text" and start.text:
                    block.parts.append(start.text)
                    self._text_parts.append(start.text)
                elif start.type == "thinking" and start.thinking:
                    block.parts.append(start.thinking)
        elif kind == "message_start":
            self._model = event.message.model
            self._input_tokens = event.message.usage.input_tokens
        elif kind == "message_delta":
            self._stop_reason = event.delta.stop_reason
            self._output_tokens = event.usage.output_tokens
        elif kind == "message_stop":
            self._ended = True
        elif kind == "error":
            self._error = f"{event.error.type}: {event.error.message}"
        return False

    def observe(self, event: StreamEvent) -> None:
        """Feed an event and write when due (the sync path: chat and ask)."""
        if self.feed(event):
            self.flush()

    def flush(self) -> None:
        """Write the text so far; the first flush creates the row."""
        self._pending = 0
        self._flushed_at = self._last_at
        with self._lock:
            if self._finished:
                return
            if self.message_id is None:
                self._write(self._create)
            else:
                self._write(lambda: self.store.update_message(self.message_id, **self._fields()))

    def _create(self) -> None:
        fields = self._fields()
        self.message_id = self.store.add_message(
            self.conversation_id,
            "assistant",
            fields.pop("text"),
            **fields,
            model=self._model,
            input_tokens=self._input_tokens,
            interrupted=1,
        )

    def finish(
        self, metrics: Metrics | None = None, *, interrupted: bool = False, error: str | None = None
    ) -> None:
        """The final write: text, usage, timings, stop reason; ``interrupted`` unless the
        stream ended normally (or the caller says it was cut short)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._finish(metrics, interrupted or not self._ended, error)

    def _finish(self, metrics: Metrics | None, interrupted: bool, error: str | None) -> None:
        if self.message_id is None:
            self._write(self._create)
        fields: dict[str, Any] = {
            **self._fields(),
            "stop_reason": self._stop_reason,
            "interrupted": int(interrupted),
            "error": error or self._error,
            "output_tokens": self._output_tokens,
        }
        if metrics is not None:
            fields.update(ttft=metrics.ttft, total_time=metrics.total_time)
            fields["output_tokens"] = self._output_tokens or metrics.output_tokens
        if self.message_id is not None:
            self._write(lambda: self.store.update_message(self.message_id, **fields))

    def _write(self, action: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            action()
        except HistoryError as error:
            self.failed = error
            if self.on_error is not None:
                self.on_error(error)


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
    return [turn_key(turn.role, turn.content, turn.blocks) for turn in request.messages]


async def record_stream(
    store: HistoryStore | str | os.PathLike[str],
    request: Any,
    events: AsyncIterator[StreamEvent],
    *,
    provider: str | None = None,
    source: str = "server",
    conversation_id: int | None = None,
) -> AsyncIterator[StreamEvent]:
    """Pass ``events`` through unchanged while logging ``request`` (a MessageRequest) and its
    reply; ``store`` may be a database path (see :func:`shared_store`). Logging starts at the
    first event, so requests refused before streaming (overload, bad model) leave no trace;
    database work runs in a worker thread, off the event loop, and never fails the stream.
    ``conversation_id`` (the web page's) names the conversation to append the last turn to."""
    metrics = MetricsRecorder(time.perf_counter())
    recorder: ReplyRecorder | None = None
    started = False
    failure: str | None = None

    def warn(error: HistoryError) -> None:
        log.warning("history off for this request: %s", error.message)

    try:
        async for event in events:
            metrics.observe(event)
            if not started:
                started = True
                recorder = await asyncio.to_thread(
                    _open_request, store, request, provider, source, warn, conversation_id
                )
            if recorder is not None and recorder.feed(event):
                await asyncio.to_thread(recorder.flush)
            yield event
    except StreamchatError as error:  # a provider failure raised rather than sent as an event
        failure = f"{error.error_type}: {error.message}"
        raise
    finally:
        try:
            await close_events(events)
        finally:
            if recorder is not None:  # shielded: a cancelled (disconnected) request still ends
                final = asyncio.to_thread(
                    _finish_request, recorder, request, metrics.metrics(), failure
                )
                await asyncio.shield(final)


def _open_request(
    store: HistoryStore | str | os.PathLike[str],
    request: Any,
    provider: str | None,
    source: str,
    warn: Callable[[HistoryError], None],
    conversation_id: int | None = None,
) -> ReplyRecorder | None:
    """Log a request's turns (joining the conversation named or the one it continues, if any)."""
    try:
        if not isinstance(store, HistoryStore):
            store = shared_store(store)
        turns = list(request.messages)
        if conversation_id is None and len(turns) > 1:
            keys = request_turn_keys(request)[:-1]
            conversation_id = store.claim_thread(thread_key(request.system, keys))
        if conversation_id is None:
            parameters = {
                k: getattr(request, k)
                for k in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop_sequences")
                if getattr(request, k, None) not in (None, [])
            }
            conversation_id = store.new_conversation(
                model=request.model,
                provider=provider,
                system=request.system,
                parameters=parameters,
                source=source,
            )
        else:
            turns = turns[-1:]
        for turn in turns:
            blocks = [block.to_dict() for block in turn.blocks] or None
            store.add_message(conversation_id, turn.role, turn.content, blocks=blocks)
    except HistoryError as error:
        warn(error)
        return None
    return ReplyRecorder(store, conversation_id, on_error=warn)


def _finish_request(
    recorder: ReplyRecorder, request: Any, metrics: Metrics, error: str | None
) -> None:
    """The final write, then mark the conversation as continuable by its next request."""
    recorder.finish(metrics, error=error)
    if recorder.failed is None and (recorder.text or recorder.has_tool_calls):
        reply = turn_key("assistant", recorder.text, recorder.blocks or ())
        key = thread_key(request.system, [*request_turn_keys(request), reply])
        with suppress(HistoryError):
            recorder.store.set_thread(recorder.conversation_id, key)


_shared: dict[Path, HistoryStore | HistoryError] = {}
_shared_lock = threading.Lock()


def shared_store(path: str | os.PathLike[str]) -> HistoryStore:
    """One store per database file for a long-running server; an unusable file is tried once,
    its error raised again (cheaply) on every later call."""
    key = Path(path).expanduser().resolve()
    with _shared_lock:
        if key not in _shared:
            try:
                _shared[key] = HistoryStore(key)
            except HistoryError as error:
                _shared[key] = error
        found = _shared[key]
    if isinstance(found, HistoryError):
        raise found
    return found
