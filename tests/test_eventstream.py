"""The AWS event stream codec, judged by botocore's own decoder and by fuzzing."""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from streamchat.wire.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    EventStreamMessage,
    encode_message,
)

header_names = st.text(min_size=1, max_size=40).filter(lambda n: len(n.encode()) <= 255)
header_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(min_value=-(10**13), max_value=10**13).map(
        lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    ),
    st.uuids(),
)
headers_st = st.dictionaries(header_names, header_values, max_size=6)
messages_st = st.lists(st.tuples(headers_st, st.binary(max_size=2000)), min_size=1, max_size=5)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def as_botocore(value: object) -> object:
    """What botocore yields for a header value we encoded (it keeps timestamps/uuids raw)."""
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if isinstance(value, uuid.UUID):
        return value.bytes
    return value


def frame(total: int, headers_length: int, rest: bytes = b"") -> bytes:
    """A prelude with a valid CRC (so only the length checks can reject it)."""
    prelude = struct.pack("!II", total, headers_length)
    return prelude + struct.pack("!I", zlib.crc32(prelude)) + rest


@settings(max_examples=200, deadline=None)
@given(messages_st, st.lists(st.integers(min_value=0), max_size=8))
def test_botocore_decodes_what_we_encode(messages, cuts):
    wire = b"".join(encode_message(h, p) for h, p in messages)
    buffer = EventStreamBuffer()
    decoded = []
    for chunk in split(wire, cuts):
        buffer.add_data(chunk)
        decoded.extend(buffer)
    assert [(m.headers, m.payload) for m in decoded] == [
        ({k: as_botocore(v) for k, v in h.items()}, p) for h, p in messages
    ]


@settings(max_examples=200, deadline=None)
@given(messages_st, st.lists(st.integers(min_value=0), max_size=8))
def test_round_trip_over_any_chunk_split(messages, cuts):
    wire = b"".join(encode_message(h, p) for h, p in messages)
    decoder = EventStreamDecoder()
    decoded: list[EventStreamMessage] = []
    for chunk in split(wire, cuts):
        decoded.extend(decoder.feed(chunk))
    assert [(m.headers, m.payload) for m in decoded] == messages
    assert decoder.pending == 0


def test_byte_by_byte_feeding_yields_each_message_when_complete():
    wire = encode_message({":event-type": "chunk"}, b"hello")
    decoder = EventStreamDecoder()
    for byte in wire[:-1]:
        assert decoder.feed(bytes([byte])) == []
    assert decoder.feed(wire[-1:]) == [EventStreamMessage({":event-type": "chunk"}, b"hello")]


def test_known_bytes_match_the_aws_spec_example():
    # Empty message: total 16, no headers, prelude CRC 0x05c248eb, message CRC 0x7d98c8ff
    # (the AWS event stream test vector "empty_message").
    assert encode_message({}, b"").hex() == "000000100000000005c248eb7d98c8ff"


# botocore's own test vector covering header types 0-9 (tests/unit/test_eventstream.py)
ALL_HEADER_TYPES = (
    b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
    b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
    b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
    b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
    b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
    b"\x63\x35\x36\x71"
)


def test_decodes_every_header_type():
    [message] = EventStreamDecoder().feed(ALL_HEADER_TYPES)
    assert message.headers == {
        "0": True,
        "1": False,
        "2": 2,
        "3": 3,
        "4": 4,
        "5": 5,
        "6": b"bytes",
        "7": "utf8",
        "8": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=8),
        "9": uuid.UUID(bytes=b"0123456789abcdef"),
    }
    assert message.payload == b""


def test_duplicate_headers_are_rejected():
    wire = (
        b"\x00\x00\x00\x24\x00\x00\x00\x14\x4b\xb9\x82\xd0"
        b"\x04test\x04asdf\x04test\x04asdf\xf3\xf4\x75\x63"
    )
    with pytest.raises(EventStreamError, match="duplicate"):
        EventStreamDecoder().feed(wire)


def test_oversized_declared_length_is_rejected_before_buffering():
    # botocore's INVALID_PAYLOAD_LENGTH prelude: 24 MiB + 33 bytes declared, valid prelude CRC
    with pytest.raises(EventStreamError, match="length"):
        EventStreamDecoder().feed(b"\x01\x80\x00\x21\x00\x00\x00\x00\xdd\x3f\x33\xb1")


def test_string_header_is_type_7_with_u16_length():
    wire = encode_message({"k": "vv"}, b"")
    assert wire[12:18] == b"\x01k\x07\x00\x02v" and wire[18:19] == b"v"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(15, 0), "length"),
        (frame(0, 0), "length"),
        (frame(16 * 1024 * 1024 + 1, 0), "length"),
        (frame(2**32 - 1, 0), "length"),
        (frame(20, 5), "headers length"),
        (b"\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00", "prelude CRC"),
    ],
)
def test_bad_preludes_are_rejected_with_a_clear_error(data, reason):
    with pytest.raises(EventStreamError, match=reason):
        EventStreamDecoder().feed(data)


def test_bad_message_crc_is_rejected():
    wire = bytearray(encode_message({":message-type": "event"}, b"{}"))
    wire[-1] ^= 0x01
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(wire))


def test_decoder_stays_failed_after_an_error():
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(frame(3, 0))
    with pytest.raises(EventStreamError):
        decoder.feed(encode_message({}, b"fine"))


def test_malformed_headers_with_valid_crcs_are_rejected():
    prelude = struct.pack("!II", 12 + 3 + 4, 3)
    body = prelude + struct.pack("!I", zlib.crc32(prelude)) + b"\x01a\x0a"  # unknown type 10
    wire = body + struct.pack("!I", zlib.crc32(body))
    with pytest.raises(EventStreamError, match="unknown header value type"):
        EventStreamDecoder().feed(wire)


def test_unencodable_headers_raise_our_error():
    with pytest.raises(EventStreamError):
        encode_message({"": "x"}, b"")
    with pytest.raises(EventStreamError):
        encode_message({"x" * 256: "x"}, b"")
    with pytest.raises(EventStreamError):
        encode_message({"k": "x" * 70_000}, b"")
    with pytest.raises(EventStreamError):
        encode_message({"k": 2**64}, b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_never_crash_with_anything_but_our_error(data, cuts):
    decoder = EventStreamDecoder()
    try:
        for chunk in split(data, cuts):
            decoder.feed(chunk)
    except EventStreamError:
        pass


@settings(max_examples=300, deadline=None)
@given(messages_st, st.data())
def test_bit_flips_and_truncation_are_detected(messages, data):
    wire = bytearray(b"".join(encode_message(h, p) for h, p in messages))
    if data.draw(st.booleans(), label="flip"):
        bit = data.draw(st.integers(0, len(wire) * 8 - 1), label="bit")
        wire[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(EventStreamError):
            decoder = EventStreamDecoder()
            decoder.feed(bytes(wire))
            # a flipped length may just ask for more bytes: that is detected at EOF
            if decoder.pending:
                raise EventStreamError("truncated")
    else:
        cut = data.draw(st.integers(0, len(wire) - 1), label="cut")
        ends = list(itertools.accumulate(len(encode_message(h, p)) for h, p in messages))
        decoder = EventStreamDecoder()
        decoded = decoder.feed(bytes(wire[:cut]))
        assert len(decoded) == sum(1 for end in ends if end <= cut)
        assert decoder.pending == cut - (ends[len(decoded) - 1] if decoded else 0)
