"""Scale-out: 1 replica vs 2 behind nginx, and what the history costs per token.

Everything on this machine's loopback, on the scripted provider at 50 ms per token (the model
costs nothing, so what is measured is streamchat, nginx and the database):

1. **Replicas.** N concurrent streams through nginx (deploy/nginx.conf) to 1 replica and to
   2, measured alternately at each N (who goes first swaps every round; median [min–max] over
   rounds): the p99 of each inter-token gap beyond the model's 50 ms as clients see it, wall
   time (target ≤ 100 ms). The client is a small
   raw-socket asyncio reader, so that it takes as little of the two cores as possible.
2. **History cost per token.** One replica, N streams, history off / SQLite / PostgreSQL, the
   order rotating every round: CPU time (user + system, from /proc) per token delivered, median
   [min–max] over rounds. The PostgreSQL side counts the streamchat process and the PostgreSQL
   processes (the backends doing its writes) together, as SQLite's work is inside the
   streamchat process; the streamchat process alone is reported beside it. Target: PostgreSQL
   ≤ 1.10 × SQLite.
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
from _common import (  # noqa: E402
    compare,
    median,
    percentile,
    record_baseline,
    rotation,
    spread,
    tool_version,
    write_result,
)
from streamchat.testing.process import HOST, serve  # noqa: E402

RESULT_KEYS = ("quick", "delay_ms", "target_extra_ms", "replicas", "history", "loss",
               "comparisons")  # fmt: skip
PACKAGES = ("psycopg", "uvicorn")
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


def postgres_cpu(data_dir: Path) -> float:
    """CPU of the cluster's postmaster and its processes (backends that exited are in the
    postmaster's reaped-children time), not of any other PostgreSQL on the machine."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = Path(proc, "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == postmaster:
                    total += cpu_seconds(int(proc.name))
            except (OSError, ValueError):
                continue
    return total


async def one_stream(port: int, prompt: str, max_tokens: int = 1000) -> dict:
    """POST one Anthropic stream over a raw socket; the arrival time of every text delta."""
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": max_tokens,
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
                for count in rotation(list(fronts), round_):
                    group, url = fronts[count]
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
                    "extra_gap_ms_p99_runs": [r["extra_gap_ms_p99"] for r in results],
                    "server_cpu_s": median([r["server_cpu_s"] for r in results]),
                    "replicas": results[-1]["replicas"],
                    "runs": results,
                }
                out[count].append(summary)
                print(f"  {count} replica(s), {streams} streams: p99 extra "
                      f"{summary['extra_gap_ms_p99']:.1f} ms (median of {rounds}), "
                      f"{summary['ok']} ok, {summary['replicas']}", flush=True)  # fmt: skip
    return out


def history_part(
    db_url: str, data_dir: Path, tmp: Path, streams: int, rounds: int
) -> dict[str, Any]:
    """CPU per token with history off, SQLite, PostgreSQL, the order rotating every round."""
    own: dict[str, list[float]] = {"off": [], "sqlite": [], "postgresql": []}
    total: dict[str, list[float]] = {"off": [], "sqlite": [], "postgresql": []}
    targets = {"off": None, "sqlite": str(tmp / "bench.db"), "postgresql": db_url}
    for round_ in range(rounds):
        for name in rotation(list(targets), round_):
            args = ["--model", MODEL, "--log-level", "error"]
            if targets[name]:
                args += ["--history", targets[name]]
            with serve(*args) as server:
                port = port_of(server.url)
                asyncio.run(wave(port, 10, "warm"))
                before, pg_before = cpu_seconds(server.process.pid), postgres_cpu(data_dir)
                result = asyncio.run(wave(port, streams, f"h{round_}{name}-"))
                used = cpu_seconds(server.process.pid) - before
                pg_used = postgres_cpu(data_dir) - pg_before if name == "postgresql" else 0.0
                tokens = max(1, result["tokens"])
                own[name].append(used / tokens * 1e6)
                total[name].append((used + pg_used) / tokens * 1e6)
            print(f"  round {round_ + 1} {name}: {total[name][-1]:.0f} µs/token "
                  f"(streamchat process {own[name][-1]:.0f})", flush=True)  # fmt: skip
    return {
        "streams": streams,
        "rounds": rounds,
        "us_per_token": {k: spread(v) for k, v in total.items()},
        "samples": total,
        "streamchat_process_samples": own,
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
                db.execute("TRUNCATE message_deltas, messages, conversations")
            with serve("--model", MODEL, "--history", db_url, "--log-level", "error",
                       *extra) as server:  # fmt: skip
                results = asyncio.run(killed_wave(server.url, server.process.pid, streams, rng))
            with psycopg.connect(db_url, autocommit=True) as db:
                rows = db.execute(
                    "SELECT u.text, a.text || coalesce((SELECT string_agg(d.text, '' ORDER "
                    "BY d.seq) FROM message_deltas d WHERE d.message_id = a.id), '') "
                    "FROM messages a JOIN messages u ON "
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
        rows.append(compare(
            f"p99 extra inter-token gap, {a['streams']} streams via nginx", "ms wall",
            "1 replica", a["extra_gap_ms_p99_runs"], "2 replicas", b["extra_gap_ms_p99_runs"],
            "lower", target_value=TARGET_EXTRA_MS))  # fmt: skip
    runs = data["history"]["samples"]
    for name in ("sqlite", "postgresql"):
        rows.append(compare(f"CPU per token, history {name}", "µs CPU", "history off",
                            runs["off"], f"history {name}", runs[name], "lower"))  # fmt: skip
    rows.append(compare(
        "CPU per token, PostgreSQL (streamchat + PostgreSQL processes) vs SQLite history",
        "µs CPU", "SQLite", runs["sqlite"], "PostgreSQL", runs["postgresql"], "lower",
        target=TARGET_PG_OVER_SQLITE))  # fmt: skip
    own = data["history"]["streamchat_process_samples"]
    rows.append(compare(
        "CPU per token, streamchat process alone, PostgreSQL vs SQLite history", "µs CPU",
        "SQLite", own["sqlite"], "PostgreSQL", own["postgresql"], "lower"))  # fmt: skip
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

    record_baseline("nginx", version=tool_version([deployment.NGINX, "-v"]),
                    binary=deployment.NGINX, config="deploy/nginx.conf")  # fmt: skip
    record_baseline("PostgreSQL", version=tool_version([str(deployment.BIN / "postgres"),
                    "--version"]), binary=str(deployment.BIN / "postgres"))  # fmt: skip
    with deployment.cluster() as db, tempfile.TemporaryDirectory() as tmp:
        print("replicas behind nginx:", flush=True)
        replicas = replicas_part(db.url, levels, 1 if args.quick else 3)
        print("history cost per token:", flush=True)
        history = history_part(db.url, db.directory / "data", Path(tmp), 50 if args.quick else 200,
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
    }
    data["comparisons"] = comparisons(data)
    path = write_result("scaleout", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
