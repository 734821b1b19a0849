"""``streamchat chat``: the notebook's streaming chatbot exercise, done properly.

In a terminal: prompt_toolkit line editing and history, coloured prompts, the reply styled as
Markdown while it streams (O(1) per token). Ctrl-C stops a reply and keeps its partial text;
``quit``/``exit``/Ctrl-D leave. Without a terminal: plain lines in, plain replies out.
Every turn is logged to the history as it streams; ``--continue``/``--resume ID`` pick one up.
``--web`` serves the chat page to a browser instead (see :mod:`.web`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..client import Client
from ..errors import InvalidRequestError, StreamchatError
from ..history import data_dir, private_dir, turns_for_model
from ..recorder import ReplyRecorder
from .history import ChatLog, add_history_options, recap, warn
from .markdown import MarkdownStyler
from .options import add_model_options, conversation_info, model_label, preload, request_params
from .web import add_web_options, run_web

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
    add_history_options(parser, resume=True)
    add_web_options(parser)
    parser.set_defaults(func=run)


class Terminal:
    """Prompts and reply rendering for a real terminal (prompt_toolkit + rich)."""

    def __init__(self, remember: bool = True) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from rich.console import Console

        try:  # typed lines are kept on disk only when the conversation is
            path = private_dir(data_dir()) / "chat_input_history" if remember else None
            history: Any = FileHistory(str(path)) if path else InMemoryHistory()
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
    recorder: ReplyRecorder | None = None,
) -> tuple[str, Any, str | None]:
    """Stream one reply: ``(text, metrics or None, note)``; Ctrl-C ends it early, kept.

    ``recorder`` sees every event, so the history holds what arrived however the reply ends.
    """
    stream = None
    note = error_text = None
    try:
        with client.messages.stream(messages=conversation, **params) as stream:
            for event in stream:
                if recorder is not None:
                    recorder.observe(event)
                if event.type == "content_block_delta":
                    write(event.delta.text)
    except KeyboardInterrupt:
        note = "stopped"
    except StreamchatError as error:
        note = f"error: {error.message}"
        error_text = f"{error.error_type}: {error.message}"
    metrics = stream.metrics if stream is not None else None
    if recorder is not None:
        recorder.finish(metrics, interrupted=note is not None, error=error_text)
    if stream is None:
        return "", None, note
    try:
        text = stream.current_message_snapshot.text
    except StreamchatError:
        text = ""
    return text, metrics, note


def run(args: argparse.Namespace) -> int:
    if args.web:
        return run_web(args)
    resuming = args.continue_ or args.resume is not None
    if resuming and args.no_history:
        raise InvalidRequestError("--continue/--resume read the history: drop --no-history")
    log = ChatLog.open(args, warn)
    resumed = log.resume(args.resume) if resuming else None
    if resumed is not None:  # the conversation's own model and system prompt, unless overridden
        args.model = args.model or resumed["model"]
        args.system = args.system or resumed["system"]
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.plain
    ui: Terminal | PlainTerminal = (
        Terminal(remember=not args.no_history)
        if interactive
        else PlainTerminal(show_prompts=sys.stdin.isatty())
    )
    label = model_label(args.model)
    preload(args.model)
    ui.info(f"Welcome to streamchat! Chatting with {label}.", "bold")
    ui.info("Type 'quit' or press Ctrl-D to leave; Ctrl-C stops a reply.")
    client = Client()
    params = request_params(args)
    log.begin(**conversation_info(args, client.default_model), source="chat")
    conversation: list[dict[str, str]] = []
    if resumed is not None:
        conversation = turns_for_model(resumed["messages"])
        for line in recap(resumed):
            ui.info(line)
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
        log.user(user_input)
        ui.start_reply("Assistant")
        reply, metrics, note = stream_reply(client, conversation, params, ui.write, log.recorder())
        ui.end_reply(note)
        if reply:
            conversation.append({"role": "assistant", "content": reply})
        else:
            conversation.pop()  # nothing came back: keep the conversation alternating
        if args.stats and metrics is not None:
            ui.info(metrics.summary())
    log.close()
    ui.info("Goodbye!", "bold")
    return 0
