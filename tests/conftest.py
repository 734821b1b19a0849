"""Shared fixtures: async test backend, isolated scripted providers, the embedded model."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import httpx
import httpx2
import pytest

import streamchat.providers
from streamchat.providers import ScriptedProvider, get_provider
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider, local_provider


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal delivers it, even when the suite was started with SIGINT ignored
    (``nohup``, a background job of a script: ignored signals are inherited, and Python then
    installs no KeyboardInterrupt handler). The Ctrl-C tests, and the programs they start,
    need it; a handler set here is reset to the default in every child process.

    And the HTTP clients' transports are loaded now, before any test runs: httpx (and the SDKs'
    httpx2) import their httpcore only when a first transport is made, and a ``pytester`` test
    drops every module imported during it at its teardown. Had it made the worker's first
    transport, httpx's map of httpcore exceptions would keep the dropped classes, and every
    later connection error would escape it as an unmapped ``httpcore.ConnectError``."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    httpx.HTTPTransport().close()
    httpx2.HTTPTransport().close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """In CI (``CI`` set, as ``.ci/run`` runs) a skipped test fails: a test that skips there does
    not exist. ``make test`` installs what the suite needs; elsewhere a skip says why (``-rs``)."""
    report: pytest.TestReport = yield
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
    return report


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep every test (and the processes it starts) out of the user's real history and files."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    mp.delenv("STREAMCHAT_DB", raising=False)
    yield
    mp.undo()


DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-west-2",
    "ANTHROPIC_API_KEY": "test",
    "OPENAI_API_KEY": "test",
}


@pytest.fixture
def sdk_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for every SDK (they sign or send them; servers here never check)."""
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests run on asyncio (the library's only backend)."""
    return "asyncio"


@pytest.fixture
def fresh_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider cache of this test's own, so scripted providers' counters start at zero.

    Local model instances live in their own cache, so the model is not reloaded.
    """
    monkeypatch.setattr(streamchat.providers, "_cache", {})


@pytest.fixture
def scripted(fresh_providers: None) -> Callable[..., tuple[str, ScriptedProvider]]:
    """``scripted(text="a b", delay=0.01)`` -> ``(model spec, the provider that will serve it)``."""

    def make(**options: object) -> tuple[str, ScriptedProvider]:
        spec = "scripted" + (f"?{urlencode(options)}" if options else "")
        provider = get_provider(spec)
        assert isinstance(provider, ScriptedProvider)
        return spec, provider

    return make


@pytest.fixture
def scripted_server(
    scripted: Callable[..., tuple[str, ScriptedProvider]],
) -> Iterator[Callable[..., tuple[str, ScriptedProvider]]]:
    """``scripted_server(**options)`` -> ``(URL, provider)``: a server in this process whose
    default model is that script, stopped at the end of the test."""
    from serving import serve_in_thread
    from streamchat.server.common import ServerConfig

    with contextlib.ExitStack() as stack:

        def run(**options: object) -> tuple[str, ScriptedProvider]:
            spec, provider = scripted(**options)
            config = ServerConfig(default_model=spec, models=[])
            return stack.enter_context(serve_in_thread(config)), provider

        yield run


@pytest.fixture(scope="session")
def local_model() -> LocalProvider:
    """The embedded default model, loaded once per session; the client's default serves from it."""
    provider = local_provider(DEFAULT_LOCAL_MODEL)
    provider.load()
    return provider
