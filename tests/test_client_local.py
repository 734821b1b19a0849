"""Client / AsyncClient on the real embedded model (SmolLM2 via llama.cpp), short replies only."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import llama_cpp
import pytest

from streamchat import AsyncClient, Client, InvalidRequestError, ModelError, OverloadedError
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider
from streamchat.request import build_request

pytestmark = pytest.mark.model

COUNT = [{"role": "user", "content": "List the numbers 1 to 20 on one line."}]
STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
ESSAY = [{"role": "user", "content": "Write me a long essay about the history of bread."}]


class GenerateSpy:
    """Watches every token the engine samples (its ``observe`` hook, on the scheduler thread).

    ``hold_after=N`` makes generation wait after its N-th token until :meth:`release`, so a test
    can act while a generation is certainly still running.
    """

    def __init__(self, provider: LocalProvider, hold_after: int | None = None):
        self.llama = provider.load()
        self.tokens: list[int] = []
        self.hold_after = hold_after
        self.holding = threading.Event()
        self._release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, run: Any, token: int | None) -> None:
        if token is None:  # the run left the engine
            self.finished.set()
            return
        self.finished.clear()
        self.tokens.append(token)
        if len(self.tokens) == self.hold_after:
            self.holding.set()
            assert self._release.wait(timeout=60), "the test never released generation"

    def release(self) -> None:
        self._release.set()

    def text_tokens(self) -> list[int]:
        vocab = self.llama._model.vocab
        return [t for t in self.tokens if not llama_cpp.llama_vocab_is_eog(vocab, t)]


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
    assert message.text.strip()
    assert message.model == local_model.display_name == "SmolLM2-135M-Instruct"
    assert prompt_in(message.usage) == prompt_length(
        local_model, [{"role": "user", "content": "Say hello."}], system="You are terse."
    )
    assert message.usage.output_tokens == len(spy.text_tokens()) <= 12
    assert message.text == local_model.load().detokenize(spy.text_tokens()).decode()
    if message.stop_reason == "end_turn":
        assert len(spy.tokens) == message.usage.output_tokens + 1  # the end-of-turn token
    else:
        assert message.stop_reason == "max_tokens"


def test_reply_cut_at_max_tokens_says_so(client: Client, spy: GenerateSpy) -> None:
    message = client.messages.create(messages=COUNT, max_tokens=10, temperature=0)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 10
    assert len(spy.tokens) == 10  # not one token more was generated


def test_stop_sequence_is_respected(client: Client) -> None:
    full = client.messages.create(messages=COUNT, max_tokens=30, temperature=0)
    assert "7" in full.text, full.text  # the model does get there without the stop sequence
    message = client.messages.create(
        messages=COUNT, max_tokens=30, temperature=0, stop_sequences=["7"]
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "7"
    assert "7" not in message.text
    assert full.text.startswith(message.text)
    assert message.text.rstrip(" ,\n").endswith("6")
    assert message.usage.output_tokens < full.usage.output_tokens


def test_temperature_zero_is_deterministic(client: Client) -> None:
    first = client.messages.create(messages=STORY, max_tokens=16, temperature=0)
    second = client.messages.create(messages=STORY, max_tokens=16, temperature=0)
    assert first.text == second.text
    assert first.usage.output_tokens == second.usage.output_tokens
    assert prompt_in(first.usage) == prompt_in(second.usage)
    assert second.usage.cache_read_input_tokens == prompt_in(second.usage) - 1  # all but the last


def test_seed_makes_sampling_reproducible(client: Client) -> None:
    texts = [
        client.messages.create(messages=STORY, max_tokens=16, temperature=1.0, seed=seed).text
        for seed in (1234, 1234, 99)
    ]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_unseeded_requests_do_not_replay_an_earlier_seed(client: Client) -> None:
    seeded = client.messages.create(messages=STORY, max_tokens=16, temperature=1.2, seed=7).text
    unseeded = [
        client.messages.create(messages=STORY, max_tokens=16, temperature=1.2).text
        for _ in range(2)
    ]
    assert unseeded != [seeded, seeded]


def test_streaming_and_non_streaming_agree_at_temperature_zero(client: Client) -> None:
    message = client.messages.create(messages=STORY, max_tokens=20, temperature=0)
    with client.messages.stream(messages=STORY, max_tokens=20, temperature=0) as stream:
        pieces = list(stream.text_stream)
        streamed = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == streamed.text == message.text
    assert streamed.usage == message.usage
    assert streamed.stop_reason == message.stop_reason


@pytest.mark.anyio
async def test_async_streaming_on_the_local_model(local_model: LocalProvider) -> None:
    client = AsyncClient()
    async with client.messages.stream(messages=STORY, max_tokens=12, temperature=0) as stream:
        pieces = [text async for text in stream.text_stream]
    message = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == message.text
    assert 0 < message.usage.output_tokens <= 12
    assert prompt_in(message.usage) == prompt_length(local_model, STORY)
    assert stream.metrics.ttft is not None


def test_unknown_model_ids_run_on_the_default_model_and_are_echoed(client: Client) -> None:
    model = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    message = client.messages.create(model=model, messages=STORY, max_tokens=3, temperature=0)
    assert message.model == model
    assert message.usage.output_tokens == 3


def test_gemma3_270m_works(client: Client) -> None:
    message = client.messages.create(
        model="gemma3-270m",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert message.model == "gemma-3-270m"
    assert message.text.strip()
    assert message.text == message.text.lstrip()
    assert 0 < message.usage.output_tokens <= 8
    assert message.usage.input_tokens > 0


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
    stream = client.messages.create(messages=ESSAY, max_tokens=200, temperature=0, stream=True)
    first = next(text for text in stream.text_stream)
    assert first
    assert spy.holding.wait(timeout=30)  # generation is running: 5 tokens so far
    stream.close()
    at_close = len(spy.tokens)
    spy.release()
    assert spy.finished.wait(timeout=30)
    assert len(spy.tokens) - at_close <= 1
    assert local_model.admission.count == 0
    again = client.messages.create(messages=STORY, max_tokens=2, temperature=0)
    assert again.usage.output_tokens == 2  # the model is free for the next request


def test_second_generation_is_refused_when_none_may_wait(
    client: Client, local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = LocalProvider(DEFAULT_LOCAL_MODEL, max_waiting=0, parallel=1)  # one slot
    monkeypatch.setattr(local_model, "admission", strict.admission)
    spy = GenerateSpy(local_model, hold_after=1)
    monkeypatch.setattr(local_model.engine, "observe", spy)
    first = client.messages.create(messages=STORY, max_tokens=4, temperature=0, stream=True)
    assert spy.holding.wait(timeout=30)
    with pytest.raises(OverloadedError, match="busy"):
        client.messages.create(messages=STORY, max_tokens=4, temperature=0)
    spy.release()
    assert first.get_final_message().usage.output_tokens == 4
    first.close()
    assert client.messages.create(messages=STORY, max_tokens=2).usage.output_tokens == 2


@pytest.mark.anyio
async def test_concurrent_generations_wait_their_turn_by_default(local_model) -> None:
    client = AsyncClient()
    replies = await asyncio.gather(
        *(client.messages.create(messages=STORY, max_tokens=4, temperature=0) for _ in range(2))
    )
    assert replies[0].text == replies[1].text
    assert all(r.usage.output_tokens == 4 for r in replies)
