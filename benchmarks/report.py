"""Render ``benchmarks/RESULTS.md`` from ``benchmarks/results/*.json``: one section per benchmark.

It only reads: every figure comes from a result file its script wrote through
``_common.write_result`` (provenance included). A result carries its rows under
``"comparisons"``, a list of::

    {"metric": str, "unit": str, "baseline": str, "baseline_value": float,
     "baseline_range": [min, max] (optional), "streamchat": str, "streamchat_value": float,
     "streamchat_range": [min, max] (optional), "repeats": int (optional), "ratio": float,
     "better": "lower" | "higher", "target": float (optional: for the ratio),
     "target_value": float (optional: for streamchat_value itself, in unit)}

and may add tables of its own under ``"tables"`` (``[{"title", "columns", "rows"}]``) and
remarks it computed under ``"remarks"`` (a list of sentences). Run by ``make bench`` after the
scripts; ``python benchmarks/report.py`` re-renders without re-measuring, and
``tests/test_benchmark_results.py`` checks that RESULTS.md is this render.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
Row = dict[str, Any]


def number(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def value_text(item: Row, side: str) -> str:
    """The median, and its min–max over the repeats when the row has them."""
    text = number(item.get(f"{side}_value"))
    low_high = item.get(f"{side}_range")
    if isinstance(low_high, list) and len(low_high) == 2 and low_high[0] != low_high[1]:
        text += f" [{number(low_high[0])}–{number(low_high[1])}]"
    return text


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
    if math.isnan(ratio):
        return f"{'≤' if better == 'lower' else '≥'} {target:.2f}: not measured"
    ok = ratio <= target if better == "lower" else ratio >= target
    return f"{'≤' if better == 'lower' else '≥'} {target:.2f}: {'met' if ok else 'missed'}"


def describe(prov: dict[str, Any]) -> list[str]:
    """The provenance, in a few lines."""
    git = prov.get("git", {})
    dirty = git.get("dirty_files") or []
    state = f"{git.get('commit', '?')[:12]}" + (
        f" + {len(dirty)} uncommitted file(s): {', '.join(dirty[:6])}"
        + (" …" if len(dirty) > 6 else "")
        if dirty
        else " (clean)"
    )
    load = prov.get("loadavg_start", [math.nan]), prov.get("loadavg_end", [math.nan])
    packages = ", ".join(f"{k} {v}" for k, v in prov.get("packages", {}).items() if v)
    lines = [
        f"Commit {state}. Command: `{prov.get('command', '?')}`",
        f"Machine: {prov.get('cpu_model', '?')}, {prov.get('cores', '?')} cores, Python "
        f"{prov.get('python', '?')}; load average {load[0][0]:.2f} at start, {load[1][0]:.2f} "
        f"at end; run {prov.get('started', '?')} → {prov.get('finished', '?')}"
        + (f"; threads: {json.dumps(prov['threads'])}" if prov.get("threads") is not None else ""),
        f"Packages: {packages}",
    ]
    if prov.get("llama_cpp_system_info"):
        lines.append(f"llama-cpp-python's llama.cpp: `{prov['llama_cpp_system_info']}`")
    for name, facts in prov.get("baselines", {}).items():
        details = "; ".join(f"{k}: `{v}`" for k, v in facts.items())
        lines.append(f"Baseline {name}: {details}")
    return [f"- {line}" for line in lines]


def section(name: str, data: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", "", f"`benchmarks/{name}.py` · written {data['when']}", ""]
    lines += [*describe(data["provenance"]), ""]
    lines += [*(f"{remark}\n" for remark in data.get("remarks", []))]  # computed by the script
    rows = data.get("comparisons", [])
    if rows:
        lines += [
            "| metric | unit | baseline | baseline median [min–max] | streamchat "
            "| streamchat median [min–max] | n | ratio of medians (streamchat ÷ baseline) "
            "| better | target |",
            "|---|---|---|---:|---|---:|---:|---:|---|---|",
        ]
        for item in rows:
            cells = [
                item["metric"],
                item.get("unit", ""),
                item["baseline"],
                value_text(item, "baseline"),
                item["streamchat"],
                value_text(item, "streamchat"),
                item.get("repeats", ""),
                ratio_text(item.get("ratio")),
                item.get("better", ""),
                verdict(item),
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return [*lines, *tables(data)]


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
    loaded = [(p.stem, json.loads(p.read_text())) for p in sorted(results.glob("*.json"))]
    lines = [
        "# Benchmark results",
        "",
        "Rendered by `benchmarks/report.py` from `benchmarks/results/*.json`, which the scripts "
        "alone write (`make bench` runs them all with their defaults, then this). Each section "
        "says where it ran (commit, packages, baselines, load). Values are medians over the "
        "repeats with [min–max]; sides alternate; units say wall or CPU time; ratios are "
        "streamchat ÷ baseline of the medians, measured side by side in one run. The machine "
        "is shared, so compare ratios, not times. What each table means: "
        "`benchmarks/README.md`.",
        "",
    ]
    scripts = sorted(
        p.stem
        for p in results.parent.glob("*.py")
        if not p.name.startswith("_") and p.name != "report.py"
    )
    missing = [name for name in scripts if name not in {stem for stem, _ in loaded}]
    if missing:
        lines += [
            "Not in this render (no result file; `make bench` writes one): "
            + ", ".join(f"`{name}.py`" for name in missing)
            + ".",
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
