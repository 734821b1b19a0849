"""AWS event stream framing (``application/vnd.amazon.eventstream``), sans-IO.

A message is: prelude (total length u32, headers length u32, CRC32 of those 8 bytes), typed
headers, payload, CRC32 of everything before it; all big-endian. Bedrock streams responses this
way. Bytes in, messages out (and back): no sockets, no asyncio, so it is trivially fuzzable.
The format follows ``botocore/eventstream.py``, which is what decodes it on the client.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HeaderValue = bool | int | str | bytes | datetime | uuid.UUID

PRELUDE_LENGTH = 12
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + 4  # prelude + message CRC, nothing else
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024
MAX_HEADERS_LENGTH = 128 * 1024  # botocore's limit

# header value types (the wire's type byte)
BOOL_TRUE, BOOL_FALSE, BYTE, SHORT, INTEGER, LONG, BYTES, STRING, TIMESTAMP, UUID = range(10)
_INTS = {
    BYTE: struct.Struct("!b"),
    SHORT: struct.Struct("!h"),
    INTEGER: struct.Struct("!i"),
    LONG: struct.Struct("!q"),
}
_U16 = struct.Struct("!H")
_PRELUDE = struct.Struct("!II")
_CRC = struct.Struct("!I")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class EventStreamError(ValueError):
    """The bytes are not a valid event stream; the stream cannot be resumed after this."""


@dataclass(slots=True, frozen=True)
class EventStreamMessage:
    headers: dict[str, HeaderValue]
    payload: bytes


def _crc(data: bytes | bytearray) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _encode_value(value: HeaderValue) -> bytes:
    if isinstance(value, bool):
        return bytes([BOOL_TRUE if value else BOOL_FALSE])
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise EventStreamError(f"integer header value out of int64 range: {value}")
        kind = INTEGER if -(2**31) <= value < 2**31 else LONG
        return bytes([kind]) + _INTS[kind].pack(value)
    if isinstance(value, str | bytes):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if len(raw) > 0xFFFF:
            raise EventStreamError("header value longer than 65535 bytes")
        return bytes([STRING if isinstance(value, str) else BYTES]) + _U16.pack(len(raw)) + raw
    if isinstance(value, datetime):
        millis = (value - _EPOCH) // _MILLISECOND
        return bytes([TIMESTAMP]) + _INTS[LONG].pack(millis)
    if isinstance(value, uuid.UUID):
        return bytes([UUID]) + value.bytes
    raise TypeError(f"unsupported header value type: {type(value).__name__}")


def encode_headers(headers: dict[str, HeaderValue]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= 255:
            raise EventStreamError(f"header name must be 1-255 bytes: {name!r}")
        out += bytes([len(raw)]) + raw + _encode_value(value)
    return bytes(out)


def encode_message(headers: dict[str, HeaderValue], payload: bytes) -> bytes:
    """One complete event stream message."""
    encoded = encode_headers(headers)
    if len(encoded) > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"headers of {len(encoded)} bytes exceed {MAX_HEADERS_LENGTH}")
    total = PRELUDE_LENGTH + len(encoded) + len(payload) + 4
    if total > MAX_MESSAGE_LENGTH:
        raise EventStreamError(f"message of {total} bytes exceeds {MAX_MESSAGE_LENGTH}")
    prelude = _PRELUDE.pack(total, len(encoded))
    body = prelude + _CRC.pack(_crc(prelude)) + encoded + payload
    return body + _CRC.pack(_crc(body))


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """Parse a headers section; any malformation raises :class:`EventStreamError`."""
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(data):
            size = data[pos]
            if size == 0 or pos + 1 + size >= len(data):
                raise EventStreamError("empty or truncated header name")
            name = data[pos + 1 : pos + 1 + size].decode("utf-8")
            pos += 1 + size
            kind = data[pos]
            pos += 1
            value: HeaderValue
            if kind in (BOOL_TRUE, BOOL_FALSE):
                value = kind == BOOL_TRUE
            elif kind in _INTS or kind == TIMESTAMP:
                fmt = _INTS[LONG if kind == TIMESTAMP else kind]
                (number,) = fmt.unpack_from(data, pos)
                pos += fmt.size
                value = _EPOCH + number * _MILLISECOND if kind == TIMESTAMP else number
            elif kind in (BYTES, STRING):
                (length,) = _U16.unpack_from(data, pos)
                raw = data[pos + 2 : pos + 2 + length]
                if len(raw) != length:
                    raise EventStreamError("truncated header value")
                pos += 2 + length
                value = raw.decode("utf-8") if kind == STRING else raw
            elif kind == UUID:
                raw = data[pos : pos + 16]
                if len(raw) != 16:
                    raise EventStreamError("truncated uuid header")
                pos += 16
                value = uuid.UUID(bytes=raw)
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            if name in headers:
                raise EventStreamError(f"duplicate header {name!r}")
            headers[name] = value
    except (struct.error, UnicodeDecodeError, OverflowError) as error:
        raise EventStreamError(f"malformed headers: {error}") from None
    return headers


class EventStreamDecoder:
    """Incremental decoder: feed any chunks, get back the messages they complete."""

    def __init__(self, max_message_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buffer = bytearray()
        self._max = max_message_length
        self._failed: EventStreamError | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete message (non-zero at EOF = truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventStreamMessage]:
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        messages: list[EventStreamMessage] = []
        try:
            while (message := self._next()) is not None:
                messages.append(message)
        except EventStreamError as error:
            self._failed = error
            raise
        return messages

    def _next(self) -> EventStreamMessage | None:
        buffer = self._buffer
        if len(buffer) < PRELUDE_LENGTH:
            return None
        total, headers_length = _PRELUDE.unpack_from(buffer)
        (prelude_crc,) = _CRC.unpack_from(buffer, 8)
        if prelude_crc != _crc(buffer[:8]):
            raise EventStreamError("prelude CRC mismatch")
        if not MIN_MESSAGE_LENGTH <= total <= self._max:
            raise EventStreamError(f"declared message length {total} is out of range")
        if headers_length > min(total - MIN_MESSAGE_LENGTH, MAX_HEADERS_LENGTH):
            raise EventStreamError(f"declared headers length {headers_length} is out of range")
        if len(buffer) < total:
            return None
        frame = bytes(buffer[:total])
        del buffer[:total]
        (message_crc,) = _CRC.unpack_from(frame, total - 4)
        if message_crc != _crc(frame[: total - 4]):
            raise EventStreamError("message CRC mismatch")
        headers_end = PRELUDE_LENGTH + headers_length
        headers = decode_headers(frame[PRELUDE_LENGTH:headers_end])
        return EventStreamMessage(headers, frame[headers_end : total - 4])
