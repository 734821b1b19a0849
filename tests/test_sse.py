"""The SSE codec: what the encoder writes, the decoder reads back, however the bytes are split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamchat.wire.sse import SSEDecodeError, SSEDecoder, SSEMessage, encode_sse


def decode_all(chunks: list[bytes], **options: int) -> list[SSEMessage]:
    decoder = SSEDecoder(**options)
    return [message for chunk in chunks for message in decoder.feed(chunk)]


def test_encoder_writes_the_frame_the_sdks_read() -> None:
    assert encode_sse("message_stop", '{"type":"message_stop"}') == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert encode_sse(None, "[DONE]") == b"data: [DONE]\n\n"


def test_multi_line_data_becomes_several_data_lines() -> None:
    assert encode_sse("x", "a\nb\r\nc") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"
    assert decode_all([encode_sse("x", "a\nb")]) == [SSEMessage(data="a\nb", event="x")]


def test_event_name_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_sse("bad\nname", "{}")


def test_decoder_handles_crlf_cr_comments_and_fields() -> None:
    stream = (
        b"\xef\xbb\xbf: a comment\r\n"
        b"event: ping\r\ndata: {}\r\n\r\n"
        b"id: 7\rretry: 1500\rdata:no-space\r\r"
        b"data: only data\n\n"
        b"event: empty\n\n"  # no data: dispatches nothing
    )
    assert decode_all([stream]) == [
        SSEMessage(data="{}", event="ping"),
        SSEMessage(data="no-space", id="7", retry=1500),
        SSEMessage(data="only data", id="7", retry=1500),
    ]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    messages = decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert messages == [SSEMessage(data="a\nb")]


def test_utf8_split_inside_a_character_survives() -> None:
    frame = encode_sse("content_block_delta", "héllo ☃")
    chunks = [frame[i : i + 1] for i in range(len(frame))]
    assert decode_all(chunks) == [SSEMessage(data="héllo ☃", event="content_block_delta")]


def test_an_endless_line_raises_a_clear_error() -> None:
    decoder = SSEDecoder(max_line_bytes=64)
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEDecodeError, match="longer than 64 bytes"):
        decoder.feed(b"x" * 50)


def test_an_over_long_line_inside_one_chunk_raises() -> None:
    with pytest.raises(SSEDecodeError, match="longer than 16 bytes"):
        SSEDecoder(max_line_bytes=16).feed(b"data: " + b"y" * 40 + b"\n\n")


def test_event_data_over_the_limit_across_lines_raises() -> None:
    lines = b"".join(b"data: 0123456789\n" for _ in range(10))
    with pytest.raises(SSEDecodeError, match="event data longer than 64 bytes"):
        SSEDecoder(max_line_bytes=64).feed(lines)


names = st.none() | st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1
)
datas = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))


@given(
    events=st.lists(st.tuples(names, datas), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_round_trip_whatever_the_chunking(
    events: list[tuple[str | None, str]], cuts: list[int]
) -> None:
    stream = b"".join(encode_sse(name, data) for name, data in events)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [
        SSEMessage(data=data.replace("\r\n", "\n").replace("\r", "\n"), event=name or None)
        for name, data in events
    ]
    assert decode_all(chunks) == expected
