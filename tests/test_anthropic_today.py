"""Today's Anthropic request, in full, through the current ``anthropic`` SDK (2.x), unmodified:
every field of ``MessageCreateParams`` (system-role messages, ``output_config``, adaptive
thinking, ``cache_control`` on blocks and at the top, metadata, service tier, speed...) and the
beta surface (``anthropic-beta`` headers, ``?beta=true``, ``context_management``...), raw and
with ``messages.stream``; ``max_tokens: 64000`` clamped to the model's context; a prompt over
the context refused in the API's own words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import anthropic
import httpx
import pytest

from serving import Server, received, serve

TEXT = "Structured and streamed"
THINKING = "Weighing the request"
CACHE = {"type": "ephemeral"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
TOOL = {
    "name": "lookup",
    "description": "Look a word up",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
    "cache_control": CACHE,
}
MESSAGES = [
    {"role": "system", "content": "Lead instructions."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "First question", "cache_control": CACHE}],
    },
    {"role": "assistant", "content": "First answer"},
    {"role": "system", "content": [{"type": "text", "text": "Mid-conversation note."}]},
    {"role": "user", "content": "Second question"},
]
TODAY = {  # every MessageCreateParams field the API accepts, as an SDK user sends them
    "model": "claude-sonnet-4-5",
    "max_tokens": 64000,
    "messages": MESSAGES,
    "system": [{"type": "text", "text": "Top-level system.", "cache_control": CACHE}],
    "cache_control": CACHE,
    "metadata": {"user_id": "user-42"},
    "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": SCHEMA}},
    "service_tier": "auto",
    "speed": "standard",
    "inference_geo": "us",
    "stop_sequences": ["NEVER-SEEN"],
    "thinking": {"type": "adaptive", "display": "summarized"},
    "tools": [TOOL],
    "tool_choice": {"type": "none"},
    "diagnostics": {"previous_message_id": "msg_0"},
    "container": "container_0",
}
BETA_ONLY = {  # fields only the beta surface has, sent with betas
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "mcp_servers": [],
}
BETAS = ["context-management-2025-06-27", "fine-grained-tool-streaming-2025-05-14", "no-such-beta"]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("today") / "requests.jsonl"


@pytest.fixture(scope="module")
def server(record: Path) -> Iterator[Server]:
    spec = "scripted?" + urlencode({"text": TEXT, "thinking": THINKING, "record": str(record)})
    with serve("--model", spec) as running:
        yield running


@pytest.fixture
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def check_what_the_model_got(request: dict) -> None:
    """The canonical request: system messages in place, limits and options honoured."""
    assert request["system"] == "Top-level system.\n\nLead instructions."
    turns = [(turn["role"], turn["content"]) for turn in request["messages"]]
    assert turns == [
        ("user", "First question"),
        ("assistant", "First answer"),
        ("user", "System: Mid-conversation note.\n\nSecond question"),
    ]
    assert request["max_tokens"] == 64000
    assert request["thinking"]["type"] == "adaptive"
    assert request["output_format"]["schema"]["required"] == ["answer"]
    assert request["tool_choice"]["type"] == "none" and request["tools"][0]["name"] == "lookup"


def test_every_field_streams_to_the_end_raw(client: anthropic.Anthropic, record: Path) -> None:
    events = list(client.messages.create(**TODAY, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    thinking = "".join(
        e.delta.thinking
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    )
    assert (text, thinking) == (TEXT, THINKING)
    assert events[-2].delta.stop_reason == "end_turn"
    check_what_the_model_got(received(record)[-1])


def test_every_field_with_the_stream_helper(client: anthropic.Anthropic, record: Path) -> None:
    with client.messages.stream(**TODAY) as stream:
        texts = list(stream.text_stream)
    message = stream.get_final_message()
    assert "".join(texts) == TEXT
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].signature  # a thinking block comes back signed
    assert message.stop_reason == "end_turn"
    check_what_the_model_got(received(record)[-1])


def test_beta_surface_with_betas_and_beta_only_fields(
    client: anthropic.Anthropic, record: Path
) -> None:
    """``client.beta.messages`` posts to ``/v1/messages?beta=true`` with ``anthropic-beta``."""
    with client.beta.messages.stream(**TODAY, **BETA_ONLY, betas=BETAS) as stream:
        text = stream.get_final_text()
    assert text == TEXT
    check_what_the_model_got(received(record)[-1])
    message = client.beta.messages.create(**TODAY, **BETA_ONLY, betas=BETAS, timeout=60)
    assert message.content[-1].text == TEXT


def test_raw_beta_query_and_header_are_accepted(server: Server) -> None:
    body = {**TODAY, **BETA_ONLY, "stream": False}
    headers = {"anthropic-beta": ",".join(BETAS), "anthropic-version": "2023-06-01"}
    reply = httpx.post(f"{server.url}/v1/messages?beta=true", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"][-1]["text"] == TEXT
    counted = httpx.post(
        f"{server.url}/v1/messages/count_tokens?beta=true",
        json={k: TODAY[k] for k in ("model", "messages", "system", "tools", "thinking")},
        headers=headers,
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


def test_count_tokens_takes_system_role_messages(client: anthropic.Anthropic) -> None:
    plain = client.messages.count_tokens(model="m", messages=[MESSAGES[-1]])
    full = client.messages.count_tokens(model="m", messages=MESSAGES)
    assert full.input_tokens > plain.input_tokens


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 128_001}, "max_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"output_config": {"format": {"type": "yaml"}}}, "output_config.format.type"),
    ],
)
def test_what_cannot_be_honoured_is_still_a_400_naming_the_field(
    client: anthropic.Anthropic, change: dict, field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**{**TODAY, **change}, timeout=60)
    assert caught.value.body["error"]["message"].startswith(f"{field}:")


# -- on the embedded model: its real context window ---------------------------------------------
@pytest.fixture(scope="module")
def model_server() -> Iterator[Server]:
    with serve() as running:  # the embedded default model
        yield running


def counting_prompt(words: int) -> str:
    return "Continue counting: " + " ".join(str(i % 100) for i in range(words))


SMALL_WINDOW = 512  # a whole-window prompt prefills in seconds, also on a loaded machine


@pytest.mark.model
def test_max_tokens_64000_is_clamped_to_the_context_and_stops_with_max_tokens() -> None:
    """JSON output whose grammar spells 40 digits (``embedded_model.digits_format``): the reply
    certainly runs past the few tokens of room, whatever the model would write. On a server
    whose streams have a 512-token window (``serve --context``)."""
    from embedded_model import digits_format
    from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider
    from streamchat.request import build_request

    runs_on = digits_format(40)
    counter = LocalProvider(DEFAULT_LOCAL_MODEL, n_ctx=SMALL_WINDOW)  # counts; never generates
    window = counter.n_ctx
    words = window - 300
    for _ in range(20):  # find a prompt that leaves a few tokens of room
        prompt = counting_prompt(words)
        used = counter.count_tokens(
            build_request(
                model="m",
                messages=[{"role": "user", "content": prompt}],
                output_format=runs_on,
            )
        )
        if 0 < window - used <= 6:
            break
        words += (window - used - 4) // 2 or -1
    room = window - used
    assert 0 < room <= 6, (window, used)
    with serve("--context", str(SMALL_WINDOW), "--parallel", "1") as small:
        client = anthropic.Anthropic(base_url=small.url, api_key="x", max_retries=0)
        message = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64000,
            messages=[{"role": "user", "content": prompt}],
            output_config={"format": runs_on},
            timeout=600,  # a hang guard; else the SDK streams
        )
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == used
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == room


@pytest.mark.model
def test_a_prompt_over_the_context_is_prompt_is_too_long(model_server: Server, local_model) -> None:
    client = anthropic.Anthropic(base_url=model_server.url, api_key="x", max_retries=0)
    prompt = counting_prompt(local_model.n_ctx + 500)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": prompt}],
        )
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "prompt is too long: " in error["message"]
    assert f"tokens > {local_model.n_ctx} maximum" in error["message"]
    told = int(error["message"].split("prompt is too long: ")[1].split()[0])
    assert told > local_model.n_ctx


# -- prompt-cache usage from remote providers ----------------------------------------------------
@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "openai"])
def test_remote_prompt_cache_usage_passes_through_every_protocol(
    provider: str, monkeypatch: pytest.MonkeyPatch, fresh_providers: None, sdk_credentials: None
) -> None:
    """Client -> streamchat B (remote provider) -> A (a backend with a prompt cache): the cache
    counts A reports reach each protocol's client in its own names. OpenAI's upstream API has
    no count of tokens written to the cache (they are prompt tokens there)."""
    import boto3
    import openai

    from serving import serve_in_thread
    from streamchat.server.common import ServerConfig

    spec = "scripted?" + urlencode({"text": TEXT, "cache_read": 7, "cache_write": 3})
    written = None if provider == "openai" else 3
    env = {
        "anthropic": ("ANTHROPIC_BASE_URL", ""),
        "bedrock": ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", ""),
        "openai": ("OPENAI_BASE_URL", "/v1"),
    }[provider]
    with serve_in_thread(ServerConfig(default_model=spec, models=[])) as upstream:
        monkeypatch.setenv(env[0], upstream + env[1])
        with serve("--model", f"{provider}/upstream-model") as gateway:
            client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
            plain = client.messages.create(model="m", max_tokens=50, messages=MESSAGES[1:2])
            with client.messages.stream(model="m", max_tokens=50, messages=MESSAGES[1:2]) as s:
                streamed = s.get_final_message()
            for usage in (plain.usage, streamed.usage):
                assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
                    7,
                    written,
                )
            bedrock = boto3.client(
                "bedrock-runtime", endpoint_url=gateway.url, region_name="us-west-2"
            )
            converse = bedrock.converse(
                modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}]
            )
            assert converse["usage"]["cacheReadInputTokens"] == 7
            assert converse["usage"].get("cacheWriteInputTokens") == written
            chat = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
            completion = chat.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert completion.usage.prompt_tokens_details.cached_tokens == 7
            assert completion.usage.prompt_tokens == completion.usage.total_tokens - len(
                TEXT.split()
            )


# -- the same principle for OpenAI and Bedrock ------------------------------------------------
def test_openai_fields_it_cannot_honour_are_accepted(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-5",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        store=True,
        metadata={"run": "42"},
        user="user-42",
        service_tier="auto",
        reasoning_effort="low",
        prediction={"type": "content", "content": "a guess"},
        safety_identifier="hashed-user",
        prompt_cache_key="conversation-1",
        verbosity="low",
    )
    assert reply.choices[0].message.content == TEXT


def test_bedrock_fields_it_cannot_honour_are_accepted(
    server: Server, sdk_credentials: None
) -> None:
    import boto3

    client = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-west-2")
    reply = client.converse(
        modelId="anthropic.claude-sonnet-4-5-20250929-v1:0",
        messages=[
            {"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "default"}}]}
        ],
        system=[{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
        additionalModelRequestFields={"top_k": 5, "anthropic_beta": ["context-1m-2025-08-07"]},
        performanceConfig={"latency": "optimized"},
        requestMetadata={"team": "search"},
        promptVariables={"topic": {"text": "rivers"}},
    )
    assert reply["output"]["message"]["content"][0]["text"] == TEXT
