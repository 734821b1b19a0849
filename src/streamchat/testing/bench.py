"""A running test bench: ``streamchat serve`` with its options, ready official clients pointed
at it, and what the server saw (requests, injected faults, metrics, tapes) for assertions.

Everything read back is the server's own observable output — the scripted model's request
log, tapes, the fault injector's log, ``/metrics`` — never a mock.
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from .process import Server, received, serve

DEFAULT_MODEL = "scripted"
DUMMY_KEY = "test"
REGION = "us-west-2"
_FAULT_LINE = re.compile(r"^request (\d+): (.*)$")


@dataclass(frozen=True)
class ServeOptions:
    """What ``streamchat serve`` is started with; the ``streamchat`` marker's keywords.

    ``model`` is any ``--model`` (default ``scripted``: instant, deterministic echo replies;
    ``smollm2`` is the embedded model); ``replay`` a tape folder (``--replay``, instant by
    default); ``faults`` a ``--faults`` spec (default ``none``: faults only on request, by the
    ``x-streamchat-fault`` header); ``record`` a folder for ``--record`` tapes.
    """

    model: str = DEFAULT_MODEL
    faults: str | None = "none"
    seed: int = 0
    record: str | Path | None = None
    replay: str | Path | None = None
    replay_speed: float = 0.0
    api_key: str | None = None
    args: tuple[str, ...] = ()

    def merged(self, options: Mapping[str, Any]) -> ServeOptions:
        """These options with some replaced; an unknown name is a ``TypeError`` naming it."""
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown streamchat option(s) {unknown} (known: {sorted(known)})")
        values = dict(options)
        if "args" in values:
            values["args"] = tuple(values["args"])
        return replace(self, **values)

    def command_line(self, workdir: Path) -> list[str]:
        """``serve`` arguments; a scripted model also logs its requests into ``workdir``."""
        args = ["--model", scripted_with_log(self.model, workdir / "requests.jsonl")]
        if self.replay is not None:
            args = ["--replay", str(self.replay), "--replay-speed", f"{self.replay_speed:g}"]
        if self.faults is not None:
            args += ["--faults", self.faults, "--seed", str(self.seed)]
        args += ["--record", str(self.record if self.record is not None else workdir / "tapes")]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        return [*args, *self.args]


def scripted_with_log(model: str, path: Path) -> str:
    """``scripted?...`` plus ``record=path`` (unless it has one); any other model as it is."""
    name, _, query = model.partition("?")
    if name != "scripted":
        return model
    options = dict(parse_qsl(query, keep_blank_values=True))
    options.setdefault("record", str(path))
    return f"scripted?{urlencode(options)}"


@dataclass
class StreamchatServer:
    """One running server and what it saw. Client factories take the SDK's own keyword
    arguments (``max_retries=0`` to count attempts); credentials are dummies, or the api key."""

    server: Server
    options: ServeOptions
    workdir: Path
    _clients: list[Any] = field(default_factory=list, repr=False)

    # -- where it is -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api_key(self) -> str:
        return self.options.api_key or DUMMY_KEY

    @property
    def record_dir(self) -> Path:
        return (
            Path(self.options.record) if self.options.record is not None else self.workdir / "tapes"
        )

    @property
    def env(self) -> dict[str, str]:
        """Variables that point each official SDK (Python and JavaScript) at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": self.api_key,
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_KEY": self.api_key,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.url,
            "AWS_ACCESS_KEY_ID": self.api_key,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def output(self) -> str:
        """What the server printed so far (banner, warnings, tracebacks)."""
        return self.server.output()

    # -- official clients --------------------------------------------------------------------
    def _keep(self, client: Any) -> Any:
        self._clients.append(client)
        return client

    def anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        options = {"base_url": self.url, "api_key": self.api_key, **kwargs}
        return self._keep(anthropic.Anthropic(**options))

    def async_anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(**{"base_url": self.url, "api_key": self.api_key, **kwargs})

    def anthropic_bedrock(self, **kwargs: Any) -> Any:
        import anthropic

        return self._keep(anthropic.AnthropicBedrock(**self._bedrock_sdk(kwargs)))

    def async_anthropic_bedrock(self, **kwargs: Any) -> Any:
        import anthropic

        return anthropic.AsyncAnthropicBedrock(**self._bedrock_sdk(kwargs))

    def _bedrock_sdk(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        credentials = {"aws_access_key": self.api_key, "aws_secret_key": DUMMY_KEY}
        return {"base_url": self.url, "aws_region": REGION, **credentials, **kwargs}

    def bedrock_runtime(self, **kwargs: Any) -> Any:
        """A boto3 ``bedrock-runtime`` client (boto3 has no async twin)."""
        import boto3

        credentials = {"aws_access_key_id": self.api_key, "aws_secret_access_key": DUMMY_KEY}
        options = {"endpoint_url": self.url, "region_name": REGION, **credentials, **kwargs}
        return self._keep(boto3.client("bedrock-runtime", **options))

    def openai(self, **kwargs: Any) -> Any:
        import openai

        options = {"base_url": f"{self.url}/v1", "api_key": self.api_key, **kwargs}
        return self._keep(openai.OpenAI(**options))

    def async_openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(
            **{"base_url": f"{self.url}/v1", "api_key": self.api_key, **kwargs}
        )

    def close_clients(self) -> None:
        """Close the sync clients made here (async ones close with their event loop)."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    # -- what the server saw -----------------------------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        """The canonical requests that reached the model, oldest first (not those refused
        before it: bad input, injected overloads). A scripted model logs every one as it
        arrives; other models are read from the tapes, which hold finished streams only."""
        if self.options.replay is None and self.options.model.partition("?")[0] == "scripted":
            return received(self.workdir / "requests.jsonl")
        return [tape.header["request"] for tape in self.tapes()]

    def tapes(self) -> list[Any]:
        """The streams recorded so far (:class:`streamchat.tape.Tape`), in recording order."""
        from streamchat.tape import load_tapes

        return load_tapes(self.record_dir) if self.record_dir.is_dir() else []

    def fault_decisions(self) -> list[str]:
        """Each request's fault decision in arrival order, as the server logged it:
        ``"none"``, ``"overload"``, ``"midstream_error@3"``, ``"disconnect@20,ping=0.3"``..."""
        path = self.workdir / "faults.log"
        if not path.exists():
            return []
        decisions = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := _FAULT_LINE.match(line):
                decisions.append(match.group(2))
        return decisions

    def faults(self) -> list[str]:
        """The faults injected, one entry per faulted request, in arrival order."""
        return [decision for decision in self.fault_decisions() if decision != "none"]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` parsed: ``{(sample name, sorted labels): value}``."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", headers=self._auth(), timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """A sample of ``/metrics`` summed over the labels not given, e.g.
        ``metric("streamchat_requests_total", protocol="anthropic", status="ok")``."""
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == name and labels.items() <= dict(sample_labels).items()
        )

    def cancellations(self, **labels: str) -> int:
        """Streams the client closed before their end (it disconnected or stopped reading)."""
        return int(self.metric("streamchat_cancellations_total", **labels))

    def wait_for(
        self, condition: Callable[[], Any], timeout: float = 10, interval: float = 0.02
    ) -> Any:
        """Poll ``condition`` until it is truthy (the server notices a disconnect a moment
        after the client leaves); returns its value or raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition still false after {timeout}s")
            time.sleep(interval)
        return value

    def _auth(self) -> dict[str, str]:
        return {"x-api-key": self.options.api_key} if self.options.api_key else {}


@contextlib.contextmanager
def start_server(
    options: ServeOptions | None = None,
    workdir: str | Path | None = None,
    timeout: float = 120,
    **overrides: Any,
) -> Iterator[StreamchatServer]:
    """Start ``streamchat serve`` with ``options`` (and keyword overrides) for the block.

    ``workdir`` holds its request log, fault log and tapes (a temporary folder by default).
    """
    from .._extras import require
    from ._serve import FAULT_LOG_ENV

    require("server", "a streamchat test server")
    options = (options or ServeOptions()).merged(overrides)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="streamchat-"))
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        env = {FAULT_LOG_ENV: str(folder / "faults.log")}
        command = [sys.executable, "-m", "streamchat.testing._serve"]
        process = stack.enter_context(
            serve(*options.command_line(folder), timeout=timeout, env=env, command=command)
        )
        bench = StreamchatServer(process, options, folder)
        try:
            yield bench
        finally:
            bench.close_clients()
