"""A resumable reply's event log recorded into the history (``stream`` records, see
:mod:`streamchat.history.journal`), by the same group commit as its text: another replica,
or this one after a restart, resumes the stream from the database."""

from __future__ import annotations

import threading
import time
from typing import Any

from .commit import GroupCommit, durable

HEARTBEAT_SECONDS = 1.0  # a generating stream's log is touched at least this often...
STALE_SECONDS = 10.0  # ...so one untouched this long has lost its generator (a dead replica)


class FrameRecorder:
    """Hands one stream's frames to the group commit as they are appended (O(1), no I/O):
    each commit writes those since the last one, with the stream's status and the time (its
    heartbeat). Its final record (after :meth:`end`) also expires the logs that ended more
    than ``retention`` seconds ago."""

    def __init__(
        self,
        committer: GroupCommit,
        stream: str,
        protocol: str,
        replica: str | None,
        retention: float,
    ) -> None:
        self.committer = committer
        self.stream = stream
        self.protocol = protocol
        self.replica = replica
        self.retention = retention
        self.status = "in_progress"
        self._lock = threading.Lock()  # append (event loop) vs take_records (commit thread)
        self._unsent: list[str] = []
        self._first = 0  # the number of the first unsent frame
        self._ended = False

    def add(self, frames: list[bytes]) -> None:
        with self._lock:
            self._unsent.extend(frame.decode() for frame in frames)
        self.committer.mark(self)

    async def kept(self) -> None:
        """Until what was added is durable (``serve --history-strict``)."""
        await durable(self.committer, "stream")

    def heartbeat(self) -> None:
        """Touch the log though nothing streamed (a long prompt, a slow upstream)."""
        self.committer.mark(self)

    def end(self, status: str) -> None:
        with self._lock:
            self.status, self._ended = status, True
        self.committer.mark(self)

    def take_records(self) -> list[dict[str, Any]]:
        """The group commit's thread: what its next transaction writes for this stream."""
        with self._lock:
            frames, self._unsent = self._unsent, []
            record = {"op": "stream", "stream": self.stream, "protocol": self.protocol,
                      "status": self.status, "replica": self.replica, "first": self._first,
                      "frames": frames, "at": time.time()}  # fmt: skip
            self._first += len(frames)
            if self._ended:
                record["expire_before"] = record["at"] - self.retention
                record["dead_before"] = record["at"] - self.retention - STALE_SECONDS
        return [record]
