"""Recording replies into the history as they stream: O(1) per token, a write now and then.

:class:`ReplyRecorder` serves the CLI (sync); :func:`record_stream` wraps a server's async event
iterator in one line. Both are fail-soft: a history problem is reported once, never raised into
the stream being recorded.

The rule is "every token a client has received is in the store": a :class:`GroupCommit` thread
per store writes every active reply's new text (and its output token count so far) in one
transaction every :data:`COMMIT_SECONDS`, so a killed process loses at most one interval of
what its clients saw; with :data:`STRICT` a server waits for the commit holding a token before
sending it (commits are still shared by every stream waiting at that moment). A database that
is briefly unreachable (PostgreSQL restarting) delays writes, which are retried, never streams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from .history import HistoryUnavailableError, Store, is_postgres, open_store
from .metrics import Metrics, MetricsRecorder

log = logging.getLogger("streamchat.history")

FLUSH_SECONDS = 0.5  # without a group commit: a reply's text is written at least this often...
FLUSH_TOKENS = 256  # ...or after this many tokens, whichever comes first
COMMIT_SECONDS = 0.025  # the group commit's interval (serve --history-commit-ms)
STRICT = False  # serve --history-strict: no token leaves before the commit that holds it
RETRY_SECONDS = 0.5  # the group commit's pause after the database was unreachable
FINISH_WAIT_SECONDS = 5.0  # how long a reply's end waits for its final commit


class GroupCommit:
    """One writer thread per store: the rows of every reply marked since the last commit are
    written in one transaction, then whoever asked (:meth:`sync`) is told. Writes of one reply
    all go through this thread, so a late interim write can never overwrite the final one."""

    def __init__(self, store: Store, interval: float | None = None) -> None:
        self.store = store
        self.interval = COMMIT_SECONDS if interval is None else interval
        self.commits = 0  # transactions written (for benchmarks)
        self.rows = 0  # row writes in them
        self.available = True  # False since a commit found the database unreachable
        self._dirty: dict[int, ReplyRecorder] = {}  # insertion-ordered, by id()
        self._waiters: list[concurrent.futures.Future[bool]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False  # the writer waits for a first mark (only then is waking it useful)

    def mark(self, recorder: ReplyRecorder) -> None:
        """``recorder`` has news for the next commit (O(1); no I/O)."""
        if id(recorder) in self._dirty:  # the common case, without the lock
            return
        with self._wake:
            self._dirty[id(recorder)] = recorder
            if self._idle:  # else it is gathering an interval's marks: a wake-up per token
                self._wake.notify()  # would cost more than the write
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-group-commit", daemon=True
                )
                self._thread.start()

    def sync(self) -> concurrent.futures.Future[bool]:
        """A commit now; the future is ``True`` once what was marked is stored (``False`` when
        the database could not be reached: the rows are retried later)."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if not self.available:  # hold no stream while the database is away; retries go on
            future.set_result(False)
            return future
        with self._wake:
            self._waiters.append(future)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-group-commit", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return future

    def _run(self) -> None:
        pause = self.interval
        while True:
            with self._wake:
                self._idle = True
                self._wake.wait_for(lambda: self._dirty or self._waiters)
                self._idle = False
                if not self._waiters:  # gather an interval's worth of tokens (or a waiter)
                    self._wake.wait_for(lambda: self._waiters, timeout=pause)
                batch, self._dirty = self._dirty, {}
                waiters, self._waiters = self._waiters, []
            stored = self._commit(list(batch.values()))
            if not stored:
                with self._wake:  # retry these with whatever is marked meanwhile
                    self._dirty = {**batch, **self._dirty}
            pause = self.interval if stored else RETRY_SECONDS
            self.available = stored
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(stored)

    def _commit(self, recorders: list[ReplyRecorder]) -> bool:
        updates = [
            (recorder.message_id, recorder.snapshot())
            for recorder in recorders
            if recorder.message_id is not None and recorder.failed is None
        ]
        if not updates:
            return True
        try:
            self.store.write_replies(updates)
        except HistoryUnavailableError:
            return False
        except HistoryError as error:  # refused for good: history off for these replies
            for recorder in recorders:
                recorder.fail(error)
            return True
        except Exception as error:  # never let the writer thread die
            log.exception("group commit failed")
            for recorder in recorders:
                recorder.fail(HistoryError(f"history write failed: {error}"))
            return True
        self.commits += 1
        self.rows += len(updates)
        return True


def group_commit(store: Store) -> GroupCommit:
    """The store's one group commit (created on first use)."""
    committer = getattr(store, "_group_commit", None)
    if committer is None:
        with _shared_lock:
            committer = getattr(store, "_group_commit", None)
            if committer is None:
                committer = GroupCommit(store)
                store._group_commit = committer  # type: ignore[attr-defined]
    return committer


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
    """Writes one assistant reply as it streams: O(1) per token. The row is created at the
    first token with ``interrupted=1`` and cleared only by a normal end, so a killed process
    leaves the truth. With a ``committer`` (:class:`GroupCommit`) later writes are its
    business; without, a row write at most every ``flush_seconds`` or ``flush_tokens``.
    ``strict`` (with a committer): :meth:`feed` asks for a commit at every token."""

    def __init__(
        self,
        store: Store,
        conversation_id: int,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_tokens: int = FLUSH_TOKENS,
        on_error: Callable[[HistoryError], None] | None = None,
        committer: GroupCommit | None = None,
        strict: bool = False,
    ) -> None:
        self.store = store
        self.committer = committer
        self.strict = strict
        self._deltas = 0  # content deltas so far: the output token count while streaming
        self._final: dict[str, Any] | None = None  # the last write, once finished
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
        ``None`` for a text-only reply, which the ``text`` column holds whole. (Safe from the
        group commit's thread: the dict is copied in one step before it is walked.)"""
        blocks = sorted(self._blocks.items())
        if all(block.kind == "text" for _, block in blocks):
            return None
        return [block.to_dict() for _, block in blocks]

    @property
    def has_tool_calls(self) -> bool:
        return any(block.kind == "tool_use" for block in self._blocks.values())

    def _fields(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}

    def snapshot(self) -> dict[str, Any]:
        """What the group commit writes: the final fields once finished, else the text and
        blocks so far with the output token count kept current."""
        if self._final is not None:
            return self._final
        return {**self._fields(), "output_tokens": self._output_tokens or self._deltas}

    def fail(self, error: HistoryError) -> None:
        if self.failed is None:
            self.failed = error
            if self.on_error is not None:
                self.on_error(error)

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
            if delta.type != "signature_delta":
                self._deltas += 1
            if self.committer is not None:
                if self.message_id is None:
                    return True  # the row, now
                self.committer.mark(self)
                return self.strict
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
        """Write the text so far; the first flush creates the row. With a group commit, the
        later ones wait for its next commit."""
        self._pending = 0
        self._flushed_at = self._last_at
        with self._lock:
            if self._finished:
                return
            if self.message_id is None:
                self._write(self._create)
                return
            if self.committer is None:
                self._write(lambda: self.store.update_message(self.message_id, **self._fields()))
                return
            self.committer.mark(self)
        with suppress(concurrent.futures.TimeoutError):
            self.committer.sync().result(timeout=FINISH_WAIT_SECONDS)

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
        if self.committer is not None and self._final is not None and self.failed is None:
            # Through the writer thread (it orders this reply's writes); a database that is
            # unreachable gets the row later, and the caller goes on after a bounded wait.
            with suppress(concurrent.futures.TimeoutError):
                self.committer.sync().result(timeout=FINISH_WAIT_SECONDS)

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
        if self.message_id is None:
            return
        if self.committer is not None:
            self._final = fields
            self.committer.mark(self)
        else:
            self._write(lambda: self.store.update_message(self.message_id, **fields))

    def _write(self, action: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            action()
        except HistoryError as error:
            self.fail(error)


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
    store: Store | str | os.PathLike[str],
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
                if recorder.message_id is None:
                    await asyncio.to_thread(recorder.flush)  # creates the row
                else:  # strict: this token is stored before it is sent
                    await asyncio.wrap_future(recorder.committer.sync())
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
    store: Store | str | os.PathLike[str],
    request: Any,
    provider: str | None,
    source: str,
    warn: Callable[[HistoryError], None],
    conversation_id: int | None = None,
) -> ReplyRecorder | None:
    """Log a request's turns (joining the conversation named or the one it continues, if any)."""
    try:
        if not isinstance(store, Store):
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
    return ReplyRecorder(
        store, conversation_id, on_error=warn, committer=group_commit(store), strict=STRICT
    )


def _finish_request(
    recorder: ReplyRecorder, request: Any, metrics: Metrics, error: str | None
) -> None:
    """The final write, then mark the conversation as continuable by its next request."""
    recorder.finish(metrics, error=error)
    if recorder.committer is not None and not recorder.committer.available:
        return  # the database is away: the final row is retried; the thread key can wait
    if recorder.failed is None and (recorder.text or recorder.has_tool_calls):
        reply = turn_key("assistant", recorder.text, recorder.blocks or ())
        key = thread_key(request.system, [*request_turn_keys(request), reply])
        with suppress(HistoryError):
            recorder.store.set_thread(recorder.conversation_id, key)


_shared: dict[Path | str, Store | HistoryError] = {}
_shared_lock = threading.RLock()


def shared_store(target: str | os.PathLike[str]) -> Store:
    """One store per database (file or PostgreSQL URL) for a long-running server; an unusable
    one is tried once, its error raised again (cheaply) on every later call."""
    key = str(target) if is_postgres(target) else Path(target).expanduser().resolve()
    with _shared_lock:
        if key not in _shared:
            try:
                _shared[key] = open_store(key)
            except HistoryError as error:
                _shared[key] = error
        found = _shared[key]
    if isinstance(found, HistoryError):
        raise found
    return found
