"""A coding agent no one here wrote against ``streamchat serve``: Claude Code, headless
(``claude -p``), from the npm registry (pinned, cached in ``tests/.claude-code``), with only
``ANTHROPIC_BASE_URL`` pointing at the server (issue 22).

Its request carries ~24 tools whose JSON Schema 2020-12 (2**53 bounds, ``exclusiveMinimum``,
``propertyNames``, ``anyOf``, ``const``, ``format``, ``pattern``...) the real API accepts. With the
scripted model it completes; with the embedded model it ends with the API's own "prompt is too
long" (its ~20k-token request exceeds the model's window), never a schema error; and calls forced
under its real tools' schemas validate against them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from cache import npm_folder
from serving import received, recording, serve_in_thread
from streamchat.providers.grammar import compile_schema
from streamchat.providers.local import LocalProvider
from streamchat.server.common import ServerConfig
from test_schemas import GENERATES_A_LOT, check_calls, cost, cover, forced_calls

PACKAGE = "@anthropic-ai/claude-code@2.1.197"
# Calls forced here stay under this budget: a schema of arrays of objects of 96-character
# strings (ReportFindings: 60k tokens at most) takes the 135M model minutes to fill, and what it
# uses (arrays, bounds, enums) test_schemas.py covers.
AFFORDABLE = 20_000
FOLDER = Path(__file__).parent / ".claude-code"  # ignored by git
REPLY = "Hello from streamchat"


@pytest.fixture(scope="module")
def claude() -> list[str]:
    """The command that runs Claude Code (its launcher finds the platform's native binary)."""
    npm_folder(FOLDER, [PACKAGE], "to run Claude Code")
    wrapper = FOLDER / "node_modules" / "@anthropic-ai" / "claude-code" / "cli-wrapper.cjs"
    return ["node", str(wrapper)]


def run_claude(claude: list[str], url: str, home: Path, *arguments: str) -> dict:
    """``claude -p`` with JSON output, offline but for ``url``; its result object."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "test",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [*claude, "-p", "Say hi", "--output-format", "json", *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=240,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from claude (exit {result.returncode}):\n{result.stderr[-2000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def agent_tools(claude: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Claude Code completes on the scripted model; the tools its request carried."""
    folder = tmp_path_factory.mktemp("claude-code")
    record = folder / "requests.jsonl"
    config = ServerConfig(default_model=recording(record, text=REPLY))
    with serve_in_thread(config) as url:
        result = run_claude(claude, url, folder / "home")
    assert result["is_error"] is False and result["result"] == REPLY
    requests = received(record)
    tools = max((r.get("tools") or [] for r in requests), key=len)
    assert len(tools) >= 10
    return tools


def test_claude_code_completes_on_the_scripted_model(agent_tools: list[dict]) -> None:
    for tool in agent_tools:
        jsonschema.validators.validator_for(tool["input_schema"]).check_schema(
            tool["input_schema"]
        )  # what the real API accepts: valid schemas


@pytest.mark.model
def test_claude_code_on_the_embedded_model_ends_with_prompt_too_long(
    claude: list[str], agent_tools: list[dict], local_model: LocalProvider, tmp_path: Path
) -> None:
    with serve_in_thread(ServerConfig()) as url:
        result = run_claude(claude, url, tmp_path / "home")
    assert result["is_error"] is True
    text = json.dumps(result).lower()
    assert "prompt is too long" in text and "schema" not in text


@pytest.mark.model
@GENERATES_A_LOT
def test_calls_under_claude_codes_own_tool_schemas_validate(
    agent_tools: list[dict], local_model: LocalProvider
) -> None:
    tools = {tool["name"]: tool["input_schema"] for tool in agent_tools}
    for name, schema in tools.items():
        compile_schema(schema, name)  # every one accepted
    chosen = cover({name: schema for name, schema in tools.items() if cost(schema) <= AFFORDABLE})
    check_calls(chosen, forced_calls(chosen))
