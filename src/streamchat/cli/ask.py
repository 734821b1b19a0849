"""``streamchat ask``: one prompt in, the streamed reply out; friendly to pipes and scripts.

stdout carries the answer: its text, and each tool call on a line of its own as it streams
(``⚙ get_weather({"city": "Paris"})``), since a call is what the model answered. Thinking is
not the answer: it goes to stderr (dimmed on a terminal), so ``ask ... > answer.txt`` or a pipe
gets only the answer while a person watching still sees the reasoning. ``--json`` prints every
canonical event (text, tool input and thinking deltas alike) as JSON lines.

``-f PATH`` (repeatable) attaches text files after the prompt and stdin, each as a fenced block
headed by its name: ``git diff | streamchat ask -f README.md "review this"``.

Each ask is logged to the history as a one-turn conversation, written as it streams.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..client import Client
from ..errors import InvalidRequestError, StreamchatError
from ..providers import reads_media
from ..providers.local import DEFAULT_CONTEXT, LocalSettings
from .attach import read_attachment, with_attachments
from .blocks import HELPER_EVENTS, Piece, ReplyView
from .history import ChatLog, add_history_options, warn
from .options import (
    add_model_options,
    check_model,
    conversation_info,
    model_label,
    request_params,
)

TEMPLATE_ROOM = 512  # tokens a chat template may add: roles, a default system prompt


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask one question, stream the answer to stdout",
        description="Stream one reply. The prompt comes from the arguments, stdin, or both "
        "(arguments first, then stdin), then any files given with -f.",
    )
    parser.add_argument("prompt", nargs="*", help="the prompt ('-' or nothing: read stdin)")
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        dest="files",
        help="attach a text file to the prompt (repeatable)",
    )
    add_model_options(parser, max_tokens=1024)
    parser.add_argument("--json", action="store_true", help="print canonical events as JSON lines")
    add_history_options(parser)
    parser.set_defaults(func=run)


def read_prompt(
    words: list[str], files: list[str] | None = None, model: str | None = None
) -> str | list[dict[str, Any]]:
    """Arguments, then stdin when it is piped (or when there are no arguments nor files, or
    '-'), then the files (images and PDFs as blocks, for a model that reads them)."""
    text_only = None if not files or reads_media(model) else model_label(model)
    attachments = [read_attachment(path, text_only) for path in files or []]  # before stdin
    text = " ".join(w for w in words if w != "-")
    stdin = sys.stdin
    wanted = (not words and not attachments) or "-" in words
    if stdin is not None and (wanted or not stdin.isatty()):
        text = f"{text}\n\n{stdin.read()}"
    prompt = with_attachments(text, attachments)
    if not prompt:
        raise InvalidRequestError("empty prompt: give it as arguments, on stdin or with -f")
    return prompt


def one_shot_context(prompt: str | list[dict[str, Any]], args: argparse.Namespace) -> int:
    """A window that holds this one request: a token is at least one byte of text, so the
    prompt's bytes bound its tokens, plus room for what the chat template adds. A request whose
    size is not known before tokenizing (attachments as blocks, tools, thinking) gets the
    default window."""
    if not isinstance(prompt, str) or args.tools or args.thinking:
        return DEFAULT_CONTEXT
    text = len(prompt.encode()) + len((args.system or "").encode())
    needed = text + TEMPLATE_ROOM + args.max_tokens
    return min(DEFAULT_CONTEXT, -(-needed // 256) * 256)


def run(args: argparse.Namespace) -> int:
    check_model(args.model)
    prompt = read_prompt(args.prompt, args.files, args.model)
    # One sequence sized to this request: a one-shot has no other stream to batch with, and
    # the smaller the KV cache, the sooner the engine opens.
    client = Client(local=LocalSettings(parallel=1, context=one_shot_context(prompt, args)))
    log = ChatLog.open(args, warn)
    log.begin(**conversation_info(args, client.default_model), source="ask")
    log.user(prompt)
    recorder = log.recorder()
    out = sys.stdout
    stream = None
    view = ReplyView()
    printer = _Printer(out, sys.stderr)
    interrupted, error_text = True, None  # until the stream ends normally
    try:
        with client.messages.stream(
            messages=[{"role": "user", "content": prompt}], **request_params(args)
        ) as stream:
            for event in stream:
                if event.type in HELPER_EVENTS:
                    continue  # the SDK-style text / input_json / thinking helpers: not canonical
                if recorder is not None:
                    recorder.observe(event)
                if args.json:
                    out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
                    out.flush()
                else:
                    printer.show(view.feed(event))
        interrupted = False
    except KeyboardInterrupt:
        if not args.json:
            printer.show(view.close())
            printer.end()
        print("streamchat: interrupted", file=sys.stderr)
        return 130
    except StreamchatError as error:
        error_text = f"{error.error_type}: {error.message}"
        if not args.json:
            printer.show(view.close())
            printer.end()
        raise
    finally:
        if recorder is not None:
            metrics = stream.metrics if stream is not None else None
            recorder.finish_and_wait(metrics, interrupted=interrupted, error=error_text)
        log.close()
        if args.stats and stream is not None:
            print(stream.metrics.summary(), file=sys.stderr)
    if not args.json:
        printer.end()
    out.flush()
    return 0


DIM, RESET = "\x1b[2m", "\x1b[0m"


class _Printer:
    """Writes :class:`ReplyView` pieces: answer and tool calls to ``out``, each call on its own
    line; thinking to ``err``, dimmed when ``err`` is a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.dim = err.isatty()
        self.at_line_start = True  # on out
        self.thinking = False

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.at_line_start = text.endswith("\n")

    def show(self, pieces: list[Piece]) -> None:
        for kind, text in pieces:
            if kind in ("thinking", "thinking_end"):
                self._think(kind, text)
                continue
            if kind == "tool_start" and not self.at_line_start:
                self._write("\n")
            self._write(text)
            if kind == "tool_end":
                self._write("\n")
        if pieces:
            self.out.flush()

    def _think(self, kind: str, text: str) -> None:
        if kind == "thinking":
            self.thinking = True
            self.err.write(f"{DIM}{text}{RESET}" if self.dim else text)
        elif self.thinking:
            self.thinking = False
            self.err.write("\n")
        self.err.flush()

    def end(self) -> None:
        """End the output with exactly one newline."""
        self._think("thinking_end", "")
        if not self.at_line_start:
            self._write("\n")
        self.out.flush()
