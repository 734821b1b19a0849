"""``streamchat chat``: the notebook's streaming chatbot exercise, done properly.

In a terminal: prompt_toolkit line editing and history, coloured prompts, the reply styled as
Markdown while it streams (O(1) per token). Ctrl-C stops a reply and keeps its partial text;
``quit``/``exit``/Ctrl-D leave. Without a terminal: plain lines in, plain replies out.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..client import Client
from ..errors import StreamchatError
from .markdown import MarkdownStyler
from .options import add_model_options, model_label, preload, request_params

QUIT_WORDS = {"quit", "exit", ":q", "/quit", "/exit"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat in the terminal, replies streamed as they are generated",
        description="Chat with a model. Type 'quit' or press Ctrl-D to leave; "
        "Ctrl-C stops a reply.",
    )
    add_model_options(parser, max_tokens=1000)
    parser.add_argument("--plain", action="store_true", help="no colours or line editing")
    parser.set_defaults(func=run)


def data_dir() -> Path:
    """Where streamchat keeps its files (``$XDG_DATA_HOME/streamchat``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "streamchat"


class Terminal:
    """Prompts and reply rendering for a real terminal (prompt_toolkit + rich)."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from rich.console import Console

        try:
            data_dir().mkdir(parents=True, exist_ok=True)
            history: Any = FileHistory(str(data_dir() / "chat_input_history"))
        except OSError:
            history = InMemoryHistory()
        self.session: Any = PromptSession(history=history)
        self.console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
        self.styler = MarkdownStyler()

    def info(self, text: str, style: str = "dim") -> None:
        self.console.print(text, style=style)

    def read(self) -> str:
        from prompt_toolkit.formatted_text import HTML

        return self.session.prompt(HTML("<ansibrightblue><b>You:</b></ansibrightblue> "))

    def start_reply(self, label: str) -> None:
        self.console.print(f"{label}: ", style="bold green", end="")

    def write(self, text: str) -> None:
        self._print(self.styler.feed(text))

    def end_reply(self, note: str | None = None) -> None:
        self._print(self.styler.close())
        if note:
            self.console.print(f" [{note}]", style="dim yellow", end="")
        self.console.print()

    def _print(self, segments: list[tuple[str, str]]) -> None:
        from rich.text import Text

        if segments:
            text = Text()
            for chunk, style in segments:
                text.append(chunk, style or None)
            self.console.print(text, end="")


class PlainTerminal:
    """Plain text: no escape codes, for pipes, files and dumb terminals."""

    def __init__(self, show_prompts: bool) -> None:
        self.show_prompts = show_prompts

    def info(self, text: str, style: str = "") -> None:
        print(text, file=sys.stdout if self.show_prompts else sys.stderr, flush=True)

    def read(self) -> str:
        if self.show_prompts:
            return input("You: ")
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def start_reply(self, label: str) -> None:
        if self.show_prompts:
            print(f"{label}: ", end="", flush=True)

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def end_reply(self, note: str | None = None) -> None:
        print(f" [{note}]" if note else "", flush=True)


def stream_reply(
    client: Client,
    conversation: list[dict[str, str]],
    params: dict[str, Any],
    write: Callable[[str], None],
) -> tuple[str, Any, str | None]:
    """Stream one reply: ``(text, metrics or None, note)``; Ctrl-C ends it early, kept."""
    stream = None
    note = None
    try:
        with client.messages.stream(messages=conversation, **params) as stream:
            for text in stream.text_stream:
                write(text)
    except KeyboardInterrupt:
        note = "stopped"
    except StreamchatError as error:
        note = f"error: {error.message}"
    if stream is None:
        return "", None, note
    try:
        text = stream.current_message_snapshot.text
    except StreamchatError:
        text = ""
    return text, stream.metrics, note


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.plain
    ui: Terminal | PlainTerminal = (
        Terminal() if interactive else PlainTerminal(show_prompts=sys.stdin.isatty())
    )
    label = model_label(args.model)
    preload(args.model)
    ui.info(f"Welcome to streamchat! Chatting with {label}.", "bold")
    ui.info("Type 'quit' or press Ctrl-D to leave; Ctrl-C stops a reply.")
    client = Client()
    params = request_params(args)
    conversation: list[dict[str, str]] = []
    while True:
        try:
            user_input = ui.read()
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if user_input.strip().lower() in QUIT_WORDS:
            break
        if not user_input.strip():
            continue
        conversation.append({"role": "user", "content": user_input})
        ui.start_reply("Assistant")
        reply, metrics, note = stream_reply(client, conversation, params, ui.write)
        ui.end_reply(note)
        if reply:
            conversation.append({"role": "assistant", "content": reply})
        else:
            conversation.pop()  # nothing came back: keep the conversation alternating
        if args.stats and metrics is not None:
            ui.info(metrics.summary())
    ui.info("Goodbye!", "bold")
    return 0
