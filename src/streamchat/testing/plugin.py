"""The pytest plugin (entry point ``pytest11: streamchat``): a real ``streamchat serve`` per
test, module or session, with official clients pointed at it.

Fixtures: ``streamchat_server`` (a test), ``streamchat_module_server``,
``streamchat_session_server`` (one per xdist worker), ``streamchat_serve`` (a factory:
``streamchat_serve(model=..., faults=...)``, stopped after the test) and ``streamchat_env``
(``streamchat_server`` with ``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL``,
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` and dummy credentials set, for apps that make their own
clients). Options come from ``--streamchat-*`` on the command line, then the
``@pytest.mark.streamchat(model=..., faults=..., seed=..., record=..., replay=...,
api_key=..., args=[...])`` markers, the closest last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .bench import ServeOptions, StreamchatServer, start_server

_OPTIONS = {  # --streamchat-NAME (a ServeOptions field) -> (type, help)
    "model": (str, "model of the test servers (default: scripted; smollm2 is the embedded one)"),
    "faults": (str, "--faults spec of the test servers (default: none, i.e. header only)"),
    "seed": (int, "--seed of the test servers' fault decisions (default 0)"),
    "record": (str, "record every stream of the test servers into this folder"),
    "replay": (str, "serve the tapes of this folder instead of a model (instantly)"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("streamchat", "streamchat test servers")
    for name, (kind, help_text) in _OPTIONS.items():
        group.addoption(f"--streamchat-{name}", type=kind, default=None, help=help_text)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "streamchat(**options): options of this test's (or module's) streamchat server: "
        "model, faults, seed, record, replay, replay_speed, api_key, args",
    )


_SERVERS = pytest.StashKey[list[StreamchatServer]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows what its servers printed (a traceback, a bad option)."""
    report = yield
    if report.failed:
        for number, server in enumerate(item.stash.get(_SERVERS, []), 1):
            output = server.output().strip()
            if output:
                report.sections.append((f"streamchat serve {number} ({server.url})", output))
    return report


def _watch(request: pytest.FixtureRequest, server: StreamchatServer) -> StreamchatServer:
    """Remember a test's own ``server`` on it (function scope), for its failure report."""
    request.node.stash.setdefault(_SERVERS, []).append(server)
    return server


def _base_options(config: pytest.Config) -> ServeOptions:
    given = {name: config.getoption(f"--streamchat-{name}") for name in _OPTIONS}
    return ServeOptions().merged({k: v for k, v in given.items() if v is not None})


def _options(request: pytest.FixtureRequest) -> ServeOptions:
    """Command-line defaults, then the markers from the farthest (class, module) to the test."""
    options = _base_options(request.config)
    for marker in reversed(list(request.node.iter_markers("streamchat"))):
        if marker.args:
            raise TypeError("@pytest.mark.streamchat takes keyword options only")
        options = options.merged(marker.kwargs)
    return options


@pytest.fixture
def streamchat_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamchatServer]:
    """A server for this test, with the options of its ``streamchat`` markers."""
    with start_server(_options(request), tmp_path_factory.mktemp("streamchat")) as server:
        yield _watch(request, server)


@pytest.fixture(scope="module")
def streamchat_module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamchatServer]:
    """One server for the module's tests (options: the module's ``pytestmark``)."""
    with start_server(_options(request), tmp_path_factory.mktemp("streamchat")) as server:
        yield server


@pytest.fixture(scope="session")
def streamchat_session_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamchatServer]:
    """One server for the whole run (under pytest-xdist: one per worker)."""
    with start_server(_base_options(request.config), tmp_path_factory.mktemp("streamchat")) as s:
        yield s


@pytest.fixture
def streamchat_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., StreamchatServer]]:
    """``streamchat_serve(**options)`` starts another server now; all stop after the test."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> StreamchatServer:
            options = _options(request).merged(overrides)
            server = stack.enter_context(start_server(options, tmp_path_factory.mktemp("sc")))
            return _watch(request, server)

        yield start


@pytest.fixture
def streamchat_env(
    streamchat_server: StreamchatServer, monkeypatch: pytest.MonkeyPatch
) -> StreamchatServer:
    """``streamchat_server``, with every SDK's endpoint and credentials variables set to it."""
    for name, value in streamchat_server.env.items():
        monkeypatch.setenv(name, value)
    return streamchat_server
