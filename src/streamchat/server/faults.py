"""Fault injection: protocol-correct failures on demand, reproducible from a seed.

Real streams carry pings, overloads before the first byte, errors in the middle, stalls and
dropped connections; an application has to survive all of them, and a test needs them on cue.
The decision is pure (sans-IO): :meth:`FaultPlan.decide` maps a random stream seeded by
``(seed, request number)`` to :class:`Faults`, so the same seed gives the same per-request
sequence however the requests are timed. :func:`inject` applies the decision to a provider's
canonical events; each wire encoder then speaks the failure in its own protocol.

Spec: comma-separated ``NAME[=VALUE][@TOKENS]``, e.g.
``overload=0.2,midstream_error=0.1@5,ping=0.3,stall=2s@10,slow=50ms,disconnect=0.05@20``:

- ``overload=P``: refuse before streaming: ``overloaded_error`` (529, 429, ThrottlingException)
- ``midstream_error=P@N``: an in-stream error after N tokens (type from ``error_type=``,
  default ``overloaded_error``)
- ``disconnect=P@N``: drop the connection after N tokens, without ending the body cleanly
- ``ping=P``: a ping before each event after ``message_start``, each with probability P
- ``stall=[P:]DURATION@N``: pause DURATION after N tokens; ``slow=[P:]DURATION``: before each token

A token is any content delta: text, a tool call's JSON fragment or thinking (so
``midstream_error@3`` can strike inside a tool call's input); a thinking block's closing
signature is not a token. P defaults to 1 and N to 1; durations take ``s`` or ``ms``. A bare
name (``overload``) means "always", which is what the per-request header
``x-streamchat-fault`` is for; ``none`` disables.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import ERROR_STATUS, InvalidRequestError, OverloadedError
from ..events import ErrorBody, ErrorEvent, PingEvent, StreamEvent, close_events

FAULT_HEADER = "x-streamchat-fault"
# name -> default value when bare; the order fixes the random draws (adding a fault with P=0
# never shifts another fault's sequence)
FAULTS: dict[str, str] = {
    "overload": "1",
    "midstream_error": "1",
    "disconnect": "1",
    "stall": "5s",
    "slow": "50ms",
    "ping": "1",
}
_TIMED = ("stall", "slow")
_AT = ("midstream_error", "disconnect", "stall")
_ENDINGS = frozenset({"content_block_stop", "message_delta", "message_stop"})
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s)$")
OVERLOAD_MESSAGE = "Overloaded"  # what the Anthropic API says; the notebook's example event

log = logging.getLogger("streamchat.faults")


@dataclass(slots=True, frozen=True)
class Fault:
    probability: float = 1.0
    at: int = 1  # tokens sent before it strikes (midstream_error, disconnect, stall)
    seconds: float = 0.0  # stall, slow


@dataclass(slots=True, frozen=True)
class Faults:
    """What happens to one request; all ``None``/zero is an untouched stream."""

    sequence: int = 0
    overload: bool = False
    error_at: int | None = None
    error_type: str = "overloaded_error"
    disconnect_at: int | None = None
    stall_at: int | None = None
    stall: float = 0.0
    slow: float = 0.0
    ping_rate: float = 0.0
    ping_seed: int = 0

    @property
    def active(self) -> bool:
        """Anything to do once streaming? (If not, the stream is not wrapped at all.)"""
        timed = (self.error_at, self.disconnect_at, self.stall_at)
        return any(at is not None for at in timed) or bool(self.slow or self.ping_rate)

    def refuse(self) -> None:
        """Raise the overload before streaming, if this request drew one."""
        if self.overload:
            raise OverloadedError(OVERLOAD_MESSAGE)

    def describe(self) -> str:
        parts = ["overload"] if self.overload else []
        for name, at in (("midstream_error", self.error_at), ("disconnect", self.disconnect_at)):
            if at is not None:
                parts.append(f"{name}@{at}")
        if self.stall_at is not None:
            parts.append(f"stall={self.stall:g}s@{self.stall_at}")
        if self.slow:
            parts.append(f"slow={self.slow:g}s")
        if self.ping_rate:
            parts.append(f"ping={self.ping_rate:g}")
        return ",".join(parts) or "none"


def _probability(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequestError(f"expected a probability, got {text!r}", path=where) from None
    if not 0.0 <= value <= 1.0:
        raise InvalidRequestError(f"probability must be between 0 and 1, got {text}", path=where)
    return value


def _seconds(text: str, where: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise InvalidRequestError(f"expected a duration like 2s or 50ms, got {text!r}", path=where)
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def _fault(name: str, value: str, at: str | None) -> Fault:
    if at is not None and name not in _AT:
        raise InvalidRequestError("takes no @TOKENS", path=name)
    try:
        tokens = 1 if at is None else int(at)
    except ValueError:
        raise InvalidRequestError(f"@{at} is not a token count", path=name) from None
    if tokens < 0:
        raise InvalidRequestError(f"@{at} must not be negative", path=name)
    if name in _TIMED:
        p, sep, duration = value.rpartition(":")
        chance = _probability(p, name) if sep else 1.0
        return Fault(chance, tokens, _seconds(duration, name))
    return Fault(_probability(value, name), tokens)


@dataclass(slots=True, frozen=True)
class FaultPlan:
    """A parsed ``--faults`` spec: which faults, how likely, where in the stream."""

    faults: Mapping[str, Fault] = field(default_factory=dict)
    error_type: str = "overloaded_error"

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Parse a spec (see the module docstring); errors name the offending item."""
        faults: dict[str, Fault] = {}
        error_type = "overloaded_error"
        for item in (part.strip() for part in spec.split(",")):
            if not item or item == "none":
                continue
            head, _, at = item.partition("@")
            name, sep, value = head.partition("=")
            name = name.strip()
            if name == "error_type":
                value = value.strip()
                if value not in ERROR_STATUS:
                    raise InvalidRequestError(f"unknown error type {value!r}", path="error_type")
                error_type = value
                continue
            if name not in FAULTS:
                known = ", ".join([*FAULTS, "error_type"])
                raise InvalidRequestError(f"unknown fault {name!r} (known: {known})")
            faults[name] = _fault(name, value.strip() if sep else FAULTS[name], at or None)
        return cls(faults, error_type)

    def decide(self, rng: random.Random, sequence: int = 0) -> Faults:
        """The faults for one request. Draws one number per known fault, always in the same
        order, so a plan's decisions for one fault do not depend on which others it names."""
        drawn = {name: rng.random() for name in FAULTS}
        ping_seed = rng.getrandbits(64)
        hit = {name: f for name, f in self.faults.items() if drawn[name] < f.probability}
        ping = self.faults.get("ping")
        return Faults(
            sequence=sequence,
            overload="overload" in hit,
            error_at=hit["midstream_error"].at if "midstream_error" in hit else None,
            error_type=self.error_type,
            disconnect_at=hit["disconnect"].at if "disconnect" in hit else None,
            stall_at=hit["stall"].at if "stall" in hit else None,
            stall=hit["stall"].seconds if "stall" in hit else 0.0,
            slow=hit["slow"].seconds if "slow" in hit else 0.0,
            ping_rate=ping.probability if ping is not None else 0.0,
            ping_seed=ping_seed,
        )


def request_rng(seed: int, sequence: int) -> random.Random:
    """The random stream of request number ``sequence``: independent of timing and threads."""
    return random.Random(f"streamchat-faults/{seed}/{sequence}")


@lru_cache(maxsize=64)
def _header_plan(value: str) -> FaultPlan:
    try:
        return FaultPlan.parse(value)
    except InvalidRequestError as error:
        raise InvalidRequestError(error.message, path=FAULT_HEADER) from None


class FaultInjector:
    """A server's plan, seed and request counter; the header ``x-streamchat-fault`` replaces
    the plan for one request (``none`` for a clean one)."""

    def __init__(self, plan: FaultPlan | str = "", seed: int = 0) -> None:
        self.plan = FaultPlan.parse(plan) if isinstance(plan, str) else plan
        self.seed = seed
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self.decisions: deque[Faults] = deque(maxlen=1024)  # the latest, for tests and debugging

    def decide(self, headers: Mapping[str, str] | None = None) -> Faults:
        value = headers.get(FAULT_HEADER) if headers is not None else None
        plan = self.plan if value is None else _header_plan(value.strip())
        with self._lock:
            sequence = next(self._numbers)
            faults = plan.decide(request_rng(self.seed, sequence), sequence)
            self.decisions.append(faults)
        log.debug("request %d: %s", sequence, faults.describe())
        return faults


class DroppedConnection(BaseException):
    """Raised through the response so the server aborts the connection mid-body.

    A ``BaseException`` on purpose: ``encode_stream`` turns every ``Exception`` into a clean
    in-stream error event, and this must not become one. uvicorn closes the transport without
    the chunked terminator, so clients see a broken stream, as with a real network drop.
    """


class _QuietDrops(logging.Filter):
    """uvicorn logs an aborted response with a traceback; for an injected drop that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


_quiet = _QuietDrops()


def _due(at: int | None, tokens: int, kind: str) -> bool:
    """A fault set for N tokens strikes before token N+1, or at the end if the reply is shorter."""
    return at is not None and (tokens >= at or kind != "content_block_delta")


def _error_message(error_type: str) -> str:
    return OVERLOAD_MESSAGE if error_type == "overloaded_error" else f"Injected {error_type}"


@dataclass(slots=True)
class _Progress:
    """How far one faulted stream has got."""

    faults: Faults
    tokens: int = 0
    stalled: bool = False

    async def strike(self, kind: str) -> ErrorEvent | None:
        """Apply what is due before an event of ``kind``: the error event to end with, a
        dropped connection (raised), a stall (slept), or nothing."""
        faults = self.faults
        if _due(faults.error_at, self.tokens, kind):
            return ErrorEvent(ErrorBody(faults.error_type, _error_message(faults.error_type)))
        if _due(faults.disconnect_at, self.tokens, kind):
            logging.getLogger("uvicorn.error").addFilter(_quiet)  # idempotent
            raise DroppedConnection(f"injected disconnect after {self.tokens} tokens")
        if not self.stalled and _due(faults.stall_at, self.tokens, kind):
            self.stalled = True
            await asyncio.sleep(faults.stall)
        return None


async def inject(events: AsyncIterator[StreamEvent], faults: Faults) -> AsyncIterator[StreamEvent]:
    """Pass ``events`` through with ``faults`` applied; closing it closes ``events``.

    A reply may have several blocks (thinking, text, tool calls): while a fault is pending, a
    ``content_block_stop`` is held until the next event shows whether another block follows,
    so "at the end of a shorter reply" means the last block's end, not the first's.
    """
    pings = random.Random(faults.ping_seed)
    progress = _Progress(faults)
    pending = any(at is not None for at in (faults.error_at, faults.disconnect_at, faults.stall_at))
    started = False
    held: StreamEvent | None = None  # a content_block_stop waiting for what comes next
    try:
        async for event in events:
            kind = event.type
            if kind == "content_block_delta" and event.delta.type == "signature_delta":
                kind = "signature"  # ends a thinking block: not a token, never a fault point
            if held is not None:
                stop, held = held, None
                last = kind != "content_block_start"  # no block follows: the reply's end
                if last and (error := await progress.strike("content_block_stop")) is not None:
                    yield error
                    return
                yield stop
            if kind == "content_block_stop" and pending:
                held = event
                continue
            if started and faults.ping_rate and pings.random() < faults.ping_rate:
                yield PingEvent()
            if kind == "content_block_delta" or kind in _ENDINGS:
                if (error := await progress.strike(kind)) is not None:
                    yield error
                    return
                if kind == "content_block_delta":
                    if faults.slow:
                        await asyncio.sleep(faults.slow)
                    progress.tokens += 1
            started = started or kind == "message_start"
            yield event
        if held is not None:
            yield held
    finally:
        await close_events(events)
