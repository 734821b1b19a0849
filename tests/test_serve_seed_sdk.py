"""The seed-era SDK (``anthropic[bedrock]==0.40.0``, which still sends ``temperature``) as judge.

It lives in its own small venv of clients only, ``.venv-seed/`` at the repository root, made once
and reused; the server still runs from the main venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from cache import building
from serving import Server, received, serve

SEED_SDK = "anthropic[bedrock]==0.40.0"
SEED_VERSION = "0.40.0"
ROOT = Path(__file__).resolve().parents[1]
SEED_VENV = ROOT / ".venv-seed"
CLIENT_SCRIPT = Path(__file__).with_name("seed_sdk_client.py")
TEXT = "Orchids bloom in quiet light, patient and precise."
WORDS = 8


def seed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [python, "-c", "import anthropic; print(anthropic.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.fixture(scope="session")
def seed_python() -> Path:
    python = SEED_VENV / "bin" / "python"
    with building(SEED_VENV):
        if seed_version(python) == SEED_VERSION:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", SEED_VENV], check=True)
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", SEED_SDK],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if install.returncode != 0:
            tail = (install.stderr or install.stdout).strip().splitlines()[-3:]
            pytest.skip(f"pip could not install {SEED_SDK}: {' | '.join(tail)}")
        assert seed_version(python) == SEED_VERSION
        return python


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seed") / "requests.jsonl"


@pytest.fixture(scope="module")
def server(record: Path) -> Iterator[Server]:
    spec = "scripted?" + urlencode({"text": TEXT, "delay": 0.03, "record": str(record)})
    with serve("--model", spec) as running:
        yield running


def test_seed_sdk_runs_the_notebook_cells(seed_python: Path, server: Server, record: Path) -> None:
    run = subprocess.run(
        [seed_python, CLIENT_SCRIPT, server.url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["version"] == SEED_VERSION

    created = report["create"]
    assert created == {
        "text": TEXT,
        "output_tokens": WORDS,
        "model": "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "stop_reason": "end_turn",
    }
    first = received(record)[0]
    assert first["temperature"] == 0.0  # the seed SDK's temperature reached the provider

    stream = report["stream"]
    assert stream["types"][0] == "message_start" and stream["types"][-1] == "message_stop"
    assert "".join(stream["texts"]) == TEXT and len(stream["texts"]) == WORDS
    assert stream["output_tokens"] == WORDS
    assert 0 < stream["ttft"] < stream["total_time"]

    helpers = report["helpers"]
    assert "".join(helpers["pieces"]) == TEXT
    assert helpers["final"]["content"] == [{"type": "text", "text": TEXT}]
    assert helpers["final"]["usage"]["output_tokens"] == WORDS
    assert report["sync_helpers"] == {"final_text": "Orchids bloom in", "stop": "max_tokens"}

    on_bedrock = report["bedrock"]  # the same cells through the seed-era AnthropicBedrock
    assert on_bedrock["create"] == created
    assert "".join(on_bedrock["stream"]["texts"]) == TEXT
    assert on_bedrock["stream"]["types"][-1] == "message_stop"
    assert on_bedrock["stream"]["output_tokens"] == WORDS
    assert on_bedrock["helpers"]["final"]["content"] == [{"type": "text", "text": TEXT}]
