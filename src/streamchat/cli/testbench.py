"""``serve`` as a test bench: ``--faults`` / ``--seed`` inject failures, ``--record`` writes every
stream to a tape, ``--replay`` serves tapes back. Options and their checks live here so
``serve`` itself only asks for them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ..errors import InvalidRequestError
from ..providers.replay import MATCHES
from ..server.faults import FAULT_HEADER, FaultInjector, FaultPlan


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def add_testbench_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("testing streaming apps")
    group.add_argument(
        "--faults",
        metavar="SPEC",
        help="inject faults, e.g. 'overload=0.2,midstream_error=0.1@5,ping=0.3,stall=2s@10,"
        f"slow=50ms,disconnect=0.05@20' ('none': only on request, by the {FAULT_HEADER} header)",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="seed of the per-request fault decisions (default 0)"
    )
    group.add_argument("--record", metavar="DIR", help="write every stream to DIR, one tape each")
    group.add_argument(
        "--replay", metavar="DIR", help="serve the streams recorded in DIR (replaces --model)"
    )
    group.add_argument(
        "--replay-speed",
        type=_speed,
        default=1.0,
        help="1 keeps the recorded timing (default), 2 is twice as fast, 0 is instant",
    )
    group.add_argument(
        "--replay-match",
        choices=MATCHES,
        default="content",
        help="pick a tape by the request's system prompt and messages (default), or in order",
    )


def replay_model(args: argparse.Namespace) -> str | None:
    """The ``replay/<dir>?...`` model name that ``--replay`` stands for."""
    if args.replay is None:
        return None
    options = {"speed": f"{args.replay_speed:g}", "match": args.replay_match}
    return f"replay/{Path(args.replay).expanduser().resolve()}?{urlencode(options)}"


def testbench_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~streamchat.server.common.ServerConfig` fields these options set."""
    config: dict[str, Any] = {}
    if args.faults is not None:
        try:
            config["faults"] = FaultInjector(FaultPlan.parse(args.faults), args.seed)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"--faults: {error.message}") from None
    if args.record is not None:
        directory = Path(args.record).expanduser().resolve()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidRequestError(f"--record: cannot create {directory}: {error}") from None
        config["record_dir"] = str(directory)
    return config
