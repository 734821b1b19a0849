"""The group commit: one writer thread per store, so that a store's streaming replies share
their writes (one transaction every :data:`COMMIT_SECONDS` for all of them) and each reply's
writes are ordered (a late interim write can never overwrite the final one)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING

from ..errors import HistoryError
from ..history import HistoryUnavailableError, Store

if TYPE_CHECKING:
    from .reply import ReplyRecorder

log = logging.getLogger("streamchat.history")

COMMIT_SECONDS = 0.025  # the group commit's interval (serve --history-commit-ms)
RETRY_SECONDS = 0.5  # the group commit's pause after the database was unreachable

_lock = threading.Lock()  # creates a store's group commit once


class GroupCommit:
    """One writer thread per store: the rows of every reply marked since the last commit are
    written in one transaction, then whoever asked (:meth:`sync`) is told. Writes of one reply
    all go through this thread, so a late interim write can never overwrite the final one."""

    def __init__(self, store: Store, interval: float | None = None) -> None:
        self.store = store
        self.interval = COMMIT_SECONDS if interval is None else interval
        self.commits = 0  # transactions written (for benchmarks)
        self.rows = 0  # row writes in them
        self.available = True  # False since a commit found the database unreachable
        self._dirty: dict[int, ReplyRecorder] = {}  # insertion-ordered, by id()
        self._waiters: list[concurrent.futures.Future[bool]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False  # the writer waits for a first mark (only then is waking it useful)

    def mark(self, recorder: ReplyRecorder) -> None:
        """``recorder`` has news for the next commit (O(1); no I/O)."""
        if id(recorder) in self._dirty:  # the common case, without the lock
            return
        with self._wake:
            self._dirty[id(recorder)] = recorder
            if self._idle:  # else it is gathering an interval's marks: a wake-up per token
                self._wake.notify()  # would cost more than the write
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-group-commit", daemon=True
                )
                self._thread.start()

    def sync(self) -> concurrent.futures.Future[bool]:
        """A commit now; the future is ``True`` once what was marked is stored (``False`` when
        the database could not be reached: the rows are retried later)."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if not self.available:  # hold no stream while the database is away; retries go on
            future.set_result(False)
            return future
        with self._wake:
            self._waiters.append(future)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-group-commit", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return future

    def _run(self) -> None:
        pause = self.interval
        while True:
            with self._wake:
                self._idle = True
                self._wake.wait_for(lambda: self._dirty or self._waiters)
                self._idle = False
                if not self._waiters:  # gather an interval's worth of tokens (or a waiter)
                    self._wake.wait_for(lambda: self._waiters, timeout=pause)
                batch, self._dirty = self._dirty, {}
                waiters, self._waiters = self._waiters, []
            stored = self._commit(list(batch.values()))
            if not stored:
                with self._wake:  # retry these with whatever is marked meanwhile
                    self._dirty = {**batch, **self._dirty}
            pause = self.interval if stored else RETRY_SECONDS
            self.available = stored
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(stored)

    def _commit(self, recorders: list[ReplyRecorder]) -> bool:
        updates = [
            (recorder.message_id, recorder.snapshot())
            for recorder in recorders
            if recorder.message_id is not None and recorder.failed is None
        ]
        if not updates:
            return True
        try:
            self.store.write_replies(updates)
        except HistoryUnavailableError:
            return False
        except HistoryError as error:  # refused for good: history off for these replies
            for recorder in recorders:
                recorder.fail(error)
            return True
        except Exception as error:  # never let the writer thread die
            log.exception("group commit failed")
            for recorder in recorders:
                recorder.fail(HistoryError(f"history write failed: {error}"))
            return True
        self.commits += 1
        self.rows += len(updates)
        return True


def group_commit(store: Store) -> GroupCommit:
    """The store's one group commit (created on first use)."""
    committer = getattr(store, "_group_commit", None)
    if committer is None:
        with _lock:
            committer = getattr(store, "_group_commit", None)
            if committer is None:
                committer = GroupCommit(store)
                store._group_commit = committer  # type: ignore[attr-defined]
    return committer
