"""One reply recorded as it streams: folded with the package's one accumulator
(:func:`~streamchat.accumulate.fold_event`, O(1) per token) and written now and then."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from ..accumulate import fold_event, parse_tool_input
from ..errors import HistoryError
from ..events import ContentBlock, Message, StreamEvent
from ..history import Store
from ..metrics import Metrics
from .commit import GroupCommit

FLUSH_SECONDS = 0.5  # without a group commit: a reply's text is written at least this often...
FLUSH_TOKENS = 256  # ...or after this many tokens, whichever comes first
FINISH_WAIT_SECONDS = 5.0  # how long a reply's end (or a flush) waits for its commit


def stored_block(block: ContentBlock) -> dict[str, Any]:
    """A block as the history stores it: a tool call still streaming (or cut short) keeps its
    raw JSON in ``partial_json`` beside the members that arrived whole (``input``)."""
    data = block.to_dict()
    if block.type == "tool_use" and block.partial_json:
        data["input"], complete = parse_tool_input(block.partial_json)
        if not complete:
            data["partial_json"] = block.partial_json
    return data


def _text(message: Message | None) -> str:
    return "" if message is None else message.text


def _blocks(message: Message | None) -> list[dict[str, Any]] | None:
    """Every block when the reply has more than text; ``None`` for text only."""
    if message is None or all(block.type == "text" for block in message.content):
        return None
    return [stored_block(block) for block in message.content]


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
        self._message: Message | None = None  # the reply so far: accumulate's fold
        self._folding = threading.Lock()  # the fold vs. the group commit's thread reading it
        self._pending = 0
        self._flushed_at = self._last_at = 0.0  # event timestamps (perf_counter)
        self._reported = False  # message_delta came: the stop reason and usage are final
        self._error: str | None = None
        self._ended = False
        self._finished = False
        self._lock = threading.Lock()  # a flush still running in a worker thread vs. finish

    @property
    def text(self) -> str:
        """Every text block joined: the searchable text."""
        with self._folding:
            return _text(self._message)

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        """Every block in order when the reply has more than text (tool calls, thinking);
        ``None`` for a text-only reply, which the ``text`` column holds whole."""
        with self._folding:
            return _blocks(self._message)

    @property
    def has_tool_calls(self) -> bool:
        with self._folding:
            return self._message is not None and bool(self._message.tool_calls)

    def _fields(self) -> dict[str, Any]:
        """The text and blocks so far, read in one step (the group commit's thread reads them
        while the stream goes on folding)."""
        with self._folding:
            return {"text": _text(self._message), "blocks": _blocks(self._message)}

    def snapshot(self) -> dict[str, Any]:
        """What the group commit writes: the final fields once finished, else the text and
        blocks so far with the output token count kept current."""
        if self._final is not None:
            return self._final
        return {**self._fields(), "output_tokens": self._final_output_tokens() or self._deltas}

    def _final_output_tokens(self) -> int | None:
        """The output token count message_delta reported (``None`` before it came)."""
        if not self._reported or self._message is None:
            return None
        return self._message.usage.output_tokens

    def fail(self, error: HistoryError) -> None:
        if self.failed is None:
            self.failed = error
            if self.on_error is not None:
                self.on_error(error)

    def feed(self, event: StreamEvent) -> bool:
        """Take one event (no I/O); ``True`` when :meth:`flush` is due."""
        kind = event.type
        if kind == "error":  # no content: the reply keeps it as its error
            self._error = f"{event.error.type}: {event.error.message}"
            return False
        try:
            with self._folding:
                self._message = fold_event(self._message, event)
        except ValueError:  # out of order: the client sees it; the history keeps what fitted
            return False
        if kind == "content_block_delta":
            self._pending += 1
            self._last_at = event.timestamp
            if event.delta.type != "signature_delta":
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
        if kind == "message_delta":
            self._reported = True
        elif kind == "message_stop":
            self._ended = True
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
            model=None if self._message is None else self._message.model,
            input_tokens=None if self._message is None else self._message.usage.input_tokens,
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
        output_tokens = self._final_output_tokens()
        fields: dict[str, Any] = {
            **self._fields(),
            "stop_reason": None if self._message is None else self._message.stop_reason,
            "interrupted": int(interrupted),
            "error": error or self._error,
            "output_tokens": output_tokens,
        }
        if metrics is not None:
            fields.update(ttft=metrics.ttft, total_time=metrics.total_time)
            fields["output_tokens"] = output_tokens or metrics.output_tokens
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
