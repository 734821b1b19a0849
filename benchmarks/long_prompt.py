"""Long prompts on the embedded model: time to first token alone, and beside decoding streams.

Sides, same model file and threads (decode 1 thread, prompt 2, as streamchat picks on 2 cores):

- **streamchat serve** (``--parallel 9``), through the OpenAI protocol, as it runs by default
  (flash attention on, as llama.cpp has it) and with ``--flash-attn off``;
- **llama-server** (llama.cpp's C++ server, ``-np 9``, built as ``concurrency.py`` says);
- **raw llama-cpp-python** (``Llama.create_chat_completion(stream=True)`` in this process, with
  streamchat's default flash attention setting; alone only: it serves one request at a time).

1. **Alone.** A user message of exactly ``SIZES`` tokens (counted with the model's own
   tokenizer), unique to each run (so nothing is reused), max 4 tokens out: wall time to the
   first content chunk. Sides rotate, ``--repeats`` rounds. Each stream's window is ``WINDOW``.
2. **Beside 8 decoding streams** (the servers): 8 streams decode (one that ends is replaced by
   a new one, so 8 decode throughout); once all 8 decode and each has ``STEADY`` more tokens,
   the long prompt is sent. Measured: the prompt's TTFT ÷ its TTFT alone (target ≤ 2), and the
   8 streams' inter-token gap p99 while it prefills ÷ their gap p99 before it came (target ≤ 2),
   "before" counting from when all 8 decode: the steps that prefill the streams' own prompts
   beside the first ones are not the gaps "without the prompt" the target compares with.

Writes results/long_prompt.json; ``comparisons`` rows go to RESULTS.md via report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _common import (
    compare,
    llama_without_amx_crash,
    percentile,
    process_server,
    rotation,
    spread,
    write_result,
)
from concurrency import find_llama_server, llama_server_version
from serving import serve
from streamchat.providers.local import DEFAULT_FLASH_ATTN, _smollm2_path

RESULT_KEYS = ("sizes", "repeats", "window", "threads", "alone", "beside", "comparisons")
PACKAGES = ("llama-cpp-python", "openai")
SIZES = (1500, 6000)  # prompt tokens
WINDOW = 8192  # each stream's window, on every side
SLOTS = 9  # 8 decoding streams and the long prompt
THREADS, BATCH_THREADS = 1, 2
DECODING = 8
STEADY = 40  # tokens each decoding stream gives, all 8 decoding, before the long prompt is sent
STREAMCHAT = {"streamchat serve": "on", "streamchat serve --flash-attn off": "off"}  # side: flag


def long_prompt(llama: Any, tokens: int, tag: str) -> str:
    """A text of exactly ``tokens`` tokens of ``llama``'s vocabulary, ``tag`` first."""
    words = " ".join(str(i % 997) for i in range(tokens))  # more tokens than needed
    ids = llama.tokenize(f"Run {tag}. Continue the list: {words}".encode(), add_bos=False)
    text = llama.detokenize(ids[:tokens]).decode("utf-8", "replace")
    while len(llama.tokenize(text.encode(), add_bos=False)) > tokens:
        text = text[:-1]  # a cut that tokenizes differently
    return text


async def first_token(client: openai.AsyncOpenAI, text: str, max_tokens: int = 4) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
        temperature=0, stream=True,
    )  # fmt: skip
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    if first is None:
        raise RuntimeError("no content")
    return first - started


async def first_token_at(url: str, text: str) -> float:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=900)
    async with client:
        return await first_token(client, text)


async def decoding_stream(client: openai.AsyncOpenAI, i: int, replies: list[list[float]]) -> None:
    """Stream replies one after another until cancelled; each reply's token times."""
    for n in itertools.count():
        stream = await client.chat.completions.create(
            model="smollm2", max_tokens=400, temperature=0, stream=True,
            messages=[{"role": "user", "content": f"Stream {i}.{n}: write an essay about rivers."}],
        )  # fmt: skip
        times: list[float] = []
        replies.append(times)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter())


def gaps(times: list[float], start: float, end: float) -> list[float]:
    return [(b - a) * 1000 for a, b in itertools.pairwise(times) if start <= a < end]


async def beside(url: str, text: str) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=900)
    async with client:
        replies: list[list[list[float]]] = [[] for _ in range(DECODING)]
        streams = [asyncio.create_task(decoding_stream(client, i, replies[i]))
                   for i in range(DECODING)]  # fmt: skip
        while min(sum(map(len, r)) for r in replies) < 1:
            await asyncio.sleep(0.01)
        steady = time.perf_counter()  # all 8 decode
        while min(sum(map(len, r)) for r in replies) < STEADY + 1:
            await asyncio.sleep(0.01)
        sent = time.perf_counter()
        ttft = await first_token(client, text)
        arrived = sent + ttft
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    times = [t for r in replies for t in r]
    before = [g for t in times for g in gaps(t, steady, sent)]
    during = [g for t in times for g in gaps(t, sent, arrived)]
    return {"ttft_s": ttft, "gap_ms_p99_before": percentile(before, 99),
            "gap_ms_p99_during": percentile(during, 99), "gaps_during": len(during)}  # fmt: skip


class Raw:
    """llama-cpp-python's own high-level API in this process."""

    def __init__(self, path: str) -> None:
        import llama_cpp

        llama_without_amx_crash()  # as streamchat's own engine does (local.py)
        self.llama = llama_cpp.Llama(
            model_path=path, n_ctx=WINDOW, n_batch=512, n_threads=THREADS,
            n_threads_batch=BATCH_THREADS, flash_attn=DEFAULT_FLASH_ATTN, verbose=False,
        )  # fmt: skip

    def first_token(self, text: str) -> float:
        started = time.perf_counter()
        for chunk in self.llama.create_chat_completion(
            messages=[{"role": "user", "content": text}], max_tokens=4, temperature=0,
            stream=True,
        ):  # fmt: skip
            if chunk["choices"][0]["delta"].get("content"):
                return time.perf_counter() - started
        raise RuntimeError("no content")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="prompt tokens")
    parser.add_argument("--quick", action="store_true", help="1,500 tokens, one round")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary")
    parser.add_argument("--json", help="output path (default results/long_prompt.json)")
    args = parser.parse_args()
    sizes = tuple(args.sizes[:1] if args.quick else args.sizes)
    repeats = 1 if args.quick else args.repeats
    path = _smollm2_path()
    binary = find_llama_server(args.llama_server)
    alone: dict[str, dict[str, list[float]]] = {str(n): {} for n in sizes}
    near: dict[str, dict[str, list[dict[str, Any]]]] = {str(n): {} for n in sizes}
    with contextlib.ExitStack() as stack:
        env = {"STREAMCHAT_THREADS": str(THREADS), "STREAMCHAT_THREADS_BATCH": str(BATCH_THREADS)}
        urls = {side: stack.enter_context(serve(
            "--model", "smollm2", "--parallel", str(SLOTS), "--context", str(WINDOW),
            "--flash-attn", flash, "--log-level", "warning", env=env, timeout=180)).url
            for side, flash in STREAMCHAT.items()}  # fmt: skip
        if binary:
            urls["llama-server"] = stack.enter_context(process_server(
                [binary, "-m", path, "-t", str(THREADS), "-tb", str(BATCH_THREADS),
                 "-np", str(SLOTS), "-c", str(WINDOW * SLOTS), "--host", "127.0.0.1",
                 "--port", "{port}"], "/health", name="llama-server",
                version=llama_server_version(binary),
                env={"LD_LIBRARY_PATH": str(Path(binary).parent)}))  # fmt: skip
        else:
            print("long_prompt: llama-server not found: its column is left out", file=sys.stderr)
        raw = Raw(path)
        sides = [*urls, "raw llama-cpp-python"]

        def alone_once(side: str, text: str) -> float:
            if side in urls:
                return asyncio.run(first_token_at(urls[side], text))
            return raw.first_token(text)

        for side in sides:  # warm: the model's pages, the chat template
            alone_once(side, "Hi")
        for n in sizes:
            for repeat in range(repeats):
                for side in rotation(sides, repeat):
                    text = long_prompt(raw.llama, n, f"{side}{repeat}")
                    seconds = alone_once(side, text)
                    alone[str(n)].setdefault(side, []).append(seconds)
                    print(f"  {n} tokens alone, {side}: TTFT {seconds:.2f} s", flush=True)
                for side in rotation(list(urls), repeat):
                    text = long_prompt(raw.llama, n, f"beside {side}{repeat}")
                    result = asyncio.run(beside(urls[side], text))
                    near[str(n)].setdefault(side, []).append(result)
                    print(f"  {n} tokens beside {DECODING} streams, {side}: TTFT "
                          f"{result['ttft_s']:.2f} s, gap p99 {result['gap_ms_p99_before']:.0f}"
                          f" -> {result['gap_ms_p99_during']:.0f} ms", flush=True)  # fmt: skip
    comparisons = []
    for n in sizes:
        runs = alone[str(n)]
        for base in ("llama-server", "raw llama-cpp-python"):
            if base in runs:
                target = {"target": 1.0} if base == "llama-server" else {}
                for ours in STREAMCHAT:
                    comparisons.append(compare(f"TTFT, {n}-token prompt alone", "s wall", base,
                                               runs[base], ours, runs[ours], "lower",
                                               **target))  # fmt: skip
        for side, results in near[str(n)].items():
            ttft = [r["ttft_s"] for r in results]
            comparisons.append(compare(
                f"{side}: TTFT of a {n}-token prompt beside {DECODING} decoding streams vs alone",
                "s wall", "alone", runs[side], f"beside {DECODING} streams", ttft, "lower",
                target=2.0))  # fmt: skip
            comparisons.append(compare(
                f"{side}: {DECODING} streams' gap p99 while a {n}-token prompt prefills",
                "ms wall", "before it", [r["gap_ms_p99_before"] for r in results],
                "while it prefills", [r["gap_ms_p99_during"] for r in results], "lower",
                target=2.0))  # fmt: skip
    data = {"sizes": list(sizes), "repeats": repeats, "window": WINDOW,
            "threads": {"decode": THREADS, "prompt": BATCH_THREADS},
            "alone": {n: {side: spread(v) for side, v in runs.items()}
                      for n, runs in alone.items()},
            "beside": near, "comparisons": comparisons}  # fmt: skip
    threads = {"decode": THREADS, "prompt": BATCH_THREADS}
    out = write_result("long_prompt", data, keys=RESULT_KEYS, packages=PACKAGES,
                       threads=threads, path=args.json)  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
