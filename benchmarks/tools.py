"""Tool calls on the embedded model: what the grammar costs, how often calls validate, how soon
the first fragment comes.

(a) **Decode speed under the grammar.** A forced call whose input is long (a story of 200-400
characters) against unconstrained text of about the same length (the tokens the call took) on the
same prompt (the tool prompt passed as ``system``, no tools), both through
``streamchat.Client().messages.stream`` on SmolLM2, alternating, medians; decode tokens/s
= (output tokens - 1) / (last delta - first delta), from the events' own timestamps (taken on the
generation thread); a second row from the median gap between deltas, which a stall of the shared
machine does not move. For reference, llama-cpp-python's high-level path on the same ``Llama``:
``Llama.generate(grammar=LlamaGrammar)`` (the grammar applied to every candidate every token)
against ``Llama.generate()`` for the same number of tokens. Target: streamchat ≥ 0.8×.

(b) **Validity over the 50-case set** (``tests/tool_cases.py``): each case a forced call
(temperature 0.8, seed = case number, max_tokens 160), judged by ``jsonschema``: streamchat
(library) against ``python -m llama_cpp.server --chat_format chatml-function-calling`` on the same
GGUF through the ``openai`` SDK with ``tool_choice`` naming the function, alternating per case.
Target: streamchat 100 %.

(c) **Time to the first fragment.** Request start -> first ``input_json_delta`` of a forced call
vs -> first ``text_delta`` of a plain reply to the same prompt (the tool prompt as ``system``),
the KV cache emptied before every sample (the whole prompt is evaluated on both sides; a forced
call also evaluates the call's opening ``<tool_call>{"name": ..., "arguments": `` first).

Repeats: (a) and (c) rotate their sides every round (``--rounds``, 7), and every figure is
the median [min–max] over the rounds, in wall time; (b) is a count over the cases (each case once
per side, the sides alternating who goes first).

``--quick``: a smoke run (3 rounds, 6 cases).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # tool_cases, serving

import itertools

import jsonschema
import llama_cpp
import openai
from rich.console import Console
from rich.table import Table

from _common import HOST, compare, median, process_server, rotation, write_result
from overhead import in_fresh_thread
from streamchat import Client
from streamchat.providers import tool_prompt
from streamchat.providers.grammar import compile_schema
from streamchat.providers.local import BUILTIN_MODELS, local_provider
from streamchat.request import build_request
from tool_cases import CASES

RESULT_KEYS = ("model_path", "n_threads", "a", "b", "c", "comparisons")
PACKAGES = ("openai", "jsonschema")
MODEL = "smollm2"
STORY = {
    "name": "save_story",
    "description": "Save a short story",
    "input_schema": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 60},
            "story": {"type": "string", "minLength": 200, "maxLength": 400},
        },
        "required": ["title", "story"],
    },
}
STORY_ASK = [{"role": "user", "content": "Write a short story about a brave cat and save it."}]
ESSAY_ASK = [{"role": "user", "content": "Write me a long essay about the history of bread."}]
WEATHER_ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
PAUSE = 0.2
console = Console(stderr=True)


def stream_sample(client: Client, **params: Any) -> dict[str, Any]:
    """One streamed reply: first/last delta times (generation-thread clock) and token count."""
    start = time.perf_counter()
    deltas: list[tuple[float, str]] = []
    with client.messages.stream(**params) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type in (
                "text_delta",
                "input_json_delta",
            ):
                deltas.append((event.timestamp, event.delta.type))
        message = stream.get_final_message()
    tokens = message.usage.output_tokens
    span = deltas[-1][0] - deltas[0][0] if len(deltas) > 1 else float("nan")
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(deltas)]
    return {
        "first_delta_s": deltas[0][0] - start if deltas else float("nan"),
        "first_kind": deltas[0][1] if deltas else None,
        "tokens": tokens,
        "decode_tps": (tokens - 1) / span if span and span > 0 else float("nan"),
        "median_gap_tps": 1 / median(gaps) if gaps else float("nan"),
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "calls": [c.to_dict() for c in message.tool_calls],
    }


def raw_sample(llama: Any, tokens: list[int], count: int, grammar: Any) -> dict[str, Any]:
    """``Llama.generate`` for ``count`` tokens (EOG or not), timed per token."""
    times: list[float] = []
    generator = llama.generate(tokens, temp=0, repeat_penalty=1.1, grammar=grammar)
    try:
        for _ in generator:
            times.append(time.perf_counter())
            if len(times) >= count:
                break
    finally:
        generator.close()
    span = times[-1] - times[0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "tokens": len(times),
        "decode_tps": (len(times) - 1) / span if span > 0 else 0.0,
        "median_gap_tps": 1 / median(gaps) if gaps else float("nan"),
    }


def part_a(client: Client, rounds: int) -> dict[str, Any]:
    import llama_cpp
    from llama_cpp import LlamaGrammar

    provider = local_provider(MODEL)
    provider.load()
    # The reference side: llama-cpp-python's own Llama with streamchat's window and threads (the
    # provider's Llama only tokenizes; its engine decodes).
    llama = llama_cpp.Llama(provider.path, n_ctx=provider.n_ctx, n_threads=provider.n_threads,
                            n_threads_batch=provider.n_threads,
                            flash_attn=provider.flash_attn, verbose=False)  # fmt: skip
    forced = {"tools": [STORY], "tool_choice": {"type": "any"}}
    call = stream_sample(client, messages=STORY_ASK, max_tokens=300, temperature=0, **forced)
    length = call["tokens"]
    request = build_request(model=MODEL, messages=STORY_ASK, **forced)
    opening = tool_prompt.CALL_OPEN + tool_prompt.NAME_PREFIX + 'save_story"'
    prompt = provider.prompt_tokens(request)[0] + llama.tokenize(
        (opening + tool_prompt.ARGS_PREFIX).encode(), add_bos=False, special=True
    )
    grammar_text = compile_schema(STORY["input_schema"], "bench").gbnf
    same_context = tool_prompt.system_text(request)  # the text side sees the same prompt
    sides: dict[str, Callable[[], dict[str, Any]]] = {
        "streamchat constrained call": lambda: stream_sample(
            client, messages=STORY_ASK, max_tokens=300, temperature=0, **forced
        ),
        "streamchat unconstrained text": lambda: stream_sample(
            client, messages=STORY_ASK, system=same_context, max_tokens=length, temperature=0
        ),
        "llama-cpp-python grammar=": lambda: in_fresh_thread(
            lambda: raw_sample(
                llama, prompt, length, LlamaGrammar.from_string(grammar_text, verbose=False)
            )
        ),
        "llama-cpp-python unconstrained": lambda: in_fresh_thread(
            lambda: raw_sample(llama, prompt, length, None)
        ),
    }
    names = list(sides)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(rounds):
        for name in rotation(names, i):
            samples[name].append(sides[name]())
            time.sleep(PAUSE)
        console.log(
            f"(a) round {i + 1}/{rounds}: "
            + ", ".join(f"{n} {samples[n][-1]['decode_tps']:.1f} tok/s" for n in names)
        )
    return {"call_tokens": length, "samples": samples}


def lcs_call(client: openai.OpenAI, case: Any, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": case.prompt}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": case.name,
                    "description": case.description,
                    "parameters": case.schema,
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": case.name}},
        max_tokens=160,
        temperature=0.8,
        seed=seed,
    )
    elapsed = time.perf_counter() - start
    choice = reply.choices[0]
    calls = choice.message.tool_calls or []
    arguments = calls[0].function.arguments if calls else None
    return {"arguments": arguments, "finish_reason": choice.finish_reason, "seconds": elapsed}


def judge(case: Any, arguments: Any) -> str | None:
    """None when valid, else why not."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
        jsonschema.validate(value, case.schema)
    except (TypeError, ValueError, jsonschema.ValidationError) as error:
        return f"{type(error).__name__}: {str(error)[:120]}"
    return None


def part_b(client: Client, cases: list[Any], path: str, threads: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"streamchat": [], "llama_cpp.server": []}
    with chatml_server(path, threads) as url:
        lcs = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for seed, case in enumerate(cases):

            def ours_call(case: Any = case, seed: int = seed) -> dict[str, Any]:
                start = time.perf_counter()
                message = client.messages.create(
                    messages=[{"role": "user", "content": case.prompt}],
                    tools=[case.tool],
                    tool_choice={"type": "any", "disable_parallel_tool_use": True},
                    max_tokens=160,
                    temperature=0.8,
                    seed=seed,
                )
                calls = message.tool_calls
                got = {
                    "arguments": calls[0].input if calls else None,
                    "stop_reason": message.stop_reason,
                    "seconds": time.perf_counter() - start,
                }
                got["invalid"] = judge(case, got["arguments"]) if calls else "no call"
                return got

            def theirs_call(case: Any = case, seed: int = seed) -> dict[str, Any]:
                got = lcs_call(lcs, case, seed)
                got["invalid"] = judge(case, got["arguments"])
                return got

            got = {}
            for side in rotation(["streamchat", "llama_cpp.server"], seed):
                got[side] = ours_call() if side == "streamchat" else theirs_call()
            ours, theirs = got["streamchat"], got["llama_cpp.server"]
            results["streamchat"].append({"case": case.name, **ours})
            results["llama_cpp.server"].append({"case": case.name, **theirs})
            console.log(
                f"(b) {seed + 1}/{len(cases)} {case.name}: streamchat "
                f"{'valid' if not ours['invalid'] else 'INVALID'}, llama_cpp.server "
                f"{'valid' if not theirs['invalid'] else 'INVALID ' + theirs['invalid'][:60]}"
            )
    return results


def chatml_server(path: str, threads: int) -> contextlib.AbstractContextManager[str]:
    """``python -m llama_cpp.server --chat_format chatml-function-calling`` on a free loopback
    port (as benchmarks/server.py starts it) until ``/v1/models`` answers."""
    return process_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", path,
         "--chat_format", "chatml-function-calling", "--n_threads", str(threads),
         "--n_threads_batch", str(threads), "--n_ctx", "4096", "--host", HOST,
         "--port", "{port}"], "/v1/models", name="llama_cpp.server chatml-function-calling",
        version=f"llama-cpp-python {llama_cpp.__version__}", timeout=120)  # fmt: skip


def part_c(client: Client, rounds: int) -> dict[str, Any]:
    engine = local_provider(MODEL).engine  # reset(): the slots' cells emptied
    weather = {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    forced = {"tools": [weather], "tool_choice": {"type": "any"}}
    same_context = tool_prompt.system_text(
        build_request(model=MODEL, messages=WEATHER_ASK, **forced)
    )
    sides = {
        "first input_json_delta": lambda: stream_sample(
            client, messages=WEATHER_ASK, max_tokens=1, temperature=0, **forced
        ),
        "first text_delta": lambda: stream_sample(
            client, messages=WEATHER_ASK, system=same_context, max_tokens=1, temperature=0
        ),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for i in range(rounds):
        for name in rotation(list(sides), i):
            engine.reset()  # cold: the whole prompt is evaluated on both sides
            samples[name].append(sides[name]())
            time.sleep(PAUSE)
    return {"samples": samples}


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    a, b, c = result["a"]["samples"], result["b"], result["c"]["samples"]
    tps = {k: [s["decode_tps"] for s in v] for k, v in a.items()}
    gap = {k: [s["median_gap_tps"] for s in v] for k, v in a.items()}
    valid = {k: sum(1 for r in v if not r["invalid"]) / len(v) * 100 for k, v in b.items()}
    first = {k: [s["first_delta_s"] * 1000 for s in v] for k, v in c.items()}
    text, call = "streamchat unconstrained text", "streamchat constrained call"
    rows = [
        compare("decode tok/s under the grammar (sample-then-check)", "tok/s wall",
                "unconstrained text", tps[text], "forced tool call", tps[call], "higher",
                target=0.8),
        compare("decode tok/s under the grammar, from the median token gap", "tok/s wall",
                "unconstrained text", gap[text], "forced tool call", gap[call], "higher",
                target=0.8),
        compare("decode tok/s, llama-cpp-python grammar= (reference)", "tok/s wall",
                "Llama.generate()", tps["llama-cpp-python unconstrained"],
                "Llama.generate(grammar=)", tps["llama-cpp-python grammar="], "higher"),
        compare(f"valid forced calls over {len(b['streamchat'])} cases", "% of cases",
                "llama_cpp.server chatml-function-calling", [valid["llama_cpp.server"]],
                "streamchat (grammar)", [valid["streamchat"]], "higher"),
        compare("time to first delta, cold prompt", "ms wall", "first text_delta",
                first["first text_delta"], "first input_json_delta",
                first["first input_json_delta"], "lower"),
    ]  # fmt: skip
    return rows


def show(rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    table = Table(title="Tool calls on SmolLM2 (medians; ratio = streamchat side ÷ baseline)")
    for column in ("metric", "baseline", "value", "streamchat side", "value ", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("metric",) else "right")
    for r in rows:
        table.add_row(
            r["metric"],
            r["baseline"],
            f"{r['baseline_value']:.1f}",
            r["streamchat"],
            f"{r['streamchat_value']:.1f}",
            f"{r['ratio']:.3f}",
            f"≥ {r['target']}" if r.get("target") else "",
        )
    Console().print(table)
    prompts = {k: v[0]["input_tokens"] for k, v in result["c"]["samples"].items()}
    console.print(f"(c) prompt tokens: {prompts}; (a) call length {result['a']['call_tokens']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, 6 cases")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write results here instead of results/tools.json")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    cases = CASES[:6] if args.quick else CASES
    provider = local_provider(MODEL)
    path = BUILTIN_MODELS[MODEL].locate()
    client = Client()
    client.messages.create(messages=WEATHER_ASK, max_tokens=1)  # load the model
    result: dict[str, Any] = {"model_path": path, "n_threads": provider.n_threads}
    result["a"] = part_a(client, rounds)
    result["c"] = part_c(client, max(rounds, 3))
    result["b"] = part_b(client, cases, path, provider.n_threads)
    rows = summarise(result)
    show(rows, result)
    result["comparisons"] = rows
    target = write_result("tools", result, keys=RESULT_KEYS, packages=PACKAGES,
                          threads=provider.n_threads, path=args.json)  # fmt: skip
    console.print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
