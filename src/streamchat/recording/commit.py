"""The group commit: one writer thread per history database, so that its streaming replies
share their writes (one transaction every :data:`COMMIT_SECONDS` for all of them) and each
reply's records are applied in order.

Nothing a client was sent goes missing while the database is away (PostgreSQL restarting,
unreachable, not yet up when ``serve`` started): each commit's records then go to the spool
(:mod:`.spool`, synced), and the writer tries the database again with a growing pause
(:data:`RETRY_SECONDS` up to :data:`RETRY_MAX_SECONDS`); once it answers, the spool drains
into it in order before anything newer is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import APIError, HistoryError
from ..history import HistoryUnavailableError, Store
from ..history.shared import shared_key, shared_store
from .spool import Spool, spool_path


class Recorder(Protocol):
    """What the group commit writes for: a reply (:class:`~.reply.ReplyRecorder`) or a
    resumable stream's log (:class:`~.frames.FrameRecorder`)."""

    def take_records(self) -> list[dict[str, Any]]: ...


log = logging.getLogger("streamchat.history")

COMMIT_SECONDS = 0.025  # the group commit's interval (serve --history-commit-ms)
RETRY_SECONDS = 0.5  # the first pause after the database was unreachable...
RETRY_MAX_SECONDS = 10.0  # ...doubling up to this
STRICT_WAIT_SECONDS = 10.0  # --history-strict: the longest a token waits for its commit

_lock = threading.Lock()  # creates a store's group commit once


class GroupCommit:
    """One writer thread: every reply marked since the last commit gives its records (see
    :mod:`streamchat.history.journal`), written in one transaction; whoever asked
    (:meth:`sync`) is then told they are durable (in the database, or in the spool).

    ``store`` is the database, or a function that opens it (called until it succeeds: a
    server may start before its database); ``spool`` keeps records while it is away (without
    one they wait in memory)."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        interval: float | None = None,
        *,
        spool: Spool | None = None,
    ) -> None:
        self._open = store if callable(store) and not isinstance(store, Store) else None
        self.store: Store | None = None if self._open is not None else store  # type: ignore[assignment]
        self.interval = COMMIT_SECONDS if interval is None else interval
        self.spool = spool
        self.commits = 0  # transactions written (for benchmarks)
        self.records = 0  # records in them
        self.available = True  # False while the database cannot be reached
        self.unavailable_reason: str | None = None
        self.on_error: Callable[[HistoryError], None] | None = None  # told of each trouble
        self._held: list[dict[str, Any]] = []  # records waiting in memory (no spool)
        self._dirty: dict[int, Recorder] = {}  # insertion-ordered, by id()
        self._waiters: list[concurrent.futures.Future[bool]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False  # the writer waits for a first mark (only then is waking it useful)
        self._retry_at = 0.0  # monotonic time of the next attempt while unavailable
        self._pause = RETRY_SECONDS
        if spool is not None and spool.pending:  # a previous process left records: drain them
            self._start()

    def mark(self, recorder: Recorder) -> None:
        """``recorder`` has news for the next commit (O(1); no I/O)."""
        if id(recorder) in self._dirty:  # the common case, without the lock
            return
        with self._wake:
            self._dirty[id(recorder)] = recorder
            if self._idle:  # else it is gathering an interval's marks: a wake-up per token
                self._wake.notify()  # would cost more than the write
            self._start()

    def sync(self) -> concurrent.futures.Future[bool]:
        """A commit now; the future is ``True`` once what was marked is durable (in the
        database or the spool), ``False`` if it could not be kept anywhere durable yet."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._wake:
            self._waiters.append(future)
            self._start()
            self._wake.notify()
        return future

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="streamchat-group-commit", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._idle = True
                while not (self._dirty or self._waiters or self._backlog()):
                    self._wake.wait(self._until_retry())
                self._idle = False
                if not self._waiters:  # gather an interval's worth of tokens (or a waiter)
                    self._wake.wait_for(lambda: self._waiters, timeout=self.interval)
                batch, self._dirty = self._dirty, {}
                waiters, self._waiters = self._waiters, []
            records = [r for recorder in batch.values() for r in recorder.take_records()]
            kept = self._write(records)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(kept)

    def _waiting(self) -> bool:
        """Records wait for the database (in the spool or in memory)."""
        return bool(self._held or (self.spool is not None and self.spool.pending))

    def _backlog(self) -> bool:
        return self._waiting() and time.monotonic() >= self._retry_at

    def _until_retry(self) -> float | None:
        return max(0.0, self._retry_at - time.monotonic()) if self._waiting() else None

    def _write(self, records: list[dict[str, Any]]) -> bool:
        """Write ``records`` after whatever waits; ``True`` once they are durable somewhere."""
        if self._waiting() or not self.available:
            kept = self._hold(records)
            if time.monotonic() >= self._retry_at:
                self._drain()
            return kept
        try:
            self._apply(records)
        except HistoryUnavailableError as error:
            self._unavailable(error)
            return self._hold(records)
        return True

    def _apply(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        store = self._connect()
        try:
            store.apply(records)
        except HistoryUnavailableError:
            raise
        except HistoryError as error:  # refused for good: history off for these replies
            self._refused(records, error)
            return
        except Exception as error:  # never let the writer thread die
            log.exception("group commit failed")
            self._refused(records, HistoryError(f"history write failed: {error}"))
            return
        self.commits += 1
        self.records += len(records)

    def _connect(self) -> Store:
        if self.store is None:
            assert self._open is not None
            try:
                self.store = self._open()
            except HistoryUnavailableError:
                raise
            except HistoryError as error:  # refused (e.g. a newer schema): the records are
                raise HistoryUnavailableError(error.message) from None  # kept until it is fixed
        return self.store

    def _hold(self, records: list[dict[str, Any]]) -> bool:
        """Keep records until the database answers: in the spool (durable) or in memory."""
        if not records:
            return True
        if self.spool is None:
            self._held.extend(records)
            return False
        try:
            self.spool.append(records)
        except Exception as error:  # a full disk: memory is all that is left
            log.warning("history spool %s failed: %s", self.spool.path, error)
            self._held.extend(records)
            return False
        return True

    def _drain(self) -> None:
        """The waiting records into the database, oldest first, until none or it fails."""
        try:
            if self._held and self.spool is not None:  # the spool works again: it goes first
                self.spool.append(self._held)
                self._held = []
            if self.spool is not None and self.spool.pending:
                self.spool.drain(self._apply)
            if self._held:
                held, self._held = self._held, []
                try:
                    self._apply(held)
                except HistoryUnavailableError:
                    self._held = held + self._held
                    raise
        except HistoryUnavailableError as error:
            self._unavailable(error)
            return
        except Exception as error:
            log.warning("history spool %s failed: %s", getattr(self.spool, "path", ""), error)
            self._retry_at = time.monotonic() + self._pause
            return
        if not self.available:
            log.warning("history database reachable again; waiting replies written")
        self.available, self.unavailable_reason = True, None
        self._pause = RETRY_SECONDS

    def _unavailable(self, error: HistoryError) -> None:
        if self.available:
            log.warning("%s; replies are kept until it answers", error.message)
            if self.on_error is not None:
                self.on_error(error)
        self.available, self.unavailable_reason = False, error.message
        self._retry_at = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, RETRY_MAX_SECONDS)

    def _refused(self, records: list[dict[str, Any]], error: HistoryError) -> None:
        log.warning("history refused %d records: %s", len(records), error.message)
        if self.on_error is not None:
            self.on_error(error)


async def durable(committer: GroupCommit, what: str) -> None:
    """``--history-strict``: until what was marked is durable; :class:`APIError` (failing the
    stream) if it is kept nowhere within :data:`STRICT_WAIT_SECONDS`. ``what``: "reply"..."""
    try:
        kept = await asyncio.wait_for(asyncio.wrap_future(committer.sync()), STRICT_WAIT_SECONDS)
    except TimeoutError:
        kept = False
    if not kept:
        raise APIError(
            f"the history could not keep this {what} (--history-strict): "
            + (committer.unavailable_reason or "its commit did not finish in time")
        )


_by_target: dict[tuple[str, float], GroupCommit] = {}


def group_commit(store: Store) -> GroupCommit:
    """The store's one group commit (created on first use), for a process that opened the
    store itself (chat, ask): records wait in memory while its database is away."""
    committer = getattr(store, "_group_commit", None)
    if committer is None:
        with _lock:
            committer = getattr(store, "_group_commit", None)
            if committer is None:
                committer = GroupCommit(store)
                store._group_commit = committer  # type: ignore[attr-defined]
    return committer


def target_commit(target: str | os.PathLike[str], interval: float | None = None) -> GroupCommit:
    """The group commit of a history database named by ``target`` (a server's), one per
    database and interval in a process: it opens the shared store when the database answers
    and spools meanwhile."""
    key = str(shared_key(target))
    interval = COMMIT_SECONDS if interval is None else interval
    with _lock:
        committer = _by_target.get((key, interval))
        if committer is None:
            committer = GroupCommit(
                lambda: shared_store(target), interval, spool=Spool(spool_path(key))
            )
            _by_target[(key, interval)] = committer
    return committer
