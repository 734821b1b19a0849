"""Server-sent events, sans-IO: ``encode_sse`` for the server, ``SSEDecoder`` for tests and clients.

Follows the WHATWG event-stream grammar: lines end in CRLF, LF or CR; ``:`` starts a comment;
``data`` lines of one event join with ``\\n``; a blank line dispatches. Bytes may arrive split
anywhere (even between CR and LF, or inside a UTF-8 sequence); a line that grows past
``max_line_bytes`` without ending raises :class:`SSEDecodeError` instead of eating memory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_LINE_BYTES = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEDecodeError(ValueError):
    """The byte stream is not a well-behaved event stream (e.g. an endless line)."""


@dataclass(slots=True, frozen=True)
class SSEMessage:
    """One dispatched event; ``event`` is ``None`` when the stream named none."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def encode_sse(event: str | None, data: str) -> bytes:
    """One event frame; multi-line ``data`` becomes several ``data:`` lines, as the grammar asks."""
    if event is not None and ("\n" in event or "\r" in event):
        raise ValueError("an SSE event name cannot contain a line break")
    head = f"event: {event}\n" if event is not None else ""
    lines = _LINE_END.split(data.encode("utf-8"))
    return head.encode("utf-8") + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


class SSEDecoder:
    """Incremental decoder: ``feed(bytes) -> list[SSEMessage]``; no I/O, no state but buffers."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = b""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF is the same line end
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] = []
        self._data_bytes = 0
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Consume bytes; return the events they complete (possibly none)."""
        if self._skip_lf and chunk:
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._skip_lf = False
        buffer = self._partial + chunk if self._partial else chunk
        messages: list[SSEMessage] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            end = match.start()
            if end - start > self.max_line_bytes:
                raise self._too_long()
            message = self._line(buffer[start:end])
            if message is not None:
                messages.append(message)
            start = match.end()
            if match.group() == b"\r" and start == len(buffer):
                self._skip_lf = True
        self._partial = buffer[start:]
        if len(self._partial) > self.max_line_bytes:
            raise self._too_long()
        return messages

    def _too_long(self) -> SSEDecodeError:
        return SSEDecodeError(f"SSE line longer than {self.max_line_bytes} bytes")

    def _line(self, raw: bytes) -> SSEMessage | None:
        line = raw.decode("utf-8", errors="replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_line_bytes:
                raise SSEDecodeError(f"SSE event data longer than {self.max_line_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        data, event = self._data, self._event
        self._data, self._event, self._data_bytes = [], None, 0
        if not data:
            return None
        return SSEMessage(data="\n".join(data), event=event or None, id=self._id, retry=self._retry)
