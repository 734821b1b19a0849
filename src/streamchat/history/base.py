"""What both history backends share: where the database is, the one store interface, the
export format, and how stored messages become a request's turns again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ..errors import HistoryError

if TYPE_CHECKING:
    from .journal import Execute

T = TypeVar("T")
EXPORT_FORMAT = "streamchat.conversation/1"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class HistoryUnavailableError(HistoryError):
    """The database cannot be reached right now (PostgreSQL down or restarting): a write that
    fails this way is retried, unlike one refused for good (corrupt or read-only file)."""


def data_dir() -> Path:
    """Where streamchat keeps its files (``$XDG_DATA_HOME/streamchat``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "streamchat"


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by this user only (0700); our own data dir is tightened too."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    elif path == data_dir():
        os.chmod(path, 0o700)
    return path


def is_postgres(target: str | os.PathLike[str] | None) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def db_target(explicit: str | os.PathLike[str] | None = None) -> str | Path:
    """``--db``/``--history``, else ``$STREAMCHAT_DB``, else the SQLite file under
    ``$XDG_DATA_HOME``: a ``postgresql://`` URL as given, anything else as a path."""
    chosen = explicit or os.environ.get("STREAMCHAT_DB")
    if is_postgres(chosen):
        return str(chosen)
    return Path(chosen).expanduser() if chosen else data_dir() / "history.db"


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The SQLite file (see :func:`db_target`; a PostgreSQL URL is not a path)."""
    target = db_target(explicit)
    return target if isinstance(target, Path) else Path(target)


def redact(url: str) -> str:
    """A database URL fit to print: any password replaced by ``***``."""
    url = re.sub(r"([a-z]+://[^:/@\s\"']*):[^@\s\"']*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def now() -> str:
    """UTC, to the microsecond: ``updated_at`` orders conversations by their latest activity."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """The one history interface both backends implement (SQLite: :class:`HistoryStore`,
    PostgreSQL: :class:`PostgresStore`); everything above it is backend-blind. Every method
    is blocking and thread-safe: servers call them from worker threads, off the event loop."""

    name = "history"

    # Backends implement these.
    def new_conversation(self, **info: Any) -> int:
        raise NotImplementedError

    def add_message(self, conversation_id: int, role: str, text: str, **fields: Any) -> int:
        raise NotImplementedError

    def apply(self, records: list[dict[str, Any]]) -> None:
        """The group commit: replies' records (:mod:`.journal`) in one transaction, in order."""
        raise NotImplementedError

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        """An image's or document's media type and bytes, by SHA-256 (hex)."""
        raise NotImplementedError

    def conversations(self, limit: int = 20) -> list[dict[str, Any]]:
        raise NotImplementedError

    def ping(self) -> None:
        """Raise :class:`HistoryError` unless the database answers now (``/readyz``)."""
        raise NotImplementedError

    def read(self, work: Callable[[Execute], T]) -> T:
        """``work(execute)`` on one connection (journal.py's ``Execute``), outside any
        transaction of ours: for reads written with journal.py's shared SQL."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Shared on top of them.
    def last_conversation_id(self) -> int | None:
        latest = self.conversations(limit=1)
        return latest[0]["id"] if latest else None

    def export(self, conversation_id: int) -> dict[str, Any]:
        """The JSON export: the conversation row (with its ``attachments`` listed) and its
        messages, each image or document inline again (base64), so an export stands alone."""
        conversation = self.conversation(conversation_id)
        messages = conversation.pop("messages")
        for message in messages:
            message["blocks"] = attach(message.get("blocks"), self.attachment_data)
        return {"format": EXPORT_FORMAT, "conversation": conversation, "messages": messages}

    def attachment_data(self, sha256: str) -> bytes | None:
        found = self.attachment(sha256)
        return None if found is None else found[1]

    def import_conversation(self, data: dict[str, Any]) -> int:
        """Store a JSON export as a new conversation (new ids, everything else as exported)."""
        if data.get("format") != EXPORT_FORMAT:
            raise HistoryError(f"not a {EXPORT_FORMAT} export")
        info = data["conversation"]
        keep = ("model", "provider", "system", "parameters", "source", "created_at")
        conversation_id = self.new_conversation(**{k: info.get(k) for k in keep})
        for message in data["messages"]:
            fields = {
                k: v
                for k, v in message.items()
                if k not in ("id", "conversation_id", "role", "text")
            }
            fields["interrupted"] = int(bool(fields.get("interrupted")))
            self.add_message(conversation_id, message["role"], message["text"], **fields)
        self._touch(conversation_id, info.get("updated_at") or now())
        return conversation_id

    def _touch(self, conversation_id: int, stamp: str) -> None:
        raise NotImplementedError


class Attachment(NamedTuple):
    sha256: str
    media_type: str
    data: bytes
    title: str | None


def _media_blocks(blocks: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """``blocks`` with ``change`` applied to each image or document (tool results' too)."""
    if not isinstance(blocks, list):
        return blocks
    changed = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") in ("image", "document"):
            block = change(block)
        elif isinstance(block, dict) and isinstance(block.get("content"), list):
            block = {**block, "content": _media_blocks(block["content"], change)}
        changed.append(block)
    return changed


def detach(blocks: Any) -> tuple[Any, list[Attachment]]:
    """``blocks`` with each inline (base64) image or document replaced by a reference to its
    bytes, and those bytes."""
    found: list[Attachment] = []

    def reference(block: dict[str, Any]) -> dict[str, Any]:
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") != "base64":
            return block
        data = base64.b64decode(source["data"])
        digest = hashlib.sha256(data).hexdigest()
        found.append(Attachment(digest, source["media_type"], data, block.get("title")))
        kept = {"type": "attachment", "sha256": digest, "media_type": source["media_type"]}
        return {**block, "source": {**kept, "size": len(data)}}

    return _media_blocks(blocks, reference), found


def attach(blocks: Any, data: Callable[[str], bytes | None]) -> Any:
    """The inverse of :func:`detach`: each reference's bytes inline again (``data`` finds them;
    a reference whose bytes are gone stays a reference)."""

    def inline(block: dict[str, Any]) -> dict[str, Any]:
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") != "attachment":
            return block
        found = data(source["sha256"])
        if found is None:
            return block
        encoded = base64.b64encode(found).decode()
        inline = {"type": "base64", "media_type": source["media_type"], "data": encoded}
        return {**block, "source": inline}

    return _media_blocks(blocks, inline)


def encode_blocks(fields: dict[str, Any]) -> dict[str, Any]:
    """``blocks`` (a list of block dicts, or ``None`` for text only) as its JSON column."""
    blocks = fields.get("blocks")
    if blocks is not None and not isinstance(blocks, str):
        fields["blocks"] = json.dumps(blocks, ensure_ascii=False) if blocks else None
    return fields


def decode_message(message: dict[str, Any]) -> dict[str, Any]:
    message["interrupted"] = bool(message["interrupted"])
    if "blocks" in message:
        message["blocks"] = json.loads(message["blocks"]) if message["blocks"] else None
    return message


def decode_conversation(conversation: dict[str, Any]) -> dict[str, Any]:
    conversation["parameters"] = json.loads(conversation["parameters"] or "{}")
    return conversation


def turns_for_model(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """The stored messages as a request's alternating turns of text, as the chat kept them in
    memory: replies that brought no text are dropped with the question they answered. An agent's
    tool plumbing (a tool-call-only reply, a tool-result-only turn) is skipped, and the texts of
    one exchange's replies join into one turn: a text chat cannot run the tools again."""
    turns: list[dict[str, str]] = []
    plumbing = False  # tool messages skipped since the last turn kept
    for message in messages:
        if not message["text"] and message.get("blocks"):
            plumbing = True  # tool calls / results / thinking with no text
            continue
        answered = bool(turns) and turns[-1]["role"] == "user"
        after_tools, plumbing = plumbing, False
        if message["role"] == "assistant":
            if message["text"] and answered:
                turns.append({"role": "assistant", "content": message["text"]})
            elif message["text"] and after_tools and turns:  # the answer after a tool call
                turns[-1]["content"] += "\n\n" + message["text"]
        else:
            if answered:
                turns.pop()
            turns.append({"role": "user", "content": message["text"]})
    if turns and turns[-1]["role"] == "user":
        turns.pop()
    return turns
