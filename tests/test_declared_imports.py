"""Every module src/streamchat imports is the standard library's, streamchat's own, or a
dependency pyproject.toml declares (core or an extra): an undeclared one installs here, as some
declared package's dependency, and breaks a fresh install once that package drops it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCE = ROOT / "src" / "streamchat"
# imported without being declared, and why that is right
EXEMPT = {"pytest": "the pytest plugin (testing/plugin.py) is only ever loaded by pytest"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Distribution names of the core install and every extra but ``dev``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"]]
    requirements += [r for extra, rs in extras.items() if extra != "dev" for r in rs]
    names = {normalized(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}
    return names - {"streamchat"}


def imported() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in src/streamchat -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("streamchat", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    wanted = declared()
    undeclared = {}
    for module, files in imported().items():
        if module in EXEMPT:
            continue
        providers = {normalized(d) for d in distributions.get(module, [])}
        if not providers & wanted:
            undeclared[module] = (sorted(providers) or "not installed", sorted(files))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_scan_sees_the_imports() -> None:
    """The check above reads real imports, nested ones included (extras import lazily)."""
    found = imported()
    assert {"starlette", "llama_cpp", "priority", "psycopg", "granian"} <= set(found)
    assert "src/streamchat/server/http2.py" in found["priority"]
