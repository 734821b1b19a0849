"""The notebook's TTFT experiment on the embedded model: non-streaming (baseline) vs streaming.

The notebook asks for a long essay on the American Revolution, cut at 500 tokens, temperature 0,
and times the first token both ways. This runs that request through the library
(``streamchat.AsyncClient``) and through ``streamchat serve`` with each official SDK, using the
measuring core of ``streamchat bench``; modes alternate within each target. The ratio column is
streaming ÷ non-streaming: TTFT far below 1 is streaming's point; total time near 1 says
streaming costs nothing for the whole reply. Every figure is wall time, median [min–max] over
``--runs`` (5) runs per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from rich.console import Console
from rich.table import Table

from _common import compare, write_result
from serving import serve
from streamchat.bench import (
    NOTEBOOK_MODEL_ID,
    BenchConfig,
    BenchRequest,
    BenchResult,
    LibraryTarget,
    Target,
    run_bench,
)
from streamchat.bench_targets import PROTOCOLS, endpoint_target

RESULT_KEYS = ("model", "quick", "runs", "max_tokens", "comparisons", "errors", "results")
PACKAGES = ("anthropic", "openai", "boto3", "botocore", "httpx")
MODEL = "smollm2"
METRICS = (("TTFT", "ttft_s", 1000, "ms wall"), ("total time", "total_s", 1, "s wall"))


async def measure(target: Target, config: BenchConfig) -> BenchResult:
    try:
        return await run_bench(target, config)
    finally:
        await target.aclose()


def comparisons(name: str, result: BenchResult) -> list[dict[str, Any]]:
    """Rows for RESULTS.md: non-streaming is the baseline, streaming is streamchat's answer."""
    rows = []
    for label, key, scale, unit in METRICS:
        base, ours = (
            [
                getattr(x, key) * scale
                for x in result.measured(mode, 1)
                if getattr(x, key) is not None
            ]
            for mode in ("non-stream", "stream")
        )
        if base and ours:
            rows.append(compare(f"{label}, {name}", unit, "non-streaming", base, "streaming",
                                ours, "lower"))  # fmt: skip
    return rows


def compact(result: BenchResult) -> dict[str, Any]:
    """The result without per-delta offsets (kept small for the repository); gaps stay
    summarised."""
    data = result.to_json()
    for sample in data["samples"]:
        sample["deltas"] = len(sample.pop("delta_offsets_s"))
    data.pop("machine")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per mode and target (5)")
    parser.add_argument("--max-tokens", type=int, default=500, help="the notebook's 500")
    parser.add_argument("--quick", action="store_true", help="2 runs of 100 tokens")
    parser.add_argument("--library-only", action="store_true", help="skip the server")
    parser.add_argument("--json", help="output path (default results/ttft.json)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.max_tokens = 2, 100
    config = BenchConfig(request=BenchRequest(max_tokens=args.max_tokens), runs=args.runs)
    console = Console(stderr=True)
    results: dict[str, BenchResult] = {}
    console.print(f"library: {config.total_requests()} requests")
    results["library"] = asyncio.run(measure(LibraryTarget(MODEL), config))
    if not args.library_only:
        for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
            os.environ.setdefault(name, value)
        with serve("--model", MODEL) as server:
            for protocol in PROTOCOLS:
                console.print(f"{protocol} SDK via streamchat serve: {config.total_requests()}")
                target = endpoint_target(protocol, server.url, NOTEBOOK_MODEL_ID, "bench")
                results[protocol] = asyncio.run(measure(target, config))

    table = Table(
        title=f"The notebook's TTFT experiment on {MODEL}: {args.max_tokens} tokens, "
        f"temperature 0, {args.runs} runs per mode (medians)"
    )
    for column in ("client", "prompt tokens", "metric", "non-streaming", "streaming", "ratio"):
        table.add_column(column, justify="left" if column in ("client", "metric") else "right")
    rows = []
    for name, result in results.items():
        prompt = ",".join(map(str, result.prompt_tokens()))
        for row in comparisons(name, result):
            rows.append(row)
            base, ours = row["baseline_value"], row["streamchat_value"]
            cells = [f"{base:.2f} {row['unit']}", f"{ours:.2f} {row['unit']}"]  # medians
            table.add_row(name, prompt, row["metric"].split(",")[0], *cells, f"{row['ratio']:.3f}")
    Console().print(table)
    errors = sum(1 for r in results.values() for s in r.samples if s.error)
    data = {
        "model": MODEL,
        "quick": args.quick,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "comparisons": rows,
        "errors": errors,
        "results": {name: compact(result) for name, result in results.items()},
    }
    path = write_result("ttft", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.json)
    print(f"wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
