"""Retries, backoff and timeouts for remote providers — one implementation for all of them.

The rule users rely on: a request is retried (bounded, exponential backoff with jitter, honouring
``retry-after``) only while nothing has been streamed; after the first token a failure becomes a
canonical ``error`` event, so the partial text is kept and never duplicated.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..errors import StreamchatError, TimeoutError_
from ..events import ErrorBody, ErrorEvent, StreamEvent, close_events

RETRYABLE_TYPES = frozenset({"rate_limit_error", "overloaded_error", "api_error", "timeout_error"})


class UpstreamError(StreamchatError):
    """A backend failure, already mapped to a canonical type; knows if a retry may help."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.error_type = error_type
        self.retryable = error_type in RETRYABLE_TYPES if retryable is None else retryable
        self.retry_after = retry_after


@dataclass(slots=True)
class RetryPolicy:
    """Bounds for one request. Times in seconds; ``None`` disables a timeout."""

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    first_token_timeout: float | None = 60.0
    idle_timeout: float | None = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Defaults, overridden by ``STREAMCHAT_MAX_ATTEMPTS``, ``STREAMCHAT_FIRST_TOKEN_TIMEOUT``
        and ``STREAMCHAT_IDLE_TIMEOUT`` (seconds; 0 disables a timeout)."""
        policy = cls()
        if value := os.environ.get("STREAMCHAT_MAX_ATTEMPTS"):
            policy.max_attempts = max(1, int(value))
        for name, env in (
            ("first_token_timeout", "STREAMCHAT_FIRST_TOKEN_TIMEOUT"),
            ("idle_timeout", "STREAMCHAT_IDLE_TIMEOUT"),
        ):
            if value := os.environ.get(env):
                setattr(policy, name, float(value) or None)
        return policy

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a server's ``retry-after`` wins when longer."""
        backoff = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
        return max(backoff, min(retry_after or 0.0, self.backoff_max * 4))


def parse_retry_after(headers: object) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` headers (any mapping), if numeric."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        try:
            return float(value) * scale if value is not None else None
        except (TypeError, ValueError):
            continue
    return None


class _Watchdog:
    """One lazily re-armed timer per stream: per event only a deadline moves (O(1), no timer
    churn); when the deadline passes, the consuming task is cancelled and the cancellation is
    turned into a timeout error."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._timeout: float | None = None  # the last armed timeout: same one, later deadline
        self.fired = False

    def arm(self, timeout: float | None) -> None:
        """Expect the next event within ``timeout`` seconds (``None``: wait forever)."""
        if timeout is None:
            self._deadline = None
            return
        self._task = asyncio.current_task()
        deadline = self._deadline = self._loop.time() + timeout
        handle = self._handle
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._check)
        elif timeout != self._timeout and handle.when() > deadline:
            handle.cancel()  # the deadline moved earlier (first-token -> idle timeout)
            self._handle = self._loop.call_at(deadline, self._check)
        self._timeout = timeout

    def _check(self) -> None:
        self._handle = None
        if self._deadline is None:
            return
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._check)
            return
        self.fired = True
        if self._task is not None:
            self._task.cancel()

    def pause(self) -> None:
        """While the consumer has the event, its time is not ours to limit."""
        self._deadline = None

    def disarm(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def resilient_stream(
    attempt: Callable[[], AsyncIterator[StreamEvent]],
    policy: RetryPolicy,
    classify: Callable[[BaseException], UpstreamError | None],
) -> AsyncIterator[StreamEvent]:
    """Run ``attempt()`` until it streams, retrying retryable failures before the first token.

    Events before the first text (message_start, content_block_start) are held back, so a retried
    request never shows the consumer a second ``message_start``. ``classify`` maps a backend
    exception to an :class:`UpstreamError` (``None``: not ours, re-raise as is).
    """
    watchdog = _Watchdog()
    arm, pause = watchdog.arm, watchdog.pause  # locals: this loop runs once per token
    for number in range(policy.max_attempts):
        held: list[StreamEvent] = []
        streaming = False
        timeout = policy.first_token_timeout
        events = attempt()
        receive = events.__anext__
        try:
            while True:
                arm(timeout)
                try:
                    event = await receive()
                except StopAsyncIteration:
                    for pending in held:
                        yield pending
                    return
                except asyncio.CancelledError:
                    if not watchdog.fired:
                        raise
                    watchdog.fired = False
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    what = "token" if streaming else "first token"
                    raise UpstreamError(
                        "timeout_error", f"no {what} within {timeout:g} s"
                    ) from None
                pause()
                if streaming:
                    yield event
                    continue
                if event.type == "error":
                    raise UpstreamError(event.error.type, event.error.message)
                held.append(event)
                if event.type in ("content_block_delta", "message_stop"):
                    streaming, timeout = True, policy.idle_timeout
                    for pending in held:
                        yield pending
                    held.clear()
        except Exception as raw:
            error = raw if isinstance(raw, UpstreamError) else classify(raw)
            if error is None:
                raise
            if streaming:
                yield ErrorEvent(ErrorBody(error.error_type, error.message))
                return
            if not error.retryable or number + 1 >= policy.max_attempts:
                raise error from raw
            watchdog.disarm()
            await asyncio.sleep(policy.delay(number, error.retry_after))
        finally:
            watchdog.disarm()
            await close_events(events)
    raise TimeoutError_("no attempts were made")  # unreachable with max_attempts >= 1
