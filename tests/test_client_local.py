"""Client / AsyncClient on the real embedded model (SmolLM2 via llama.cpp), short replies only.

What the model writes is its own (greedy output differs between machines): the tests compare a
reply with the tokens the engine sampled, and make stops and cuts certain by construction (a stop
sequence or a max_tokens taken from a reply the model already gave, or JSON output whose grammar
spells a long run of digits): see ``embedded_model``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from embedded_model import GenerateSpy, check_limit, cut_of, digits_format, stop_inside
from streamchat import AsyncClient, Client, InvalidRequestError, ModelError, OverloadedError
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider, local_provider
from streamchat.request import build_request

pytestmark = pytest.mark.model

COUNT = [{"role": "user", "content": "List the numbers 1 to 20 on one line."}]
STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
ESSAY = [{"role": "user", "content": "Write me a long essay about the history of bread."}]
LONG = digits_format(240)  # JSON output of 240 digits: a reply certainly longer than 200 tokens


@pytest.fixture
def spy(local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> GenerateSpy:
    spy = GenerateSpy(local_model)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    return spy


@pytest.fixture
def client(local_model: LocalProvider) -> Client:
    return Client()


def prompt_in(usage: Any) -> int:
    """The whole prompt: the input tokens, and those a slot's cells served (prompt-cache reads)."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)


def prompt_length(provider: LocalProvider, messages: list, system: str | None = None) -> int:
    request = build_request(model="any", messages=messages, system=system)
    return len(provider.prompt_tokens(request)[0])


def test_create_returns_text_with_real_usage(
    client: Client, local_model: LocalProvider, spy: GenerateSpy
) -> None:
    message = client.messages.create(
        messages=[{"role": "user", "content": "Say hello."}],
        system="You are terse.",
        max_tokens=12,
        temperature=0,
    )
    assert message.model == local_model.display_name == "SmolLM2-135M-Instruct"
    assert prompt_in(message.usage) == prompt_length(
        local_model, [{"role": "user", "content": "Say hello."}], system="You are terse."
    )
    assert message.usage.output_tokens == len(spy.text_tokens()) <= 12
    assert message.text == local_model.load().detokenize(spy.text_tokens()).decode()
    check_limit(message.stop_reason, message.usage.output_tokens, 12)
    if message.stop_reason == "end_turn":
        assert len(spy.tokens) == message.usage.output_tokens + 1  # the end-of-turn token
    else:
        assert message.stop_reason == "max_tokens"
        assert len(spy.tokens) == 12  # not one token more was sampled


def test_reply_cut_at_max_tokens_says_so(client: Client, spy: GenerateSpy) -> None:
    """Cut where the model certainly still talks: within the reply it gives with more room."""
    full = client.messages.create(messages=COUNT, max_tokens=30, temperature=0)
    check_limit(full.stop_reason, full.usage.output_tokens, 30)
    cut, reason = cut_of(full.usage.output_tokens, full.stop_reason, 10)
    spy.tokens.clear()
    message = client.messages.create(messages=COUNT, max_tokens=cut, temperature=0)
    assert message.stop_reason == reason
    assert message.usage.output_tokens == min(cut, full.usage.output_tokens)
    assert full.text.startswith(message.text)
    ended = message.stop_reason == "end_turn"  # only if the model wrote nothing at all
    assert len(spy.tokens) == message.usage.output_tokens + ended  # not one token more


def test_stop_sequence_is_respected(client: Client, spy: GenerateSpy) -> None:
    """The stop string is taken from the reply the model gives without it, so at temperature 0
    it certainly writes it again: the reply ends right before it, and generation with it."""
    full = client.messages.create(messages=COUNT, max_tokens=30, temperature=0)
    found = stop_inside(full.text)
    stop, before = found or ("\x00never", full.text)  # an empty reply: nothing to stop at
    spy.tokens.clear()
    message = client.messages.create(
        messages=COUNT, max_tokens=30, temperature=0, stop_sequences=[stop]
    )
    assert message.text == before and stop not in message.text
    if found is None:
        assert (message.stop_reason, message.stop_sequence) == (full.stop_reason, None)
        return
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    tokens = spy.text_tokens()
    assert message.usage.output_tokens == len(tokens) <= full.usage.output_tokens
    written = lambda tokens: spy.llama.detokenize(tokens).decode(errors="replace")  # noqa: E731
    assert stop in written(tokens) and stop not in written(tokens[:-1])  # stopped at once


def test_temperature_zero_is_deterministic(client: Client) -> None:
    first = client.messages.create(messages=STORY, max_tokens=16, temperature=0)
    second = client.messages.create(messages=STORY, max_tokens=16, temperature=0)
    assert first.text == second.text
    assert first.usage.output_tokens == second.usage.output_tokens
    assert prompt_in(first.usage) == prompt_in(second.usage)
    assert second.usage.cache_read_input_tokens == prompt_in(second.usage) - 1  # all but the last


def test_seed_makes_sampling_reproducible(client: Client) -> None:
    """The same seed, the same sample. Different seeds differing is the model's distribution
    (not certain at one position, but over 32 tokens of a story no path is that likely: several
    seeds never all agree)."""

    def sample(seed: int) -> str:
        return client.messages.create(
            messages=STORY, max_tokens=32, temperature=1.0, seed=seed
        ).text

    texts = [sample(seed) for seed in (1234, 1234, 99, 7, 2024)]
    assert texts[0] == texts[1]
    assert len(set(texts)) > 1


def test_unseeded_requests_do_not_replay_an_earlier_seed(client: Client) -> None:
    def ask(**seed: int) -> str:
        return client.messages.create(messages=STORY, max_tokens=32, temperature=1.2, **seed).text

    seeded = ask(seed=7)
    assert [ask(), ask(), ask()] != [seeded] * 3


def test_streaming_and_non_streaming_agree_at_temperature_zero(
    client: Client, spy: GenerateSpy
) -> None:
    # The prompt's prefix is in a slot's cells before both (whatever ran before this test), so
    # both report the same prompt-cache reads.
    client.messages.create(messages=STORY, max_tokens=1, temperature=0)
    message = client.messages.create(messages=STORY, max_tokens=20, temperature=0)
    spy.tokens.clear()
    with client.messages.stream(messages=STORY, max_tokens=20, temperature=0) as stream:
        pieces = list(stream.text_stream)
        streamed = stream.get_final_message()
    assert pieces == spy.pieces()  # a delta per sampled token, as it was sampled
    assert "".join(pieces) == streamed.text == message.text
    assert streamed.usage == message.usage
    assert streamed.stop_reason == message.stop_reason


@pytest.mark.anyio
async def test_async_streaming_on_the_local_model(
    local_model: LocalProvider, spy: GenerateSpy
) -> None:
    client = AsyncClient()
    async with client.messages.stream(messages=STORY, max_tokens=12, temperature=0) as stream:
        pieces = [text async for text in stream.text_stream]
    message = await stream.get_final_message()
    assert pieces == spy.pieces()
    assert "".join(pieces) == message.text
    assert message.usage.output_tokens == len(spy.text_tokens())
    check_limit(message.stop_reason, message.usage.output_tokens, 12)
    assert prompt_in(message.usage) == prompt_length(local_model, STORY)
    assert stream.metrics.ttft is not None or not pieces


def test_unknown_model_ids_run_on_the_default_model_and_are_echoed(
    client: Client, local_model: LocalProvider
) -> None:
    model = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    message = client.messages.create(model=model, messages=STORY, max_tokens=3, temperature=0)
    assert message.model == model
    assert prompt_in(message.usage) == prompt_length(local_model, STORY)  # the default's prompt
    check_limit(message.stop_reason, message.usage.output_tokens, 3)


def test_gemma3_270m_works(client: Client) -> None:
    """A base model: a transcript prompt, the reply cut at the next ``User:`` line and stripped
    of the space its ``Assistant:`` line leaves; what it says is its own."""
    gemma = local_provider("gemma3-270m")
    spy = GenerateSpy(gemma)
    gemma.engine.observe = spy  # type: ignore[union-attr]
    try:
        question = [{"role": "user", "content": "What is the capital of France?"}]
        message = client.messages.create(
            model="gemma3-270m", messages=question, max_tokens=8, temperature=0
        )
    finally:
        gemma.engine.observe = None  # type: ignore[union-attr]
    assert message.model == "gemma-3-270m"
    prompt, _ = gemma.prompt_tokens(build_request(model="m", messages=question))
    assert (
        gemma.load()
        .detokenize(prompt)
        .decode()
        .endswith("User: " + question[0]["content"] + "\nAssistant:")
    )
    assert message.usage.input_tokens == len(prompt)
    assert message.usage.output_tokens == len(spy.text_tokens())
    check_limit(message.stop_reason, message.usage.output_tokens, 8)
    written = spy.llama.detokenize(spy.text_tokens()).decode(errors="replace").lstrip()
    assert message.text == written.split("\nUser:")[0]


def test_missing_model_file_raises_model_error(client: Client, tmp_path) -> None:
    path = tmp_path / "nowhere.gguf"
    with pytest.raises(ModelError, match="model file not found") as info:
        client.messages.create(model=str(path), messages=STORY, max_tokens=2)
    assert str(path) in info.value.message


def test_corrupt_model_file_raises_model_error(client: Client, tmp_path) -> None:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00 definitely not a model")
    with pytest.raises(ModelError, match="not a valid GGUF file") as info:
        client.messages.create(model=str(path), messages=STORY, max_tokens=2)
    assert str(path) in info.value.message


def test_prompt_longer_than_the_context_is_an_invalid_request(
    client: Client, local_model: LocalProvider
) -> None:
    messages = [{"role": "user", "content": "hello " * (local_model.n_ctx + 100)}]
    with pytest.raises(InvalidRequestError, match="context window") as info:
        client.messages.create(messages=messages, max_tokens=2)
    assert info.value.message.startswith("messages:")
    assert local_model.admission.count == 0


def test_closed_stream_stops_generation_within_one_token(
    client: Client, local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GenerateSpy(local_model, hold_after=5)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    stream = client.messages.create(  # 200 tokens at least: still running after 5
        messages=ESSAY, output_format=LONG, max_tokens=200, temperature=0, stream=True
    )
    first = next(text for text in stream.text_stream)
    assert first
    assert spy.holding.wait(timeout=60)  # generation is running: 5 tokens so far
    stream.close()
    at_close = len(spy.tokens)
    spy.release()
    assert spy.finished.wait(timeout=60)
    assert len(spy.tokens) - at_close <= 1
    assert local_model.admission.count == 0
    again = client.messages.create(messages=STORY, output_format=LONG, max_tokens=2)
    assert again.usage.output_tokens == 2  # the model is free for the next request


def test_second_generation_is_refused_when_none_may_wait(
    client: Client, local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = LocalProvider(DEFAULT_LOCAL_MODEL, max_waiting=0, parallel=1)  # one slot
    monkeypatch.setattr(local_model, "admission", strict.admission)
    spy = GenerateSpy(local_model, hold_after=1)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    first = client.messages.create(
        messages=STORY, output_format=LONG, max_tokens=4, temperature=0, stream=True
    )
    assert spy.holding.wait(timeout=60)
    with pytest.raises(OverloadedError, match="busy"):
        client.messages.create(messages=STORY, max_tokens=4, temperature=0)
    spy.release()
    assert first.get_final_message().usage.output_tokens == 4
    first.close()
    again = client.messages.create(messages=STORY, output_format=LONG, max_tokens=2)
    assert again.usage.output_tokens == 2


@pytest.mark.anyio
async def test_concurrent_generations_wait_their_turn_by_default(local_model) -> None:
    client = AsyncClient()
    replies = await asyncio.gather(
        *(client.messages.create(messages=STORY, max_tokens=4, temperature=0) for _ in range(2))
    )
    assert replies[0].text == replies[1].text
    assert replies[0].usage.output_tokens == replies[1].usage.output_tokens
    for reply in replies:
        check_limit(reply.stop_reason, reply.usage.output_tokens, 4)
