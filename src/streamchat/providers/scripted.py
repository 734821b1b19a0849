"""A deterministic provider for tests, demos and load: scripted text, timing and faults.

Configured by the model name, e.g. ``scripted?delay=0.02&error_after=5&error=overloaded_error``:

- ``text``: the reply (default: ``[turn N] You said: <last user message>``), ``repeat``: times
- ``delay`` / ``first_delay``: seconds per token / before the first token
- ``error_before``: error type raised before streaming; ``error_after=N`` + ``error=TYPE``: an
  ``error`` event after N tokens
- ``stall_after=N`` (+ ``stall=SECONDS``, default an hour): stop sending after N tokens
- ``record=PATH``: append each request it receives as a JSON line
- ``tag``: a free label; distinct specs get distinct instances (and counters)

Tokens are words with their leading space. It is never the default provider.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

from ..errors import InvalidRequestError, error_from_type
from ..events import ErrorBody, ErrorEvent, StreamEvent
from ..request import MessageRequest
from ..stop_sequences import StopMatcher
from .base import message_end, message_start, text_block_start, text_delta

_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into word tokens that join back to exactly ``text``."""
    return _TOKEN.findall(text)


@dataclass(slots=True)
class ScriptedConfig:
    text: str | None = None
    repeat: int = 1
    delay: float = 0.0
    first_delay: float = 0.0
    error_before: str | None = None
    error_after: int | None = None
    error: str = "api_error"
    stall_after: int | None = None
    stall: float = 3600.0
    record: str | None = None
    tag: str = ""

    @classmethod
    def parse(cls, spec: str) -> ScriptedConfig:
        _, _, query = spec.partition("?")
        fields = {f: type(v) for f, v in asdict(cls()).items()}
        numeric = {
            "repeat": int,
            "delay": float,
            "first_delay": float,
            "error_after": int,
            "stall_after": int,
            "stall": float,
        }
        values: dict[str, Any] = {}
        for key, items in parse_qs(query, keep_blank_values=True).items():
            if key not in fields:
                raise InvalidRequestError(f"model: unknown scripted option {key!r}")
            try:
                values[key] = numeric[key](items[-1]) if key in numeric else items[-1]
            except ValueError as error:
                raise InvalidRequestError(f"model: scripted option {key}: {error}") from None
        return cls(**values)


class ScriptedProvider:
    """Replays a script; counts what it was asked, so tests can check retries and cancellation."""

    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None):
        self.config = config or ScriptedConfig()
        self.requests: list[MessageRequest] = []
        self.completed = 0
        self.cancelled = 0
        self.active = 0
        self._lock = threading.Lock()

    def reply_for(self, request: MessageRequest) -> str:
        if self.config.text is not None:
            return self.config.text * self.config.repeat
        turn = sum(1 for t in request.messages if t.role == "user")
        base = f"[turn {turn}] You said: {request.messages[-1].content}"
        return " ".join([base] * self.config.repeat)

    def count_tokens(self, request: MessageRequest) -> int:
        """Input tokens as ``message_start`` reports them: words of the messages."""
        return sum(len(tokenize(t.content)) for t in request.messages)

    def _record(self, request: MessageRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if self.config.record:
                with open(self.config.record, "a", encoding="utf-8") as file:
                    file.write(json.dumps(asdict(request), ensure_ascii=False) + "\n")

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        config = self.config
        self._record(request)
        if config.error_before:
            raise error_from_type(config.error_before, f"scripted {config.error_before}")
        tokens = tokenize(self.reply_for(request))
        input_tokens = self.count_tokens(request)
        self.active += 1
        finished = False
        try:
            yield message_start(request.model, input_tokens)
            yield text_block_start()
            if config.first_delay:
                await asyncio.sleep(config.first_delay)
            matcher = StopMatcher(request.stop_sequences)
            stop_reason, stop_sequence, sent = "end_turn", None, 0
            for token in tokens:
                if sent >= request.max_tokens:
                    stop_reason = "max_tokens"
                    break
                if config.error_after is not None and sent >= config.error_after:
                    finished = True  # set first: consumers stop reading at the final event
                    yield ErrorEvent(ErrorBody(config.error, f"scripted {config.error}"))
                    return
                if config.stall_after is not None and sent >= config.stall_after:
                    await asyncio.sleep(config.stall)
                if sent and config.delay:
                    await asyncio.sleep(config.delay)
                sent += 1
                text, hit = matcher.feed(token)
                if text:
                    yield text_delta(text)
                if hit is not None:
                    stop_reason, stop_sequence = "stop_sequence", hit
                    break
            if stop_sequence is None and (tail := matcher.flush()):
                yield text_delta(tail)
            *closing, last = message_end(stop_reason, sent, stop_sequence)
            for event in closing:
                yield event
            finished = True  # message_stop is final: the consumer closes us instead of reading on
            yield last
        finally:
            self.active -= 1
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1
