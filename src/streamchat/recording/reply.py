"""One reply recorded as it streams: folded with the package's one accumulator
(:func:`~streamchat.accumulate.fold_event`, O(1) per token) and handed to the group commit as
records (:mod:`streamchat.history.journal`): no I/O on the stream's path."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from ..accumulate import fold_event, parse_tool_input
from ..events import ContentBlock, Message, StreamEvent
from ..history import now
from ..metrics import Metrics
from .commit import GroupCommit

FINISH_WAIT_SECONDS = 5.0  # how long a reply's end waits for its commit (CLI)


def stored_block(block: ContentBlock) -> dict[str, Any]:
    """A block as the history stores it: a tool call still streaming (or cut short) keeps its
    raw JSON in ``partial_json`` beside the members that arrived whole (``input``)."""
    data = block.to_dict()
    if block.type == "tool_use" and block.partial_json:
        data["input"], complete = parse_tool_input(block.partial_json)
        if not complete:
            data["partial_json"] = block.partial_json
    return data


def _blocks(message: Message | None) -> list[dict[str, Any]] | None:
    """Every block when the reply has more than text; ``None`` for text only."""
    if message is None or all(block.type == "text" for block in message.content):
        return None
    return [stored_block(block) for block in message.content]


class ReplyRecorder:
    """Records one assistant reply as it streams. The first commit opens its row (with
    ``interrupted=1``, cleared only by a normal end, so a killed process leaves the truth);
    each later one appends the text that streamed since (and, for a reply with tool calls or
    thinking, its blocks); :meth:`finish` writes it whole.

    The row goes to ``conversation_id``, or the conversation ``thread`` continues, or a new
    one (``conversation``: its model, provider, system, parameters, source), after ``turns``
    (the request's, as ``{"role", "text", "blocks"}``; only the last when the conversation
    exists). ``strict``: :meth:`feed` says when the caller must wait for the commit holding
    the token (the server's ``--history-strict``)."""

    def __init__(
        self,
        committer: GroupCommit,
        *,
        conversation_id: int | None = None,
        thread: str | None = None,
        conversation: dict[str, Any] | None = None,
        turns: Sequence[dict[str, Any]] = (),
        strict: bool = False,
    ) -> None:
        self.committer = committer
        self.strict = strict
        self.key = uuid.uuid4().hex
        self._opening: dict[str, Any] | None = {
            "op": "open", "reply": self.key, "conversation_id": conversation_id,
            "thread": thread, "conversation": conversation, "turns": list(turns), "at": now(),
        }  # fmt: skip
        self._message: Message | None = None  # the reply so far: accumulate's fold
        self._folding = threading.Lock()  # the fold vs. the group commit's thread reading it
        self._unsent: list[str] = []  # text streamed since the last commit took it
        self._seq = 0
        self._deltas = 0  # content deltas so far: the output token count while streaming
        self._sent_tokens = 0
        self._reported = False  # message_delta came: the stop reason and usage are final
        self._ended = False
        self._error: str | None = None
        self._final: dict[str, Any] | None = None
        self._finished = False

    @property
    def text(self) -> str:
        """Every text block joined: the searchable text."""
        with self._folding:
            return "" if self._message is None else self._message.text

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        """Every block in order when the reply has more than text (tool calls, thinking)."""
        with self._folding:
            return _blocks(self._message)

    def feed(self, event: StreamEvent) -> bool:
        """Take one event (no I/O); ``True`` when, in strict mode, the caller must wait for the
        commit that holds it (:meth:`GroupCommit.sync`) before passing it on."""
        kind = event.type
        if kind == "error":  # no content: the reply keeps it as its error
            self._error = f"{event.error.type}: {event.error.message}"
            return False
        with self._folding:
            try:
                self._message = fold_event(self._message, event)
            except ValueError:  # out of order: the client sees it; the history keeps what fits
                return False
            if kind == "content_block_delta":
                if event.delta.type == "text_delta":
                    self._unsent.append(event.delta.text)
                if event.delta.type != "signature_delta":
                    self._deltas += 1
            elif kind == "content_block_start":
                if event.content_block.type == "text" and event.content_block.text:
                    self._unsent.append(event.content_block.text)
            elif kind == "message_delta":
                self._reported = True
            elif kind == "message_stop":
                self._ended = True
        self.committer.mark(self)
        return self.strict and kind == "content_block_delta"

    def observe(self, event: StreamEvent) -> None:
        """:meth:`feed`, for callers that never wait (chat, ask)."""
        self.feed(event)

    def _output_tokens(self) -> int:
        if self._reported and self._message is not None and self._message.usage.output_tokens:
            return self._message.usage.output_tokens
        return self._deltas

    def take_records(self) -> list[dict[str, Any]]:
        """What the next commit writes for this reply (the group commit's thread calls it)."""
        records: list[dict[str, Any]] = []
        with self._folding:
            if self._opening is not None:
                message = self._message
                self._opening["model"] = None if message is None else message.model
                self._opening["input_tokens"] = (
                    None if message is None else message.usage.input_tokens
                )
                records.append(self._opening)
                self._opening = None
            if self._final is not None:
                if not self._finished:
                    records.append({"op": "finish", "reply": self.key, **self._final})
                    self._finished = True
                self._unsent = []
                return records
            tokens = self._output_tokens()
            blocks = _blocks(self._message)
            if self._unsent or blocks is not None or tokens != self._sent_tokens:
                self._seq += 1
                record = {"op": "append", "reply": self.key, "seq": self._seq,
                          "text": "".join(self._unsent), "output_tokens": tokens}  # fmt: skip
                if blocks is not None:
                    record["blocks"] = blocks
                records.append(record)
                self._unsent = []
                self._sent_tokens = tokens
        return records

    def finish(
        self,
        metrics: Metrics | None = None,
        *,
        interrupted: bool = False,
        error: str | None = None,
        thread: str | None = None,
    ) -> concurrent.futures.Future[bool]:
        """The final write: text, usage, timings, stop reason; ``interrupted`` unless the
        stream ended normally (or the caller says it was cut short); ``thread`` marks the
        conversation as continued by the request that will send this reply back. Returns the
        commit's future (durable: ``True``)."""
        with self._folding:
            message = self._message
            usage_out = self._output_tokens() if self._reported else None
            fields: dict[str, Any] = {
                "text": "" if message is None else message.text,
                "blocks": _blocks(message),
                "stop_reason": None if message is None else message.stop_reason,
                "interrupted": int(interrupted or not self._ended),
                "error": error or self._error,
                "output_tokens": usage_out,
            }
            if metrics is not None:
                fields.update(ttft=metrics.ttft, total_time=metrics.total_time)
                fields["output_tokens"] = usage_out or metrics.output_tokens
            if self._final is None:
                self._final = {"fields": fields, "thread": thread}
        self.committer.mark(self)
        return self.committer.sync()

    def finish_and_wait(self, metrics: Metrics | None = None, **options: Any) -> None:
        """:meth:`finish`, waiting (bounded) until it is durable: a CLI about to exit."""
        future = self.finish(metrics, **options)
        with suppress(concurrent.futures.TimeoutError):
            future.result(timeout=FINISH_WAIT_SECONDS)
