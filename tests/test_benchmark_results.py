"""The published benchmark figures are what the scripts wrote: ``benchmarks/RESULTS.md`` is
``report.py``'s render of ``benchmarks/results/*.json``, each result file holds only the keys
its script declares (``RESULT_KEYS``) and carries the run's provenance, and the one writer
refuses anything else. Fast: no benchmark runs here.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
RESULTS = BENCHMARKS / "results"
sys.path.insert(0, str(BENCHMARKS))
import _common  # noqa: E402
import report  # noqa: E402

SCRIPTS = sorted(
    p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name != "report.py"
)
RESULT_FILES = sorted(RESULTS.glob("*.json"))


def declared_keys(script: Path) -> tuple[str, ...]:
    """The script's module-level ``RESULT_KEYS``, read without importing it."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "RESULT_KEYS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{script.name} declares no RESULT_KEYS")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_results_md_is_the_render_of_the_result_files() -> None:
    rendered = report.render(RESULTS)
    assert (BENCHMARKS / "RESULTS.md").read_text(encoding="utf-8") == rendered, (
        "RESULTS.md differs from report.py's render: run `python benchmarks/report.py`"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_declares_its_keys_and_writes_only_through_write_result(
    script: Path,
) -> None:
    source = script.read_text()
    assert declared_keys(script)
    assert "write_result(" in source
    assert not re.search(r"json\.dump\(|\.write_text\(|open\([^)]*['\"]w", source), (
        f"{script.name} writes a file other than through write_result"
    )


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_a_result_holds_only_its_scripts_keys_and_its_provenance(path: Path) -> None:
    data = load(path)
    script = BENCHMARKS / f"{data['benchmark']}.py"
    assert path.stem == data["benchmark"], "one result file per script, named after it"
    assert script in SCRIPTS
    assert set(data) - set(_common.STAMPED) <= set(declared_keys(script))
    prov = data["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git"]["commit"])
    assert isinstance(prov["git"]["dirty"], bool)
    assert prov["git"]["dirty"] == bool(prov["git"]["dirty_files"])
    assert prov["packages"]["streamchat"] and prov["packages"]["llama-cpp-python"]
    for key in ("cpu_model", "cores", "python", "command", "started", "finished"):
        assert prov[key], key
    assert len(prov["loadavg_start"]) == 3 and len(prov["loadavg_end"]) == 3
    assert "threads" in prov
    for name, facts in prov["baselines"].items():
        assert facts.get("version"), f"baseline {name} has no version"
    assert not data.get("quick"), "published results come from full runs, not --quick"


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_every_comparison_says_its_unit_and_has_repeats(path: Path) -> None:
    for row in load(path).get("comparisons", []):
        assert row.get("unit"), row["metric"]
        if "repeats" in row and row["unit"].split()[-1] in ("wall", "CPU"):
            assert row["repeats"] >= 3, f"{path.stem}: {row['metric']}: fewer than 3 repeats"


def test_write_result_refuses_undeclared_keys_and_stamps_provenance(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(ValueError, match="undeclared keys \\['notes'\\]"):
        _common.write_result("x", {"a": 1, "notes": []}, keys=("a",), path=target)
    with pytest.raises(ValueError, match="reserved"):
        _common.write_result("x", {"a": 1}, keys=("a", "provenance"), path=target)
    assert not target.exists()
    _common.write_result("x", {"a": 1}, keys=("a",), packages=("httpx",), threads=2, path=target)
    written = load(target)
    assert set(written) == {"benchmark", "when", "provenance", "a"}
    assert written["provenance"]["threads"] == 2
    assert written["provenance"]["packages"]["httpx"]
