"""Conversation history in SQLite: one file that a user can query, shared by every process.

WAL mode, a busy timeout and short transactions let chat, ask and serve write at once;
``PRAGMA user_version`` versions the schema; an FTS5 index (kept by triggers) answers
``streamchat history search``. Replies are written while they stream by
:mod:`streamchat.recording`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConversationNotFoundError, HistoryError
from .base import (
    Store,
    T,
    decode_conversation,
    decode_message,
    now,
    private_dir,
)
from .journal import (
    ATTACHMENT_DATA,
    ATTACHMENTS_OF_CONVERSATION,
    CLAIM_THREAD,
    DELTAS_OF_CONVERSATION,
    DROP_ORPHAN_ATTACHMENTS,
    Applier,
    Execute,
    attachment_info,
    insert_conversation,
    insert_message,
    touch,
    with_deltas,
)

BUSY_TIMEOUT_MS = 15_000  # generous: a loaded machine must not drop a reply

# Each migration is a list of statements, applied in one transaction; the schema version is
# the number applied (PRAGMA user_version). Append new migrations; never edit old ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            system TEXT,
            parameters TEXT NOT NULL DEFAULT '{}',
            source TEXT,
            thread_key TEXT
        )""",
        "CREATE INDEX conversations_updated ON conversations(updated_at)",
        "CREATE INDEX conversations_thread ON conversations(thread_key)",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL DEFAULT '',
            model TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            ttft REAL,
            total_time REAL,
            stop_reason TEXT,
            interrupted INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX messages_conversation ON messages(conversation_id, id)",
        """CREATE VIRTUAL TABLE messages_fts
            USING fts5(text, content='messages', content_rowid='id')""",
        """CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
        END""",
        """CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
        """CREATE TRIGGER messages_au AFTER UPDATE OF text ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
        END""",
    ),
    # 2: tool calls, tool results and thinking. ``blocks`` holds a message's content blocks in
    # order as JSON (Anthropic shapes) when it has more than text; ``text`` keeps its text (what
    # search indexes and what a text-only reader shows).
    ("ALTER TABLE messages ADD COLUMN blocks TEXT",),
    # 3: stored Responses API responses (``previous_response_id``), shared by every replica.
    (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            body TEXT NOT NULL,
            conversation TEXT NOT NULL
        )""",
    ),
    # 4: replies recorded as records (history/journal.py): a reply's row is found by its key,
    # and the text that streams goes into deltas until the reply's end writes it whole.
    (
        "ALTER TABLE messages ADD COLUMN reply_key TEXT",
        "CREATE UNIQUE INDEX messages_reply_key ON messages(reply_key)",
        """CREATE TABLE message_deltas (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (message_id, seq)
        ) WITHOUT ROWID""",
    ),
    # 5: images and documents stored once each, by SHA-256 (history/journal.py's detach)
    (
        """CREATE TABLE attachments (
            sha256 TEXT PRIMARY KEY,
            media_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE message_attachments (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL,
            title TEXT,
            PRIMARY KEY (message_id, sha256)
        ) WITHOUT ROWID""",
        "CREATE INDEX message_attachments_sha256 ON message_attachments(sha256)",
    ),
    # 6: resumable replies' event logs (server/replies.py), written by the group commit
    (
        """CREATE TABLE streams (
            id TEXT PRIMARY KEY,
            protocol TEXT NOT NULL,
            status TEXT NOT NULL,
            replica TEXT,
            frames INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX streams_updated ON streams(updated_at)",
        """CREATE TABLE stream_frames (
            stream_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (stream_id, seq)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

MESSAGE_FIELDS = (
    "id, conversation_id, role, text, model, input_tokens, output_tokens, ttft, total_time, "
    "stop_reason, interrupted, error, created_at, blocks"
)
CONVERSATION_FIELDS = "id, created_at, updated_at, model, provider, system, parameters, source"


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return decode_message(dict(row))


def _conversation(row: sqlite3.Row) -> dict[str, Any]:
    return decode_conversation(dict(row))


class HistoryStore(Store):
    """SQLite: thread-safe (one connection behind a lock), each write a short transaction.

    Raises :class:`HistoryError` (one line, naming the file) for a corrupt, read-only or
    otherwise unusable database; ``readonly=True`` opens an existing file for reading only.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._applier = Applier(CLAIM_THREAD.format(lock=""))
        try:
            if readonly:
                self._db = self._connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
                self._check_version(self._version())
            else:
                private_dir(self.path.parent)
                if not self.path.exists():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                self._db = self._open_for_writing()
        except (sqlite3.Error, OSError) as error:
            if self._db is not None:
                self._db.close()
            raise HistoryError(f"history database {self.path} is unusable: {error}") from None

    def _open_for_writing(self) -> sqlite3.Connection:
        """Connect, switch to WAL and migrate, retrying while another process does the same.

        Two processes creating the database at once can get SQLITE_BUSY without the busy
        handler being consulted (the journal-mode switch, lock upgrades); that is a race to
        wait out, not an unusable file.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            db = self._connect(str(self.path))
            try:
                db.execute("PRAGMA journal_mode = WAL")
                self._db = db
                self._migrate()
                return db
            except sqlite3.OperationalError as error:
                db.close()
                self._db = None
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(
            target,
            uri=uri,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; multi-statement writes use BEGIN IMMEDIATE
            check_same_thread=False,  # guarded by self._lock
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        # WAL + NORMAL: a commit survives the process being killed (not a power cut), cheaply.
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this streamchat ({SCHEMA_VERSION})"
            )

    def _migrate(self) -> None:
        """Apply pending migrations; the write of ``user_version`` also proves we may write."""
        with self._transaction() as db:
            version = self._version()
            self._check_version(version)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction, taking the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except sqlite3.Error as error:
            raise HistoryError(f"history database {self.path}: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ------------------------------------------------------------------------------

    def new_conversation(
        self,
        *,
        model: str | None = None,
        provider: str | None = None,
        system: str | None = None,
        parameters: dict[str, Any] | None = None,
        source: str | None = None,
        created_at: str | None = None,
    ) -> int:
        info = {"model": model, "provider": provider, "system": system,
                "parameters": parameters, "source": source}  # fmt: skip
        with self._errors(), self._transaction():
            return insert_conversation(self._execute, info, created_at or now())

    def add_message(self, conversation_id: int, role: str, text: str, **fields: Any) -> int:
        """Insert one message (``fields``: any other message column) and touch the conversation."""
        stamp = fields.pop("created_at", None) or now()
        with self._errors(), self._transaction():
            message_id = insert_message(
                self._execute, conversation_id, stamp, {**fields, "role": role, "text": text}
            )
            touch(self._execute, conversation_id, stamp)
            return message_id

    def apply(self, records: list[dict[str, Any]]) -> None:
        """The group commit: every open reply's records in one transaction."""
        with self._errors(), self._applier.transaction() as apply, self._transaction():
            apply(self._execute, records)

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        """One statement's rows (journal.py's ``Execute``), inside :meth:`_transaction`."""
        return self._db.execute(sql, params).fetchall()

    def ping(self) -> None:
        with self._errors():
            self._db.execute("SELECT 1").fetchone()

    def read(self, work: Callable[[Execute], T]) -> T:
        with self._errors():
            return work(self._execute)

    def _touch(self, conversation_id: int, stamp: str) -> None:
        with self._errors():
            touch(self._execute, conversation_id, stamp)

    # -- stored responses (the Responses API's previous_response_id) ---------------------------

    def put_response(self, body: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        with self._errors():
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, body, conversation) "
                "VALUES (?, ?, ?, ?)",
                (body["id"], now(), json.dumps(body), json.dumps(conversation)),
            )

    def get_response(self, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        with self._errors():
            row = self._db.execute(
                "SELECT body, conversation FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def delete_response(self, response_id: str) -> bool:
        with self._errors():
            cursor = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            return cursor.rowcount > 0

    def delete(self, conversation_id: int) -> None:
        with self._errors(), self._transaction() as db:
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            cursor = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if cursor.rowcount == 0:
                raise ConversationNotFoundError(f"no conversation {conversation_id}")
            db.execute(DROP_ORPHAN_ATTACHMENTS)

    # -- reading ------------------------------------------------------------------------------

    def conversations(self, limit: int = 20) -> list[dict[str, Any]]:
        """Most recently active first, each with ``turns`` (questions asked: an agent's tool
        results are not turns) and a ``preview`` of its first words."""
        with self._errors():
            rows = self._db.execute(
                f"SELECT {CONVERSATION_FIELDS}, "
                "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id "
                " AND m.role = 'user' AND (m.text != '' OR m.blocks IS NULL)) AS turns, "
                "(SELECT substr(text, 1, 200) FROM messages m WHERE m.conversation_id = c.id "
                " ORDER BY m.id LIMIT 1) AS preview "
                "FROM conversations c ORDER BY updated_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_conversation(row) for row in rows]

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        """One conversation with its ``messages`` (raises ConversationNotFoundError)."""
        with self._errors():
            row = self._db.execute(
                f"SELECT {CONVERSATION_FIELDS} FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                raise ConversationNotFoundError(f"no conversation {conversation_id}")
            messages = self._db.execute(
                f"SELECT {MESSAGE_FIELDS} FROM messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
            deltas = self._db.execute(DELTAS_OF_CONVERSATION, (conversation_id,)).fetchall()
            attachments = self._execute(ATTACHMENTS_OF_CONVERSATION, (conversation_id,))
        messages = with_deltas([_message(m) for m in messages], deltas)
        listed = [attachment_info(row) for row in attachments]
        return {**_conversation(row), "messages": messages, "attachments": listed}

    def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        with self._errors():
            rows = self._execute(ATTACHMENT_DATA, (sha256,))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Messages containing every word of ``text`` (FTS5), best first, with a ``snippet``
        whose matches are wrapped in ``\\x02``/``\\x03`` for the caller to style."""
        query = " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
        if not query:
            return []
        with self._errors():
            rows = self._db.execute(
                "SELECT m.id, m.conversation_id, m.role, m.created_at, m.interrupted, "
                "snippet(messages_fts, 0, char(2), char(3), '…', 12) AS snippet "
                "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                "WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
                (query, limit),
            ).fetchall()
        return [_message(row) for row in rows]
