"""Clean venvs built from streamchat's wheel, for the tests of what an install holds
(tests/test_extras.py) and of the deployment image's install (tests/test_deploy_recipe.py).

A venv is cached in ``.venv-extras/`` keyed by the hash of ``pyproject.toml`` and its extras
(the first build downloads the dependencies, a few minutes); each session reinstalls only the
freshly built streamchat wheel into it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache import building

ROOT = Path(__file__).parent.parent
CACHE = ROOT / ".venv-extras"


def pyproject_key() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]


def build_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """streamchat's wheel, built from this work tree (a copy: the build leaves no files here)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("wheel")
    pip(sys.executable, "wheel", "--no-deps", "-w", str(out), str(tree))
    (built,) = out.glob("streamchat-*.whl")
    return built


def pip(python: str | Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "--quiet", *args], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr


def clean_venv(wheel: Path, extras: str) -> Path:
    """A venv with streamchat[extras] (``""``: the core install) and nothing else; the
    dependencies installed once per pyproject.toml, this wheel every time."""
    name = extras or "core"
    folder = CACHE / f"{pyproject_key()}-{name}"
    python = folder / "bin" / "python"
    with building(CACHE / name):  # one builder at a time (xdist workers)
        if not (folder / ".complete").exists():
            for old in CACHE.glob(f"*-{name}"):  # a previous pyproject's venv (or a broken one)
                shutil.rmtree(old, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
            pip(python, "install", f"{wheel}[{extras}]" if extras else str(wheel))
            (folder / ".complete").touch()
        pip(python, "install", "--no-deps", "--force-reinstall", str(wheel))
    return folder


def venv_run(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREAMCHAT_MODEL")}
    env["VIRTUAL_ENV"] = str(folder)
    return subprocess.run(
        [str(folder / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=folder,  # not the work tree: its src/ must not be what gets imported
    )
