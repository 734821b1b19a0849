"""Fuzzing every decoder and request parser: a clear, protocol-shaped error, never a crash.

The codec round trips and the Anthropic/OpenAI body parsers are fuzzed in their own test files;
here: split-invariance and bounded buffers of both stream decoders, the Bedrock and
count-tokens parsers, the JSON gate, and random bodies POSTed over HTTP to a real in-process
server on every endpoint, where the only acceptable answers are a complete 200 or a 4xx in the
protocol's own error shape.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import PROTOCOLS, Protocol, error_type_of
from serving import serve_in_thread
from streamchat.errors import InvalidRequestError
from streamchat.request import MessageRequest, build_request
from streamchat.server.auth import client_key
from streamchat.server.common import ServerConfig, parse_json
from streamchat.wire import anthropic, bedrock
from streamchat.wire.eventstream import (
    PRELUDE_LENGTH,
    EventStreamDecoder,
    EventStreamError,
    encode_message,
)
from streamchat.wire.sse import SSEDecodeError, SSEDecoder

FIELD_ERROR = re.compile(r"^(request body|[A-Za-z_][\w.]*): \S")
LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
texts = st.text(max_size=12) | LONE_SURROGATES
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**70)
    | st.floats()  # NaN and infinities too: Python's json writes and reads them
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=14,
)
cuts = st.lists(st.integers(min_value=0), max_size=8)


def split(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- stream decoders ------------------------------------------------------------------------------
MAX_MESSAGE = 256
frames = st.builds(
    encode_message,
    st.dictionaries(
        st.sampled_from([":event-type", ":message-type", "x"]),
        texts.filter(lambda t: t.isascii()),
        max_size=2,
    ),
    st.binary(max_size=120),
)
eventstream_bytes = st.lists(frames | st.binary(max_size=24), max_size=6).map(b"".join)


def eventstream_outcome(chunks: list[bytes]) -> tuple[list[Any], bool]:
    """Messages decoded and whether the decoder refused the bytes; checks its buffer bound."""
    decoder = EventStreamDecoder(max_message_length=MAX_MESSAGE)
    messages: list[Any] = []
    try:
        for chunk in chunks:
            messages += decoder.feed(chunk)
            assert decoder.pending < MAX_MESSAGE  # never more than one message's worth held
    except EventStreamError:
        return messages, True
    return messages, False


@settings(max_examples=300, deadline=None)
@given(eventstream_bytes, cuts)
def test_eventstream_decoding_does_not_depend_on_how_bytes_are_split(
    data: bytes, points: list[int]
) -> None:
    whole, whole_failed = eventstream_outcome([data])
    parts, parts_failed = eventstream_outcome(split(data, points))
    assert whole_failed == parts_failed
    if not whole_failed:
        assert whole == parts


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=MAX_MESSAGE + 1, max_value=2**32 - 1), st.binary(max_size=64))
def test_huge_declared_lengths_are_refused_before_any_payload_is_buffered(
    total: int, tail: bytes
) -> None:
    lengths = struct.pack("!II", total, 0)
    prelude = lengths + struct.pack("!I", zlib.crc32(lengths))  # a valid CRC: only size is wrong
    decoder = EventStreamDecoder(max_message_length=MAX_MESSAGE)
    with pytest.raises(EventStreamError, match="length"):
        decoder.feed(prelude)
    with pytest.raises(EventStreamError):  # and it stays refused: nothing more is buffered
        decoder.feed(tail)
    assert decoder.pending == PRELUDE_LENGTH


MAX_LINE = 64
sse_pieces = st.sampled_from(
    [b"data: x", b"data:", b"event: e", b"id: 1", b"id: \x00", b"retry: 5", b"retry: x", b": c",
     b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"\xff\xfe", "é☃".encode(), b"y" * 30]
)  # fmt: skip
sse_bytes = st.lists(sse_pieces | st.binary(max_size=12), max_size=24).map(b"".join)


def sse_outcome(chunks: list[bytes]) -> tuple[list[Any], bool]:
    """Messages decoded and whether the decoder refused the bytes; checks its buffer bounds."""
    decoder = SSEDecoder(max_line_bytes=MAX_LINE)
    messages: list[Any] = []
    try:
        for chunk in chunks:
            messages += decoder.feed(chunk)
            assert len(decoder._partial) <= MAX_LINE
            assert decoder._data_bytes <= MAX_LINE
    except SSEDecodeError:
        return messages, True
    return messages, False


@settings(max_examples=300, deadline=None)
@given(sse_bytes, cuts)
def test_sse_decoding_does_not_depend_on_how_bytes_are_split(
    data: bytes, points: list[int]
) -> None:
    whole, whole_failed = sse_outcome([data])
    parts, parts_failed = sse_outcome(split(data, points))
    assert whole_failed == parts_failed
    if not whole_failed:
        assert whole == parts


# -- request parsers ------------------------------------------------------------------------------
converse_blocks = st.lists(
    st.fixed_dictionaries({"text": texts | json_values}) | json_values, max_size=3
)
converse_bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {}, optional={"role": st.sampled_from(["user", "assistant"]) | json_values,
                              "content": converse_blocks | json_values}
            ) | json_values,
            max_size=3,
        ) | json_values,
        "system": converse_blocks | json_values,
        "inferenceConfig": st.dictionaries(
            st.sampled_from(["maxTokens", "temperature", "topP", "stopSequences", "other"]),
            json_values,
        ) | json_values,
        "additionalModelRequestFields": st.dictionaries(st.just("top_k"), json_values)
        | json_values,
        "toolConfig": json_values,
    },
)  # fmt: skip
anthropic_bodies = st.dictionaries(
    st.sampled_from(["anthropic_version", "model", "max_tokens", "messages", "system",
                     "temperature", "stop_sequences", "tools", "stream"]),
    json_values,
)  # fmt: skip


def accepted_or_field_error(parse: Callable[[Any], MessageRequest], body: Any) -> None:
    """``parse(body)`` returns a request or raises a 400 whose message names the field."""
    try:
        assert isinstance(parse(body), MessageRequest)
    except InvalidRequestError as error:
        assert FIELD_ERROR.match(error.message), error.message


@settings(max_examples=300, deadline=None)
@given(converse_bodies | json_values)
def test_any_converse_body_is_a_request_or_a_validation_error_naming_a_converse_field(
    body: Any,
) -> None:
    def parse(value: Any) -> MessageRequest:
        try:
            return bedrock.build_converse_request(value, model="m", max_tokens_limit=4096)
        except InvalidRequestError as error:  # canonical names must not leak to Bedrock users
            assert not error.message.startswith(("max_tokens:", "temperature:", "top_p:"))
            raise

    accepted_or_field_error(parse, body)


@settings(max_examples=200, deadline=None)
@given(anthropic_bodies | json_values)
def test_any_invoke_body_is_a_request_or_a_validation_error(body: Any) -> None:
    accepted_or_field_error(
        lambda value: bedrock.build_invoke_request(value, model="m", max_tokens_limit=4096), body
    )


@settings(max_examples=200, deadline=None)
@given(anthropic_bodies | json_values)
def test_any_count_tokens_body_is_a_request_or_a_field_error(body: Any) -> None:
    def parse(value: Any) -> MessageRequest:
        kwargs = anthropic.parse_count_tokens_request(value)
        return build_request(**kwargs, max_tokens=1)

    accepted_or_field_error(parse, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 100_000 + b"]" * 100_000)  # RecursionError inside json.loads
@example(b'{"max_tokens": ' + b"9" * 5000 + b"}")  # ValueError: int over 4300 digits
@example(b'{"content": "\\ud800 lone surrogate"}')  # parses, but nothing can encode it
@example(b'{"content": "\\ud83d\\ude00 a pair is fine"}')
def test_request_bodies_are_trusted_json_or_a_400(body: bytes) -> None:
    try:
        value = parse_json(body)
    except InvalidRequestError as error:
        assert error.message.startswith("request body is not valid JSON")
        return
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # what every encoder will do


@given(st.text(max_size=300))
@example("AWS4-HMAC-SHA256 Credential=/x/y")
@example("Bearer    ")
def test_any_authorization_header_yields_a_key_or_none(header: str) -> None:
    key = client_key(header)
    assert key is None or (isinstance(key, str) and key)


# -- random bodies over HTTP -------------------------------------------------------------------
@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A real server in this process, history on (random text reaches SQLite too)."""
    db = tmp_path_factory.mktemp("fuzz") / "history.db"
    config = ServerConfig(default_model="scripted", models=[], history_path=str(db))
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def check_answer(protocol: Protocol, path: str, response: httpx.Response) -> None:
    """A complete 200 in the protocol's format, or a 4xx in its error shape."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code != 200:
        assert response.status_code >= 400
        error_type_of(protocol.family, response.status_code, response.headers, response.content)
        return
    kind = response.headers["content-type"]
    if kind.startswith(("text/event-stream", "application/vnd.amazon.eventstream")):
        reader = protocol.reader()
        reader.feed(response.content)
        assert reader.done and reader.error is None, reader.kinds
    elif path.endswith("/count_tokens"):
        assert isinstance(response.json()["input_tokens"], int)
    else:
        assert isinstance(protocol.plain_text(response.json()), str)


ENDPOINTS = [
    (protocol, path)
    for protocol in PROTOCOLS.values()
    for path in dict.fromkeys([protocol.stream_path, protocol.plain_path])
] + [(PROTOCOLS["anthropic"], "/v1/messages/count_tokens")]
ENDPOINT_IDS = [path.rsplit("/", 1)[-1] for _, path in ENDPOINTS]


def near_valid(protocol: Protocol) -> st.SearchStrategy[bytes]:
    """A valid body with its content and up to two fields replaced by random values: about
    half are still valid, so the paths past validation (streaming, history) get fuzzed too."""
    base = protocol.body("hello fuzz", 16, stream=True)
    message = base["messages"][0]
    replacements = st.dictionaries(
        st.sampled_from([*sorted(base), "stream", "stop", "stop_sequences", "n", "top_k"]),
        json_values,
        max_size=2,
    )
    words = st.text(st.characters(codec="utf-8"), max_size=30)  # any valid text at all
    if protocol.name == "bedrock":
        valid = st.lists(st.fixed_dictionaries({"text": words}), min_size=1, max_size=3)
    else:
        valid = words | st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": words}), max_size=3
        )
    invalid = json_values | st.lists(
        st.fixed_dictionaries({"type": texts, "text": json_values})
        | st.fixed_dictionaries({"text": json_values}),
        min_size=1,
        max_size=3,
    )

    def build(changes: dict[str, Any], new_content: Any, stream: bool) -> bytes:
        body = {**base, "messages": [{**message, "content": new_content}], **changes}
        if protocol.family != "bedrock":
            body.setdefault("stream", stream)
        return json.dumps(body).encode()

    return st.builds(build, st.just({}) | replacements, valid | invalid, st.booleans())


def bodies(protocol: Protocol) -> st.SearchStrategy[bytes]:
    """Half near-valid bodies, a quarter random bytes, a quarter random JSON."""
    near = near_valid(protocol)
    return st.one_of(
        near, near, st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())
    )


@pytest.mark.parametrize(("protocol", "path"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_random_bodies_get_a_complete_reply_or_the_protocols_4xx(
    http: httpx.Client, protocol: Protocol, path: str
) -> None:
    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bodies(protocol))
    @example(b"[" * 50_000)
    @example(b'{"max_tokens": 1' + b"0" * 5000 + b"}")
    @example(json.dumps(protocol.body("\ud800", 8)).encode())
    def run(body: bytes) -> None:
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        check_answer(protocol, path, response)

    run()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["..", "%", "a/../b", "\x00", "arn:aws:x/y"]))
def test_any_model_id_in_a_bedrock_path_is_served_or_refused_cleanly(
    http: httpx.Client, model: str
) -> None:
    protocol = PROTOCOLS["bedrock"]
    encoded = quote(model, safe="").replace(".", "%2E")  # or the client resolves "." and ".."
    path = f"/model/{encoded}/converse"
    response = http.post(path, json=protocol.body("hi", 4))
    check_answer(protocol, path, response)


def test_a_normal_request_streams_its_echo(http: httpx.Client) -> None:
    """The fuzzing server (shared by the tests above) still answers a valid request exactly."""
    protocol = PROTOCOLS["anthropic"]
    response = http.post(protocol.stream_path, json=protocol.body("still here", 32))
    reader = protocol.reader()
    reader.feed(response.content)
    assert reader.text == "[turn 1] You said: still here" and reader.done
