"""``streamchat chat``: the notebook's streaming chatbot exercise, done properly.

In a terminal: prompt_toolkit line editing and history, coloured prompts, the reply rendered as
rich renders Markdown while it streams (bounded work per token, :class:`.MarkdownStream`).
Slash commands (``/help``, Tab completes them) switch model, retry, undo, save, attach files...
(:mod:`.commands`); Alt-Enter (or Esc then Enter) starts a new line, pasted text keeps its lines.
Ctrl-C stops a reply and keeps its partial text; ``quit``/``exit``/Ctrl-D leave. Without a
terminal: plain lines in, plain replies out, and the same commands.
A conversation too long for the model's context window is sent without its oldest turns, with a
notice.
A tool call (``--tools FILE``, or a model that calls one) shows compactly on its own line,
``⚙ name({...})``, and thinking (``--thinking BUDGET``) dimmed before the answer; the chat
cannot run tools, so it keeps only the replies' text.
Every turn is logged to the history as it streams; ``--continue``/``--resume ID`` pick one up.
``--web`` serves the chat page to a browser instead (see :mod:`.web`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ..client import Client
from ..errors import InvalidRequestError, StreamchatError
from ..history import data_dir, private_dir, turns_for_model
from ..providers import is_known, reads_media, unknown_model_message
from ..recording.reply import ReplyRecorder
from .attach import Attachment, read_attachment, with_attachments
from .blocks import HELPER_EVENTS, Piece, ReplyView
from .commands import (
    COMMANDS,
    completer,
    context_line,
    conversation_markdown,
    dropped_notice,
    fit_context,
    help_lines,
    measure,
    parse_command,
)
from .history import ChatLog, add_history_options, local_time, one_line, recap, warn
from .markdown import MarkdownStream, supports_hyperlinks
from .options import (
    add_model_options,
    check_model,
    conversation_info,
    model_label,
    preload,
    request_params,
)
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
        "Ctrl-C stops a reply; /help lists the chat commands.",
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
        from prompt_toolkit.key_binding import KeyBindings
        from rich.console import Console

        try:  # typed lines are kept on disk only when the conversation is
            path = private_dir(data_dir()) / "chat_input_history" if remember else None
            history: Any = FileHistory(str(path)) if path else InMemoryHistory()
        except OSError:
            history = InMemoryHistory()
        keys = KeyBindings()

        @keys.add("escape", "enter")  # Alt-Enter sends the same two keys
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        self.session: Any = PromptSession(
            history=history,
            key_bindings=keys,
            completer=completer(),
            complete_while_typing=False,
            prompt_continuation="     ",
        )
        self.console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
        self.markdown = MarkdownStream(
            self.console,
            hyperlinks=supports_hyperlinks(os.environ),
            height=self.console.height,
        )
        self.at_line_start = True
        self.thinking = False  # inside a thinking block
        self.call_ended_line = False  # the last thing shown was a tool call and its newline

    def info(self, text: str, style: str = "dim") -> None:
        self.console.print(text, style=style)

    def read(self) -> str:
        from prompt_toolkit.formatted_text import HTML

        return self.session.prompt(HTML("<ansibrightblue><b>You:</b></ansibrightblue> "))

    def start_reply(self, label: str) -> None:
        self.console.print(f"{label}: ", style="bold green")  # the answer starts below
        self.at_line_start = True

    def write(self, text: str) -> None:
        self._raw(self.markdown.feed(text))

    def show(self, pieces: list[Piece]) -> None:
        """Text as Markdown; a tool call on a line of its own in cyan; thinking dimmed."""
        for kind, text in pieces:
            self.call_ended_line = False
            if kind == "text":
                self.write(text)
                continue
            self._raw(self.markdown.close())  # a tool call or thinking ends the text before it
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
        self._raw(self.markdown.close())
        if not self.at_line_start:
            self._print([("\n", "")])
        if note:
            self.console.print(f"[{note}]", style="dim yellow")
        self.at_line_start, self.call_ended_line = True, False

    def _raw(self, ansi: str) -> None:
        """Write the Markdown renderer's output (escape codes included) as it is."""
        if ansi:
            self.console.file.write(ansi)
            self.console.file.flush()
            self.at_line_start = ansi.endswith("\n")

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
        recorder.finish_and_wait(metrics, interrupted=note is not None, error=error_text)
    if stream is None:
        return "", None, note
    try:
        text = stream.current_message_snapshot.text
    except StreamchatError:
        text = ""
    return text, metrics, note


class ChatSession:
    """One chat: the conversation, the options that shape its requests, and the commands."""

    def __init__(
        self, args: argparse.Namespace, ui: Terminal | PlainTerminal, log: ChatLog, client: Client
    ) -> None:
        self.args, self.ui, self.log, self.client = args, ui, log, client
        self.conversation: list[dict[str, str]] = []
        self.attachments: list[Attachment] = []
        self.dropped_shown = 0  # turns left out of the requests, as last announced

    @property
    def params(self) -> dict[str, Any]:
        return request_params(self.args)

    def begin_log(self) -> None:
        self.log.begin(**conversation_info(self.args, self.client.default_model), source="chat")

    def handle(self, line: str) -> bool:
        """One line typed at the prompt; ``False`` to leave."""
        if line.strip().lower() in QUIT_WORDS:
            return False
        command = parse_command(line)
        if command is not None:
            name, argument = command
            handler = getattr(self, f"cmd_{name}", None) if name in COMMANDS else None
            if handler is None:
                self.ui.info(f"unknown command /{name}; /help lists the commands", "yellow")
            else:
                handler(argument)
            return True
        text = line[1:] if line.lstrip().startswith("//") else line
        if text.strip() or self.attachments:
            self.send(text)
        return True

    def send(self, text: str) -> None:
        content = with_attachments(text, self.attachments)
        self.attachments = []
        self.conversation.append({"role": "user", "content": content})
        self.log.user(content)
        self.reply()

    def reply(self) -> None:
        """Stream the answer to the conversation's last (user) turn."""
        params = self.params
        sent, use = fit_context(self.conversation, params)
        if use.dropped and use.dropped != self.dropped_shown:
            self.ui.info(dropped_notice(use.dropped, use.window), "yellow")
        self.dropped_shown = use.dropped
        self.ui.start_reply("Assistant")
        reply, metrics, note = stream_reply(
            self.client, sent, params, self.ui.show, self.log.recorder()
        )
        self.ui.end_reply(note)
        if reply:
            self.conversation.append({"role": "assistant", "content": reply})
        else:
            self.conversation.pop()  # nothing came back: keep the conversation alternating
        if self.args.stats and metrics is not None:
            self.ui.info(metrics.summary())

    # -- commands (the table, /help and completion are in .commands) ----------------------------

    def cmd_help(self, argument: str) -> None:
        for line in help_lines():
            self.ui.info(line, "")

    def cmd_quit(self, argument: str) -> None:  # reached only as "/quit now": QUIT_WORDS leave
        raise EOFError

    def cmd_model(self, argument: str) -> None:
        if not argument:
            self.ui.info(f"Chatting with {model_label(self.args.model)}.")
            return
        if not is_known(argument):
            self.ui.info(unknown_model_message(argument), "red")
            return
        try:
            label = model_label(argument)
            preload(argument)
        except StreamchatError as error:
            self.ui.info(f"error: {error.message}", "red")
            return
        self.args.model = argument
        self.ui.info(f"Now chatting with {label}; the conversation carries over.")

    def cmd_system(self, argument: str) -> None:
        if not argument:
            self.ui.info(f"System prompt: {self.args.system or '(none)'}")
            return
        self.args.system = None if argument.lower() in ("off", "none") else argument
        self.ui.info("System prompt cleared." if self.args.system is None else "System prompt set.")

    def cmd_new(self, argument: str) -> None:
        self.conversation, self.attachments, self.dropped_shown = [], [], 0
        self.log.conversation_id = None  # the next message starts a new one in the history
        self.begin_log()
        self.ui.info("New conversation.")

    def cmd_retry(self, argument: str) -> None:
        if self.conversation and self.conversation[-1]["role"] == "assistant":
            self.conversation.pop()
        if not self.conversation:
            self.ui.info("Nothing to retry yet.", "yellow")
            return
        self.log.user(self.conversation[-1]["content"])  # the history shows it asked again
        self.reply()

    def cmd_undo(self, argument: str) -> None:
        if len(self.conversation) < 2:
            self.ui.info("Nothing to undo.", "yellow")
            return
        question = self.conversation[-2]["content"]
        del self.conversation[-2:]
        self.ui.info(f"Dropped the last exchange (You: {one_line(question, 50)}).")

    def cmd_save(self, argument: str) -> None:
        if not argument:
            self.ui.info("usage: /save FILE", "yellow")
            return
        text = conversation_markdown(
            self.conversation, model_label(self.args.model), self.args.system
        )
        path = os.path.expanduser(argument)
        try:
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            self.ui.info(f"cannot save to {argument}: {error.strerror}", "red")
            return
        self.ui.info(f"Saved {len(self.conversation)} turns to {argument}.")

    def cmd_stats(self, argument: str) -> None:
        if argument.lower() not in ("on", "off"):
            self.ui.info(f"usage: /stats on|off (now {'on' if self.args.stats else 'off'})")
            return
        self.args.stats = argument.lower() == "on"
        self.ui.info(f"Stats {'on' if self.args.stats else 'off'}.")

    def cmd_history(self, argument: str) -> None:
        store = self.log.store
        if store is None:
            self.ui.info("History is off.", "yellow")
            return
        try:
            conversations = store.conversations(10)
        except StreamchatError as error:
            self.ui.info(f"error: {error.message}", "red")
            return
        if not conversations:
            self.ui.info("No conversations yet.")
            return
        for c in conversations:
            current = " (this one)" if c["id"] == self.log.conversation_id else ""
            self.ui.info(
                f"  {c['id']:>4}  {local_time(c['created_at'])}  {c['model'] or ''}  "
                f"{c['turns']} turns  {one_line(c['preview'], 50)}{current}",
                "",
            )
        self.ui.info("/resume ID continues one.")

    def cmd_resume(self, argument: str) -> None:
        if argument and not argument.isdigit():
            self.ui.info("usage: /resume ID (see /history)", "yellow")
            return
        if self.log.store is None:
            self.ui.info("History is off.", "yellow")
            return
        try:
            resumed = self.log.resume(int(argument) if argument else None)
        except StreamchatError as error:
            self.ui.info(f"error: {error.message}", "red")
            return
        if resumed is None:
            return
        if resumed["model"] and is_known(resumed["model"]):
            self.args.model = resumed["model"]
        self.args.system = resumed["system"]
        self.conversation = turns_for_model(resumed["messages"])
        self.attachments, self.dropped_shown = [], 0
        for line in recap(resumed):
            self.ui.info(line)

    def cmd_file(self, argument: str) -> None:
        if not argument:
            self.ui.info("usage: /file PATH", "yellow")
            return
        try:
            model = self.args.model
            attachment = read_attachment(
                argument, None if reads_media(model) else model_label(model)
            )
        except StreamchatError as error:
            self.ui.info(f"error: {error.message}", "red")
            return
        self.attachments.append(attachment)
        self.ui.info(f"{attachment.summary} · attached to your next message", "cyan")

    def cmd_tokens(self, argument: str) -> None:
        use = measure(self.conversation, self.params)
        self.ui.info(context_line(use, len(self.conversation)))


def run(args: argparse.Namespace) -> int:
    check_model(args.model)
    if args.web:
        return run_web(args)
    resuming = args.continue_ or args.resume is not None
    if resuming and args.no_history:
        raise InvalidRequestError("--continue/--resume read the history: drop --no-history")
    log = ChatLog.open(args, warn)
    resumed = log.resume(args.resume) if resuming else None
    if resumed is not None:  # the conversation's own model and system prompt, unless overridden
        if resumed["model"] and is_known(resumed["model"]):
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
    ui.info("Type 'quit' or press Ctrl-D to leave; Ctrl-C stops a reply; /help lists commands.")
    session = ChatSession(args, ui, log, Client())
    session.begin_log()
    if resumed is not None:
        session.conversation = turns_for_model(resumed["messages"])
        for line in recap(resumed):
            ui.info(line)
    while True:
        try:
            if not session.handle(ui.read()):
                break
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
    log.close()
    ui.info("Goodbye!", "bold")
    return 0
