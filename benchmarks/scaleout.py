"""Scale-out: 1 replica vs 2 behind nginx, and what the history costs per token.

Everything on this machine's loopback, on the scripted provider at 50 ms per token (the model
costs nothing, so what is measured is streamchat, nginx and the database):

1. **Replicas.** N concurrent streams through nginx (deploy/nginx.conf) to 1 replica and to
   2, measured alternately at each N (medians of rounds): the p99 of each inter-token gap
   beyond the model's 50 ms as clients see it (target ≤ 100 ms). The client is a small
   raw-socket asyncio reader, so that it takes as little of the two cores as possible.
2. **History cost per token.** One replica, N streams, history off / SQLite / PostgreSQL,
   alternated over several rounds: the server process's CPU time (user + system, from /proc)
   per token delivered, medians. Target: PostgreSQL adds ≤ 10 % over SQLite. PostgreSQL's own
   CPU is reported beside it (on a deployment it is another machine's).
3. **Nothing lost.** Streams killed with SIGKILL at random points (group commit, and strict):
   for every stream, the tokens the client received that the history lacks. The group commit
   promises at most one commit interval's worth (25 ms: at 50 ms/token, at most 1 token);
   strict promises none.

``--quick`` is a smoke run (smaller N, one round). Writes results/scaleout.json, whose
``comparisons`` rows benchmarks/report.py renders into RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

import deployment  # noqa: E402  (tests/deployment.py: PostgreSQL cluster, nginx)
from _common import machine, median, percentile, write_json  # noqa: E402
from streamchat.testing.process import HOST, serve  # noqa: E402

DELAY = 0.05
REPEAT = 8  # 8 x "[turn 1] You said: s<i>" = 40 text deltas: 2 s a stream
MODEL = f"scripted?delay={DELAY}&repeat={REPEAT}"
TARGET_EXTRA_MS = 100.0
TARGET_PG_OVER_SQLITE = 1.10


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU of every postgres process (the cluster under test is the only one here)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(proc, "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += cpu_seconds(int(proc.name))
            except OSError:
                continue
    return total


async def one_stream(port: int, prompt: str) -> dict:
    """POST one Anthropic stream over a raw socket; the arrival time of every text delta."""
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()
    head = (
        # HTTP/1.0: the answer comes unchunked, ended by the close (lines never split)
        f"POST /v1/messages HTTP/1.0\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    writer.write(head + body)
    await writer.drain()
    times: list[float] = []
    texts: list[str] = []
    replica, done = None, False
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"x-streamchat-replica:"):
                replica = line.split(b":", 1)[1].strip().decode()
            elif b'"text_delta"' in line:
                times.append(time.perf_counter())
                texts.append(json.loads(line[line.index(b"{") :])["delta"]["text"])
            elif b"message_stop" in line:
                done = True
                break
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()
    return {"prompt": prompt, "times": times, "parts": texts, "text": "".join(texts),
            "replica": replica, "done": done}  # fmt: skip


async def wave(port: int, streams: int, tag: str) -> dict[str, Any]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream(port, f"{tag}{i}") for i in range(streams)))
    gaps = [
        (b - a) * 1000 - DELAY * 1000
        for r in results
        for a, b in zip(r["times"], r["times"][1:], strict=False)
    ]
    replicas: dict[str, int] = {}
    for r in results:
        replicas[str(r["replica"])] = replicas.get(str(r["replica"]), 0) + 1
    return {
        "streams": streams,
        "ok": sum(r["done"] for r in results),
        "tokens": sum(len(r["times"]) for r in results),
        "extra_gap_ms_p50": percentile(gaps, 50),
        "extra_gap_ms_p99": percentile(gaps, 99),
        "seconds": time.perf_counter() - started,
        "replicas": replicas,
    }


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def replicas_part(db_url: str, levels: list[int], rounds: int) -> dict[str, Any]:
    """1 replica and 2 replicas, each behind its own nginx, all up at once; at each level the
    two are measured alternately, ``rounds`` times, and the medians kept."""
    out: dict[str, Any] = {"1": [], "2": []}
    with ExitStack() as stack:
        args = ("--model", MODEL, "--history", db_url, "--log-level", "error")
        servers = [stack.enter_context(serve(*args, "--replica", f"r{i}")) for i in range(3)]
        hosts = [s.url.removeprefix("http://") for s in servers]
        # the shipped conf has two upstream servers: the single replica is named twice
        fronts = {
            "1": (servers[:1], stack.enter_context(deployment.nginx([hosts[0], hosts[0]]))),
            "2": (servers[1:], stack.enter_context(deployment.nginx(hosts[1:]))),
        }
        for _, url in fronts.values():
            asyncio.run(wave(port_of(url), 20, "warm"))
        for streams in levels:
            measured: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
            for round_ in range(rounds):
                for count, (group, url) in fronts.items():
                    before = [cpu_seconds(s.process.pid) for s in group]
                    result = asyncio.run(wave(port_of(url), streams, f"n{streams}-{round_}-"))
                    result["server_cpu_s"] = sum(
                        cpu_seconds(s.process.pid) - b for s, b in zip(group, before, strict=True)
                    )
                    measured[count].append(result)
            for count, results in measured.items():
                summary = {
                    "streams": streams,
                    "rounds": rounds,
                    "ok": min(r["ok"] for r in results),
                    "extra_gap_ms_p50": median([r["extra_gap_ms_p50"] for r in results]),
                    "extra_gap_ms_p99": median([r["extra_gap_ms_p99"] for r in results]),
                    "server_cpu_s": median([r["server_cpu_s"] for r in results]),
                    "replicas": results[-1]["replicas"],
                    "runs": results,
                }
                out[count].append(summary)
                print(f"  {count} replica(s), {streams} streams: p99 extra "
                      f"{summary['extra_gap_ms_p99']:.1f} ms (median of {rounds}), "
                      f"{summary['ok']} ok, {summary['replicas']}", flush=True)  # fmt: skip
    return out


def history_part(db_url: str, tmp: Path, streams: int, rounds: int) -> dict[str, Any]:
    """Server CPU per token with history off, SQLite, PostgreSQL: A/B/C alternated."""
    samples: dict[str, list[float]] = {"off": [], "sqlite": [], "postgresql": []}
    pg_cpu: list[float] = []
    targets = {"off": None, "sqlite": str(tmp / "bench.db"), "postgresql": db_url}
    for round_ in range(rounds):
        for name, target in targets.items():
            args = ["--model", MODEL, "--log-level", "error"]
            if target:
                args += ["--history", target]
            with serve(*args) as server:
                port = port_of(server.url)
                asyncio.run(wave(port, 10, "warm"))
                before, pg_before = cpu_seconds(server.process.pid), postgres_cpu()
                result = asyncio.run(wave(port, streams, f"h{round_}{name}-"))
                used = cpu_seconds(server.process.pid) - before
                samples[name].append(used / max(1, result["tokens"]) * 1e6)
                if name == "postgresql":
                    pg_cpu.append((postgres_cpu() - pg_before) / max(1, result["tokens"]) * 1e6)
            print(f"  round {round_ + 1} {name}: {samples[name][-1]:.0f} µs/token", flush=True)
    return {
        "streams": streams,
        "rounds": rounds,
        "us_per_token": {k: median(v) for k, v in samples.items()},
        "samples": samples,
        "postgres_server_us_per_token": median(pg_cpu),
    }


async def killed_wave(url: str, pid: int, streams: int, rng: random.Random) -> list[dict]:
    port = port_of(url)
    tasks = [asyncio.create_task(one_stream(port, f"k{i}")) for i in range(streams)]
    await asyncio.sleep(rng.uniform(0.3, 1.6))  # a random point within the 2 s streams
    os.kill(pid, signal.SIGKILL)
    return await asyncio.gather(*tasks)


def loss_part(db_url: str, kills: int, streams: int) -> dict[str, Any]:
    """SIGKILL at random points: tokens received by clients but missing from PostgreSQL."""
    import psycopg

    rng = random.Random(17)
    out: dict[str, Any] = {}
    for mode in ("group", "strict"):
        worst, total, checked = 0, 0, 0
        for _ in range(kills):
            extra = ["--history-strict"] if mode == "strict" else []
            with psycopg.connect(db_url, autocommit=True) as db:
                db.execute("TRUNCATE messages, conversations")
            with serve("--model", MODEL, "--history", db_url, "--log-level", "error",
                       *extra) as server:  # fmt: skip
                results = asyncio.run(killed_wave(server.url, server.process.pid, streams, rng))
            with psycopg.connect(db_url, autocommit=True) as db:
                rows = db.execute(
                    "SELECT u.text, a.text FROM messages a JOIN messages u ON "
                    "u.conversation_id = a.conversation_id AND u.role = 'user' "
                    "WHERE a.role = 'assistant'"
                ).fetchall()
            stored = dict(rows)
            for r in results:
                if not r["text"]:
                    continue
                have = stored.get(r["prompt"], "")
                # tokens the client holds beyond what is stored (stored may run ahead: fine)
                missing = 0 if have.startswith(r["text"]) else _missing(r, have)
                worst, total, checked = max(worst, missing), total + missing, checked + 1
        out[mode] = {"kills": kills, "streams_checked": checked, "max_missing_tokens": worst,
                     "missing_tokens_total": total}  # fmt: skip
        print(f"  SIGKILL x{kills}, {mode}: worst {worst} tokens missing over {checked} "
              "streams", flush=True)  # fmt: skip
    return out


def _missing(result: dict, have: str) -> int:
    """How many of the client's text deltas the stored text lacks (it holds a prefix)."""
    assert result["text"].startswith(have), "the stored text is not what was sent"
    end, missing = 0, 0
    for part in result["parts"]:
        end += len(part)
        missing += end > len(have)
    return missing


def comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    one, two = data["replicas"]["1"], data["replicas"]["2"]
    for a, b in zip(one, two, strict=False):
        rows.append({
            "metric": f"p99 extra inter-token gap (ms), {a['streams']} streams via nginx",
            "unit": "ms", "baseline": "1 replica", "baseline_value": a["extra_gap_ms_p99"],
            "streamchat": "2 replicas", "streamchat_value": b["extra_gap_ms_p99"],
            "ratio": b["extra_gap_ms_p99"] / a["extra_gap_ms_p99"]
            if a["extra_gap_ms_p99"] > 0 else float("nan"),
            "better": "lower", "target_value": TARGET_EXTRA_MS,
        })  # fmt: skip
    cost = data["history"]["us_per_token"]
    for name in ("sqlite", "postgresql"):
        rows.append({
            "metric": f"server CPU per token (µs), history {name}", "unit": "µs",
            "baseline": "history off", "baseline_value": cost["off"],
            "streamchat": f"history {name}", "streamchat_value": cost[name],
            "ratio": cost[name] / cost["off"], "better": "lower",
        })  # fmt: skip
    rows.append({
        "metric": "server CPU per token (µs), PostgreSQL vs SQLite history", "unit": "µs",
        "baseline": "SQLite", "baseline_value": cost["sqlite"],
        "streamchat": "PostgreSQL", "streamchat_value": cost["postgresql"],
        "ratio": cost["postgresql"] / cost["sqlite"], "better": "lower",
        "target": TARGET_PG_OVER_SQLITE,
    })  # fmt: skip
    for mode, limit in (("group", 1), ("strict", 0)):
        loss = data["loss"][mode]
        rows.append({
            "metric": f"tokens received but not stored after SIGKILL (worst of "
                      f"{loss['streams_checked']} streams), {mode} commit",
            "unit": "tokens", "baseline": "promise", "baseline_value": limit,
            "streamchat": "measured", "streamchat_value": loss["max_missing_tokens"],
            "ratio": float("nan"), "better": "lower", "target_value": limit,
        })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", help="write the JSON here instead of results/scaleout.json")
    args = parser.parse_args()
    why = deployment.unavailable() or deployment.nginx_unavailable()
    if why:
        print(f"scaleout: skipped: {why}", file=sys.stderr)
        return 0
    levels = [50, 100] if args.quick else [100, 200, 400, 800]
    import tempfile

    with deployment.cluster() as db, tempfile.TemporaryDirectory() as tmp:
        print("replicas behind nginx:", flush=True)
        replicas = replicas_part(db.url, levels, 1 if args.quick else 3)
        print("history cost per token:", flush=True)
        history = history_part(db.url, Path(tmp), 50 if args.quick else 200,
                               1 if args.quick else 3)  # fmt: skip
        print("SIGKILL at random points:", flush=True)
        loss = loss_part(db.url, 2 if args.quick else 6, 20 if args.quick else 50)
    data = {
        "quick": args.quick,
        "delay_ms": DELAY * 1000,
        "target_extra_ms": TARGET_EXTRA_MS,
        "replicas": replicas,
        "history": history,
        "loss": loss,
        "machine": machine(),
    }
    data["comparisons"] = comparisons(data)
    print(f"wrote {write_json('scaleout', data, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
