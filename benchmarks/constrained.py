"""What a constrained token costs: ``streamchat serve`` against llama.cpp's ``llama-server``,
schema by schema.

Each sample is one streamed Chat Completions request through the ``openai`` SDK, same prompt,
temperature 0, ``max_tokens`` 60, ``response_format`` ``json_schema`` with the schema (both
servers compile it to a grammar that constrains every token), one slot on each side, the same
threads, the same prompt: streamchat's embedded model is told the schema in its system message
(what the real APIs do), so llama-server gets that very system message too, and both decode
over the same context. The cost per token is the time from the first content chunk to the last
divided by the tokens after the first (``usage.completion_tokens`` − 1): the prompt's prefill is
left out, so what remains is decoding plus the grammar. Schemas: the issue's three (one string
field; 100 required integer properties; 30 nested objects) and the test corpus
(``tests/test_schemas.py``: seven agent-style tools and three Pydantic models). Sides alternate,
the order rotating every round (``--rounds``, 3); figures are medians [min–max]. Target:
streamchat ≤ 1.2× llama-server for every schema. Without a built llama-server
(``concurrency.py`` says how) only streamchat's column is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _common import compare, process_server, rotation, write_result
from concurrency import find_llama_server, llama_server_version
from serving import serve
from streamchat.providers.local import _smollm2_path
from streamchat.providers.tool_prompt import system_text
from streamchat.request import build_request
from test_schemas import AGENT_TOOLS, PYDANTIC_TOOLS

RESULT_KEYS = ("threads", "max_tokens", "samples", "failures", "comparisons", "remarks")
PACKAGES = ("llama-cpp-python", "openai")
THREADS = 2
MAX_TOKENS = 60
ASK = [{"role": "user", "content": "Fill in the form with sensible values."}]


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"value": {"type": "integer"}},
        "required": ["value"],
    }
    for level in range(depth - 1):
        schema = {
            "type": "object",
            "properties": {f"level{level}": schema},
            "required": [f"level{level}"],
        }
    return schema


SCHEMAS: dict[str, dict[str, Any]] = {
    "one string field": {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    },
    "100 required integers": {
        "type": "object",
        "properties": {f"p{i}": {"type": "integer"} for i in range(100)},
        "required": [f"p{i}" for i in range(100)],
    },
    "30 nested objects": nested(30),
    **{f"agent tool {name}": schema for name, schema in AGENT_TOOLS.items()},
    **{f"pydantic {name}": schema for name, schema in PYDANTIC_TOOLS.items()},
}


def told(schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the system text streamchat writes for ``schema`` (for llama-server,
    which would otherwise decode over a context shorter by the schema)."""
    output_format = {"type": "json_schema", "schema": schema}
    system = system_text(build_request(model="m", messages=ASK, output_format=output_format))
    return [{"role": "system", "content": system or ""}, *ASK]


def per_token_ms(client: openai.OpenAI, schema: dict[str, Any], messages: Any) -> float:
    """One streamed request under ``schema``: ms per token after the first."""
    stream = client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True},
        response_format={"type": "json_schema", "json_schema": {"name": "form", "schema": schema}},
    )  # fmt: skip
    times: list[float] = []
    tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    tokens = tokens or len(times)
    if len(times) < 2 or tokens < 2:
        raise RuntimeError(f"{len(times)} chunks, {tokens} tokens: nothing to time")
    return (times[-1] - times[0]) / (tokens - 1) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the issue's three schemas, once")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary")
    parser.add_argument("--json", help="output path (default results/constrained.json)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    schemas = dict(list(SCHEMAS.items())[:3]) if args.quick else SCHEMAS
    path = _smollm2_path()
    binary = find_llama_server(args.llama_server)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in schemas}
    failures: dict[str, dict[str, str]] = {}
    with contextlib.ExitStack() as stack:
        env = {"STREAMCHAT_THREADS": str(THREADS), "STREAMCHAT_THREADS_BATCH": str(THREADS)}
        urls = {"streamchat serve": stack.enter_context(serve(
            "--model", "smollm2", "--parallel", "1", "--log-level", "warning",
            env=env, timeout=180)).url}  # fmt: skip
        if binary:
            urls["llama-server"] = stack.enter_context(process_server(
                [binary, "-m", path, "-t", str(THREADS), "-tb", str(THREADS), "-np", "1",
                 "-c", "4096", "--host", "127.0.0.1", "--port", "{port}"], "/health",
                name="llama-server", version=llama_server_version(binary),
                env={"LD_LIBRARY_PATH": str(Path(binary).parent)}))  # fmt: skip
        else:
            print("constrained: llama-server not found: its column is left out", file=sys.stderr)
        clients = {
            side: openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
            for side, url in urls.items()
        }
        for client in clients.values():  # warm: the model's pages, the chat template
            client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=2)
        for round_ in range(rounds):
            for name, schema in schemas.items():
                for side in rotation(list(clients), round_):
                    if name in failures.get(side, {}):
                        continue
                    try:
                        messages = ASK if side == "streamchat serve" else told(schema)
                        ms = per_token_ms(clients[side], schema, messages)
                    except (openai.APIError, RuntimeError) as error:
                        failures.setdefault(side, {})[name] = str(error)[:300]
                        print(f"  {name}, {side}: failed: {error}", flush=True)
                        continue
                    samples[name].setdefault(side, []).append(ms)
                    print(f"  round {round_ + 1}, {name}, {side}: {ms:.1f} ms/token", flush=True)
    comparisons = []
    for name, runs in samples.items():
        if "llama-server" in runs and "streamchat serve" in runs:
            comparisons.append(compare(
                f"per constrained token: {name}", "ms wall", "llama-server", runs["llama-server"],
                "streamchat serve", runs["streamchat serve"], "lower", target=1.2))  # fmt: skip
    met = sum(row["ratio"] <= 1.2 for row in comparisons)
    remarks = [f"{met} of {len(comparisons)} schemas within 1.2× llama-server's time per token."]
    remarks += [
        f"{side} failed on {name}: {reason}"
        for side, failed in failures.items()
        for name, reason in failed.items()
    ]
    for row in comparisons:
        print(f"{row['metric']}: {row['streamchat_value']:.1f} vs {row['baseline_value']:.1f} "
              f"ms ({row['ratio']:.2f}×)")  # fmt: skip
    print(remarks[0])
    target = write_result(
        "constrained",
        {"threads": THREADS, "max_tokens": MAX_TOKENS, "samples": samples, "failures": failures,
         "comparisons": comparisons, "remarks": remarks},
        keys=RESULT_KEYS, packages=PACKAGES, threads=THREADS, path=args.json,
    )  # fmt: skip
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
