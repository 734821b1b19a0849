"""``streamchat`` command line: one subcommand per module, each with ``register(subparsers)``.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._extras import extra_for, missing_extra
from ..errors import MissingExtraError, StreamchatError
from .options import apply_endpoint

COMMANDS = ("chat", "ask", "serve", "bench", "history")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> ArgumentParser:
    """The parser; with ``command``, only that subcommand's module is imported (start-up time:
    ``ask`` need not load the server, the bench or the web page). Others get bare stubs."""
    parser = ArgumentParser(
        prog="streamchat", description="Streaming chat with large language models."
    )
    parser.add_argument("--version", action="version", version="streamchat 0.1.0")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    for name in COMMANDS:
        if command is not None and name != command:
            subparsers.add_parser(name)
            continue
        try:
            module = importlib.import_module(f"streamchat.cli.{name}")
        except MissingExtraError as error:  # a lean install: the command needs an extra
            _needs_extra(subparsers, name, error.extra)
            continue
        except ModuleNotFoundError as error:
            if (extra := extra_for(error.name)) is None:
                raise
            _needs_extra(subparsers, name, extra)
            continue
        module.register(subparsers)
    return parser


def _needs_extra(subparsers: argparse._SubParsersAction, name: str, extra: str) -> None:
    """A stand-in for a command whose extra is missing: any use of it, ``--help`` included,
    is the one-line error naming the install."""
    error = missing_extra(extra, f"streamchat {name}")
    # every argument is taken as a positional (no option prefix), so none is "unrecognized"
    stub = subparsers.add_parser(name, help=error.message, add_help=False, prefix_chars="\0")
    stub.add_argument("rest", nargs="*")

    def fail(args: argparse.Namespace) -> int:
        raise error

    stub.set_defaults(func=fail)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        apply_endpoint(args)
        return args.func(args) or 0
    except StreamchatError as error:
        print(f"streamchat: error: {error.message}", file=sys.stderr)
        return getattr(error, "exit_status", 1)
    except ModuleNotFoundError as error:  # an extra's module imported without require()
        if (extra := extra_for(error.name)) is None:
            raise
        print(f"streamchat: error: {missing_extra(extra).message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
