"""Stream metrics from event timestamps: time to first token, total time, tokens, tokens/s.

Every kind of generated content counts: text, a tool call's JSON fragments and thinking. TTFT is
the time to the first of any of them (a reply that starts with a tool call or with reasoning has
started); a thinking block's closing ``signature_delta`` is not generated text and is not
counted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from .events import StreamEvent


@dataclass(slots=True)
class Metrics:
    """Timings in seconds from the request's start; ``None`` until known."""

    ttft: float | None = None
    total_time: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    decode_tokens_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for humans, e.g. for ``--stats``."""
        parts = []
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.total_time is not None:
            parts.append(f"total {self.total_time:.2f} s")
        parts.append(f"{self.input_tokens} in / {self.output_tokens} out tokens")
        if self.decode_tokens_per_s is not None:
            parts.append(f"{self.decode_tokens_per_s:.1f} tokens/s")
        return " · ".join(parts)


@dataclass(slots=True)
class MetricsRecorder:
    """Observes events as they pass (O(1) each) and keeps every content delta's arrival time
    (text, tool input or thinking)."""

    started_at: float
    delta_times: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    ended_at: float | None = None

    def observe(self, event: StreamEvent) -> None:
        kind = event.type
        if kind == "content_block_delta":
            if event.delta.type != "signature_delta":
                self.delta_times.append(event.timestamp)
        elif kind == "message_start":
            self.input_tokens = event.message.usage.input_tokens
        elif kind == "message_delta":
            self.output_tokens = event.usage.output_tokens
            if event.usage.input_tokens is not None:
                self.input_tokens = event.usage.input_tokens
        elif kind in ("message_stop", "error"):
            self.ended_at = event.timestamp

    def gaps(self) -> list[float]:
        """Seconds between consecutive content deltas."""
        times = self.delta_times
        return [b - a for a, b in pairwise(times)]

    def metrics(self) -> Metrics:
        times = self.delta_times
        ttft = times[0] - self.started_at if times else None
        total = self.ended_at - self.started_at if self.ended_at is not None else None
        rate = None
        decode_tokens = self.output_tokens - 1 if self.output_tokens else len(times) - 1
        if len(times) >= 2 and decode_tokens > 0 and times[-1] > times[0]:
            rate = decode_tokens / (times[-1] - times[0])
        # A reply cut short has no final usage: count its deltas (about one per token) instead.
        output_tokens = self.output_tokens or len(times)
        return Metrics(ttft, total, self.input_tokens, output_tokens, rate)
