"""The spool: where a history's records wait, durably and in order, while its database is away.

A SQLite file in the state directory, one per history database (named by a digest of its
target), shared by every process that writes to that database: a record spooled by a process
that then died is drained by the next one. Each append is one transaction, synced
(``synchronous = FULL``): what a client was sent survives the process and the machine's crash
from then on. Draining takes the oldest records first, under the spool's write lock, so two
processes never apply the same records twice at once (a crash between the database's commit
and the spool's delete applies them again, which changes nothing: see
:mod:`streamchat.history.journal`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..history import data_dir, private_dir

BUSY_TIMEOUT_MS = 15_000
DRAIN_BATCH = 500  # records applied per database transaction while draining


def spool_path(target: str) -> Path:
    """The spool of one history database (a URL or a SQLite file's resolved path)."""
    digest = hashlib.sha256(target.encode()).hexdigest()[:16]
    return data_dir() / "spool" / f"{digest}.db"


class Spool:
    """Records waiting for the database; the file is made on the first append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.pending = self._count() if path.exists() else 0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            private_dir(self.path.parent)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, body TEXT)")
            self._db = db
        return self._db

    def _count(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT count(*) FROM records").fetchone()[0]

    def append(self, records: list[dict[str, Any]]) -> None:
        """Keep ``records`` after those already waiting (one synced transaction)."""
        if not records:
            return
        rows = [(json.dumps(record, ensure_ascii=False),) for record in records]
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO records (body) VALUES (?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self.pending += len(rows)

    def drain(self, apply: Callable[[list[dict[str, Any]]], None]) -> None:
        """Apply every waiting record in order, ``DRAIN_BATCH`` at a time; ``apply``'s error
        (the database away again) stops it with the rest still waiting."""
        while True:
            with self._lock:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")  # no other process drains these meanwhile
                try:
                    rows = db.execute(
                        "SELECT id, body FROM records ORDER BY id LIMIT ?", (DRAIN_BATCH,)
                    ).fetchall()
                    if rows:
                        apply([json.loads(body) for _, body in rows])
                        db.execute("DELETE FROM records WHERE id <= ?", (rows[-1][0],))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                self.pending = db.execute("SELECT count(*) FROM records").fetchone()[0]
            if not rows or not self.pending:
                return

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
