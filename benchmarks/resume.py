"""What resumable streams cost and how fast a resume answers.

Everything on this machine's loopback, on the scripted provider (no model cost), history in a
throwaway PostgreSQL cluster (Debian's binaries, tests/deployment.py), ``streamchat serve``
processes:

1. **Reconnect to the first new event.** A resumable Anthropic stream (a token every 10 ms) is
   read for a few frames and its connection closed; 50 ms later the client reconnects with
   ``GET /v1/streams/{id}`` and ``Last-Event-ID``: wall time from sending that request to the
   first frame it had not seen, on the replica generating the reply (its log in memory) and on
   the other replica (the log read from PostgreSQL, the live tail polled at the commit
   interval), the sides taking turns. p50 and p99.
2. **CPU per token of the event log.** ``STREAMS`` concurrent replies of ~10,000 text deltas,
   as fast as the server sends them, history on in both: plain streams against resumable ones
   (every frame also in the reply's log, in memory and in PostgreSQL). CPU time (user + system,
   /proc) of the server and the PostgreSQL processes together per token delivered, rounds
   rotating. Target: ≤ 1.10 × plain.

``--quick`` is a smoke run. Writes results/resume.json, whose ``comparisons`` rows
benchmarks/report.py renders into RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

import deployment  # noqa: E402  (tests/deployment.py: a PostgreSQL cluster)
from _common import (  # noqa: E402
    HOST,
    compare,
    percentile,
    record_baseline,
    rotation,
    spread,
    tool_version,
    write_result,
)
from scaleout import cpu_seconds, port_of, postgres_cpu  # noqa: E402
from streamchat.testing.process import serve  # noqa: E402

RESULT_KEYS = ("quick", "reconnect", "cpu", "comparisons")
PACKAGES = ("psycopg", "uvicorn")
STEADY = "scripted?delay=0.01&repeat=20"  # ~140 frames, a token every 10 ms
LONG = "scripted?repeat=2000"  # 10,000 text deltas, as fast as they go
STREAMS = 4
AWAY = 0.05  # seconds between the drop and the reconnect: frames the client must catch up on
TARGET_CPU = 1.10


async def request(port: int, head: str, body: bytes = b"") -> tuple[Any, Any]:
    """Send an HTTP/1.0 request (the answer unchunked, ended by the close); the stream pair."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


def post(prompt: str, resumable: bool, max_tokens: int) -> tuple[str, bytes]:
    body = json.dumps({"model": "m", "max_tokens": max_tokens, "stream": True,
                       "messages": [{"role": "user", "content": prompt}]}).encode()  # fmt: skip
    extra = "x-streamchat-resumable: true\r\n" if resumable else ""
    head = (f"POST /v1/messages HTTP/1.0\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head, body


async def headers(reader: Any) -> dict[str, str]:
    found = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        found[name.strip().lower()] = value.strip()
    return found


async def next_id(reader: Any) -> int | None:
    """The id of the next frame (its ``id:`` line), or None at the end of the body."""
    while line := await reader.readline():
        if line.startswith(b"id: "):
            return int(line[4:])
    return None


async def reconnect_once(origin: int, target: int, prompt: str) -> float:
    """Leave a resumable stream on ``origin`` after 5 frames; resume it on ``target`` after
    :data:`AWAY`: ms from the request to the first frame not seen before."""
    reader, writer = await request(origin, *post(prompt, True, 1000))
    reply = (await headers(reader))["x-streamchat-reply"]
    last = -1
    for _ in range(5):
        last = await next_id(reader) or last
    writer.close()
    await asyncio.sleep(AWAY)
    started = time.perf_counter()
    head = f"GET /v1/streams/{reply} HTTP/1.0\r\nHost: {HOST}\r\nLast-Event-ID: {last}\r\n\r\n"
    reader, writer = await request(target, head)
    status = (await reader.readline()).split()[1]
    if status != b"200":
        raise RuntimeError(f"resume answered {status.decode()}")
    await headers(reader)
    first = await next_id(reader)
    elapsed = (time.perf_counter() - started) * 1000
    if first != last + 1:
        raise RuntimeError(f"resumed at frame {first}, expected {last + 1}")
    while await reader.read(1 << 16):  # to the reply's end: the next sample starts clean
        pass
    writer.close()
    return elapsed


def reconnect_part(db_url: str, samples: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"same replica": [], "other replica": []}
    with ExitStack() as stack:
        args = ("--model", STEADY, "--history", db_url, "--log-level", "error")
        a, b = (port_of(stack.enter_context(serve(*args)).url) for _ in range(2))
        for i in range(3):  # warm: connections, pools, first rows
            asyncio.run(reconnect_once(a, a, f"warm-a{i}"))
            asyncio.run(reconnect_once(a, b, f"warm-b{i}"))
        for round_ in range(samples):
            for name in rotation(list(times), round_):
                target = a if name == "same replica" else b
                times[name].append(asyncio.run(reconnect_once(a, target, f"r{round_}{name}")))
    for name, values in times.items():
        print(f"  reconnect, {name}: p50 {percentile(values, 50):.1f} ms, "
              f"p99 {percentile(values, 99):.1f} ms", flush=True)  # fmt: skip
    return {"samples_each": samples, "away_ms": AWAY * 1000,
            "p50_ms": {k: percentile(v, 50) for k, v in times.items()},
            "p99_ms": {k: percentile(v, 99) for k, v in times.items()},
            "ms": {k: spread(v) for k, v in times.items()}, "samples": times}  # fmt: skip


async def long_reply(port: int, prompt: str, resumable: bool) -> int:
    """One long reply read to its end; its text deltas."""
    reader, writer = await request(port, *post(prompt, resumable, 20_000))
    deltas = 0
    while line := await reader.readline():
        deltas += b'"text_delta"' in line
    writer.close()
    return deltas


async def gather(replies: list[Any]) -> list[int]:
    return await asyncio.gather(*replies)


def cpu_part(db_url: str, data_dir: Path, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"plain": [], "resumable": []}
    for round_ in range(rounds):
        for name in rotation(list(samples), round_):
            with serve("--model", LONG, "--history", db_url, "--log-level", "error") as server:
                port = port_of(server.url)
                before, pg_before = cpu_seconds(server.process.pid), postgres_cpu(data_dir)

                tag, resumable = f"c{round_}{name}", name == "resumable"
                replies = [long_reply(port, f"{tag}-{i}", resumable) for i in range(STREAMS)]
                tokens = max(1, sum(asyncio.run(gather(replies))))
                used = cpu_seconds(server.process.pid) - before
                used += postgres_cpu(data_dir) - pg_before
            samples[name].append(used / tokens * 1e6)
            print(f"  round {round_ + 1} {name}: {samples[name][-1]:.1f} µs CPU/token "
                  f"({tokens} tokens)", flush=True)  # fmt: skip
    return {"streams": STREAMS, "rounds": rounds,
            "us_per_token": {k: spread(v) for k, v in samples.items()},
            "samples": samples}  # fmt: skip


def comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
    times = data["reconnect"]["samples"]
    cpu = data["cpu"]["samples"]
    reconnect = compare(
        "Resume to the first missed frame, p50 over samples",
        "ms wall",
        "same replica (log in memory)",
        times["same replica"],
        "other replica (log in PostgreSQL)",
        times["other replica"],
        "lower",
        p99=data["reconnect"]["p99_ms"],
    )
    log = compare(
        f"CPU per token, {STREAMS} replies of 10k tokens, history on PostgreSQL "
        "(server + PostgreSQL)",
        "µs CPU",
        "plain streams",
        cpu["plain"],
        "resumable streams (event log)",
        cpu["resumable"],
        "lower",
        target=TARGET_CPU,
    )
    return [reconnect, log]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", help="write the JSON here instead of results/resume.json")
    args = parser.parse_args()
    why = deployment.unavailable()
    if why:
        print(f"resume: skipped: {why}", file=sys.stderr)
        return 0
    record_baseline("PostgreSQL", version=tool_version([str(deployment.BIN / "postgres"),
                    "--version"]), binary=str(deployment.BIN / "postgres"))  # fmt: skip
    with deployment.cluster() as db:
        print("Reconnect to the first missed frame:", flush=True)
        reconnect = reconnect_part(db.url, 10 if args.quick else 60)
        print("CPU per token, 10k-token replies:", flush=True)
        cpu = cpu_part(db.url, db.directory / "data", 1 if args.quick else 3)
    data = {"quick": args.quick, "reconnect": reconnect, "cpu": cpu}
    data["comparisons"] = comparisons(data)
    path = write_result("resume", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
