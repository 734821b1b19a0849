"""``GET /metrics``: Prometheus counters move as the official clients make requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import anthropic
import boto3
import botocore.exceptions
import httpx
import openai
import pytest
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from embedded_model import GenerateSpy, forced_budget
from serving import serve_in_thread
from streamchat.providers.local import LocalProvider
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from streamchat.server.metrics import PROTOCOL_PREFIXES, protocol_of

FAST = "scripted?text=one+two+three+four&tag=metrics-fast"  # 4 tokens
SLOW = "scripted?text=" + "+".join(["word"] * 60) + "&delay=0.1&tag=metrics-slow"
OVERLOADED = "scripted?error_before=overloaded_error&tag=metrics-overloaded"
BROKEN = "scripted?text=a+b+c+d+e&error_after=2&error=api_error&tag=metrics-broken"
USER = [{"role": "user", "content": "hi"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll until ``check()`` holds: the server counts a stream's end after the client's."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the metric never changed"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = ServerConfig(default_model=FAST, models=[FAST, SLOW, OVERLOADED, BROKEN])
    with serve_in_thread(config) as base:
        yield base


@pytest.fixture
def bedrock(url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    config = Config(retries={"total_max_attempts": 1})
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-west-2", config=config)


def test_requests_tokens_and_timings_are_counted_per_protocol(url: str, bedrock: object) -> None:
    before = scrape(url)
    claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    assert claude.messages.create(model=FAST, max_tokens=50, messages=USER).usage.output_tokens == 4
    with claude.messages.stream(model=FAST, max_tokens=50, messages=USER) as stream:
        stream.until_done()
    gpt = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    chunks = gpt.chat.completions.create(model=FAST, messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert gpt.responses.create(model=FAST, input="hi").usage.output_tokens == 4
    events = bedrock.converse_stream(  # type: ignore[attr-defined]
        modelId=FAST, messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )["stream"]
    assert any("messageStop" in event for event in events)
    after = scrape(url)

    def grew(name: str, protocol: str, **labels: str) -> float:
        labels = {"protocol": protocol, "model": FAST, **labels}
        return value(after, name, **labels) - value(before, name, **labels)

    for protocol, requests in (("anthropic", 2), ("openai", 1), ("responses", 1), ("bedrock", 1)):
        assert grew("streamchat_requests_total", protocol, status="ok") == requests
        assert grew("streamchat_output_tokens_total", protocol) == 4 * requests
        assert grew("streamchat_time_to_first_token_seconds_count", protocol) == requests
        assert grew("streamchat_request_duration_seconds_count", protocol) == requests
        assert value(after, "streamchat_active_streams", protocol=protocol, model=FAST) == 0
    assert grew("streamchat_requests_total", "anthropic", status="error") == 0


def test_every_model_route_has_its_protocol_label() -> None:
    """The label comes from one table of path prefixes: a route that reaches a model (a POST
    under the APIs, but a resumable stream's cancel, which reaches none) must be in it, or its
    traffic would be counted as ``other``."""
    app = create_app(ServerConfig(default_model=FAST))
    posts = [
        route.path
        for route in app.routes
        if "POST" in getattr(route, "methods", ())
        and route.path.startswith(("/v1/", "/model/"))
        and not route.path.startswith("/v1/streams/")
    ]
    labels = {path: protocol_of(path) for path in posts}
    assert "other" not in labels.values(), labels
    assert set(labels.values()) == {protocol for _, protocol in PROTOCOL_PREFIXES}
    assert labels["/v1/responses"] == "responses"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_is_a_cancellation(url: str, stream: bool) -> None:
    labels = {"protocol": "anthropic", "model": SLOW}
    before = scrape(url)
    cancelled = value(before, "streamchat_cancellations_total", **labels)
    body = {"model": SLOW, "max_tokens": 100, "messages": USER, "stream": stream}
    if stream:
        with httpx.stream("POST", f"{url}/v1/messages", json=body, timeout=10) as response:
            lines = response.iter_lines()  # kept: a dropped iterator closes the connection
            for line in lines:
                if line == "event: content_block_delta":
                    break
            during = scrape(url)
            assert value(during, "streamchat_active_streams", **labels) == 1
    else:  # the client gives up waiting for the whole reply
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/messages", json=body, timeout=httpx.Timeout(10, read=0.5))
    wait_for(lambda: value(scrape(url), "streamchat_cancellations_total", **labels) > cancelled)
    after = scrape(url)
    assert value(after, "streamchat_cancellations_total", **labels) == cancelled + 1
    assert (
        value(after, "streamchat_requests_total", status="cancelled", **labels)
        == value(before, "streamchat_requests_total", status="cancelled", **labels) + 1
    )
    assert value(after, "streamchat_active_streams", **labels) == 0
    assert value(after, "streamchat_request_duration_seconds_count", **labels) == value(
        before, "streamchat_request_duration_seconds_count", **labels
    )  # only completed replies have a duration


def test_overload_is_counted_by_error_type(url: str, bedrock: object) -> None:
    before = scrape(url)
    claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.messages.create(model=OVERLOADED, max_tokens=5, messages=USER)
    assert raised.value.status_code == 529
    with pytest.raises(botocore.exceptions.ClientError):
        bedrock.converse(  # type: ignore[attr-defined]
            modelId=OVERLOADED, messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    after = scrape(url)
    for protocol in ("anthropic", "bedrock"):
        labels = {"protocol": protocol, "model": OVERLOADED}
        kind = {"type": "overloaded_error", **labels}
        assert value(after, "streamchat_errors_total", **kind) == (
            value(before, "streamchat_errors_total", **kind) + 1
        )
        assert value(after, "streamchat_requests_total", status="error", **labels) == (
            value(before, "streamchat_requests_total", status="error", **labels) + 1
        )
        assert value(after, "streamchat_active_streams", **labels) == 0


def test_an_error_mid_stream_is_counted_by_its_type(url: str) -> None:
    labels = {"protocol": "anthropic", "model": BROKEN}
    before = value(scrape(url), "streamchat_errors_total", type="api_error", **labels)
    claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError),
        claude.messages.stream(model=BROKEN, max_tokens=50, messages=USER) as stream,
    ):
        stream.until_done()
    after = scrape(url)
    assert value(after, "streamchat_errors_total", type="api_error", **labels) == before + 1
    assert value(after, "streamchat_output_tokens_total", **labels) >= 2  # what was sent


def test_metrics_need_the_api_key_when_one_is_set() -> None:
    with TestClient(create_app(ServerConfig(default_model=FAST, api_key="secret"))) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert client.get("/metrics", headers={"x-api-key": "wrong"}).status_code == 401
        for headers in ({"x-api-key": "secret"}, {"authorization": "Bearer secret"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 200
            assert "streamchat_requests_total" in response.text


def test_each_app_counts_only_its_own_requests() -> None:
    with (
        TestClient(create_app(ServerConfig(default_model=FAST))) as one,
        TestClient(create_app(ServerConfig(default_model=FAST))) as two,
    ):
        body = {"model": FAST, "max_tokens": 10, "messages": USER}
        assert one.post("/v1/messages", json=body).status_code == 200
        assert one.post("/v1/messages", json=body).status_code == 200
        assert two.post("/v1/messages", json=body).status_code == 200
        for client, count in ((one, 2.0), (two, 1.0)):
            samples = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(client.get("/metrics").text)
                for s in family.samples
            }
            labels = {"protocol": "anthropic", "model": FAST, "status": "ok"}
            assert value(samples, "streamchat_requests_total", **labels) == count


@pytest.mark.model
def test_local_model_queue_depth_follows_requests(
    local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generation is held at its first token, so the request is certainly in flight when the
    metrics are read (however short the model's reply would be)."""
    spy = GenerateSpy(local_model, hold_after=1)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    with serve_in_thread(ServerConfig()) as base:
        body = {"model": "smollm2", "max_tokens": 400, "messages": USER, "stream": True}
        with httpx.stream("POST", f"{base}/v1/messages", json=body, timeout=60):
            try:
                assert spy.holding.wait(timeout=120)
                depth = value(scrape(base), "streamchat_local_queue_depth", model="smollm2")
                assert depth == local_model.admission.count == 1
            finally:
                spy.release()
        wait_for(lambda: value(scrape(base), "streamchat_local_queue_depth", model="smollm2") == 0)


@pytest.mark.model
def test_local_model_counts_schema_checks(local_model: LocalProvider) -> None:
    """Every forced call is checked against its schema once, whatever the outcome."""
    tool = {
        "name": "pick",
        "input_schema": {
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]},
                                    "minItems": 2, "maxItems": 3, "uniqueItems": True}},
            "required": ["tags"],
        },
    }  # fmt: skip
    checks = local_model.schema_checks  # the process's provider: earlier tests' checks too
    before = checks.valid + checks.resampled + checks.invalid
    with serve_in_thread(ServerConfig()) as base:
        body = {"model": "smollm2", "max_tokens": forced_budget([tool]), "messages": USER,
                "tools": [tool],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}  # fmt: skip
        reply = httpx.post(f"{base}/v1/messages", json=body, timeout=120).json()
        assert reply["stop_reason"] == "tool_use"
        samples = scrape(base)
        counted = sum(
            value(samples, "streamchat_local_schema_checks_total", model="smollm2", outcome=outcome)
            for outcome in ("valid", "resampled", "invalid")
        )
        assert counted == before + 1
