"""Run a blocking producer (llama.cpp, boto3) in a worker thread, consumed as an async iterator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(produce: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """Yield what ``produce(cancel)`` yields, as it yields it.

    Closing this iterator sets ``cancel``; the producer checks it between items, so a blocking
    engine stops within one item (one token) of the consumer going away.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            cancel.set()

    def work() -> None:
        items = produce(cancel)
        try:
            for item in items:
                if cancel.is_set():
                    break
                put(item)
        except BaseException as error:
            put(_DONE, error)
        else:
            put(_DONE)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    threading.Thread(target=work, name="streamchat-worker", daemon=True).start()
    try:
        while True:
            item, error = await queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        cancel.set()
