"""Every example in the README and the docs runs, so none can rot (issue 18).

- Fenced ``python`` blocks run page by page, in order, in one namespace (a page reads as one
  script), against the embedded model, the scripted provider, or a ``streamchat serve``
  standing in for the cloud services: its URL replaces ``http://127.0.0.1:8080``, and
  ``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL``, ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` and dummy
  credentials point at it. Top-level ``await`` runs on a fresh event loop.
- ``js`` blocks run with node and the official JavaScript SDKs, installed once into a cache
  folder (skipped, saying so, where node or npm is missing).
- Each ``streamchat ...`` line of a ``sh`` block is parsed by the real CLI parser (and a
  ``serve`` line's test-bench options checked); ``ask``, ``history`` and ``bench`` lines run
  for real (``ask`` with ``--max-tokens 32`` unless it sets one, to keep the suite quick),
  except those naming a ``--base-url`` other than the stand-in's. Usage synopses
  (``[--flag]``, ``a | b``) are not commands and are left out.
- A comment right above a block changes what happens to it, visibly in the page's source:
  ``<!-- example: skip REASON -->`` (a reason is required), ``<!-- example: file NAME -->``
  (written to NAME for later blocks to import), ``<!-- example: pytest NAME -->`` (written to
  NAME and run as a test file in its own pytest process, where the plugin finds it).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache import building
from streamchat.cli import testbench
from streamchat.cli.main import build_parser
from streamchat.testing import StreamchatServer, start_server

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
STAND_IN = "http://127.0.0.1:8080"  # where the examples say `streamchat serve` listens
STAND_IN_MODEL = 'scripted?tool_input={"city": "Paris"}&thinking=Let me check.'
SHELL = ("sh", "bash", "shell", "console")
RUN_COMMANDS = ("ask", "history", "bench")
ASK_TOKENS = "32"
JS_PACKAGES = [  # the official JavaScript SDKs, by major version
    "@anthropic-ai/sdk@1",
    "openai@7",
    "@aws-sdk/client-bedrock-runtime@3",
]
_FENCE = re.compile(r"^( *)(`{3,})\s*([\w+-]*)")  # indented in a list item too
_DIRECTIVE = re.compile(r"^<!--\s*example:\s*(skip|file|pytest)\b\s*(.*?)\s*-->$")

# README blocks known to be wrong (README.md is the lead's): each must still fail, so that a
# fix shows up here as a failure asking for its entry to be removed.
KNOWN_BROKEN: dict[str, str] = {}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    code: str
    directive: str = ""  # skip, file, pytest
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the directive comment above each."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang, start = len(match[1]), match[2], match[3].lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        directive = _DIRECTIVE.match(above.strip())
        kind, argument = directive.groups() if directive else ("", "")
        found.append(Block(page, start + 1, lang, "\n".join(body) + "\n", kind, argument))
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [page for page in PAGES if any(b.lang == "python" for b in blocks(page))]
JS_BLOCKS = [b for page in PAGES for b in blocks(page) if b.lang in ("js", "javascript")]
RUNNABLE_JS_BLOCKS = [b for b in JS_BLOCKS if b.directive != "skip"]


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StreamchatServer]:
    """The cloud services, played by a scripted ``streamchat serve`` (faults by header)."""
    with start_server(model=STAND_IN_MODEL, faults="none") as server:
        yield server


@pytest.fixture
def stand_in_env(stand_in: StreamchatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stand_in.env.items():
        monkeypatch.setenv(name, value)


def run_python(code: str, namespace: dict, where: str) -> None:
    """``exec`` one block; a block with top-level ``await`` runs on a fresh event loop."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compiled = compile(code, where, "exec", flags=flags)
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))
    else:
        exec(compiled, namespace)


def run_pytest_file(block: Block, folder: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.argument],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=280,
    )
    summary = result.stdout.strip().splitlines()[-1:] or [""]
    assert result.returncode == 0 and " passed" in summary[0], (
        f"{block.where}: its tests failed:\n{result.stdout}\n{result.stderr}"
    )


@pytest.mark.model
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_id)
def test_python_examples_run(
    page: Path,
    stand_in: StreamchatServer,
    stand_in_env: None,
    local_model: object,
    fresh_providers: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for block in blocks(page):
        if block.lang != "python":
            continue
        if block.directive == "skip":
            continue
        code = block.code.replace(STAND_IN, stand_in.url)
        if block.directive in ("file", "pytest"):
            (tmp_path / block.argument).write_text(code, encoding="utf-8")
            if block.directive == "pytest":
                run_pytest_file(block, tmp_path)
                ran += 1
            continue
        known = next((why for key, why in KNOWN_BROKEN.items() if key in block.code), None)
        with contextlib.redirect_stdout(io.StringIO()):
            if known is not None:
                with pytest.raises(Exception):  # noqa: B017 - any failure: see KNOWN_BROKEN
                    run_python(code, namespace, block.where)
                continue
            try:
                run_python(code, namespace, block.where)
            except Exception as error:
                raise AssertionError(f"{block.where}: the example failed: {error!r}") from error
        ran += 1
    assert ran, f"{page_id(page)}: no example ran"


# -- JavaScript ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def js_folder() -> Path:
    """A folder with the official JavaScript SDKs installed (cached across runs)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the JavaScript examples")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "streamchat-tests" / "js"
    marker = folder / ".installed"
    with building(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists() or marker.read_text() != " ".join(JS_PACKAGES):
            command = ["npm", "install", "--no-audit", "--no-fund", "--silent", *JS_PACKAGES]
            result = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                                    timeout=280)  # fmt: skip
            assert result.returncode == 0, f"npm install failed:\n{result.stderr}"
            marker.write_text(" ".join(JS_PACKAGES))
    return folder


def test_every_example_left_out_says_why() -> None:
    """``<!-- example: skip REASON -->`` blocks are not run (and are no tests): each names why."""
    for page in PAGES:
        for block in blocks(page):
            if block.directive == "skip":
                assert block.argument, f"{block.where}: a skipped example must say why"


@pytest.mark.parametrize("block", RUNNABLE_JS_BLOCKS, ids=lambda b: b.where)
def test_javascript_examples_run(block: Block, stand_in: StreamchatServer, js_folder: Path) -> None:
    script = js_folder / f"example-{os.getpid()}-{block.line}.mjs"  # beside node_modules
    script.write_text(block.code.replace(STAND_IN, stand_in.url), encoding="utf-8")
    try:
        result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    finally:
        script.unlink(missing_ok=True)
    assert result.returncode == 0, f"{block.where}: node failed:\n{result.stderr}"
    assert result.stdout.strip(), f"{block.where}: printed nothing"


# -- shell lines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str
    line: str  # the whole shell line (it may pipe into streamchat)
    args: tuple[str, ...]  # streamchat's own arguments


def shell_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Logical lines (``\\`` continuations joined), without a ``$ `` prompt."""
    pending, first = "", 0
    for offset, raw in enumerate(block.code.splitlines()):
        if not pending:
            first = block.line + 1 + offset
        line = raw.strip().removeprefix("$ ")
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield first, pending + line
        pending = ""


def streamchat_commands() -> list[Command]:
    commands = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in SHELL or block.directive == "skip":
                continue
            for number, line in shell_lines(block):
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue
                if "streamchat" not in tokens:
                    continue
                start = tokens.index("streamchat")
                if start and tokens[start - 1] != "|":  # e.g. `pip install streamchat`
                    continue
                args = tokens[start + 1 :]
                synopsis = any(t in ("|", "...") or "[" in t or "|" in t for t in args)
                if not args or synopsis:
                    continue
                where = f"{page.relative_to(ROOT)}:{number}"
                commands.append(Command(where, line.split("#")[0].strip(), tuple(args)))
    return commands


COMMANDS = streamchat_commands()


@pytest.fixture(scope="module")
def shell_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for all the shell lines, so ``history`` sees what ``ask`` stored."""
    return tmp_path_factory.mktemp("docs-shell")


def parse(args: tuple[str, ...]) -> object:
    parser = build_parser(args[0])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return parser.parse_args(list(args))
        except SystemExit:
            raise AssertionError(stderr.getvalue().strip()) from None


@pytest.mark.model
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} {c.args[0]}")
def test_shell_examples_parse_and_run(
    command: Command, stand_in: StreamchatServer, shell_home: Path
) -> None:
    args = tuple(a.replace(STAND_IN, stand_in.url) for a in command.args)
    parsed = parse(args)
    if args[0] == "serve":
        testbench.testbench_config(
            parsed
        )  # --faults specs and the like are checked when serving starts
        testbench.replay_model(parsed)
    base_url = getattr(parsed, "base_url", None)
    if args[0] not in RUN_COMMANDS or (base_url and not base_url.startswith(stand_in.url)):
        return
    line = command.line.replace(STAND_IN, stand_in.url)
    if args[0] == "ask" and "--max-tokens" not in args:
        line += f" --max-tokens {ASK_TOKENS}"
    env = {**os.environ, **stand_in.env, "XDG_DATA_HOME": str(shell_home)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("STREAMCHAT_DB", None)
    result = subprocess.run(
        ["bash", "-c", line],
        cwd=shell_home,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{command.where}: `{line}` failed:\n{result.stderr}"
    if args[0] == "ask":
        assert result.stdout.strip(), f"{command.where}: `{line}` printed no reply"


def test_the_extraction_reaches_every_page_with_examples() -> None:
    """Each page with Python, JavaScript or shell code has examples that the tests above run."""
    with_code = {p for p in PAGES if any(b.lang in ("python", "js", *SHELL) for b in blocks(p))}
    checked = {ROOT / c.where.split(":")[0] for c in COMMANDS} | set(PYTHON_PAGES)
    checked |= {b.page for b in JS_BLOCKS}
    assert with_code == checked
    assert len(COMMANDS) >= 10 and len(JS_BLOCKS) >= 3


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    """``make docs`` in short: MkDocs with warnings as errors (broken links, missing pages,
    a docstring the API reference cannot read), offline."""
    mkdocs = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
    ]  # --quiet would hide warnings from --strict
    result = subprocess.run(
        [*mkdocs, "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for page in ("index", "testing", "reference/testing", "benchmarks"):
        assert (tmp_path / "site" / f"{page}.html").is_file()
    reference = (tmp_path / "site" / "reference" / "testing.html").read_text()
    assert "fault_decisions" in reference  # generated from the docstrings
