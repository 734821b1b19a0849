"""Prometheus metrics at ``GET /metrics``: requests, TTFT, durations, tokens, errors, load.

Every protocol opens its provider stream through :func:`~.common.open_events`, so that is the one
place instrumented: it asks :func:`request_observer` for a :class:`StreamObserver` and lets it
wrap the event iterator (O(1) per event). The observer learns the app's metrics and the
request's protocol (from its path) through a context variable that :class:`MetricsMiddleware`
sets per request. Each app owns a ``CollectorRegistry``, so apps in one process never clash.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import StreamchatError
from ..events import StreamEvent
from .auth import check_api_key

if TYPE_CHECKING:
    from .common import ServerConfig

# Path prefix -> protocol: which API a request path belongs to, the one table of it (the metrics
# label here, the error shape of an unknown path's 404 in app.py).
PROTOCOL_PREFIXES = (
    ("/v1/messages", "anthropic"),
    ("/v1/chat/", "openai"),
    ("/v1/responses", "responses"),
    ("/model/", "bedrock"),
)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LABELS = ("protocol", "model")


def protocol_of(path: str) -> str:
    """The protocol label for a request path (bounded: unknown paths are ``other``)."""
    for prefix, protocol in PROTOCOL_PREFIXES:
        if path.startswith(prefix):
            return protocol
    return "other"


class _QueueDepth(Collector):
    """Requests in flight or waiting per local model, read from its admission count at scrape."""

    def __init__(self) -> None:
        self._providers: dict[str, Any] = {}

    def watch(self, model: str, provider: Any) -> None:
        if hasattr(provider, "admission"):
            self._providers[model] = provider

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamchat_local_queue_depth",
            "Requests in flight or waiting for a local model (its admission count)",
            labels=["model"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()
        yield from self._engine_families()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for model, provider in list(self._providers.items()):
            family.add_metric([model], provider.admission.count)
        yield family
        families = self._engine_families()
        slots, active, batch, prefill, steps, reused, checks = families
        for model, provider in list(self._providers.items()):
            for outcome, count in vars(getattr(provider, "schema_checks", {})).items():
                checks.add_metric([model, outcome], count)
            engine = getattr(provider, "engine", None)
            if engine is None:  # not loaded yet
                continue
            stats = engine.stats
            slots.add_metric([model], len(engine.slots))
            active.add_metric([model], engine.active)
            batch.add_metric([model], _buckets(engine.batch_bounds, stats.batch_buckets),
                             stats.batch_sum)  # fmt: skip
            prefill.add_metric([model], _buckets(engine.prefill_bounds, stats.prefill_buckets),
                               stats.prefill_sum)  # fmt: skip
            steps.add_metric([model], stats.steps)
            reused.add_metric([model], stats.reused_tokens)
        yield from families

    @staticmethod
    def _engine_families() -> list[Metric]:
        """The batching engine of each loaded local model (continuous batching, issue 15)."""
        return [
            GaugeMetricFamily("streamchat_local_slots", "Sequences a local model decodes "
                              "together (serve --parallel)", labels=["model"]),
            GaugeMetricFamily("streamchat_local_active_slots", "Slots running a request now",
                              labels=["model"]),
            HistogramMetricFamily("streamchat_local_batch_size", "Sequences in each decode "
                                  "step (llama_decode call)", labels=["model"]),
            HistogramMetricFamily("streamchat_local_prefill_tokens_per_step", "Prompt tokens "
                                  "prefilled in each decode step (chunked prefill)",
                                  labels=["model"]),
            CounterMetricFamily("streamchat_local_decode_steps", "Decode steps (one "
                                "llama_decode each)", labels=["model"]),
            CounterMetricFamily("streamchat_local_prompt_tokens_reused", "Prompt tokens served "
                                "from a slot's cells instead of prefilled (prefix reuse)",
                                labels=["model"]),
            CounterMetricFamily("streamchat_local_schema_checks", "Tool calls and JSON outputs "
                                "checked against their schema: valid, resampled (valid after "
                                "resampling) or invalid (returned as generated)",
                                labels=["model", "outcome"]),
        ]  # fmt: skip


def _buckets(bounds: tuple[int, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last one past every bound) as Prometheus' cumulative buckets."""
    cumulative, total = [], 0
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    return cumulative


class ServerMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self, replica: str | None = None) -> None:
        self.replica = replica  # added to every sample as label ``replica`` (serve --replica)
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "streamchat_requests",
            "Provider streams by how they ended: ok, error, or cancelled (client went away)",
            [*LABELS, "status"],
            registry=registry,
        )
        self.ttft = Histogram(
            "streamchat_time_to_first_token_seconds",
            "Stream opened -> first content delta (text, tool input or thinking) ready to send",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "streamchat_request_duration_seconds",
            "Stream opened -> message_stop, for replies that completed",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.output_tokens = Counter(
            "streamchat_output_tokens",
            "Tokens generated (final usage; content deltas for replies cut short)",
            LABELS,
            registry=registry,
        )
        self.active = Gauge(
            "streamchat_active_streams", "Provider streams open now", LABELS, registry=registry
        )
        self.errors = Counter(
            "streamchat_errors",
            "Failed streams by canonical error type (before or during streaming)",
            [*LABELS, "type"],
            registry=registry,
        )
        self.cancellations = Counter(
            "streamchat_cancellations",
            "Streams closed before their end: the client disconnected or stopped reading",
            LABELS,
            registry=registry,
        )
        self.resumable = Counter(
            "streamchat_resumable_streams",
            "Resumable streams (x-streamchat-resumable, background responses) by event: started, "
            "resumed (a client came back), completed, failed, cancelled (explicitly), abandoned "
            "(no client came back within the grace period)",
            ["outcome"],
            registry=registry,
        )
        self.queue_depth = _QueueDepth()
        registry.register(self.queue_depth)

    def render(self) -> bytes:
        return generate_latest(self if self.replica else self.registry)

    def collect(self) -> Iterator[Metric]:
        """The registry's metrics with the replica label on every sample."""
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "replica": self.replica})
                for sample in metric.samples
            ]
            yield labelled


_current: ContextVar[tuple[ServerMetrics, str] | None] = ContextVar(
    "streamchat_server_metrics", default=None
)


def error_type_of(error: BaseException) -> str:
    """The canonical type an endpoint reports for ``error`` (anything unplanned is api_error)."""
    return error.error_type if isinstance(error, StreamchatError) else "api_error"


class StreamObserver:
    """Counts one provider stream, from open_events' start to its end, whatever the end is."""

    __slots__ = ("_done", "labels", "metrics", "model", "started")

    def __init__(self, metrics: ServerMetrics, protocol: str, model: str) -> None:
        self.metrics = metrics
        self.model = model
        self.labels = (protocol, model)
        self.started = time.perf_counter()
        self._done = False
        metrics.active.labels(*self.labels).inc()

    def watch(self, provider: Any) -> None:
        """Report this provider's queue depth if it has one (local models)."""
        self.metrics.queue_depth.watch(self.model, provider)

    def failed(self, error: BaseException) -> None:
        """The stream failed before its first event (validation, overload, missing model)."""
        self._finish("error", error_type_of(error), 0)

    async def wrap(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        """``events`` unchanged, observed; closing this closes ``events``."""
        status, error_type, tokens, deltas = "cancelled", "", None, 0
        try:
            async for event in events:
                kind = event.type
                if kind == "content_block_delta" and event.delta.type != "signature_delta":
                    if not deltas:
                        elapsed = time.perf_counter() - self.started
                        self.metrics.ttft.labels(*self.labels).observe(elapsed)
                    deltas += 1
                elif kind == "message_delta":
                    tokens = event.usage.output_tokens
                elif kind == "message_stop":
                    status = "ok"  # before yielding: a consumer may close us right after it
                elif kind == "error":
                    status, error_type = "error", event.error.type
                yield event
        except Exception as error:
            status, error_type = "error", error_type_of(error)
            raise
        finally:
            try:
                await events.aclose()  # type: ignore[attr-defined]
            finally:
                self._finish(status, error_type, deltas if tokens is None else tokens)

    def _finish(self, status: str, error_type: str, tokens: int) -> None:
        if self._done:
            return
        self._done = True
        metrics, labels = self.metrics, self.labels
        metrics.active.labels(*labels).dec()
        metrics.requests.labels(*labels, status).inc()
        if tokens:
            metrics.output_tokens.labels(*labels).inc(tokens)
        if status == "ok":
            metrics.duration.labels(*labels).observe(time.perf_counter() - self.started)
        elif status == "error":
            metrics.errors.labels(*labels, error_type).inc()
        else:
            metrics.cancellations.labels(*labels).inc()


def current_metrics() -> ServerMetrics | None:
    """The metrics of the app serving the current request; ``None`` outside a server."""
    current = _current.get()
    return current[0] if current is not None else None


def request_observer(model: str) -> StreamObserver | None:
    """An observer for a stream opened while serving a request; ``None`` outside a server."""
    current = _current.get()
    if current is None:
        return None
    metrics, protocol = current
    return StreamObserver(metrics, protocol, model)


class MetricsMiddleware:
    """Pure ASGI: makes the app's metrics and the request's protocol visible to open_events."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _current.set((self.metrics, protocol_of(scope["path"])))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


def install(app: Starlette, replica: str | None = None) -> ServerMetrics:
    """Give ``app`` its own metrics: the registry behind ``/metrics`` and the middleware."""
    metrics = ServerMetrics(replica)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return metrics


def routes(config: ServerConfig) -> list[Route]:
    async def metrics_endpoint(request: Request) -> Response:
        try:
            check_api_key(request, config)
        except StreamchatError as error:
            return JSONResponse(error.to_dict(), status_code=error.status_code)
        metrics: ServerMetrics | None = getattr(request.app.state, "metrics", None)
        if metrics is None:  # an app built without install(): nothing is being counted
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics_endpoint, methods=["GET"])]
