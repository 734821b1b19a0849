"""``streamchat bench``: the notebook's TTFT experiment, for any model or endpoint, with load.

Measuring lives in :mod:`streamchat.bench`; this module parses options, shows progress on
stderr, prints the table on stdout and writes the JSON and the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._extras import require
from ..bench import (
    MODES,
    NOTEBOOK_MAX_TOKENS,
    NOTEBOOK_MODEL_ID,
    NOTEBOOK_PROMPT,
    NOTEBOOK_TEMPERATURE,
    BenchConfig,
    BenchRequest,
    BenchResult,
    LibraryTarget,
    Sample,
    Target,
    run_bench,
)
from ..bench_targets import PROTOCOLS, endpoint_target
from ..errors import InvalidRequestError, StreamchatError
from ..request import MAX_TOKENS_LIMIT
from .options import bounded

MAX_CONCURRENCY = 256


def concurrency_levels(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``: positive, at most MAX_CONCURRENCY, duplicates dropped."""
    try:
        levels = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None
    if not levels or not all(1 <= c <= MAX_CONCURRENCY for c in levels):
        raise argparse.ArgumentTypeError(f"each level must be between 1 and {MAX_CONCURRENCY}")
    return levels


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure TTFT, total time and tokens/s, streaming vs non-streaming",
        description="Measure a model or an endpoint, streaming against non-streaming, over "
        "several runs: time to first token (non-streaming: the total time, as nothing arrives "
        "earlier), total time, output tokens, decode tokens/s and inter-token gaps. The "
        "default request is the notebook's: a long essay on the American Revolution, cut at "
        "500 tokens, temperature 0.",
    )
    parser.add_argument(
        "-m", "--model", help="model or provider (library); with --base-url the model id sent"
    )
    parser.add_argument(
        "--base-url",
        dest="endpoint",
        metavar="URL",
        help="benchmark a running endpoint (streamchat serve or a real API) with --protocol",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, help="the endpoint's wire protocol")
    parser.add_argument("--api-key", help="endpoint key (default: the SDK's environment variable)")
    parser.add_argument("--prompt", default=NOTEBOOK_PROMPT, help="the user message")
    parser.add_argument(
        "--max-tokens",
        type=bounded(int, 1, MAX_TOKENS_LIMIT),
        default=NOTEBOOK_MAX_TOKENS,
        help=f"tokens per reply (default {NOTEBOOK_MAX_TOKENS})",
    )
    parser.add_argument(
        "-t",
        "--temperature",
        type=bounded(float, 0.0, 2.0),
        default=NOTEBOOK_TEMPERATURE,
        help=f"sampling temperature (default {NOTEBOOK_TEMPERATURE:g})",
    )
    parser.add_argument("--runs", type=bounded(int, 1, 10_000), default=5, help="default 5")
    parser.add_argument(
        "--warmup", type=bounded(int, 0, 100), default=1, help="unmeasured runs first (1)"
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default=(1,),
        metavar="1,4,16",
        help="requests in flight together, one level after another (default 1)",
    )
    parser.add_argument(
        "--mode", choices=(*MODES, "both"), default="both", help="what to measure (both)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every raw sample here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw TTFT and a timeline")
    parser.set_defaults(func=run)


def make_target(args: argparse.Namespace) -> Target:
    if args.endpoint is None:
        if args.protocol or args.api_key:
            raise InvalidRequestError("--protocol and --api-key need --base-url")
        return LibraryTarget(args.model)
    if args.protocol is None:
        raise InvalidRequestError(f"--base-url needs --protocol ({'|'.join(PROTOCOLS)})")
    model = args.model or NOTEBOOK_MODEL_ID
    workers = max(args.concurrency)
    return endpoint_target(args.protocol, args.endpoint, model, args.api_key, workers)


def config_from(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        request=BenchRequest(args.prompt, args.max_tokens, args.temperature),
        runs=args.runs,
        warmup=args.warmup,
        concurrency=args.concurrency,
        modes=MODES if args.mode == "both" else (args.mode,),
    )


async def measure(target: Target, config: BenchConfig, console: Console) -> BenchResult:
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("warming up", total=config.total_requests())

    def on_sample(sample: Sample) -> None:
        what = "warm-up" if sample.warmup else f"{sample.concurrency} concurrent"
        progress.update(task, advance=1, description=f"{sample.mode}, {what}, run {sample.run + 1}")

    try:
        with progress:
            return await run_bench(target, config, on_sample)
    finally:
        await target.aclose()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"


# metric label, summary key, scale, digits, modes it applies to
ROWS: list[tuple[str, str, float, int, tuple[str, ...]]] = [
    ("TTFT (ms)", "ttft_s", 1000, 0, MODES),
    ("total time (s)", "total_s", 1, 2, MODES),
    ("output tokens", "output_tokens", 1, 0, MODES),
    ("decode tokens/s", "decode_tokens_per_s", 1, 1, ("stream",)),
    ("inter-token gap (ms)", "gap_s", 1000, 1, ("stream",)),
    ("tokens/s, all requests", "aggregate_tokens_per_s", 1, 1, MODES),  # levels above 1
]


def stop_reasons(result: BenchResult) -> str:
    """How the measured replies ended, e.g. ``end_turn ×6``: were they cut at max_tokens?"""
    counts = Counter(str(s.stop_reason) for s in result.measured())
    return ", ".join(f"{reason} ×{count}" for reason, count in counts.most_common()) or "none"


def render_table(result: BenchResult) -> Table:
    """Median, p90, min, max per metric, mode and level, titled with what was measured."""
    target, request = result.target, result.config.request
    prompt = ", ".join(map(str, result.prompt_tokens())) or "unknown"
    runs = _plural(result.config.runs, "run")
    warmup = f" + {_plural(result.config.warmup, 'warm-up')}" if result.config.warmup else ""
    table = Table(
        title=f"streamchat bench: {target['model']}\n{target['where']}\n"
        f"prompt {prompt} tokens · max_tokens {request.max_tokens} · temperature "
        f"{request.temperature:g} · {runs}{warmup} per mode and level",
        title_justify="left",
    )
    for column in ("metric", "mode", "conc.", "median", "p90", "min", "max", "n"):
        text = column in ("metric", "mode")
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    groups = {(g["concurrency"], g["mode"]): g for g in result.summary()}
    errors = 0
    for level in result.config.concurrency:
        for label, key, scale, digits, applies in ROWS:
            if key == "aggregate_tokens_per_s" and level == 1:
                continue
            modes = [mode for mode in result.config.modes if mode in applies]
            for i, mode in enumerate(modes):
                stats: dict[str, Any] = groups[(level, mode)][key]
                cells = [_fmt(stats[k], scale, digits) for k in ("median", "p90", "min", "max")]
                name = "streaming" if mode == "stream" else "non-streaming"
                table.add_row("" if i else label, name, str(level), *cells, str(stats["n"]))
        errors += sum(groups[(level, mode)]["errors"] for mode in result.config.modes)
        table.add_section()
    table.caption = (
        "TTFT: request sent → first text received. Non-streaming TTFT = total time: nothing "
        "arrives before the whole reply (as in the notebook). Gaps pooled over runs. "
        f"Timing: {target['timing']}. Stop reasons: {stop_reasons(result)}. "
        f"Failed requests: {errors}."
    )
    if target.get("note"):
        table.caption += f" Note: {target['note']}."
    table.caption_justify = "left"
    return table


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:  # before the measurement, not after it
        require("bench", "streamchat bench --plot")
    config = config_from(args)
    target = make_target(args)
    stderr = Console(stderr=True)
    result = asyncio.run(measure(target, config, stderr))
    Console().print(render_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
        stderr.print(f"wrote {args.json}")
    if args.plot is not None:
        from ..bench_plot import plot

        stderr.print(f"wrote {plot(result, args.plot)}")
    failures = [s for s in result.samples if s.error]
    if failures:
        first = failures[0].error
        print(f"streamchat: {len(failures)} requests failed, e.g. {first}", file=sys.stderr)
    if not result.measured():
        raise StreamchatError("no request succeeded: nothing was measured")
    return 0
