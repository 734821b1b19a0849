"""``POST /v1/chat/completions`` judged by the unmodified ``openai`` SDK against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import openai
import pytest

from serving import Server, received, serve, serve_in_thread
from streamchat.server.common import ServerConfig

TEXT = "Streaming works one word at a time, exactly as scripted."
WORDS = 10
MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "Say something"}]
MAX_BODY = 20_000


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai") / "requests.jsonl"


@pytest.fixture(scope="module")
def server(record: Path) -> Iterator[Server]:
    spec = "scripted?" + urlencode({"text": TEXT, "delay": 0.05, "record": str(record)})
    with serve("--model", spec, "--max-body-bytes", str(MAX_BODY)) as running:
        yield running


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def last_request(record: Path) -> dict:
    return received(record)[-1]


def test_create_returns_a_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert (choice.message.role, choice.message.content) == ("assistant", TEXT)
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, WORDS, 12)


def test_stream_yields_role_deltas_and_finish_reason(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert all(chunk.model == MODEL and chunk.usage is None for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == TEXT
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "stop"
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])


def test_include_usage_adds_a_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=4,
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 4)
    assert last.usage.total_tokens == 6
    assert chunks[-2].choices[0].finish_reason == "length"


@pytest.mark.anyio
async def test_async_client_streams(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(p or "" for p in pieces) == TEXT
    completion = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    await client.close()


def test_stop_ends_with_finish_reason_stop(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER, stop="at a")
    assert completion.choices[0].message.content == "Streaming works one word "
    assert completion.choices[0].finish_reason == "stop"


def test_request_fields_reach_the_provider(client: openai.OpenAI, record: Path) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
            {"role": "user", "content": [{"type": "text", "text": "one"}]},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
        max_completion_tokens=40,
        stop=["STOP", "END"],
        seed=11,
        temperature=0.5,
        top_p=0.75,
        n=1,
    )
    sent = last_request(record)
    assert sent["system"] == "Be terse.\n\nNo lists."
    assert [(t["role"], t["content"]) for t in sent["messages"]] == [
        ("user", "one"),
        ("assistant", "two"),
        ("user", "three"),
    ]
    assert (sent["max_tokens"], sent["stop_sequences"], sent["seed"]) == (40, ["STOP", "END"], 11)
    assert (sent["temperature"], sent["top_p"]) == (0.5, 0.75)


def test_deltas_arrive_as_they_are_generated() -> None:
    """No buffering: the first deltas reach the client while the rest of the reply does not
    exist yet (the provider stalls after three tokens), an order of events, not a time."""
    spec = "scripted?" + urlencode({"text": TEXT, "stall_after": 3})
    with serve_in_thread(ServerConfig(default_model=spec, models=[])) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        first: list[str] = []
        with client.chat.completions.create(model=MODEL, messages=USER, stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first.append(chunk.choices[0].delta.content)
                if len(first) == 3:
                    break
    assert "".join(first) == " ".join(TEXT.split()[:3])


def test_models_list_is_the_openai_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.object for m in models.data] == ["model"] * len(models.data)
    assert "smollm2" in [m.id for m in models.data]
    assert models.data[0].owned_by == "streamchat"


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"content": b'{"model": "m", "messages": ['}, "not valid JSON"),
        ({"body": {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}},
         "messages.0.role"),
        ({"body": {"model": MODEL, "messages": USER, "max_completion_tokens": 10**6}},
         "max_completion_tokens: must be"),
        ({"body": {"model": MODEL, "messages": USER, "max_tokens": 0}}, "max_tokens: must be"),
        ({"body": {"model": MODEL, "messages": USER, "n": 3}}, "n: only n=1"),
        ({"body": {"messages": USER}}, "model: field required"),
    ],
)  # fmt: skip
def test_invalid_requests_are_bad_request_errors_naming_the_field(
    client: openai.OpenAI, request_kwargs: dict, field: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", cast_to=openai.types.chat.ChatCompletion, **request_kwargs)
    error = caught.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert field in error.message
    if ":" in field and " " not in field.split(":")[0]:
        assert error.param == field.split(":")[0]


def test_body_over_the_limit_is_413(client: openai.OpenAI) -> None:
    huge = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=huge)
    assert caught.value.status_code == 413
    assert caught.value.type == "request_too_large"
    assert str(MAX_BODY) in caught.value.message
