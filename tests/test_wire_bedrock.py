"""The Bedrock codec's tables and parsers, checked against botocore's own service model."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel

from streamchat.errors import ERROR_STATUS, InvalidRequestError
from streamchat.events import ErrorBody, ErrorEvent, PingEvent
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.server.auth import client_key
from streamchat.wire import bedrock
from streamchat.wire.eventstream import EventStreamDecoder

SERVICE = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2"))
CONVERSE_STREAM = SERVICE.shape_for("ConverseStreamOutput").members
RESPONSE_STREAM = SERVICE.shape_for("ResponseStream").members


def decode(data: bytes) -> list[tuple[dict, dict]]:
    return [(m.headers, json.loads(m.payload)) for m in EventStreamDecoder().feed(data)]


@pytest.mark.parametrize("error_type", sorted(ERROR_STATUS))
def test_every_canonical_error_has_a_modeled_bedrock_error(error_type):
    error = bedrock.ERRORS[error_type]
    assert error.stream in CONVERSE_STREAM and error.stream in RESPONSE_STREAM
    if error.code != "UnrecognizedClientException":  # an AWS-wide auth error, not in the model
        shape = SERVICE.shape_for(error.code)
        assert shape.metadata["exception"] and shape.metadata["error"]["httpStatusCode"] == (
            error.status
        )


def test_overload_and_rate_limits_are_throttling():
    for error_type in ("overloaded_error", "rate_limit_error"):
        assert bedrock.ERRORS[error_type] == ("ThrottlingException", 429, "throttlingException")
    assert bedrock.error_response("overloaded_error", "busy") == (
        429,
        {"x-amzn-ErrorType": "ThrottlingException"},
        {"message": "busy"},
    )


def test_converse_event_names_are_stream_members():
    assert {name for name, _ in bedrock.CONVERSE_EVENTS.values()} <= set(CONVERSE_STREAM)


def test_converse_stream_encoder_maps_events_and_totals_usage():
    encoder = bedrock.ConverseStreamEncoder(started=0.0)
    events = [
        message_start("m", 9),
        text_block_start(),
        PingEvent(),
        text_delta("Hi"),
        *message_end("max_tokens", 17),
    ]
    frames = decode(b"".join(encoder.encode(e) for e in events))
    assert [(h[":event-type"], p) for h, p in frames[:-1]] == [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "max_tokens"}),
    ]
    headers, metadata = frames[-1]
    assert headers == {
        ":event-type": "metadata",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert metadata["usage"] == {"inputTokens": 9, "outputTokens": 17, "totalTokens": 26}


def test_error_event_becomes_an_exception_message():
    encoder = bedrock.ConverseStreamEncoder(started=0.0)
    [(headers, payload)] = decode(encoder.encode(ErrorEvent(ErrorBody("api_error", "boom"))))
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "internalServerException"
    assert payload == {"message": "boom"}


def test_invoke_stream_chunks_carry_the_anthropic_event():
    encoder = bedrock.InvokeStreamEncoder(started=0.0)
    [(headers, payload)] = decode(encoder.encode(text_delta("Hi")))
    assert headers[":event-type"] == "chunk"
    assert json.loads(base64.b64decode(payload["bytes"])) == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi"},
    }


def test_converse_kwargs_map_fields_and_ignore_cache_points():
    kwargs = bedrock.converse_kwargs(
        {
            "messages": [{"role": "user", "content": [{"text": "a"}, {"cachePoint": {}}]}],
            "system": [{"text": "one"}, {"text": "two"}],
            "inferenceConfig": {"maxTokens": 5, "topP": 0.5, "stopSequences": ["x"]},
            "additionalModelRequestFields": {"top_k": 3, "other": 1},
        }
    )
    assert kwargs == {
        "messages": [{"role": "user", "content": "a"}],
        "max_tokens": 5,
        "system": "one\ntwo",
        "top_p": 0.5,
        "stop_sequences": ["x"],
        "top_k": 3,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "request body"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": 1}]}]}, "messages.0.content.0.text"),
        (
            {"messages": [{"role": "user", "content": [{"text": "a"}]}], "toolConfig": {"t": 1}},
            "toolConfig.tools",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "a"}]}], "inferenceConfig": 3},
            "inferenceConfig",
        ),
    ],
)
def test_converse_kwargs_errors_name_the_field(body, field):
    with pytest.raises(InvalidRequestError) as caught:
        bedrock.converse_kwargs(body)
    assert caught.value.message.startswith(f"{field}:")


def test_build_converse_request_names_converse_fields_and_defaults_max_tokens():
    body = {"messages": [{"role": "user", "content": [{"text": "a"}]}]}
    assert bedrock.build_converse_request(body, model="m", max_tokens_limit=100).max_tokens == 100
    assert bedrock.build_converse_request(body, model="m", max_tokens_limit=9999).max_tokens == 1024
    with pytest.raises(InvalidRequestError, match=r"^inferenceConfig\.temperature:"):
        bedrock.build_converse_request(
            {**body, "inferenceConfig": {"temperature": "hot"}}, model="m", max_tokens_limit=10
        )


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=AKID123/20250101/us-west-2/bedrock/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=abc",
            "AKID123",
        ),
        ("Bearer my-bedrock-key", "my-bedrock-key"),
        ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=abc", None),
        ("Basic dXNlcjpwYXNz", None),
        ("", None),
        (None, None),
    ],
)
def test_client_key_reads_the_sigv4_access_key_id(header, key):
    assert client_key(header) == key
