"""``streamchat ask``: one prompt in, the streamed reply out; friendly to pipes and scripts.

Each ask is logged to the history as a one-turn conversation, written as it streams.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..client import Client
from ..errors import InvalidRequestError, StreamchatError
from .history import ChatLog, add_history_options, warn
from .options import add_model_options, conversation_info, request_params


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask one question, stream the answer to stdout",
        description="Stream one reply. The prompt comes from the arguments, stdin, or both "
        "(arguments first, then stdin).",
    )
    parser.add_argument("prompt", nargs="*", help="the prompt ('-' or nothing: read stdin)")
    add_model_options(parser, max_tokens=1024)
    parser.add_argument("--json", action="store_true", help="print canonical events as JSON lines")
    add_history_options(parser)
    parser.set_defaults(func=run)


def read_prompt(words: list[str]) -> str:
    """Arguments, then stdin when it is piped (or when there are no arguments, or '-')."""
    text = " ".join(w for w in words if w != "-")
    stdin = sys.stdin
    if stdin is not None and (not words or "-" in words or not stdin.isatty()):
        text = f"{text}\n\n{stdin.read()}"
    prompt = text.strip()
    if not prompt:
        raise InvalidRequestError("empty prompt: give it as arguments or on stdin")
    return prompt


def run(args: argparse.Namespace) -> int:
    prompt = read_prompt(args.prompt)
    client = Client()
    log = ChatLog.open(args, warn)
    log.begin(**conversation_info(args, client.default_model), source="ask")
    log.user(prompt)
    recorder = log.recorder()
    out = sys.stdout
    stream = None
    ended_with_newline = True
    interrupted, error_text = True, None  # until the stream ends normally
    try:
        with client.messages.stream(
            messages=[{"role": "user", "content": prompt}], **request_params(args)
        ) as stream:
            for event in stream:
                if recorder is not None:
                    recorder.observe(event)
                if args.json:
                    out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
                    out.flush()
                elif event.type == "content_block_delta" and event.delta.text:
                    out.write(event.delta.text)
                    out.flush()
                    ended_with_newline = event.delta.text.endswith("\n")
        interrupted = False
    except KeyboardInterrupt:
        if not args.json and not ended_with_newline:
            out.write("\n")
        print("streamchat: interrupted", file=sys.stderr)
        return 130
    except StreamchatError as error:
        error_text = f"{error.error_type}: {error.message}"
        if not args.json and not ended_with_newline:
            out.write("\n")
            out.flush()
        raise
    finally:
        if recorder is not None:
            metrics = stream.metrics if stream is not None else None
            recorder.finish(metrics, interrupted=interrupted, error=error_text)
        log.close()
        if args.stats and stream is not None:
            print(stream.metrics.summary(), file=sys.stderr)
    if not args.json and not ended_with_newline:
        out.write("\n")
    out.flush()
    return 0
