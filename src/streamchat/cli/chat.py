"""``streamchat chat``: the notebook's streaming chatbot exercise, done properly.

In a terminal: prompt_toolkit line editing and history, coloured prompts, the reply styled as
Markdown while it streams (O(1) per token). Ctrl-C stops a reply and keeps its partial text;
``quit``/``exit``/Ctrl-D leave. Without a terminal: plain lines in, plain replies out.
A tool call (``--tools FILE``, or a model that calls one) shows compactly on its own line,
``⚙ name({...})``, and thinking (``--thinking BUDGET``) dimmed before the answer; the chat
cannot run tools, so it keeps only the replies' text.
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
from .blocks import HELPER_EVENTS, Piece, ReplyView
from .history import ChatLog, add_history_options, recap, warn
from .markdown import MarkdownStyler
from .options import add_model_options, conversation_info, model_label, preload, request_params
from .web import add_web_options, run_web

QUIT_WORDS = {"quit", "exit", ":q", "/quit", "/exit"}
TOOL_STYLE = "bold cyan"
TOOL_INPUT_STYLE = "cyan"
THINKING_STYLE = "dim italic"


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
        self.at_line_start = True  # after the "Assistant: " label too: a call may follow it
        self.thinking = False  # inside a thinking block
        self.call_ended_line = False  # the last thing shown was a tool call and its newline

    def info(self, text: str, style: str = "dim") -> None:
        self.console.print(text, style=style)

    def read(self) -> str:
        from prompt_toolkit.formatted_text import HTML

        return self.session.prompt(HTML("<ansibrightblue><b>You:</b></ansibrightblue> "))

    def start_reply(self, label: str) -> None:
        self.console.print(f"{label}: ", style="bold green", end="")
        self.at_line_start = True

    def write(self, text: str) -> None:
        self._print(self.styler.feed(text))

    def show(self, pieces: list[Piece]) -> None:
        """Text styled as Markdown; a tool call on a line of its own in cyan; thinking dimmed."""
        for kind, text in pieces:
            self.call_ended_line = False
            if kind == "text":
                self.write(text)
                continue
            self._print(self.styler.close())  # a tool call or thinking ends the text before it
            opens = kind == "tool_start" or (kind == "thinking" and not self.thinking)
            if opens and not self.at_line_start:
                self._print([("\n", "")])
            self.thinking = kind == "thinking"
            if kind == "tool_start":
                self._print([(text, TOOL_STYLE)])
            elif kind in ("tool", "tool_end"):
                self._print([(text, TOOL_INPUT_STYLE)])
                if kind == "tool_end":
                    self._print([("\n", "")])
                    self.call_ended_line = True
            elif kind == "thinking":
                self._print([(text, THINKING_STYLE)])
            elif not self.at_line_start:  # thinking_end
                self._print([("\n", "")])

    def end_reply(self, note: str | None = None) -> None:
        self._print(self.styler.close())
        if note:
            self.console.print(f" [{note}]", style="dim yellow", end="")
        if note or not self.call_ended_line:
            self.console.print()
        self.at_line_start, self.call_ended_line = True, False

    def _print(self, segments: list[tuple[str, str]]) -> None:
        from rich.text import Text

        if segments:
            text = Text()
            for chunk, style in segments:
                text.append(chunk, style or None)
            self.console.print(text, end="")
            self.at_line_start = text.plain.endswith("\n") if text.plain else self.at_line_start


class PlainTerminal:
    """Plain text: no escape codes, for pipes, files and dumb terminals."""

    def __init__(self, show_prompts: bool) -> None:
        self.show_prompts = show_prompts
        self.at_line_start = True
        self.thinking = False
        self.call_ended_line = False

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
        self.at_line_start = True

    def write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.at_line_start = text.endswith("\n")

    def show(self, pieces: list[Piece]) -> None:
        """Text and tool calls (each on its own line) on stdout; thinking on stderr, as ``ask``
        does: a pipe reading the replies gets answers only."""
        for kind, text in pieces:
            if kind == "thinking":
                self.thinking = True
                sys.stderr.write(text)
                sys.stderr.flush()
            elif kind == "thinking_end":
                if self.thinking:
                    print(file=sys.stderr, flush=True)
                self.thinking = False
            else:
                if kind == "tool_start" and not self.at_line_start:
                    self.write("\n")
                self.write(text + ("\n" if kind == "tool_end" else ""))
                self.call_ended_line = kind == "tool_end"

    def end_reply(self, note: str | None = None) -> None:
        if note or not self.call_ended_line:
            print(f" [{note}]" if note else "", flush=True)
        self.at_line_start, self.call_ended_line = True, False


def stream_reply(
    client: Client,
    conversation: list[dict[str, str]],
    params: dict[str, Any],
    show: Callable[[list[Piece]], None],
    recorder: ReplyRecorder | None = None,
) -> tuple[str, Any, str | None]:
    """Stream one reply: ``(text, metrics or None, note)``; Ctrl-C ends it early, kept.

    ``show`` gets what to display (:class:`ReplyView` pieces: text, tool calls, thinking);
    ``recorder`` sees every event, so the history holds what arrived however the reply ends.
    The text is what the conversation keeps: a tool call cannot be run here, so a reply that
    only calls a tool keeps nothing (the turn is dropped, as for an empty reply).
    """
    stream = None
    note = error_text = None
    view = ReplyView()
    try:
        with client.messages.stream(messages=conversation, **params) as stream:
            for event in stream:
                if event.type in HELPER_EVENTS:
                    continue
                if recorder is not None:
                    recorder.observe(event)
                show(view.feed(event))
    except KeyboardInterrupt:
        note = "stopped"
    except StreamchatError as error:
        note = f"error: {error.message}"
        error_text = f"{error.error_type}: {error.message}"
    show(view.close())
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
        reply, metrics, note = stream_reply(client, conversation, params, ui.show, log.recorder())
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
