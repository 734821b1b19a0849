"""What recording writes, as records: a reply's life in three kinds, applied in order.

- ``open``: the conversation (an explicit id, a continued thread, or a new one), the request's
  new turns and the reply's row (``interrupted`` until its end), found again by its ``reply``
  key (a UUID the recorder made, stored in ``messages.reply_key``);
- ``append``: the text that streamed since the last commit, as the next row of
  ``message_deltas`` (``seq`` numbered), and the output token count so far: a commit's cost
  does not grow with the reply (the reply's row and its search index are rewritten once, at
  the end);
- ``finish``: the final text, blocks, usage, timings and stop reason; the deltas go, and the
  conversation may be marked as continuable (``thread``);
- ``stream``: a resumable reply's event log (:mod:`streamchat.server.replies`): the frames
  that streamed since the last commit, numbered on from ``first``, and the stream's status and
  heartbeat (``at``, epoch seconds: another replica following the log tells a stalled
  generator from a dead one by it; a stream another replica asked to cancel stays
  ``cancelling`` until its generator ends it); a finished stream's last record also drops the
  logs that ended before ``expire_before`` and those in progress but silent since
  ``dead_before`` (their replica died).

A message's inline images and documents (base64) are stored once each, content-addressed by
SHA-256 in ``attachments`` and linked in ``message_attachments``; its blocks keep a reference
(``{"type": "attachment", "sha256", "media_type", "size"}``) in their place.

Records are plain JSON, so the spool (:mod:`streamchat.recording.spool`) keeps them while the
database is away; applying one twice changes nothing (``reply_key`` is unique, a delta's
``(message_id, seq)`` is its key), so a spool drained up to a crash may be drained again.
Both backends apply them with the SQL here (``?`` placeholders; PostgreSQL's store converts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .base import detach, encode_blocks, now

Record = dict[str, Any]
Execute = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

# Both backends' claim of a thread (the latest conversation whose turns hash to the key).
CLAIM_THREAD = (
    "UPDATE conversations SET thread_key = NULL WHERE id = (SELECT id FROM conversations "
    "WHERE thread_key = ? ORDER BY updated_at DESC, id DESC LIMIT 1{lock}) RETURNING id"
)


class Applier:
    """Applies records inside one transaction of a store; remembers which row each open
    reply has (a reply's entry goes at its end). Use :meth:`transaction`: what a transaction
    learnt is kept only once it committed."""

    def __init__(self, claim_thread: str) -> None:
        self.claim_thread = claim_thread
        self.rows: dict[str, tuple[int, int]] = {}  # reply key -> (conversation id, message id)

    @contextmanager
    def transaction(self) -> Iterator[Callable[[Execute, Iterable[Record]], None]]:
        """Yields ``apply(execute, records)``; the caller commits its database transaction
        inside the block."""
        committed = self.rows
        self.rows = dict(committed)
        try:
            yield self._apply
        except BaseException:
            self.rows = committed  # rolled back: forget the rows it made
            raise

    def _apply(self, execute: Execute, records: Iterable[Record]) -> None:
        for record in records:
            getattr(self, "_" + record["op"])(execute, record)

    def _row(self, execute: Execute, reply: str) -> tuple[int, int] | None:
        found = self.rows.get(reply)
        if found is None:
            rows = execute("SELECT conversation_id, id FROM messages WHERE reply_key = ?", (reply,))
            if rows:
                found = self.rows[reply] = (int(rows[0][0]), int(rows[0][1]))
        return found

    def _open(self, execute: Execute, record: Record) -> None:
        if self._row(execute, record["reply"]) is not None:
            return  # applied before (a spool drained again after a crash)
        conversation_id = record.get("conversation_id")
        if conversation_id is not None and not execute(
            "SELECT id FROM conversations WHERE id = ?", (conversation_id,)
        ):
            conversation_id = None  # deleted meanwhile: the reply starts a new conversation
        elif conversation_id is None and record.get("thread"):
            claimed = execute(self.claim_thread, (record["thread"],))
            conversation_id = int(claimed[0][0]) if claimed else None
        turns = record.get("turns", [])
        if conversation_id is not None:
            turns = turns[-1:]  # the conversation holds the earlier ones
        stamp = record.get("at") or now()
        if conversation_id is None:
            conversation_id = insert_conversation(execute, record.get("conversation") or {}, stamp)
        for turn in turns:
            insert_message(execute, conversation_id, stamp, turn)
        reply = {
            "role": "assistant", "text": "", "interrupted": 1, "reply_key": record["reply"],
            "model": record.get("model"), "input_tokens": record.get("input_tokens"),
        }  # fmt: skip
        message_id = insert_message(execute, conversation_id, stamp, reply)
        touch(execute, conversation_id, stamp)
        self.rows[record["reply"]] = (conversation_id, message_id)

    def _append(self, execute: Execute, record: Record) -> None:
        found = self._row(execute, record["reply"])
        if found is None:
            return  # its open was refused: nothing to append to
        message_id = found[1]
        if record.get("text"):
            execute(  # unless the conversation was deleted meanwhile
                "INSERT INTO message_deltas (message_id, seq, text) SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?) ON CONFLICT DO NOTHING",
                (message_id, record["seq"], record["text"], message_id),
            )
        fields = {"output_tokens": record.get("output_tokens")}
        if "blocks" in record:
            fields["blocks"] = record["blocks"]
        _update(execute, message_id, fields)

    def _stream(self, execute: Execute, record: Record) -> None:
        stream, frames, first = record["stream"], record["frames"], record["first"]
        state = (record["protocol"], record["status"], record.get("replica"), first + len(frames))
        execute(UPSERT_STREAM, (stream, *state, record["at"]))
        if frames:
            rows = ", ".join(["(?, ?, ?)"] * len(frames))
            values = [v for n, f in enumerate(frames, first) for v in (stream, n, f)]
            execute(INSERT_FRAMES.format(rows=rows), tuple(values))
        if record.get("expire_before") is not None:
            for statement in EXPIRE_STREAMS:
                execute(statement, (record["expire_before"], record["dead_before"]))

    def _finish(self, execute: Execute, record: Record) -> None:
        found = self._row(execute, record["reply"])
        if found is None:
            return
        conversation_id, message_id = found
        _update(execute, message_id, record["fields"])
        execute("DELETE FROM message_deltas WHERE message_id = ?", (message_id,))
        if record.get("thread"):
            execute(
                "UPDATE conversations SET thread_key = ? WHERE id = ?",
                (record["thread"], conversation_id),
            )
        self.rows.pop(record["reply"], None)


UPSERT_STREAM = (
    "INSERT INTO streams (id, protocol, status, replica, frames, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = CASE WHEN "
    "streams.status = 'cancelling' AND excluded.status = 'in_progress' THEN 'cancelling' "
    "ELSE excluded.status END, frames = excluded.frames, updated_at = excluded.updated_at"
)
INSERT_FRAMES = (
    "INSERT INTO stream_frames (stream_id, seq, data) VALUES {rows} ON CONFLICT DO NOTHING"
)
# logs that ended before the first ?, or whose generator fell silent before the second (dead)
EXPIRED = "updated_at < ? AND (status <> 'in_progress' OR updated_at < ?)"
EXPIRE_STREAMS = (
    f"DELETE FROM stream_frames WHERE stream_id IN (SELECT id FROM streams WHERE {EXPIRED})",
    f"DELETE FROM streams WHERE {EXPIRED}",
)
# a stream's state first, then its frames: what the state says was written is then all there
STREAM_STATE = "SELECT protocol, status, frames, updated_at, replica FROM streams WHERE id = ?"
STREAM_FRAMES = "SELECT seq, data FROM stream_frames WHERE stream_id = ? AND seq > ? ORDER BY seq"
END_STREAM = "UPDATE streams SET status = ? WHERE id = ? AND status = 'in_progress'"
# another replica asks the generating one to stop (it reads this with its heartbeat)
CANCEL_STREAM = "UPDATE streams SET status = 'cancelling' WHERE id = ? AND status = 'in_progress'"


def read_stream(
    execute: Execute, stream: str, after: int | None = None
) -> tuple[Record, list[str]] | None:
    """A logged stream's state (protocol, status, frames, updated_at, replica) and its frames
    numbered above ``after`` (none if ``None``), or ``None`` if none is logged as ``stream``."""
    rows = execute(STREAM_STATE, (stream,))
    if not rows:
        return None
    protocol, status, count, updated_at, replica = rows[0]
    state = {"protocol": protocol, "status": status, "frames": int(count),
             "updated_at": float(updated_at), "replica": replica}  # fmt: skip
    if after is None or after + 1 >= count:
        return state, []
    frames = [str(data) for _, data in execute(STREAM_FRAMES, (stream, after))]
    return state, frames


def insert_conversation(execute: Execute, info: dict[str, Any], stamp: str) -> int:
    """A new conversation (``info``: model, provider, system, parameters, source); its id."""
    rows = execute(
        "INSERT INTO conversations (created_at, updated_at, model, provider, system, "
        "parameters, source) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (stamp, stamp, info.get("model"), info.get("provider"), info.get("system"),
         json.dumps(info.get("parameters") or {}), info.get("source")),
    )  # fmt: skip
    return int(rows[0][0])


def insert_message(
    execute: Execute, conversation_id: int, stamp: str, fields: dict[str, Any]
) -> int:
    """A new message (``fields``: its columns; ``created_at`` defaults to ``stamp``); its id."""
    fields = {"created_at": stamp, **fields, "conversation_id": conversation_id}
    fields["blocks"], found = detach(fields.get("blocks"))
    fields = encode_blocks(fields)
    names = ", ".join(fields)
    marks = ", ".join("?" * len(fields))
    rows = execute(
        f"INSERT INTO messages ({names}) VALUES ({marks}) RETURNING id", tuple(fields.values())
    )
    message_id = int(rows[0][0])
    for attachment in found:
        execute(INSERT_ATTACHMENT, (attachment.sha256, attachment.media_type,
                                    len(attachment.data), attachment.data, stamp))  # fmt: skip
        execute(LINK_ATTACHMENT, (message_id, attachment.sha256, attachment.title))
    return message_id


INSERT_ATTACHMENT = (
    "INSERT INTO attachments (sha256, media_type, size, data, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
LINK_ATTACHMENT = (
    "INSERT INTO message_attachments (message_id, sha256, title) VALUES (?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
ATTACHMENTS_OF_CONVERSATION = (
    "SELECT l.message_id, a.sha256, a.media_type, a.size, l.title FROM message_attachments l "
    "JOIN messages m ON m.id = l.message_id JOIN attachments a ON a.sha256 = l.sha256 "
    "WHERE m.conversation_id = ? ORDER BY l.message_id, a.sha256"
)


def attachment_info(row: Any) -> dict[str, Any]:
    """One row of :data:`ATTACHMENTS_OF_CONVERSATION` as a dict."""
    message_id, sha256, media_type, size, title = row
    return {"message_id": message_id, "sha256": sha256, "media_type": media_type,
            "size": size, "title": title}  # fmt: skip


ATTACHMENT_DATA = "SELECT media_type, data FROM attachments WHERE sha256 = ?"
# after a conversation's messages (and so their links) went: the bytes no message refers to
DROP_ORPHAN_ATTACHMENTS = (
    "DELETE FROM attachments WHERE NOT EXISTS "
    "(SELECT 1 FROM message_attachments l WHERE l.sha256 = attachments.sha256)"
)


def touch(execute: Execute, conversation_id: int, stamp: str) -> None:
    """The conversation's latest activity (lists order by it)."""
    execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (stamp, conversation_id))


def _update(execute: Execute, message_id: int, fields: dict[str, Any]) -> None:
    fields = encode_blocks(dict(fields))
    assignments = ", ".join(f"{name} = ?" for name in fields)
    execute(f"UPDATE messages SET {assignments} WHERE id = ?", (*fields.values(), message_id))


def with_deltas(
    messages: list[dict[str, Any]], deltas: Iterable[tuple[int, str]]
) -> list[dict[str, Any]]:
    """Messages whose replies are still streaming (or were cut by a crash) with the text of
    their deltas appended; ``deltas`` are ``(message_id, text)`` in ``seq`` order."""
    by_id = {message["id"]: message for message in messages}
    for message_id, text in deltas:
        message = by_id.get(message_id)
        if message is not None:
            message["text"] += text
    return messages


DELTAS_OF_CONVERSATION = (
    "SELECT d.message_id, d.text FROM message_deltas d JOIN messages m ON m.id = d.message_id "
    "WHERE m.conversation_id = ? ORDER BY d.message_id, d.seq"
)
