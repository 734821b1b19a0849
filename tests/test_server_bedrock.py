"""The Bedrock Runtime endpoints, judged by unmodified boto3 and anthropic.AnthropicBedrock."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anthropic
import boto3
import botocore.exceptions
import httpx
import pytest
import uvicorn
from botocore.config import Config

from embedded_model import check_limit
from streamchat.providers import ScriptedProvider
from streamchat.providers.scripted import tokenize
from streamchat.request import build_request
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from waiting import wait_until

HELLO = [{"role": "user", "content": [{"text": "hello world"}]}]  # Converse shape
HI = [{"role": "user", "content": "hi"}]  # Anthropic shape
BAD_IMAGE = [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": b"x"}}}]}]
ScriptedFactory = Callable[..., tuple[str, ScriptedProvider]]


@dataclass
class LiveServer:
    url: str
    config: ServerConfig


@contextlib.contextmanager
def running(config: ServerConfig) -> Iterator[LiveServer]:
    """The full app under uvicorn, in this process (so tests can read provider counters)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
        yield LiveServer(url, config)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with running(ServerConfig()) as live:
        yield live


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials: boto3 must sign, but nothing here is a real AWS account."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def bedrock_client(url: str):  # boto3 clients are generated classes: no useful annotation
    """A client from a fresh session: the default session caches the first credentials it saw."""
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    session = boto3.session.Session()
    return session.client(
        "bedrock-runtime", endpoint_url=url, region_name="us-west-2", config=config
    )


@pytest.fixture
def bedrock(server: LiveServer, aws_env: None):
    return bedrock_client(server.url)


@pytest.fixture
def claude(server: LiveServer) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        base_url=server.url,
        aws_access_key="x",
        aws_secret_key="y",
        aws_region="us-west-2",
        max_retries=0,
    )


@pytest.fixture
def aclaude(server: LiveServer) -> anthropic.AsyncAnthropicBedrock:
    return anthropic.AsyncAnthropicBedrock(
        base_url=server.url,
        aws_access_key="x",
        aws_secret_key="y",
        aws_region="us-west-2",
        max_retries=0,
    )


@pytest.fixture
def model(server: LiveServer, scripted: ScriptedFactory) -> ScriptedFactory:
    """A scripted model the server will serve by name (and the provider instance behind it)."""

    def make(**options: object) -> tuple[str, ScriptedProvider]:
        spec, provider = scripted(**options)
        server.config.models.append(spec)
        return spec, provider

    return make


def expected_events(text: str, stop_reason: str, input_tokens: int) -> list[dict]:
    """The notebook's event sequence for a reply streamed word by word."""
    tokens = tokenize(text)
    usage = {
        "inputTokens": input_tokens,
        "outputTokens": len(tokens),
        "totalTokens": input_tokens + len(tokens),
    }
    return [
        {"messageStart": {"role": "assistant"}},
        *({"contentBlockDelta": {"delta": {"text": t}, "contentBlockIndex": 0}} for t in tokens),
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": stop_reason}},
        {"metadata": {"usage": usage, "metrics": {"latencyMs": pytest.approx(0, abs=10_000)}}},
    ]


# -- boto3: converse / converse_stream ---------------------------------------------------------
def test_converse_returns_text_where_the_notebook_reads_it(bedrock, model):
    spec, provider = model(text="Hi there! Happy to help.")
    response = bedrock.converse(
        modelId=spec, messages=HELLO, system=[], inferenceConfig={}, additionalModelRequestFields={}
    )
    assert response["output"]["message"]["content"][0]["text"] == "Hi there! Happy to help."
    assert response["output"]["message"]["role"] == "assistant"
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 2, "outputTokens": 5, "totalTokens": 7}
    assert isinstance(response["metrics"]["latencyMs"], int)
    assert response["ResponseMetadata"]["RequestId"]
    assert len(provider.requests) == 1


def test_converse_stream_yields_the_notebooks_event_sequence(bedrock, model):
    text = "Hi! I'm here to help. What's on your mind?"
    spec, _ = model(text=text)
    response = bedrock.converse_stream(modelId=spec, messages=HELLO)
    assert type(response["stream"]).__name__ == "EventStream"
    assert list(response["stream"]) == expected_events(text, "end_turn", input_tokens=2)


def test_notebook_printing_loop_prints_role_text_stop_reason_and_usage(bedrock, model, capsys):
    spec, _ = model(text="Dogs chase cats.")
    messages = [{"role": "user", "content": [{"text": "Write me a 3 word sentence"}]}]
    response = bedrock.converse_stream(modelId=spec, messages=messages)

    # --- the notebook's loop, verbatim ---
    # fmt: off
    for event in response["stream"]:
        if 'messageStart' in event:
            print(f"\nRole: {event['messageStart']['role']}")

        if 'contentBlockDelta' in event:
            print(event['contentBlockDelta']['delta']['text'], end="")

        if 'messageStop' in event:
            print(f"\nStop reason: {event['messageStop']['stopReason']}")

        if 'metadata' in event:
            metadata = event['metadata']
            if 'usage' in metadata:
                print("\nToken usage")
                print(f"Input tokens: {metadata['usage']['inputTokens']}")
                print(
                    f":Output tokens: {metadata['usage']['outputTokens']}")
                print(f":Total tokens: {metadata['usage']['totalTokens']}")
            if 'metrics' in event['metadata']:
                print(
                    f"Latency: {metadata['metrics']['latencyMs']} milliseconds")
    # fmt: on
    # --- end of the notebook's loop ---

    out = capsys.readouterr().out
    assert re.fullmatch(
        r"\nRole: assistant\nDogs chase cats\.\nStop reason: end_turn\n\nToken usage\n"
        r"Input tokens: 6\n:Output tokens: 3\n:Total tokens: 9\nLatency: \d+ milliseconds\n",
        out,
    ), out


@pytest.mark.parametrize(
    ("options", "inference", "stop_reason", "text"),
    [
        ({"text": "one two three"}, {}, "end_turn", "one two three"),
        ({"text": "one two three four"}, {"maxTokens": 2}, "max_tokens", "one two"),
        ({"text": "one two STOP three"}, {"stopSequences": ["STOP"]}, "stop_sequence", "one two "),
    ],
)
def test_stop_reasons_pass_through(bedrock, model, options, inference, stop_reason, text):
    spec, _ = model(**options)
    kwargs = {"modelId": spec, "messages": HELLO, "inferenceConfig": inference}
    events = list(bedrock.converse_stream(**kwargs)["stream"])
    assert events[-2] == {"messageStop": {"stopReason": stop_reason}}
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:-3])
    assert streamed == text
    response = bedrock.converse(**kwargs)
    assert response["stopReason"] == stop_reason
    assert response["output"]["message"]["content"][0]["text"] == text


def test_converse_request_fields_reach_the_provider(bedrock, model):
    spec, provider = model(text="ok")
    bedrock.converse(
        modelId=spec,
        messages=[
            *HELLO,
            {"role": "assistant", "content": [{"text": "hi"}]},
            {"role": "user", "content": [{"text": "again"}, {"text": "!"}]},
        ],
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 7, "temperature": 0.5, "topP": 0.9, "stopSequences": ["X"]},
        additionalModelRequestFields={"top_k": 5, "anything_else": True},
    )
    request = provider.requests[-1]
    assert [(t.role, t.content) for t in request.messages] == [
        ("user", "hello world"),
        ("assistant", "hi"),
        ("user", "again!"),
    ]
    assert (request.system, request.max_tokens, request.temperature) == ("Be brief.", 7, 0.5)
    assert (request.top_p, request.top_k, request.stop_sequences) == (0.9, 5, ["X"])


def test_events_are_sent_as_generated_not_buffered(bedrock, model):
    """The first events reach the client while the rest of the reply does not exist yet (the
    provider stalls after three tokens): an order of events, not a time."""
    spec, provider = model(text="a b c d e f", stall_after=3)
    stream = bedrock.converse_stream(modelId=spec, messages=HELLO)["stream"]
    deltas = (e["contentBlockDelta"]["delta"]["text"] for e in stream if "contentBlockDelta" in e)
    first = [next(deltas) for _ in range(3)]
    stream.close()
    assert first == ["a", " b", " c"]
    assert provider.completed == 0  # it could not have finished: buffering would still wait


def test_mid_stream_overload_raises_event_stream_error(bedrock, model):
    spec, _ = model(text="a b c d e f", error_after=3, error="overloaded_error")
    received = []
    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        for event in bedrock.converse_stream(modelId=spec, messages=HELLO)["stream"]:
            received.append(event)
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert "overloaded" in caught.value.response["Error"]["Message"]
    assert [next(iter(e)) for e in received] == ["messageStart"] + ["contentBlockDelta"] * 3


@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_pre_stream_overload_is_a_throttling_client_error(bedrock, model, operation):
    spec, provider = model(error_before="overloaded_error")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        getattr(bedrock, operation)(modelId=spec, messages=HELLO)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert len(provider.requests) == 1  # one attempt: the client's retries are off


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "messages"),
        ({"messages": [{"role": "robot", "content": [{"text": "hi"}]}]}, "messages.0.role"),
        ({"messages": HELLO, "inferenceConfig": {"maxTokens": 10**6}}, "inferenceConfig.maxTokens"),
        ({"messages": HELLO, "inferenceConfig": {"topP": 1.5}}, "inferenceConfig.topP"),
        ({"messages": BAD_IMAGE}, "messages.0.content.0.image.format"),
        ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
    ],
)
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_bad_input_is_a_validation_exception_naming_the_field(
    bedrock, model, operation, kwargs, field
):
    spec, provider = model()
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        getattr(bedrock, operation)(modelId=spec, **kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(f"{field}:"), error["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert provider.active == 0


def test_closing_the_stream_cancels_generation(bedrock, model):
    spec, provider = model(text="word " * 400, delay=0.05)  # 20 s if nobody stopped it
    stream = bedrock.converse_stream(modelId=spec, messages=HELLO)["stream"]
    events = iter(stream)
    for _ in range(4):
        next(events)
    assert provider.active == 1
    stream.close()
    wait_until(lambda: provider.active == 0, what="the generation to end")  # either way
    assert provider.cancelled == 1 and provider.completed == 0  # stopped, not run to its end


def test_model_ids_with_reserved_characters_route_intact(bedrock, model):
    # ":" "?" "=" "&" all arrive percent-encoded in the path
    spec, provider = model(text="routed", delay=0.0, first_delay=0.0)
    assert "?" in spec and "&" in spec
    response = bedrock.converse(modelId=spec, messages=HELLO)
    assert response["output"]["message"]["content"][0]["text"] == "routed"
    assert provider.requests[-1].model == spec


# -- boto3: invoke_model / invoke_model_with_response_stream -----------------------------------
def anthropic_body(**extra: object) -> bytes:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello world"}],
        **extra,
    }
    return json.dumps(body).encode()


def test_boto3_invoke_model_returns_the_anthropic_message(bedrock, model):
    spec, _ = model(text="Hello back.")
    response = bedrock.invoke_model(modelId=spec, body=anthropic_body())
    message = json.loads(response["body"].read())
    assert message["type"] == "message" and message["model"] == spec
    assert message["content"] == [{"type": "text", "text": "Hello back."}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 2, "output_tokens": 2}
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == "2"


def test_invoke_stream_chunks_are_base64_anthropic_events_with_invocation_metrics(bedrock, model):
    spec, _ = model(text="Hello back.")
    response = bedrock.invoke_model_with_response_stream(modelId=spec, body=anthropic_body())
    events = [json.loads(part["chunk"]["bytes"]) for part in response["body"]]
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["model"] == spec
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (2, 2)
    assert 0 <= metrics["firstByteLatency"] <= metrics["invocationLatency"]


def test_invoke_requires_anthropic_version(bedrock, model):
    spec, _ = model()
    body = json.dumps({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.invoke_model(modelId=spec, body=body)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["Error"]["Message"].startswith("anthropic_version:")


# -- anthropic.AnthropicBedrock ----------------------------------------------------------------
def test_anthropic_bedrock_create(claude, model):
    spec, _ = model(text="Hello there friend.")
    message = claude.messages.create(model=spec, max_tokens=64, messages=HI)
    assert message.content[0].text == "Hello there friend."
    assert message.model == spec
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 3)


def test_anthropic_bedrock_create_stream(claude, model):
    spec, _ = model(text="Hello there friend.")
    stream = claude.messages.create(
        model=spec, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    events = list(stream)
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "Hello there friend."
    assert events[-2].usage.output_tokens == 3


def test_anthropic_bedrock_stream_helpers(claude, model):
    spec, _ = model(text="Roses are red, orchids are too.")
    with claude.messages.stream(
        model=spec, max_tokens=64, messages=[{"role": "user", "content": "sonnet"}]
    ) as stream:
        pieces = list(stream.text_stream)
    final = stream.get_final_message()
    assert "".join(pieces) == "Roses are red, orchids are too." == final.content[0].text
    assert len(pieces) == 6
    assert (final.model, final.stop_reason, final.usage.output_tokens) == (spec, "end_turn", 6)


@pytest.mark.anyio
async def test_async_anthropic_bedrock_create_and_stream(aclaude, model):
    spec, _ = model(text="Async hello.")
    messages = [{"role": "user", "content": "hi"}]
    message = await aclaude.messages.create(model=spec, max_tokens=64, messages=messages)
    assert message.content[0].text == "Async hello."
    stream = await aclaude.messages.create(
        model=spec, max_tokens=64, messages=messages, stream=True
    )
    types = [event.type async for event in stream]
    assert types.count("content_block_delta") == 2 and types[-1] == "message_stop"
    async with aclaude.messages.stream(model=spec, max_tokens=64, messages=messages) as s:
        text = "".join([piece async for piece in s.text_stream])
    final = await s.get_final_message()
    assert text == final.content[0].text == "Async hello."


def test_anthropic_bedrock_mid_stream_error_raises(claude, model):
    spec, _ = model(text="a b c d e", error_after=2, error="overloaded_error")
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded") as caught,
        claude.messages.stream(model=spec, max_tokens=64, messages=HI) as stream,
    ):
        received.extend(stream.text_stream)
    assert received == ["a", " b"]
    assert caught.value.status_code == 200  # the error came after the 200 status went out


def test_anthropic_bedrock_pre_stream_overload_is_rate_limit(claude, model):
    spec, provider = model(error_before="overloaded_error")
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=spec, max_tokens=8, messages=HI)
    assert len(provider.requests) == 1


# -- servers with their own configuration: a scripted default model ------------------------------
@pytest.fixture
def keyed_server(scripted: ScriptedFactory) -> Iterator[LiveServer]:
    spec, _ = scripted(text="authorised")
    with running(ServerConfig(default_model=spec, models=[], api_key="sekret")) as live:
        yield live


def test_model_ids_with_slashes_route_to_the_default_and_are_echoed(scripted, aws_env):
    spec, provider = scripted(text="profiled")
    arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-v2:0"
    with running(ServerConfig(default_model=spec, models=[])) as live:
        response = bedrock_client(live.url).converse(modelId=arn, messages=HELLO)
        assert response["output"]["message"]["content"][0]["text"] == "profiled"
        assert provider.requests[-1].model == arn
        streamed = bedrock_client(live.url).invoke_model_with_response_stream(
            modelId=arn, body=anthropic_body()
        )
        first = json.loads(next(iter(streamed["body"]))["chunk"]["bytes"])
        assert first["message"]["model"] == arn


def test_oversized_body_is_a_validation_exception(scripted, aws_env):
    spec, provider = scripted()
    with running(ServerConfig(default_model=spec, models=[], max_body_bytes=2000)) as live:
        big = [{"role": "user", "content": [{"text": "x" * 5000}]}]
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            bedrock_client(live.url).converse_stream(modelId="m", messages=big)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "exceeds 2000 bytes" in caught.value.response["Error"]["Message"]
    assert provider.requests == []


def test_api_key_is_the_access_key_id(keyed_server, monkeypatch, aws_env):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sekret")
    response = bedrock_client(keyed_server.url).converse(modelId="any", messages=HELLO)
    assert response["output"]["message"]["content"][0]["text"] == "authorised"
    claude = anthropic.AnthropicBedrock(
        base_url=keyed_server.url,
        aws_access_key="sekret",
        aws_secret_key="any",
        aws_region="us-west-2",
    )
    message = claude.messages.create(model="any", max_tokens=8, messages=HI)
    assert message.content[0].text == "authorised"


def test_wrong_access_key_is_refused(keyed_server, aws_env):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock_client(keyed_server.url).converse_stream(modelId="any", messages=HELLO)
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    claude = anthropic.AnthropicBedrock(
        base_url=keyed_server.url,
        aws_access_key="nope",
        aws_secret_key="x",
        aws_region="us-west-2",
        max_retries=0,
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="any", max_tokens=8, messages=HI)
    unsigned = httpx.post(f"{keyed_server.url}/model/any/converse", json={"messages": HELLO})
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-ErrorType"] == "UnrecognizedClientException"


# -- the embedded model ------------------------------------------------------------------------
NOTEBOOK_MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"


@pytest.mark.model
def test_notebook_cells_run_unmodified_on_the_embedded_model(
    server, aws_env, monkeypatch, local_model
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
    bedrock_client = boto3.client(service_name="bedrock-runtime", region_name="us-west-2")
    model_id = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    messages = [{"role": "user", "content": [{"text": "hello world"}]}]
    response = bedrock_client.converse(
        modelId=model_id,
        messages=messages,
        system=[],
        inferenceConfig={"maxTokens": 12},
        additionalModelRequestFields={},
    )
    assert list(response["output"]["message"]["content"][0]) == ["text"]
    check_limit(response["stopReason"], response["usage"]["outputTokens"], 12)

    response = bedrock_client.converse_stream(
        modelId=model_id, messages=messages, inferenceConfig={"maxTokens": 12}
    )
    events = list(response["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) <= {"contentBlockDelta"}  # text deltas only, as many as it wrote
    request = build_request(model=model_id, messages=[{"role": "user", "content": "hello world"}])
    prompt, _ = local_model.prompt_tokens(request)
    usage = events[-1]["metadata"]["usage"]
    # inputTokens excludes what the prompt cache served (as Bedrock reports Claude's usage)
    assert usage["inputTokens"] + usage.get("cacheReadInputTokens", 0) == len(prompt)
    stop = events[-2]["messageStop"]["stopReason"]
    assert stop in ("end_turn", "max_tokens")
    check_limit(stop, usage["outputTokens"], 12)
    assert usage["totalTokens"] == (
        usage["inputTokens"] + usage["outputTokens"] + usage.get("cacheReadInputTokens", 0)
    )  # as Bedrock counts it: cached input is part of the total


@pytest.mark.model
def test_anthropic_bedrock_streams_from_the_embedded_model(claude, local_model):
    messages = [{"role": "user", "content": "Write me sonnet about orchids"}]
    with claude.messages.stream(model=NOTEBOOK_MODEL, max_tokens=12, messages=messages) as stream:
        text = "".join(stream.text_stream)
    final = stream.get_final_message()
    assert final.content[0].text == text
    assert final.model == NOTEBOOK_MODEL
    assert final.stop_reason in ("end_turn", "max_tokens")
    check_limit(final.stop_reason, final.usage.output_tokens, 12)
    request = build_request(model=NOTEBOOK_MODEL, messages=messages)
    usage = final.usage  # the embedded model's prompt, whatever it then wrote
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == len(
        local_model.prompt_tokens(request)[0]
    )
