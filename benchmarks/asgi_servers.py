"""The ASGI servers ``streamchat serve --http-server`` can run, side by side: start-up time (spawn
-> first ``/healthz`` answer, wall) and idle RSS, the servers' order rotating every round,
median [min–max] over the rounds.

``load.py --servers dual,hypercorn,granian,uvicorn`` measures them under load; this measures
what each costs before any request. Every side runs the scripted provider (no model to load).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from rich.console import Console
from rich.table import Table

from _common import compare, median, rotation, write_result
from load import server_rss_mb
from serving import serve
from streamchat.server.listen import SERVERS

BASELINE = "uvicorn"
RESULT_KEYS = ("rounds", "samples", "medians", "comparisons")
PACKAGES = ("uvicorn", "hypercorn", "granian", "h2", "starlette")


def one(server: str) -> dict[str, float]:
    started = time.perf_counter()
    with serve("--model", "scripted", "--http-server", server) as running:
        ready = time.perf_counter() - started
        time.sleep(1.0)  # let start-up allocations settle
        rss = server_rss_mb(running.process.pid)
    return {"start_s": ready, "idle_rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--json", help="output path (default results/asgi_servers.json)")
    args = parser.parse_args()
    servers = args.servers.split(",")
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for i in range(args.rounds):
        for name in rotation(servers, i):
            samples[name].append(one(name))
    medians = {
        name: {key: median([s[key] for s in got]) for key in ("start_s", "idle_rss_mb")}
        for name, got in samples.items()
    }
    table = Table(title=f"streamchat serve per ASGI server, {args.rounds} alternating rounds")
    for column in ("server", "start-up s (median)", "idle RSS MB (median)"):
        table.add_column(column, justify="right")
    for name, value in medians.items():
        table.add_row(name, f"{value['start_s']:.2f}", f"{value['idle_rss_mb']:.1f}")
    Console().print(table)
    compared = []
    if BASELINE in samples:
        base = samples[BASELINE]
        for name, got in samples.items():
            if name == BASELINE:
                continue
            for key, metric, unit in (("start_s", "start-up", "s wall"),
                                      ("idle_rss_mb", "idle RSS", "MB")):  # fmt: skip
                compared.append(compare(metric, unit, BASELINE, [s[key] for s in base], name,
                                        [s[key] for s in got], "lower"))  # fmt: skip
    data = {"rounds": args.rounds, "samples": samples, "medians": medians, "comparisons": compared}
    path = write_result("asgi_servers", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
