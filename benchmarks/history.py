"""What recording the history costs a server: time to first token, and CPU per token.

Everything on this machine's loopback, on the scripted provider (no model cost), one
``streamchat serve`` per side, all up at once:

1. **TTFT.** One request at a time, the sides taking turns (the order rotating every round):
   wall time from sending the request to the first text delta, history off / SQLite /
   PostgreSQL / PostgreSQL 50 ms away (a TCP proxy delaying every chunk, each way). The first
   token must not wait for a database round trip: every side should match "off".
2. **CPU per token, long replies.** ``STREAMS`` concurrent streams of ~10,000 text deltas each,
   as fast as the server sends them: CPU time (user + system, /proc) per token delivered,
   history off / SQLite / PostgreSQL, rounds rotating. The PostgreSQL side counts the server and
   the PostgreSQL processes together (SQLite's work is inside the server). Target: ≤ 1.3 × off
   (each commit appends what streamed since the last, so its cost does not grow with the reply).

``--quick`` is a smoke run. Writes results/history.json, whose ``comparisons`` rows
benchmarks/report.py renders into RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

import deployment  # noqa: E402  (tests/deployment.py: a PostgreSQL cluster)
from _common import (  # noqa: E402
    compare,
    percentile,
    record_baseline,
    rotation,
    spread,
    tool_version,
    write_result,
)
from scaleout import cpu_seconds, one_stream, port_of, postgres_cpu  # noqa: E402
from streamchat.testing.process import serve  # noqa: E402
from streamchat.testing.proxy import TCPProxy  # noqa: E402

RESULT_KEYS = ("quick", "latency_ms", "ttft", "cpu", "comparisons")
PACKAGES = ("psycopg", "uvicorn")
LATENCY = 0.05  # the far database: 50 ms each way, per chunk
STREAMS = 4
LONG = "scripted?repeat=2000"  # 2,000 x "[turn 1] You said: <prompt>": 10,000 text deltas
SHORT = "scripted?repeat=1"
TARGET_CPU = 1.3


async def first_token(port: int, prompt: str) -> float:
    started = time.perf_counter()
    result = await one_stream(port, prompt)
    if not result["times"]:
        raise RuntimeError(f"no token from port {port}")
    return (result["times"][0] - started) * 1000


def ttft_part(targets: dict[str, str | None], requests: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in targets}
    with ExitStack() as stack:
        ports = {}
        for name, target in targets.items():
            args = ["--model", SHORT, "--log-level", "error"]
            if target:
                args += ["--history", target]
            ports[name] = port_of(stack.enter_context(serve(*args)).url)
        for port in ports.values():  # warm: connections, the pool, the first rows
            for i in range(5):
                asyncio.run(first_token(port, f"warm{i}"))
        for round_ in range(requests):
            for name in rotation(list(ports), round_):
                samples[name].append(asyncio.run(first_token(ports[name], f"t{round_}{name}")))
    for name, values in samples.items():
        print(f"  TTFT {name}: p50 {percentile(values, 50):.2f} ms, "
              f"p90 {percentile(values, 90):.2f} ms", flush=True)  # fmt: skip
    return {"requests": requests, "ms": {k: spread(v) for k, v in samples.items()},
            "p90_ms": {k: percentile(v, 90) for k, v in samples.items()},
            "samples": samples}  # fmt: skip


def cpu_part(targets: dict[str, str | None], data_dir: Path, rounds: int) -> dict[str, Any]:
    total: dict[str, list[float]] = {name: [] for name in targets}
    own: dict[str, list[float]] = {name: [] for name in targets}
    for round_ in range(rounds):
        for name in rotation(list(targets), round_):
            args = ["--model", LONG, "--log-level", "error"]
            if targets[name]:
                args += ["--history", str(targets[name])]
            with serve(*args) as server:
                port = port_of(server.url)
                before, pg_before = cpu_seconds(server.process.pid), postgres_cpu(data_dir)

                async def wave(port: int = port, tag: str = f"c{round_}{name}") -> list[dict]:
                    return await asyncio.gather(
                        *(one_stream(port, f"{tag}-{i}", 20_000) for i in range(STREAMS))
                    )

                results = asyncio.run(wave())
                used = cpu_seconds(server.process.pid) - before
                pg_used = postgres_cpu(data_dir) - pg_before if name == "postgresql" else 0.0
            tokens = max(1, sum(len(r["times"]) for r in results))
            own[name].append(used / tokens * 1e6)
            total[name].append((used + pg_used) / tokens * 1e6)
            print(f"  round {round_ + 1} {name}: {total[name][-1]:.1f} µs CPU/token "
                  f"({tokens} tokens; server alone {own[name][-1]:.1f})", flush=True)  # fmt: skip
    return {"streams": STREAMS, "rounds": rounds, "us_per_token": {k: spread(v) for k, v in
            total.items()}, "samples": total, "server_process_samples": own}  # fmt: skip


def comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    ttft = data["ttft"]["samples"]
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"),
                        ("postgresql_50ms", "PostgreSQL 50 ms away")):  # fmt: skip
        rows.append(compare(f"TTFT, one request at a time, history on {label}", "ms wall",
                            "history off", ttft["off"], f"history {label}", ttft[name],
                            "lower"))  # fmt: skip
    cpu = data["cpu"]["samples"]
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL (+ its processes)")):
        rows.append(compare(f"CPU per token, {STREAMS} replies of 10k tokens, history {label}",
                            "µs CPU", "history off", cpu["off"], f"history {label}", cpu[name],
                            "lower", target=TARGET_CPU))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", help="write the JSON here instead of results/history.json")
    args = parser.parse_args()
    why = deployment.unavailable()
    if why:
        print(f"history: skipped: {why}", file=sys.stderr)
        return 0
    record_baseline("PostgreSQL", version=tool_version([str(deployment.BIN / "postgres"),
                    "--version"]), binary=str(deployment.BIN / "postgres"))  # fmt: skip
    with deployment.cluster() as db, tempfile.TemporaryDirectory() as tmp:
        port = int(db.url.rsplit(":", 1)[1].split("/", 1)[0])
        with TCPProxy(port, delay=LATENCY) as far:
            far_url = db.url.replace(f":{port}/", f":{far.port}/")
            print("TTFT:", flush=True)
            ttft = ttft_part({"off": None, "sqlite": f"{tmp}/ttft.db", "postgresql": db.url,
                              "postgresql_50ms": far_url}, 10 if args.quick else 40)  # fmt: skip
        print("CPU per token, 10k-token replies:", flush=True)
        cpu = cpu_part({"off": None, "sqlite": f"{tmp}/cpu.db", "postgresql": db.url},
                       db.directory / "data", 1 if args.quick else 3)  # fmt: skip
    data = {"quick": args.quick, "latency_ms": LATENCY * 1000, "ttft": ttft, "cpu": cpu}
    data["comparisons"] = comparisons(data)
    path = write_result("history", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
