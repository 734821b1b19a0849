"""Render ``benchmarks/RESULTS.md`` from ``benchmarks/results/*.json``: one table per benchmark.

Each row puts a baseline beside streamchat with the ratio streamchat ÷ baseline. A result file
may carry its rows ready-made under ``"comparisons"`` (and tables of its own under ``"tables"``,
remarks under ``"notes"``), a list of::

    {"metric": str, "unit": str, "baseline": str, "baseline_value": float,
     "streamchat": str, "streamchat_value": float, "ratio": float,
     "better": "lower" | "higher", "target": float | null (optional),
     "target_value": float (optional: a target for streamchat_value itself, in unit)}

Files without that key are read by an adapter for their benchmark (providers, overhead, load)
or, failing that, from any ``summary`` entries that carry a ``ratio``. Run by ``make bench``
after the scripts; ``python benchmarks/report.py`` re-renders without re-measuring.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
Row = dict[str, Any]


def row(metric: str, baseline: str, base: float, ours_name: str, ours: float, **extra: Any) -> Row:
    ratio = ours / base if base else math.nan
    return {
        "metric": metric,
        "baseline": baseline,
        "baseline_value": base,
        "streamchat": ours_name,
        "streamchat_value": ours,
        "ratio": ratio,
        **extra,
    }


def from_providers(data: dict[str, Any]) -> Iterator[Row]:
    for sdk, numbers in data.get("summary", {}).items():
        yield row(f"CPU per token (µs), {sdk}", "raw SDK stream", numbers["raw_us"],
                  "streamchat provider", numbers["streamchat_us"], better="lower",
                  target=data.get("target"))  # fmt: skip


def from_overhead(data: dict[str, Any]) -> Iterator[Row]:
    summary = data.get("in_process", {}).get("summary", {})
    targets = data.get("targets", {})
    for key, stats in summary.items():
        if not isinstance(stats, dict) or " / " not in key or key.endswith(" / raw"):
            continue
        label, side = key.rsplit(" / ", 1)
        base = summary.get(f"{label} / raw", {}).get("median")
        if base is None:
            continue
        scale = 1000 if "(ms)" in label else 1  # seconds in the file, ms in the label
        lower = "TTFT" in label
        target = targets.get("ttft_ratio_max" if lower else "tps_ratio_min")
        yield row(label, "raw llama-cpp-python", base * scale, side, stats["median"] * scale,
                  better="lower" if lower else "higher", target=target)  # fmt: skip
    whole = data.get("whole_process", {}).get("summary", {})
    ours, theirs = whole.get("streamchat ask"), whole.get("llm -m SmolLM2")
    if ours and theirs:
        for key, label in (("first_byte", "CLI first byte (ms)"), ("exit", "CLI exit (ms)")):
            yield row(label, "llm -m SmolLM2", theirs[key]["median"] * 1000, "streamchat ask",
                      ours[key]["median"] * 1000, better="lower")  # fmt: skip


def from_load(data: dict[str, Any]) -> Iterator[Row]:
    delay_ms = data.get("delay", 0) * 1000
    for wave in data.get("waves", []):
        name = f"{wave['protocol']}, {wave.get('ok')}/{wave.get('streams')} streams ok"
        yield row(f"inter-token gap p50 (ms), {name}", "scripted delay", delay_ms,
                  "seen by clients", wave["gap_ms_p50"], better="lower")  # fmt: skip
        yield row(f"inter-token gap p99 (ms), {name}", "scripted delay", delay_ms,
                  "seen by clients", delay_ms + wave["extra_gap_ms_p99"], better="lower",
                  target=1 + data.get("target_p99_extra_ms", math.nan) / delay_ms)  # fmt: skip


def from_summary(data: dict[str, Any]) -> Iterator[Row]:
    """Whatever ``summary`` entries state a ratio, with the two numbers beside it if found."""
    for key, value in (data.get("summary") or {}).items():
        if isinstance(value, dict) and isinstance(value.get("ratio"), int | float):
            numbers = [v for k, v in value.items() if k != "ratio" and isinstance(v, int | float)]
            base, ours = [*numbers, math.nan, math.nan][:2]
            yield row(key, "baseline", base, "streamchat", ours)


ADAPTERS: dict[str, Callable[[dict[str, Any]], Iterator[Row]]] = {
    "providers": from_providers,
    "overhead": from_overhead,
    "load": from_load,
}


def rows_of(name: str, data: dict[str, Any]) -> list[Row]:
    if "comparisons" in data:
        return list(data["comparisons"])
    try:
        return list(ADAPTERS.get(name, from_summary)(data))
    except (KeyError, TypeError, ZeroDivisionError):  # a format this report does not know yet
        return list(from_summary(data))


def number(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def ratio_text(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "—"
    return f"{value:.3f}"


def verdict(item: Row) -> str:
    absolute, ours = item.get("target_value"), item.get("streamchat_value")
    if isinstance(absolute, int | float) and isinstance(ours, int | float):  # a target in units
        ok = ours <= absolute if item.get("better") == "lower" else ours >= absolute
        sign = "≤" if item.get("better") == "lower" else "≥"
        return f"{sign} {absolute:g} {item.get('unit', '')}: {'met' if ok else 'missed'}"
    target, ratio, better = item.get("target"), item.get("ratio"), item.get("better")
    if not isinstance(target, int | float) or not isinstance(ratio, int | float) or not better:
        return ""
    ok = ratio <= target if better == "lower" else ratio >= target
    return f"{'≤' if better == 'lower' else '≥'} {target:.2f}: {'met' if ok else 'missed'}"


def describe_machine(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "machine not recorded"
    load = machine.get("loadavg_start")
    load_text = f", load {load[0]:.2f} at start" if load else ""
    return (
        f"{machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, Python "
        f"{machine.get('python', '?')}, {machine.get('platform', '?')}{load_text}"
    )


def section(name: str, data: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    facts = [f"`benchmarks/{name}.py`", f"run {data['when']}"]
    if data.get("quick"):
        facts.append("`--quick`")
    lines += [" · ".join(facts), "", f"Machine: {describe_machine(data.get('machine'))}", ""]
    lines += [*(f"{note}\n" for note in data.get("notes", []))]  # the run's own remarks
    rows = rows_of(name, data)
    if not rows:
        return [*lines, "No comparison in this result; see its JSON file.", "", *tables(data)]
    lines += [
        "| metric | baseline | baseline value | streamchat | streamchat value "
        "| ratio (streamchat ÷ baseline) | better | target |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for item in rows:
        cells = [
            item["metric"],
            item["baseline"],
            number(item["baseline_value"]),
            item["streamchat"],
            number(item["streamchat_value"]),
            ratio_text(item.get("ratio")),
            item.get("better", ""),
            verdict(item),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return [*lines, "", *tables(data)]


def tables(data: dict[str, Any]) -> list[str]:
    """A result's own tables (``"tables": [{"title", "columns", "rows"}]``), as they are."""
    lines: list[str] = []
    for spec in data.get("tables", []):
        lines += [f"**{spec['title']}**", "", "| " + " | ".join(spec["columns"]) + " |",
                  "|" + "---|" * len(spec["columns"])]  # fmt: skip
        for cells in spec["rows"]:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return lines


def render(results: Path) -> str:
    files = sorted(p for p in results.glob("*.json"))
    loaded = []
    for path in files:
        data = json.loads(path.read_text())
        # Not every script stamps its file: the file's own time stands in.
        data.setdefault(
            "when", time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))
        )
        loaded.append((path.stem, data))
    newest = max(loaded, key=lambda item: item[1].get("when", ""), default=(None, {}))[1]
    lines = [
        "# Benchmark results",
        "",
        "Rendered by `benchmarks/report.py` from `benchmarks/results/*.json` (`make bench`; "
        "`make bench BENCH_ARGS=--quick` for a smoke run). Ratios are streamchat ÷ baseline, "
        "measured side by side in one run; the machine is shared, so compare ratios, not times.",
        "",
        f"Latest machine: {describe_machine(newest.get('machine'))}",
        "",
    ]
    for name, data in loaded:
        lines += section(data.get("benchmark", name), data)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    args.out.write_text(render(args.results), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
