"""streamchat's server against ``llama_cpp.server``: the same model, the same client, one run.

Three sides, alternating every round (who goes first rotates): raw llama-cpp-python in this
process (``Llama.create_chat_completion(stream=True)``, as ``overhead.py`` measures it, on a
fresh thread per run), ``python -m llama_cpp.server`` and ``streamchat serve --model smollm2``,
each server a subprocess on 127.0.0.1 and a free port. The same GGUF (SmolLM2, found as
streamchat finds it), n_ctx 4096 and n_threads (n_threads_batch too) everywhere; both servers
are timed through the official ``openai`` SDK, ``chat.completions.create(stream=True)`` against
``/v1``, one client per server (its connection kept alive), temperature 0, the one prompt,
``max_tokens`` 200. llama_cpp.server's default repeat penalty differs from streamchat's 1.1, so
it gets ``extra_body={"repeat_penalty": 1.1}``: greedy decoding with equal penalties yields the
same tokens, and the table checks the token counts and that every reply's text is identical.
Otherwise each server runs with its defaults as a user starts it (llama_cpp.server logs
per-request timings and access lines to its log file; streamchat serve runs at
``--log-level warning``, as ``tests/serving.py`` starts it).

TTFT is request start -> the first non-empty content delta as the caller receives it (the SDK's
iterator; raw: llama-cpp-python's chunk); decode tokens/s = (tokens - 1) / (last delta - first
delta), tokens being the deltas with content (re-tokenizing each reply cross-checks the count).

KV cache: llama-cpp-python reuses the cached prompt prefix of the previous call on the same
``Llama``. Each side owns one ``Llama`` (raw: this process's; each server: its own) and only ever
receives the one prompt, so after the warm-up run (which also loads each server's model and
opens the SDK's connection) every sample re-evaluates exactly the last prompt token on every
side: TTFT differences are per-request overhead (HTTP, JSON, SSE, the SDK's parsing), not
prefill. A short pause after each sample lets the finished side's OpenMP threads stop spinning
before the next side starts, so no two pools compete for the cores.

Every figure is wall time, median [min–max] over the rounds (``--runs``, 7); "TTFT added over
raw" is each round's server TTFT minus that round's raw TTFT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # serving.py: serve()

import httpx
import llama_cpp
import openai
from rich.console import Console
from rich.table import Table

from _common import compare, median, process_server, rotation, write_result
from overhead import PROMPT, in_fresh_thread, raw_run
from serving import HOST, serve
from streamchat.providers.local import BUILTIN_MODELS, local_provider

RESULT_KEYS = ("quick", "result", "comparisons")
PACKAGES = ("openai", "httpx", "h2", "uvicorn")
MODEL = "smollm2"
N_CTX = 4096
RAW, LCS, OURS = "raw llama-cpp-python", "llama_cpp.server", "streamchat serve"
OURS_H2 = "streamchat serve, HTTP/2"  # the same server, the openai SDK on httpx's HTTP/2
SIDES = (RAW, LCS, OURS, OURS_H2)
PAUSE = 0.3  # seconds after each sample: idle OpenMP pools stop spinning
console = Console(width=None if sys.stdout.isatty() else 120)
Sample = dict[str, Any]


def llama_cpp_server(path: str, threads: int) -> contextlib.AbstractContextManager[str]:
    """``python -m llama_cpp.server`` on a free loopback port until ``/v1/models`` answers."""
    return process_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", path,
         "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--n_ctx", str(N_CTX), "--host", HOST, "--port", "{port}"],
        "/v1/models", name=LCS, version=f"llama-cpp-python {llama_cpp.__version__}",
        timeout=120)  # fmt: skip


def sdk_run(client: openai.OpenAI, messages: list[Any], max_tokens: int, extra: dict) -> Sample:
    """One streamed chat completion through the openai SDK, timed as ``overhead.raw_run``."""
    times, parts, finish = [], [], None
    t0 = time.perf_counter()
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                            temperature=0, max_tokens=max_tokens,
                                            extra_body=extra or None)  # fmt: skip
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if text := choice.delta.content:
            times.append(time.perf_counter())
            parts.append(text)
        finish = choice.finish_reason or finish
    end = time.perf_counter()
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"ttft": times[0] - t0 if times else None,
            "decode_tps": (len(times) - 1) / span if span > 0 else None,
            "tokens": len(times), "deltas": len(times), "total": end - t0, "stop": finish,
            "text": "".join(parts)}  # fmt: skip


def measure(runs: int, max_tokens: int, threads: int | None) -> dict[str, Any]:
    provider = local_provider(MODEL)
    n = threads or provider.n_threads
    path = BUILTIN_MODELS[MODEL].locate()
    os.environ["STREAMCHAT_THREADS"] = str(n)  # read by the streamchat serve subprocess
    msgs = [{"role": "user", "content": PROMPT}]
    penalty = BUILTIN_MODELS[MODEL].repeat_penalty
    raw = llama_cpp.Llama(path, n_ctx=N_CTX, n_threads=n, n_threads_batch=n, verbose=False)
    with llama_cpp_server(path, n) as lcs_url, serve("--model", MODEL) as ours:
        lcs = openai.OpenAI(base_url=f"{lcs_url}/v1", api_key="x", max_retries=0)
        sc = openai.OpenAI(base_url=f"{ours.url}/v1", api_key="x", max_retries=0)
        h2 = httpx.Client(http1=False, http2=True, timeout=120)  # prior knowledge
        sc2 = openai.OpenAI(base_url=f"{ours.url}/v1", api_key="x", max_retries=0, http_client=h2)
        runners: dict[str, Callable[[], Sample]] = {
            RAW: lambda: in_fresh_thread(lambda: raw_run(raw, msgs, max_tokens)),
            LCS: lambda: sdk_run(lcs, msgs, max_tokens, {"repeat_penalty": penalty}),
            OURS: lambda: sdk_run(sc, msgs, max_tokens, {}),
            OURS_H2: lambda: sdk_run(sc2, msgs, max_tokens, {}),
        }
        for name in SIDES:  # warm-up: model loads, connections, each KV cache holds the prompt
            runners[name]()
            time.sleep(PAUSE)
        samples: dict[str, list[Sample]] = {name: [] for name in SIDES}
        for i in range(runs):
            for name in rotation(SIDES, i):  # rotate who goes first
                samples[name].append(runners[name]() | {"round": i})
                time.sleep(PAUSE)
            cells = [f"{s} {samples[s][-1]['ttft'] * 1000:.1f} ms "
                     f"{samples[s][-1]['decode_tps']:.1f} tok/s" for s in SIDES]  # fmt: skip
            console.log(f"round {i + 1}/{runs}: " + ", ".join(cells))
    vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    for s in (s for group in samples.values() for s in group):
        s["retokenized"] = len(vocab.tokenize(s["text"].encode(), add_bos=False, special=True))
    return {"model_path": path, "n_ctx": N_CTX, "n_threads": n, "prompt": PROMPT,
            "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": penalty,
            "client": f"openai {openai.__version__} chat.completions.create(stream=True)",
            "pause_between_samples_s": PAUSE, "samples": samples}  # fmt: skip


def report(result: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    samples = result["samples"]
    med = {s: {k: median([x[k] for x in samples[s]]) for k in ("ttft", "decode_tps")}
           for s in SIDES}  # fmt: skip
    rounds = len(samples[RAW])
    table = Table(title=f"Serving SmolLM2: {result['max_tokens']} tokens, greedy, repeat penalty "
                  f"{result['repeat_penalty']}, n_threads {result['n_threads']}, {rounds} "
                  "alternating rounds, medians")  # fmt: skip
    for col in ("side", "TTFT (ms)", "Δ TTFT vs raw (ms)", "decode tok/s", "tok/s ÷ raw",
                "TTFT [min–max]", "tok/s [min–max]"):  # fmt: skip
        table.add_column(col, justify="left" if col == "side" else "right")
    base = med[RAW]
    for side in SIDES:
        ttfts = [x["ttft"] * 1000 for x in samples[side]]
        rates = [x["decode_tps"] for x in samples[side]]
        delta = (med[side]["ttft"] - base["ttft"]) * 1000
        ratio = med[side]["decode_tps"] / base["decode_tps"]
        table.add_row(side, f"{med[side]['ttft'] * 1000:.1f}",
                      "—" if side == RAW else f"{delta:+.1f}", f"{med[side]['decode_tps']:.1f}",
                      "1.000" if side == RAW else f"{ratio:.3f} ({(ratio - 1) * 100:+.1f} %)",
                      f"{min(ttfts):.1f}–{max(ttfts):.1f}",
                      f"{min(rates):.1f}–{max(rates):.1f}")  # fmt: skip
    d_lcs = (med[LCS]["ttft"] - base["ttft"]) * 1000
    d_ours = (med[OURS]["ttft"] - base["ttft"]) * 1000
    d_h2 = (med[OURS_H2]["ttft"] - base["ttft"]) * 1000
    table.add_section()
    table.add_row(f"{OURS} vs {LCS}", f"÷ {med[OURS]['ttft'] / med[LCS]['ttft']:.3f}",
                  f"{d_ours - d_lcs:+.1f}", "",
                  f"{med[OURS]['decode_tps'] / med[LCS]['decode_tps']:.3f}", "", "")  # fmt: skip
    every = [x for s in SIDES for x in samples[s]]
    tokens = {s: sorted({x["tokens"] for x in samples[s]}) for s in SIDES}
    retok = sorted({x["retokenized"] for x in every})
    texts = {x["text"] for x in every}
    stops = {s: sorted({str(x["stop"]) for x in samples[s]}) for s in SIDES}
    table.caption = (f"tokens (content deltas) per sample: {tokens}; re-tokenized replies: "
                     f"{retok}; identical text on every side and sample: {len(texts) == 1}; "
                     f"finish: {stops}. TTFT = request → first non-empty content delta (servers: "
                     "as the openai SDK yields it); tok/s = (tokens − 1) / (last − first "
                     "delta). Warm KV cache: every sample re-evaluates only the last prompt "
                     "token.")  # fmt: skip
    console.print(table)
    summary = {"median_ttft_ms": {s: med[s]["ttft"] * 1000 for s in SIDES},
               "median_decode_tps": {s: med[s]["decode_tps"] for s in SIDES},
               "ttft_added_vs_raw_ms": {LCS: d_lcs, OURS: d_ours, OURS_H2: d_h2},
               "tokens": tokens, "retokenized": retok, "identical_text": len(texts) == 1,
               "finish": stops}  # fmt: skip

    ttft = {s: [x["ttft"] * 1000 for x in samples[s]] for s in SIDES}
    tps = {s: [x["decode_tps"] for x in samples[s]] for s in SIDES}
    added = {s: [a - b for a, b in zip(ttft[s], ttft[RAW], strict=True)] for s in SIDES}
    comparisons = [
        compare("TTFT, warm KV cache", "ms wall", RAW, ttft[RAW], OURS, ttft[OURS], "lower"),
        compare("TTFT, warm KV cache", "ms wall", LCS, ttft[LCS], OURS, ttft[OURS], "lower"),
        compare("TTFT added over raw llama-cpp-python (same round)", "ms wall", LCS, added[LCS],
                OURS, added[OURS], "lower"),
        compare("decode tokens/s", "tok/s wall", RAW, tps[RAW], OURS, tps[OURS], "higher"),
        compare("decode tokens/s", "tok/s wall", LCS, tps[LCS], OURS, tps[OURS], "higher"),
        compare("TTFT added over raw llama-cpp-python (same round)", "ms wall", LCS, added[LCS],
                OURS_H2, added[OURS_H2], "lower"),
        compare("decode tokens/s", "tok/s wall", RAW, tps[RAW], OURS_H2, tps[OURS_H2], "higher"),
    ]  # fmt: skip
    return comparisons, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds: smoke check")
    parser.add_argument("--max-tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--threads", type=int, help="n_threads, every side (default: streamchat's)")
    parser.add_argument("--json", help="output file (default benchmarks/results/server.json)")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    out: dict[str, Any] = {"quick": args.quick}
    out["result"] = result = measure(runs, args.max_tokens, args.threads)
    out["comparisons"], result["summary"] = report(result)
    path = write_result("server", out, keys=RESULT_KEYS, packages=PACKAGES,
                        threads=result["n_threads"], path=args.json)  # fmt: skip
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
