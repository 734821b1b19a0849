"""A server's event stream recorded in one line: :func:`record_stream` passes the events through
unchanged while logging the request and its reply (database work off the event loop)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

from ..errors import HistoryError, StreamchatError
from ..events import StreamEvent, close_events
from ..history import Store
from ..history.shared import shared_store
from ..metrics import Metrics, MetricsRecorder
from .commit import group_commit
from .digest import request_turn_keys, thread_key, turn_key
from .reply import ReplyRecorder

log = logging.getLogger("streamchat.history")

STRICT = False  # serve --history-strict: no token leaves before the commit that holds it


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
    reply; ``store`` may be a database path (one store per database:
    :func:`~streamchat.history.shared.shared_store`). Logging starts at the first event, so
    requests refused before streaming (overload, bad model) leave no trace; database work runs
    in a worker thread, off the event loop, and never fails the stream.
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
