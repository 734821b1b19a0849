"""A server's event stream recorded in one line: :func:`record_stream` passes the events through
unchanged while logging the request and its reply (database work off the event loop)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from ..errors import StreamchatError
from ..events import StreamEvent, close_events
from ..history import Store
from ..metrics import Metrics, MetricsRecorder
from .commit import GroupCommit, durable, group_commit, target_commit
from .digest import request_turn_keys, thread_key, turn_key
from .reply import FINISH_WAIT_SECONDS, ReplyRecorder

log = logging.getLogger("streamchat.history")


async def record_stream(
    store: Store | str | os.PathLike[str],
    request: Any,
    events: AsyncIterator[StreamEvent],
    *,
    provider: str | None = None,
    source: str = "server",
    conversation_id: int | None = None,
    strict: bool = False,
    interval: float | None = None,
) -> AsyncIterator[StreamEvent]:
    """Pass ``events`` through unchanged while logging ``request`` (a MessageRequest) and its
    reply to ``store`` (a store, or a database path or URL: one group commit per database,
    :func:`~.commit.target_commit`, which spools while the database is away). Nothing on the
    stream's path waits for the database: the records go to the group commit's thread.
    Logging starts at the first event, so requests refused before streaming (overload, bad
    model) leave no trace. ``conversation_id`` (the web page's) names the conversation to
    append the last turn to. ``strict``: no token leaves before the commit that keeps it (a
    token kept nowhere within :data:`~.commit.STRICT_WAIT_SECONDS` fails the stream);
    ``interval``: the group commit's (a database path's), :data:`~.commit.COMMIT_SECONDS` by
    default."""
    metrics = MetricsRecorder(time.perf_counter())
    recorder: ReplyRecorder | None = None
    failure: str | None = None
    try:
        async for event in events:
            metrics.observe(event)
            if recorder is None:
                committer = (
                    group_commit(store)
                    if isinstance(store, Store)
                    else target_commit(store, interval)
                )
                recorder = _recorder(committer, request, provider, source, conversation_id, strict)
            if recorder.feed(event):
                await durable(recorder.committer, "reply")
            yield event
    except StreamchatError as error:  # a provider failure raised rather than sent as an event
        failure = f"{error.error_type}: {error.message}"
        raise
    finally:
        try:
            await close_events(events)
        finally:
            if recorder is not None:  # shielded: a cancelled (disconnected) request still ends
                await asyncio.shield(_finish(recorder, request, metrics.metrics(), failure))


def _recorder(
    committer: GroupCommit,
    request: Any,
    provider: str | None,
    source: str,
    conversation_id: int | None,
    strict: bool,
) -> ReplyRecorder:
    """A recorder for the reply to ``request``, with what its first commit writes."""
    turns = list(request.messages)
    thread = None
    if conversation_id is None and len(turns) > 1:
        thread = thread_key(request.system, request_turn_keys(request)[:-1])
    parameters = {
        k: getattr(request, k)
        for k in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop_sequences")
        if getattr(request, k, None) not in (None, [])
    }
    return ReplyRecorder(
        committer,
        conversation_id=conversation_id,
        thread=thread,
        conversation={"model": request.model, "provider": provider, "system": request.system,
                      "parameters": parameters, "source": source},
        turns=[{"role": turn.role, "text": turn.content,
                "blocks": [block.to_dict() for block in turn.blocks] or None} for turn in turns],
        strict=strict,
    )  # fmt: skip


async def _finish(
    recorder: ReplyRecorder, request: Any, metrics: Metrics, error: str | None
) -> None:
    """The final record (marking the conversation as continued by the request that sends this
    reply back), then a bounded wait for its commit: a client that reads its history as soon
    as the stream ends finds the reply there."""
    thread = None
    text, blocks = recorder.text, recorder.blocks or ()
    if text or any(block["type"] == "tool_use" for block in blocks):
        reply = turn_key("assistant", text, blocks)
        thread = thread_key(request.system, [*request_turn_keys(request), reply])
    done = recorder.finish(metrics, error=error, thread=thread)
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.wrap_future(done), FINISH_WAIT_SECONDS)
