"""Start-up cost of the library: ``import streamchat`` before and after the lean-install work
(issue 18: heavy modules imported on first use, target under 100 ms).

Two copies of the package side by side: *before* is ``src/`` of a baseline commit (``git
archive``, default :data:`BASELINE`, the tree before the work), *after* is this work tree's
``src/``. Each probe is a fresh interpreter of this venv with that ``src`` first on
``PYTHONPATH`` (ahead of the editable install), alternating before/after, ``--runs`` times:

- ``import streamchat`` — the package's cumulative time from ``python -X importtime``;
- ``+ Client()`` — import, then the first ``streamchat.Client()`` (what first use pays);
- ``+ first reply`` — import, ``Client()`` and a whole reply from the scripted model (the event
  loop, providers and stream helpers loaded);
- idle RSS — ``VmRSS`` of the process after ``import streamchat`` (and of bare ``python``),
  and after a first scripted reply;
- modules — how many modules ``import streamchat`` leaves in ``sys.modules``;
- ``streamchat ask --help`` — the CLI's whole process, wall clock.

Every figure is the median [min–max] over the runs (times are wall clock); every sample is in
the JSON file. ``--quick``: 3 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import compare, median, rotation, write_result

ROOT = Path(__file__).parent.parent
BASELINE = "fdde00d833697c2bbab0885af12c9214058256a5"  # main before issue 18's lean installs
TARGET_MS = 100.0
RESULT_KEYS = ("quick", "runs", "baseline_commit", "bare_python", "summary", "samples",
               "comparisons")  # fmt: skip

RSS = (
    "import sys\n"
    "{code}\n"
    "rss = next(l for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
    "print(int(rss.split()[1]), len(sys.modules))\n"
)
TIMED = "import time\nt = time.perf_counter()\n{code}\nprint((time.perf_counter() - t) * 1000)\n"
FIRST_USE = {
    "client": "import streamchat\nstreamchat.Client()",
    "reply": (
        "import streamchat\n"
        "streamchat.Client().messages.create(model='scripted', max_tokens=8,"
        " messages=[{'role': 'user', 'content': 'hi'}])"
    ),
}


def baseline_src(rev: str, into: Path) -> Path:
    """``src/`` of ``rev``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def python(src: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src) if src else ""}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True, cwd="/"
    )


def import_ms(src: Path) -> float:
    """Cumulative time of the ``streamchat`` line of ``-X importtime`` (ms)."""
    lines = python(src, "-X", "importtime", "-c", "import streamchat").stderr.splitlines()
    line = next(ln for ln in reversed(lines) if ln.rstrip().endswith("| streamchat"))
    return int(line.split("|")[1]) / 1000


def timed_ms(src: Path, code: str) -> float:
    return float(python(src, "-c", TIMED.format(code=code)).stdout.split()[-1])


def rss_and_modules(src: Path | None, code: str) -> tuple[float, int]:
    kb, modules = python(src, "-c", RSS.format(code=code)).stdout.split()
    return int(kb) / 1024, int(modules)


def cli_ms(src: Path) -> float:
    start = time.perf_counter()
    python(src, "-m", "streamchat.cli.main", "ask", "--help")
    return (time.perf_counter() - start) * 1000


def probe(src: Path) -> dict[str, float]:
    rss, modules = rss_and_modules(src, "import streamchat")
    return {
        "import_ms": import_ms(src),
        "client_ms": timed_ms(src, FIRST_USE["client"]),
        "reply_ms": timed_ms(src, FIRST_USE["reply"]),
        "rss_mb": rss,
        "rss_reply_mb": rss_and_modules(src, FIRST_USE["reply"])[0],
        "modules": modules,
        "cli_ms": cli_ms(src),
    }


LABELS = {  # key -> (metric, unit, target in unit or None)
    "import_ms": ("import streamchat (-X importtime)", "ms wall", TARGET_MS),
    "client_ms": ("import + first Client()", "ms wall", None),
    "reply_ms": ("import + Client() + first scripted reply", "ms wall", None),
    "rss_mb": ("idle RSS after import streamchat", "MB", None),
    "rss_reply_mb": ("RSS after a first scripted reply", "MB", None),
    "modules": ("modules in sys.modules after import", "modules", None),
    "cli_ms": ("streamchat ask --help, whole process", "ms wall", None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    parser.add_argument("--baseline", default=BASELINE, help="commit measured as 'before'")
    parser.add_argument("--json", help="write here instead of benchmarks/results/imports.json")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs

    with tempfile.TemporaryDirectory() as tmp:
        sides = {"before": baseline_src(args.baseline, Path(tmp)), "after": ROOT / "src"}
        for src in sides.values():  # compile the bytecode once, outside the measurements
            python(src, "-c", "import streamchat.cli.main, streamchat.client")
        samples: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for run in range(runs):
            for side in rotation(list(sides), run):
                samples[side].append(probe(sides[side]))
        bare_rss, bare_modules = rss_and_modules(None, "pass")

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for side, rows in samples.items():
        summary[side] = {key: {"median": median([r[key] for r in rows])} for key in LABELS}
    comparisons = []
    for key, (metric, unit, target) in LABELS.items():
        extra = {"target_value": target} if target is not None else {}
        comparisons.append(compare(
            metric, unit, f"before ({args.baseline[:7]})", [r[key] for r in samples["before"]],
            "after", [r[key] for r in samples["after"]], "lower", **extra))  # fmt: skip

    print(f"{'':60} {'before':>8} {'after':>8} {'ratio':>6}")
    for item in comparisons:
        print(
            f"{item['metric']:60} {item['baseline_value']:8.1f} "
            f"{item['streamchat_value']:8.1f} {item['ratio']:6.3f}"
        )
    print(f"bare python: RSS {bare_rss:.1f} MB, {bare_modules} modules")
    path = write_result(
        "imports",
        {
            "quick": args.quick,
            "runs": runs,
            "baseline_commit": args.baseline,
            "bare_python": {"rss_mb": bare_rss, "modules": bare_modules},
            "summary": summary,
            "samples": samples,
            "comparisons": comparisons,
        },
        keys=RESULT_KEYS,
        path=args.json,
    )
    print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({k: v["import_ms"] for k, v in summary.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
