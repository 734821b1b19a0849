"""``streamchat ask``: one prompt in, the streamed reply out; friendly to pipes and scripts."""

from __future__ import annotations

import argparse
import json
import sys

from ..client import Client
from ..errors import InvalidRequestError, StreamchatError
from .options import add_model_options, request_params


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
    out = sys.stdout
    stream = None
    ended_with_newline = True
    try:
        with client.messages.stream(
            messages=[{"role": "user", "content": prompt}], **request_params(args)
        ) as stream:
            for event in stream:
                if args.json:
                    out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
                    out.flush()
                elif event.type == "content_block_delta" and event.delta.text:
                    out.write(event.delta.text)
                    out.flush()
                    ended_with_newline = event.delta.text.endswith("\n")
    except KeyboardInterrupt:
        if not args.json and not ended_with_newline:
            out.write("\n")
        print("streamchat: interrupted", file=sys.stderr)
        return 130
    except StreamchatError:
        if not args.json and not ended_with_newline:
            out.write("\n")
            out.flush()
        raise
    finally:
        if args.stats and stream is not None:
            print(stream.metrics.summary(), file=sys.stderr)
    if not args.json and not ended_with_newline:
        out.write("\n")
    out.flush()
    return 0
