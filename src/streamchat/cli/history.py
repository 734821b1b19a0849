"""``streamchat history``: list, show, export, delete and search the stored conversations.

Also the glue ``chat`` and ``ask`` use to log their turns (:class:`ChatLog`): history there is
fail-soft (one warning, then off), while here an unusable database is a one-line error.
Tables are drawn with rich on a terminal; piped output is plain tab-separated text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..errors import ConversationNotFoundError, HistoryError, InvalidRequestError
from ..history import (
    HistoryUnavailableError,
    Store,
    db_target,
    is_postgres,
    open_store,
    turns_for_model,
)
from ..history.shared import shared_store
from ..recording import commit
from ..recording.commit import group_commit
from ..recording.reply import ReplyRecorder
from .options import bounded

MARK_START, MARK_END = "\x02", "\x03"  # how HistoryStore.search marks matches in snippets
COMPACT_CALL = 100  # a tool call up to this long is shown on one line


def add_history_options(parser: argparse.ArgumentParser, *, resume: bool = False) -> None:
    """``--db`` (alias ``--history``) and ``--no-history`` (and for chat ``--continue`` /
    ``--resume ID``)."""
    group = parser.add_argument_group("history")
    group.add_argument(
        "--db",
        "--history",
        metavar="PATH|URL",
        help="history database: a SQLite file or a postgresql:// URL (env STREAMCHAT_DB)",
    )
    group.add_argument("--no-history", action="store_true", help="do not log this conversation")
    if resume:
        group.add_argument(
            "-c",
            "--continue",
            dest="continue_",
            action="store_true",
            help="resume the latest conversation",
        )
        group.add_argument("--resume", type=int, metavar="ID", help="resume conversation ID")


class _HistoryFlag(argparse.Action):
    """``--history`` (on, default database), ``--history PATH|URL`` (on, that database),
    ``--no-history`` (off)."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: str | None = None) -> None:
        if option == "--no-history":
            namespace.history = False
            return
        namespace.history = True
        if isinstance(value, str):
            namespace.db = value


def add_server_history_options(parser: argparse.ArgumentParser) -> None:
    """``serve --history [PATH|URL]`` logs every request and reply; ``--db`` alone implies it;
    ``--history-commit-ms`` and ``--history-strict`` tune the group commit."""
    parser.add_argument(
        "--history",
        "--no-history",
        action=_HistoryFlag,
        nargs="?",
        metavar="PATH|URL",
        help="log requests and replies to the history database: a SQLite file or a "
        "postgresql:// URL (default off; env STREAMCHAT_DB names the database)",
    )
    parser.add_argument(
        "--db", metavar="PATH|URL", help="history database (implies --history; env STREAMCHAT_DB)"
    )
    parser.add_argument(
        "--history-commit-ms",
        type=bounded(float, 1, 10_000),
        default=commit.COMMIT_SECONDS * 1000,
        metavar="MS",
        help="write every open stream's new text in one transaction this often "
        f"(default {commit.COMMIT_SECONDS * 1000:g})",
    )
    parser.add_argument(
        "--history-strict",
        action="store_true",
        help="send no token before the commit that stores it (group commits still shared)",
    )


def server_history_path(args: argparse.Namespace) -> str | None:
    """The database ``serve`` logs to, checked now: an unusable SQLite file warns and turns
    history off; a PostgreSQL database that cannot be reached yet warns and is waited for
    (``/readyz`` says unready until it answers; replies are spooled meanwhile); one that
    refuses for good (a newer schema) is a one-line error."""
    if not (args.history or (args.history is None and args.db)):
        return None
    target = db_target(args.db)
    try:
        shared_store(target)
    except HistoryUnavailableError as error:
        warn(f"{error.message}; serving, unready until it answers")
    except HistoryError as error:
        if is_postgres(target):
            raise
        warn(f"{error.message}; history is off")
        return None
    return str(target)


def warn(message: str) -> None:
    """A one-line warning on stderr (history trouble never stops a chat)."""
    print(f"streamchat: warning: {message}", file=sys.stderr, flush=True)


class ChatLog:
    """The history of one CLI conversation. Never breaks the chat: the first problem (corrupt
    or read-only file, full disk) prints one warning and turns history off."""

    def __init__(self, store: Store | None, warn: Callable[[str], None]) -> None:
        self.store = store
        self.warn = warn
        self.conversation_id: int | None = None
        self._info: dict[str, Any] = {}

    @classmethod
    def open(cls, args: argparse.Namespace, warn: Callable[[str], None]) -> ChatLog:
        if args.no_history:
            return cls(None, warn)
        try:
            return cls(open_store(db_target(args.db)), warn)
        except HistoryError as error:
            warn(f"{error.message}; history is off")
            return cls(None, warn)

    def _fail(self, error: HistoryError) -> None:
        if self.store is not None:
            self.warn(f"{error.message}; history is off from here")
            self.store = None

    def resume(self, conversation_id: int | None) -> dict[str, Any] | None:
        """The conversation to continue (``None``: the latest), or ``None`` with a warning."""
        if self.store is None:
            self.warn("cannot resume without history; starting a new conversation")
            return None
        if conversation_id is None:
            conversation_id = self.store.last_conversation_id()
            if conversation_id is None:
                self.warn("no conversation to continue; starting a new one")
                return None
        conversation = self.store.conversation(conversation_id)  # unknown id: a one-line error
        self.conversation_id = conversation_id
        return conversation

    def begin(self, **info: Any) -> None:
        """Conversation details, written with the first message (no empty conversations)."""
        self._info = info

    def user(self, content: str | list[dict[str, Any]]) -> None:
        """The user's turn: text, or blocks (text with images or documents; each stored once)."""
        if self.store is None:
            return
        blocks = None if isinstance(content, str) else content
        text = content if isinstance(content, str) else block_text(content)
        try:
            if self.conversation_id is None:
                self.conversation_id = self.store.new_conversation(**self._info)
            self.store.add_message(self.conversation_id, "user", text, blocks=blocks)
        except HistoryError as error:
            self._fail(error)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def recorder(self) -> ReplyRecorder | None:
        """A recorder for the next reply (after :meth:`user`), or ``None`` with history off."""
        if self.store is None or self.conversation_id is None:
            return None
        committer = group_commit(self.store)
        committer.on_error = lambda error: self.warn(f"{error.message}; the reply may be lost")
        return ReplyRecorder(committer, conversation_id=self.conversation_id)


def block_text(blocks: list[dict[str, Any]]) -> str:
    return "".join(block.get("text", "") for block in blocks if block.get("type") == "text")


def local_time(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")


def one_line(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def recap(conversation: dict[str, Any], exchanges: int = 2) -> list[str]:
    """A few lines to show when a conversation is resumed: what it is and how it ended."""
    turns = turns_for_model(conversation["messages"])
    lines = [
        f"Resuming conversation {conversation['id']} · started "
        f"{local_time(conversation['created_at'])} · {len(turns) // 2} turns · "
        f"{conversation['model'] or 'default model'}"
    ]
    if len(turns) > 2 * exchanges:
        lines.append("  …")
    for turn in turns[-2 * exchanges :]:
        who = "You" if turn["role"] == "user" else "Assistant"
        lines.append(f"  {who}: {one_line(turn['content'], 100)}")
    return lines


def to_markdown(conversation: dict[str, Any]) -> str:
    """The Markdown export (and what ``show`` prints)."""
    lines = [f"# Conversation {conversation['id']}", ""]
    lines.append(f"- Started: {local_time(conversation['created_at'])}")
    for key in ("model", "provider", "system", "source"):
        if conversation.get(key):
            lines.append(f"- {key.capitalize()}: {conversation[key]}")
    if conversation.get("parameters"):
        lines.append(f"- Parameters: `{json.dumps(conversation['parameters'])}`")
    for message in conversation["messages"]:
        notes = []
        if message["role"] == "assistant":
            if message["input_tokens"] is not None or message["output_tokens"] is not None:
                notes.append(
                    f"{message['input_tokens'] or 0} in / {message['output_tokens'] or 0} out"
                )
            if message["ttft"] is not None:
                notes.append(f"TTFT {message['ttft'] * 1000:.0f} ms")
            if message["total_time"] is not None:
                notes.append(f"{message['total_time']:.2f} s")
            if message["stop_reason"]:
                notes.append(message["stop_reason"])
            if message["interrupted"]:
                notes.append("interrupted")
            if message["error"]:
                notes.append(f"error: {message['error']}")
        heading = "User" if message["role"] == "user" else "Assistant"
        suffix = f" ({' · '.join(notes)})" if notes else ""
        lines += ["", f"## {heading}{suffix}", ""]
        if message.get("blocks"):
            lines += block_lines(message["blocks"])
        else:
            lines.append(message["text"])
    return "\n".join(lines) + "\n"


def fence(text: str, info: str = "") -> list[str]:
    """A code fence longer than any backtick run inside ``text``, so nothing can close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    mark = "`" * max(3, longest + 1)
    return [f"{mark}{info}", text, mark]


def tool_call(block: dict[str, Any]) -> str:
    """A tool call on one line: ``get_weather({"city": "Paris"})`` (as ask and chat print it)."""
    arguments = block.get("partial_json") or json.dumps(block.get("input"), ensure_ascii=False)
    return f"{block.get('name', '?')}({arguments})"


def block_lines(blocks: list[dict[str, Any]]) -> list[str]:
    """Markdown for a message's blocks in order: text as is, thinking quoted, tool calls and
    results as labelled code blocks."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if lines:
            lines.append("")
        if kind == "text":
            lines.append(block.get("text", ""))
        elif kind == "thinking":
            lines.append("> *Thinking*")
            lines += ["> " + line if line else ">" for line in block["thinking"].split("\n")]
        elif kind == "tool_use":
            cut = " (cut short)" if "partial_json" in block else ""
            lines.append(f"**Tool call** · `{block.get('id')}`{cut}")
            lines.append("")
            call = tool_call(block)
            if len(call) > COMPACT_CALL or "\n" in call:  # long: the input laid out
                laid_out = json.dumps(block.get("input"), indent=2, ensure_ascii=False)
                call = f"{block.get('name')}(\n{laid_out}\n)"
                if "partial_json" in block:
                    call = f"{block.get('name')}({block['partial_json']})"
            lines += fence(call)
        elif kind == "tool_result":
            error = " (error)" if block.get("is_error") else ""
            lines.append(f"**Tool result** for `{block.get('tool_use_id')}`{error}")
            lines.append("")
            lines += fence(tool_result_text(block))
            lines += [media_line(part) for part in block.get("content") or [] if is_media(part)]
        elif is_media(block):
            lines.append(media_line(block))
    return lines


def is_media(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in ("image", "document", "video")


def media_line(block: dict[str, Any]) -> str:
    """An image or document on one line: ``📎 Image · image/png · 1,234 bytes · sha256 1f2e…``
    (the hash names its stored bytes: ``/api/attachments/<sha256>``)."""
    source = block.get("source") or {}
    parts = [f"📎 **{block['type'].capitalize()}**"]
    if block.get("title"):
        parts.append(f"“{block['title']}”")
    parts.append(source.get("media_type") or source.get("type") or "?")
    if source.get("size") is not None:
        parts.append(f"{source['size']:,} bytes")
    if source.get("sha256"):
        parts.append(f"sha256 {source['sha256'][:12]}…")
    elif source.get("url"):
        parts.append(source["url"])
    return " · ".join(parts)


def tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


# -- the command ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "history",
        help="list, show, export, delete and search stored conversations",
        description="Conversations are stored as they stream, in SQLite "
        "($XDG_DATA_HOME/streamchat/history.db) or PostgreSQL; --db (or --history) PATH|URL "
        "or STREAMCHAT_DB to change.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        "--history",
        metavar="PATH|URL",
        help="history database: a SQLite file or a postgresql:// URL (env STREAMCHAT_DB)",
    )
    commands = parser.add_subparsers(dest="history_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", parents=[common], help="recent conversations")
    listing.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", parents=[common], help="print one conversation")
    show.add_argument("id", type=int)
    show.set_defaults(func=run_show)

    export = commands.add_parser("export", parents=[common], help="export as Markdown or JSON")
    export.add_argument("id", type=int)
    export.add_argument("--format", choices=("md", "json"), help="default: from -o, else md")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=run_export)

    delete = commands.add_parser("delete", parents=[common], help="delete one conversation")
    delete.add_argument("id", type=int)
    delete.set_defaults(func=run_delete)

    search = commands.add_parser("search", parents=[common], help="full-text search")
    search.add_argument("text", nargs="+", help="words that must all appear")
    search.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    search.set_defaults(func=run_search)


def open_history(args: argparse.Namespace, *, write: bool = False) -> Store | None:
    """The database, or ``None`` when there is no SQLite file yet; reading works on a
    read-only file. A PostgreSQL database is opened as ``serve`` opens it (its tables created
    if it is new), so an empty one reads as empty."""
    target = db_target(args.db)
    if is_postgres(target):
        return open_store(target)
    if not target.exists():
        return None
    return open_store(target, readonly=not write)


def terminal() -> Any:
    """A rich console when stdout is a terminal, else ``None`` (plain text)."""
    if not sys.stdout.isatty():
        return None
    from rich.console import Console

    return Console(highlight=False, emoji=False)


def table(console: Any, headers: list[str], rows: list[list[Any]]) -> None:
    if console is None:
        for row in rows:
            print("\t".join(str(cell) for cell in row))
        return
    from rich.table import Table

    grid = Table(*headers, header_style="bold")
    for row in rows:
        grid.add_row(*row)
    console.print(grid)


def highlight(snippet: str, console: Any) -> Any:
    """A search snippet on one line, its matches in [brackets] or, on a terminal, in colour."""
    parts = re.split(f"[{MARK_START}{MARK_END}]", " ".join(snippet.split()))
    if console is None:
        return "".join(f"[{part}]" if i % 2 else part for i, part in enumerate(parts))
    from rich.text import Text

    text = Text()
    for i, part in enumerate(parts):
        text.append(part, "bold yellow" if i % 2 else "")
    return text


def run_list(args: argparse.Namespace) -> int:
    store = open_history(args)
    conversations = store.conversations(args.limit) if store else []
    console = terminal()
    if not conversations:
        print("no conversations yet", file=sys.stderr)
        return 0
    rows = [
        [
            str(c["id"]),
            local_time(c["created_at"]),
            c["model"] or "",
            str(c["turns"]),
            one_line(c["preview"]),
        ]
        for c in conversations
    ]
    table(console, ["ID", "Started", "Model", "Turns", "First words"], rows)
    return 0


def _conversation(args: argparse.Namespace) -> dict[str, Any]:
    store = open_history(args)
    if store is None:
        raise ConversationNotFoundError(f"no conversation {args.id}")
    with store:
        return store.conversation(args.id)


def run_show(args: argparse.Namespace) -> int:
    text = to_markdown(_conversation(args))
    console = terminal()
    if console is None:
        sys.stdout.write(text)
    else:
        from rich.markdown import Markdown

        console.print(Markdown(text))
    return 0


def run_export(args: argparse.Namespace) -> int:
    fmt = args.format or ("json" if (args.output or "").endswith(".json") else "md")
    if fmt == "json":
        store = open_history(args)
        if store is None:
            raise ConversationNotFoundError(f"no conversation {args.id}")
        with store:
            text = json.dumps(store.export(args.id), indent=2, ensure_ascii=False) + "\n"
    else:
        text = to_markdown(_conversation(args))
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:  # an export holds the conversation: private like the database itself
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise InvalidRequestError(f"cannot write {args.output}: {error.strerror}") from None
    print(f"exported conversation {args.id} to {args.output}", file=sys.stderr)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    store = open_history(args, write=True)
    if store is None:
        raise ConversationNotFoundError(f"no conversation {args.id}")
    with store:
        store.delete(args.id)
    print(f"deleted conversation {args.id}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    store = open_history(args)
    hits = store.search(" ".join(args.text), args.limit) if store else []
    if not hits:
        print("no matches", file=sys.stderr)
        return 0
    console = terminal()
    rows = [
        [
            str(hit["conversation_id"]),
            hit["role"],
            local_time(hit["created_at"]),
            highlight(hit["snippet"], console),
        ]
        for hit in hits
    ]
    table(console, ["Conversation", "Role", "When", "Match"], rows)
    return 0
