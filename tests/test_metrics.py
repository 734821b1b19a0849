"""Metrics come from event timestamps (given explicitly here), never from the test's own clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamchat.events import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorBody,
    ErrorEvent,
    Message,
    MessageDeltaBody,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    StreamEvent,
    TextDelta,
    Usage,
)
from streamchat.metrics import Metrics, MetricsRecorder
from streamchat.stream import AsyncMessageStream

STARTED = 100.0


def timed_stream(
    delta_times: list[float], *, input_tokens: int = 12, output_tokens: int | None = 5, end: float
) -> list[StreamEvent]:
    events: list[StreamEvent] = [
        MessageStartEvent(
            message=Message(id="m", model="x", usage=Usage(input_tokens, 1)), timestamp=100.1
        ),
        ContentBlockStartEvent(timestamp=100.1),
        *(ContentBlockDeltaEvent(delta=TextDelta("w"), timestamp=t) for t in delta_times),
    ]
    if output_tokens is not None:
        events += [
            ContentBlockStopEvent(timestamp=end),
            MessageDeltaEvent(
                delta=MessageDeltaBody("end_turn"),
                usage=MessageDeltaUsage(output_tokens),
                timestamp=end,
            ),
            MessageStopEvent(timestamp=end),
        ]
    return events


def record(events: list[StreamEvent]) -> MetricsRecorder:
    recorder = MetricsRecorder(started_at=STARTED)
    for event in events:
        recorder.observe(event)
    return recorder


def test_metrics_are_computed_from_event_timestamps() -> None:
    metrics = record(timed_stream([100.5, 100.6, 100.7, 100.9], end=101.2)).metrics()
    assert metrics.ttft == pytest.approx(0.5)
    assert metrics.total_time == pytest.approx(1.2)
    assert metrics.input_tokens == 12
    assert metrics.output_tokens == 5
    # 4 tokens decoded after the first one, between the first and last delta (0.4 s)
    assert metrics.decode_tokens_per_s == pytest.approx(10.0)


def test_gaps_are_the_times_between_deltas() -> None:
    recorder = record(timed_stream([100.5, 100.75, 101.0, 102.0], end=102.0))
    assert recorder.gaps() == pytest.approx([0.25, 0.25, 1.0])


def test_reply_cut_short_counts_its_deltas_and_has_no_total_time() -> None:
    metrics = record(timed_stream([100.2, 100.4, 100.6], output_tokens=None, end=0)).metrics()
    assert metrics.ttft == pytest.approx(0.2)
    assert metrics.total_time is None
    assert metrics.output_tokens == 3
    assert metrics.decode_tokens_per_s == pytest.approx(2 / 0.4)


def test_error_event_ends_the_timing() -> None:
    events = [
        *timed_stream([100.3], output_tokens=None, end=0),
        ErrorEvent(ErrorBody("overloaded_error", "Overloaded"), timestamp=100.8),
    ]
    metrics = record(events).metrics()
    assert metrics.total_time == pytest.approx(0.8)
    assert metrics.decode_tokens_per_s is None  # one delta: no decode interval


def test_nothing_received_means_no_timings() -> None:
    metrics = MetricsRecorder(started_at=STARTED).metrics()
    assert metrics == Metrics(None, None, 0, 0, None)


def test_summary_and_to_dict_report_the_numbers() -> None:
    metrics = Metrics(
        ttft=0.25, total_time=1.5, input_tokens=9, output_tokens=17, decode_tokens_per_s=12.5
    )
    assert metrics.summary() == "TTFT 250 ms · total 1.50 s · 9 in / 17 out tokens · 12.5 tokens/s"
    assert metrics.to_dict() == {
        "ttft": 0.25,
        "total_time": 1.5,
        "input_tokens": 9,
        "output_tokens": 17,
        "decode_tokens_per_s": 12.5,
    }


@pytest.mark.anyio
async def test_stream_metrics_use_the_request_start_and_event_timestamps() -> None:
    async def events() -> AsyncIterator[StreamEvent]:
        for event in timed_stream([100.4, 100.6, 100.8], output_tokens=3, end=101.0):
            yield event

    stream = AsyncMessageStream(events(), started_at=STARTED)
    assert await stream.get_final_text() == "www"
    metrics = stream.metrics
    assert metrics.ttft == pytest.approx(0.4)
    assert metrics.total_time == pytest.approx(1.0)
    assert (metrics.input_tokens, metrics.output_tokens) == (12, 3)
    assert metrics.decode_tokens_per_s == pytest.approx(2 / 0.4)
    assert stream.recorder.delta_times == [100.4, 100.6, 100.8]
