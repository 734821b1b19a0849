"""``replay/<dir>``: serve streams recorded by ``serve --record <dir>``, offline, over any protocol.

Options follow the directory like the scripted provider's: ``replay/tapes?speed=0&match=order``.

- ``match=content`` (default): the tape whose request had the same system prompt, turns (tool
  calls and results included) and tools (several such tapes are served in recording order, round
  and round); no match is a 404, so a changed prompt fails a CI run instead of getting someone
  else's reply. ``match=order``: the Nth request gets the Nth tape, whatever it asks.
- ``speed``: 1 (default) keeps the recorded timing (time to first token, gaps, stalls), 2 is twice
  as fast, 0 sends everything at once.

Each event is rebuilt fresh (new message id, the requested model echoed, new timestamps); text,
tool calls, thinking, event order, usage, stop reasons and errors are the recording's. Tool call
ids are kept as recorded: an agent sends them back with its tool results, and that next request
then matches the tape of the loop's next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

from ..errors import InvalidRequestError, NotFoundError, error_from_type
from ..events import StreamEvent, event_from_dict
from ..request import MessageRequest
from ..tape import Tape, load_tapes, request_key
from .base import new_message_id

MATCHES = ("content", "order")


def schedule(tape: Tape, speed: float) -> list[float]:
    """When each step is due, in seconds after the request (all 0 at speed 0)."""
    return [t / speed if speed else 0.0 for t, _ in tape.steps]


class ReplayProvider:
    """Tapes from one directory; re-read when the directory changes (record, then replay)."""

    name = "replay"

    def __init__(self, spec: str) -> None:
        directory, _, query = spec.partition("?")
        self.speed = 1.0
        self.match = "content"
        for key, values in parse_qs(query, keep_blank_values=True).items():
            if key == "speed":
                try:
                    self.speed = float(values[-1])
                except ValueError:
                    raise InvalidRequestError(
                        "replay speed must be a number", path="model"
                    ) from None
                if self.speed < 0:
                    raise InvalidRequestError("replay speed must not be negative", path="model")
            elif key == "match" and values[-1] in MATCHES:
                self.match = values[-1]
            else:
                raise InvalidRequestError(
                    f"unknown replay option {key}={values[-1]!r}", path="model"
                )
        self.directory = Path(directory).expanduser()
        self._lock = threading.Lock()
        self._served: Counter[str] = Counter()
        self._mtime = -1
        self._tapes: list[Tape] = []
        self._by_key: dict[str, list[Tape]] = {}
        self._reload()
        if not self._tapes:
            raise InvalidRequestError(f"no recorded streams in {self.directory}", path="model")

    def _reload(self) -> None:
        try:
            mtime = self.directory.stat().st_mtime_ns
        except OSError as error:
            raise InvalidRequestError(
                f"cannot read {self.directory}: {error}", path="model"
            ) from None
        if mtime == self._mtime:
            return
        try:
            tapes = load_tapes(self.directory)
        except (OSError, ValueError) as error:
            raise InvalidRequestError(str(error), path="model") from None
        by_key: dict[str, list[Tape]] = {}
        for tape in tapes:
            by_key.setdefault(tape.key, []).append(tape)
        self._tapes, self._by_key, self._mtime = tapes, by_key, mtime

    def pick(self, request: MessageRequest) -> Tape:
        """The tape that answers ``request`` (and advance that tape's rotation)."""
        with self._lock:
            self._reload()
            if self.match == "order":
                key, tapes = "", self._tapes
            else:
                key = request_key(request)
                tapes = self._by_key.get(key, [])
            if not tapes:
                raise NotFoundError(
                    f"replay: no recorded stream matches this request (key {key[:12]}) "
                    f"in {self.directory}; record it with serve --record"
                )
            number = self._served[key]
            self._served[key] += 1
            return tapes[number % len(tapes)]

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        tape = self.pick(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for due, (_, data) in zip(schedule(tape, self.speed), tape.steps, strict=True):
            if (wait := start + due - loop.time()) > 0:
                await asyncio.sleep(wait)
            event = event_from_dict(data)
            if event.type == "message_start":
                event.message.id = new_message_id()
                event.message.model = request.model
            yield event
        if tape.raised is not None:
            t, error_type, message = tape.raised
            if self.speed and (wait := start + t / self.speed - loop.time()) > 0:
                await asyncio.sleep(wait)
            raise error_from_type(error_type, message)
