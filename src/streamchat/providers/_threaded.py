"""Run a blocking producer (llama.cpp, boto3) in a worker thread, consumed as an async iterator."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
DONE = _DONE = object()  # the producer finished (with the error it raised, if any)


class _Handoff:
    """Thread → event loop hand-off that wakes the loop only when the consumer is waiting.

    A fast producer appends to a deque under an uncontended lock; the loop is woken (one
    ``call_soon_threadsafe``, a syscall) only when the consumer has drained everything.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event):
        self._loop = loop
        self._cancel = cancel
        self._items: deque[tuple[Any, BaseException | None]] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any, error: BaseException | None = None) -> None:
        with self._lock:
            self._items.append((item, error))
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                self._cancel.set()

    async def get(self) -> tuple[Any, BaseException | None]:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                waiter = self._waiter = self._loop.create_future()
            await waiter


Handoff = _Handoff  # public: the batching scheduler hands each stream's events over with it


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _new_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="streamchat-worker", daemon=True).start()


async def iterate_in_thread(
    produce: Callable[[threading.Event], Iterator[T]],
) -> AsyncIterator[T]:
    """Yield what ``produce(cancel)`` yields, as it yields it, produced in a new thread.

    Closing this iterator sets ``cancel``; the producer checks it between items, so a blocking
    engine stops within one item (one token) of the consumer going away.
    """
    cancel = threading.Event()
    handoff = _Handoff(asyncio.get_running_loop(), cancel)

    def work() -> None:
        if cancel.is_set():  # the consumer left while this job waited its turn
            handoff.put(_DONE)
            return
        items = produce(cancel)
        try:
            for item in items:
                if cancel.is_set():
                    break
                handoff.put(item)
        except BaseException as error:
            handoff.put(_DONE, error)
        else:
            handoff.put(_DONE)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    _new_thread(work)
    try:
        while True:
            item, error = await handoff.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        cancel.set()
