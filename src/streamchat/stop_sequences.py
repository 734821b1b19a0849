"""Sans-IO stop-sequence matching over streamed text, holding back only what could start a stop."""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces; get back the text that is safe to emit and the stop sequence, if hit.

    Work per piece is bounded by the stop sequences' length, not by the text so far.
    """

    def __init__(self, stop_sequences: list[str]):
        self._stops = [s for s in stop_sequences if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        if not self._stops:
            return text, None
        buffer = self._held + text
        # The stop that is complete first wins (then the longest), as generation would stop
        # there: the result cannot depend on how the text was split into pieces.
        first: tuple[int, int, str] | None = None
        for stop in self._stops:
            at = buffer.find(stop)
            if at != -1 and (first is None or (at + len(stop), at) < first[:2]):
                first = (at + len(stop), at, stop)
        if first is not None:
            self._held = ""
            return buffer[: first[1]], first[2]
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], None

    def flush(self) -> str:
        """The held-back text, at the end of the stream."""
        held, self._held = self._held, ""
        return held
