"""``POST /v1/messages`` judged by the unmodified ``anthropic`` SDK against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import anthropic
import pytest

from serving import Server, received, serve, serve_in_thread
from streamchat.server.common import ServerConfig

TEXT = "Streaming works one word at a time, exactly as scripted."
WORDS = 10  # scripted tokens in TEXT
MODEL = "claude-3-5-sonnet-20241022"  # any id: the server answers with its default, echoing it
USER = [{"role": "user", "content": "Say something"}]
MAX_BODY = 20_000


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("anthropic") / "requests.jsonl"


@pytest.fixture(scope="module")
def server(record: Path) -> Iterator[Server]:
    spec = "scripted?" + urlencode({"text": TEXT, "delay": 0.05, "record": str(record)})
    with serve("--model", spec, "--max-body-bytes", str(MAX_BODY)) as running:
        yield running


@pytest.fixture
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def last_request(record: Path) -> dict:
    return received(record)[-1]


def test_create_returns_the_whole_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert message.content[0].text == TEXT
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, WORDS)
    assert message.id.startswith("msg_")


def test_create_stream_yields_protocol_events_in_order(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=100, messages=USER, stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * WORDS,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.model == MODEL
    assert events[0].message.usage.input_tokens == 2
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == TEXT
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == WORDS


def test_stream_helpers_accumulate_the_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == WORDS


@pytest.mark.anyio
async def test_async_client_streams_and_creates(server: Server) -> None:
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0)
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == WORDS
    assert "".join(pieces) == final.content[0].text == TEXT
    created = await client.messages.create(model=MODEL, max_tokens=3, messages=USER)
    assert created.stop_reason == "max_tokens"
    await client.close()


def test_max_tokens_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=3, messages=USER)
    assert message.content[0].text == "Streaming works one"
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_stop_sequence_stops_and_is_reported(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=USER, stop_sequences=["at a"]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Streaming works one word "
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "at a")


def test_request_fields_reach_the_provider(client: anthropic.Anthropic, record: Path) -> None:
    client.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "one"}]},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
        system=[{"type": "text", "text": "Be terse."}],
        metadata={"user_id": "abc"},
        extra_body={"temperature": 0.25, "top_k": 4},
    )
    sent = last_request(record)
    assert sent["system"] == "Be terse."
    assert [turn["content"] for turn in sent["messages"]] == ["one", "two", "three"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (50, 0.25, 4)
    assert sent["model"] == MODEL


def test_deltas_arrive_as_they_are_generated() -> None:
    """No buffering: the first deltas reach the client while the rest of the reply does not
    exist yet (the provider stalls after three tokens), an order of events, not a time."""
    spec = "scripted?" + urlencode({"text": TEXT, "stall_after": 3})
    with serve_in_thread(ServerConfig(default_model=spec, models=[])) as url:
        client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=60)
        with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
            texts = stream.text_stream
            first = [next(texts) for _ in range(3)]
    assert "".join(first) == " ".join(TEXT.split()[:3])


def test_count_tokens_matches_the_usage_of_a_reply(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "how many tokens are these"}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    created = client.messages.create(model=MODEL, max_tokens=1, messages=messages)
    assert counted.input_tokens == created.usage.input_tokens == 5


def test_models_list_is_the_anthropic_page(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [model.id for model in page.data]
    assert ids[0].startswith("scripted?") and "smollm2" in ids
    assert page.has_more is False
    assert page.data[1].display_name == "SmolLM2-135M-Instruct"


def bad_request(client: anthropic.Anthropic, **request: object) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.post("/v1/messages", cast_to=anthropic.types.Message, **request)
    return caught.value


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"content": b'{"model": "m", "max_tokens": 5,'}, "not valid JSON"),
        ({"body": {"model": MODEL, "messages": USER}}, "max_tokens: field required"),
        ({"body": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}},
         "messages.0.role"),
        ({"body": {"model": MODEL, "max_tokens": 10**6, "messages": USER}}, "max_tokens: must be"),
    ],
)  # fmt: skip
def test_invalid_requests_are_bad_request_errors_naming_the_field(
    client: anthropic.Anthropic, request_kwargs: dict, field: str
) -> None:
    error = bad_request(client, **request_kwargs)
    assert isinstance(error, anthropic.BadRequestError)
    assert error.status_code == 400
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "invalid_request_error"
    assert field in error.body["error"]["message"]


def test_bad_role_through_create_is_a_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.role"):
        client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "tool", "content": "x"}]
        )


def test_body_over_the_limit_is_413(client: anthropic.Anthropic) -> None:
    huge = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=MODEL, max_tokens=5, messages=huge)
    assert caught.value.status_code == 413
    assert isinstance(caught.value, anthropic.ContentTooLargeError)
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert str(MAX_BODY) in caught.value.body["error"]["message"]
