"""``serve --workers 2`` against one worker: 3,000 concurrent streams of a model served elsewhere.

The scripted provider with a per-token delay stands for a remote model (the server's own work is
the whole cost). Both servers are up at once; the Anthropic wave (HTTP/1.1, the raw client of
load.py, every stream checked byte for byte) runs on one then the other, who goes first swapping,
``--repeats`` times; rows give median [min–max]. Measured: p99 of the inter-token gap beyond the
delay as clients see it (wall), text events per second (wall), and the CPU of the server's
processes (the supervisor and its workers) per token.

Writes results/workers.json, whose ``comparisons`` rows benchmarks/report.py renders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _common import compare, process_cpu_seconds, rotation, write_result
from load import run_wave, summary
from serving import serve
from streamchat.cli.serve import raise_open_files_limit

RESULT_KEYS = ("streams", "tokens", "delay", "repeats", "runs", "comparisons")
PACKAGES = ("uvicorn", "h11")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (the workers), from /proc."""
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = 0.0
    for each in pids:
        with contextlib.suppress(FileNotFoundError):  # a worker that just exited
            total += process_cpu_seconds(each)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=3000, help="concurrent streams per wave")
    parser.add_argument("--tokens", type=int, default=40, help="text tokens per stream (>= 5)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per token (scripted)")
    parser.add_argument("--repeats", type=int, default=3, help="A/B repeats (3)")
    parser.add_argument("--quick", action="store_true", help="300 streams x 20 tokens, 1 repeat")
    parser.add_argument("--json", help="output path (default results/workers.json)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.tokens, args.repeats = 300, 20, 1
    raise_open_files_limit()
    sizes = {"streams": args.streams, "tokens": args.tokens, "delay": args.delay}
    backlog = str(max(2048, args.streams * 2))
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    with contextlib.ExitStack() as stack:
        servers = {
            count: stack.enter_context(serve("--model", f"scripted?delay={args.delay}",
                                             "--backlog", backlog, "--workers", count))
            for count in runs
        }  # fmt: skip
        ports = {count: int(s.url.rsplit(":", 1)[1]) for count, s in servers.items()}
        for count in runs:  # warm-up: imports, caches, every worker's allocator
            asyncio.run(run_wave("anthropic", ports[count], servers[count].process.pid,
                                 **{**sizes, "streams": min(args.streams, 200)}))  # fmt: skip
        for repeat in range(args.repeats):
            for count in rotation(list(runs), repeat):
                pid = servers[count].process.pid
                before = tree_cpu_seconds(pid)
                wave = asyncio.run(run_wave("anthropic", ports[count], pid, **sizes))
                row = summary(wave, args.delay)
                cpu = tree_cpu_seconds(pid) - before
                row["server_cpu_us_per_token"] = cpu / max(row["ok"] * args.tokens, 1) * 1e6
                row["server_cpu_cores"] = cpu / wave.seconds
                runs[count].append(row)
                print(f"  {count} worker(s), repeat {repeat}: {row['ok']}/{args.streams} ok, "
                      f"p99 extra {row['extra_gap_ms_p99']:.1f} ms, "
                      f"{row['events_per_s']:.0f} events/s, "
                      f"{row['server_cpu_cores']:.2f} server cores", flush=True)  # fmt: skip

    def samples(count: str, key: str) -> list[float]:
        return [row[key] for row in runs[count]]

    where = f"{args.streams} streams x {args.tokens} tokens"
    comparisons = [
        compare(f"p99 extra inter-token gap, {where}", "ms wall", "1 worker",
                samples("1", "extra_gap_ms_p99"), "2 workers", samples("2", "extra_gap_ms_p99"),
                "lower"),
        compare(f"text events per second, {where}", "events/s wall", "1 worker",
                samples("1", "events_per_s"), "2 workers", samples("2", "events_per_s"),
                "higher"),
        compare(f"server CPU per token (all processes), {where}", "µs CPU", "1 worker",
                samples("1", "server_cpu_us_per_token"), "2 workers",
                samples("2", "server_cpu_us_per_token"), "lower"),
    ]  # fmt: skip
    data = {**sizes, "repeats": args.repeats, "runs": runs, "comparisons": comparisons}
    path = write_result("workers", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
