"""Client / AsyncClient and the stream helpers, driven by the deterministic scripted provider."""

from __future__ import annotations

import pytest

import streamchat
from streamchat import AsyncClient, Client, InvalidRequestError, OverloadedError, RateLimitError
from streamchat.request import Turn

TEXT = "Dogs chase cats and cats chase mice."
PIECES = ["Dogs", " chase", " cats", " and", " cats", " chase", " mice."]
HI = [{"role": "user", "content": "hi there"}]
EVENT_TYPES = [
    "message_start",
    "content_block_start",
    *["content_block_delta"] * len(PIECES),
    "content_block_stop",
    "message_delta",
    "message_stop",
]


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def aclient() -> AsyncClient:
    return AsyncClient()


# -- create ----------------------------------------------------------------------------------------


def test_create_returns_the_complete_message(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    message = client.messages.create(model=spec, max_tokens=100, messages=HI)
    assert isinstance(message, streamchat.Message)
    assert message.text == TEXT
    assert message.content[0].type == "text"
    assert message.model == spec
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, len(PIECES))
    assert (provider.completed, provider.cancelled, provider.active) == (1, 0, 0)


def test_create_with_stream_true_yields_the_canonical_events(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    stream = client.messages.create(model=spec, max_tokens=100, messages=HI, stream=True)
    assert isinstance(stream, streamchat.MessageStream)
    events = list(stream)
    assert [e.type for e in events] == EVENT_TYPES
    assert [e.delta.text for e in events if e.type == "content_block_delta"] == PIECES
    assert events[0].message.usage.input_tokens == 2
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == len(PIECES)
    stream.close()
    assert (provider.completed, provider.cancelled) == (1, 0)


def test_message_ids_are_unique(client: Client, scripted) -> None:
    spec, _ = scripted(text="x")
    ids = {client.messages.create(model=spec, max_tokens=5, messages=HI).id for _ in range(3)}
    assert len(ids) == 3


def test_default_scripted_reply_echoes_the_last_user_message(client: Client, scripted) -> None:
    spec, _ = scripted()
    message = client.messages.create(model=spec, max_tokens=50, messages=HI)
    assert message.text == "[turn 1] You said: hi there"


# -- messages.stream helpers -----------------------------------------------------------------------


def test_text_stream_yields_only_the_text_pieces(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        assert list(stream.text_stream) == PIECES
        final = stream.get_final_message()
    assert final.text == TEXT
    assert final.stop_reason == "end_turn"


def test_get_final_message_reads_the_stream_to_the_end(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        message = stream.get_final_message()
        assert message.text == TEXT
        assert message.usage.output_tokens == len(PIECES)
        assert stream.get_final_text() == TEXT
    assert (provider.completed, provider.cancelled) == (1, 0)


def test_until_done_consumes_everything_and_fills_the_snapshot(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        stream.until_done()
        assert list(stream) == []
        assert stream.current_message_snapshot.text == TEXT
        assert stream.current_message_snapshot.stop_reason == "end_turn"


def test_current_message_snapshot_grows_while_streaming(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    seen = []
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        for _ in stream.text_stream:
            seen.append(stream.current_message_snapshot.text)
    assert seen == ["".join(PIECES[: i + 1]) for i in range(len(PIECES))]


def test_stream_metrics_report_tokens_and_timings(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        stream.until_done()
        metrics = stream.metrics
    assert metrics.input_tokens == 2
    assert metrics.output_tokens == len(PIECES)
    assert metrics.ttft is not None and metrics.ttft >= 0
    assert metrics.total_time is not None and metrics.total_time >= metrics.ttft
    assert len(stream.recorder.delta_times) == len(PIECES)


def test_get_final_message_after_close_returns_the_partial_reply(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        texts = stream.text_stream
        assert [next(texts), next(texts)] == PIECES[:2]
        stream.close()
        partial = stream.get_final_message()
    assert partial.text == "Dogs chase"
    assert partial.stop_reason is None


# -- limits and stop sequences ---------------------------------------------------------------------


def test_max_tokens_cuts_the_reply_with_stop_reason_max_tokens(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    message = client.messages.create(model=spec, max_tokens=3, messages=HI)
    assert message.text == "Dogs chase cats"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stop_sequence_ends_the_reply_before_it(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    message = client.messages.create(
        model=spec, max_tokens=100, messages=HI, stop_sequences=["mice", " and"]
    )
    assert message.text == "Dogs chase cats"
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == " and"


def test_stop_sequence_split_across_tokens_is_found(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    with client.messages.stream(
        model=spec, max_tokens=100, messages=HI, stop_sequences=["s and c"]
    ) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(pieces) == message.text == "Dogs chase cat"
    assert message.stop_sequence == "s and c"


# -- errors ----------------------------------------------------------------------------------------


def test_error_before_streaming_raises_at_create(client: Client, scripted) -> None:
    spec, provider = scripted(error_before="overloaded_error")
    with pytest.raises(OverloadedError):
        client.messages.create(model=spec, max_tokens=10, messages=HI)
    with pytest.raises(OverloadedError):
        client.messages.create(model=spec, max_tokens=10, messages=HI, stream=True)
    with (
        pytest.raises(OverloadedError),
        client.messages.stream(model=spec, max_tokens=10, messages=HI),
    ):
        pytest.fail("the stream must not open")
    assert len(provider.requests) == 3


def test_error_after_raises_while_iterating_and_keeps_the_partial(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT, error_after=3, error="rate_limit_error")
    received = []
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        with pytest.raises(RateLimitError) as info:
            for text in stream.text_stream:
                received.append(text)
        assert stream.current_message_snapshot.text == "Dogs chase cats"
    assert received == PIECES[:3]
    assert info.value.partial_message.text == "Dogs chase cats"
    assert info.value.partial_message.stop_reason is None
    assert provider.cancelled == 0


def test_error_after_in_non_streaming_create_carries_the_partial(client: Client, scripted) -> None:
    spec, _ = scripted(text=TEXT, error_after=2, error="overloaded_error")
    with pytest.raises(OverloadedError) as info:
        client.messages.create(model=spec, max_tokens=100, messages=HI)
    assert info.value.partial_message.text == "Dogs chase"


def test_invalid_request_is_rejected_before_the_provider_sees_it(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        client.messages.create(model=spec, max_tokens=0, messages=HI)
    assert provider.requests == []


def test_unknown_scripted_option_is_an_invalid_request(client: Client, fresh_providers) -> None:
    with pytest.raises(InvalidRequestError, match="model: unknown scripted option 'colour'"):
        client.messages.create(model="scripted?colour=red", max_tokens=5, messages=HI)


# -- cancellation ----------------------------------------------------------------------------------


def test_closed_stream_cancels_the_provider(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    stream = client.messages.create(model=spec, max_tokens=100, messages=HI, stream=True)
    assert next(iter(stream)).type == "message_start"
    assert provider.active == 1
    stream.close()
    assert (provider.cancelled, provider.completed, provider.active) == (1, 0, 0)
    assert list(stream) == []


def test_leaving_the_stream_context_early_cancels_the_provider(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        for text in stream.text_stream:
            if text == " cats":
                break
    assert (provider.cancelled, provider.completed, provider.active) == (1, 0, 0)


def test_a_fully_read_stream_is_not_counted_as_cancelled(client: Client, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    with client.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        stream.until_done()
    client.messages.create(model=spec, max_tokens=100, messages=HI)
    assert (provider.completed, provider.cancelled, provider.active) == (2, 0, 0)


# -- conversation ----------------------------------------------------------------------------------


def test_conversation_history_is_passed_whole(client: Client, scripted) -> None:
    spec, provider = scripted()
    conversation = [{"role": "user", "content": "hi"}]
    first = client.messages.create(model=spec, max_tokens=50, messages=conversation)
    conversation += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": [{"text": "sup"}]},
    ]
    second = client.messages.create(
        model=spec,
        max_tokens=50,
        messages=conversation,
        system="Be brief.",
        temperature=0.3,
        stop_sequences=["zzz"],
    )
    assert second.text == "[turn 2] You said: sup"
    request = provider.requests[-1]
    assert request.messages == [
        Turn("user", "hi"),
        Turn("assistant", "[turn 1] You said: hi"),
        Turn("user", "sup"),
    ]
    assert (request.system, request.temperature, request.stop_sequences) == (
        "Be brief.",
        0.3,
        ["zzz"],
    )
    assert request.max_tokens == 50


# -- AsyncClient ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_create_returns_the_complete_message(aclient: AsyncClient, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    message = await aclient.messages.create(model=spec, max_tokens=100, messages=HI)
    assert message.text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(PIECES)
    assert (provider.completed, provider.cancelled) == (1, 0)


@pytest.mark.anyio
async def test_async_create_with_stream_true_yields_events(aclient: AsyncClient, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    stream = await aclient.messages.create(model=spec, max_tokens=100, messages=HI, stream=True)
    assert isinstance(stream, streamchat.AsyncMessageStream)
    events = [event async for event in stream]
    assert [e.type for e in events] == EVENT_TYPES
    await stream.close()


@pytest.mark.anyio
async def test_async_stream_helpers(aclient: AsyncClient, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    async with aclient.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        pieces = [text async for text in stream.text_stream]
        assert stream.current_message_snapshot.text == TEXT
    final = await stream.get_final_message()
    assert pieces == PIECES
    assert final.text == await stream.get_final_text() == TEXT
    assert stream.metrics.output_tokens == len(PIECES)
    assert (provider.completed, provider.cancelled) == (1, 0)


@pytest.mark.anyio
async def test_async_until_done(aclient: AsyncClient, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    async with aclient.messages.stream(model=spec, max_tokens=3, messages=HI) as stream:
        await stream.until_done()
        assert stream.current_message_snapshot.stop_reason == "max_tokens"


@pytest.mark.anyio
async def test_async_stop_sequences(aclient: AsyncClient, scripted) -> None:
    spec, _ = scripted(text=TEXT)
    message = await aclient.messages.create(
        model=spec, max_tokens=100, messages=HI, stop_sequences=["cats"]
    )
    assert (message.text, message.stop_reason, message.stop_sequence) == (
        "Dogs chase ",
        "stop_sequence",
        "cats",
    )


@pytest.mark.anyio
async def test_async_error_before_raises_at_create(aclient: AsyncClient, scripted) -> None:
    spec, _ = scripted(error_before="invalid_request_error")
    with pytest.raises(InvalidRequestError):
        await aclient.messages.create(model=spec, max_tokens=10, messages=HI, stream=True)
    with pytest.raises(InvalidRequestError):
        async with aclient.messages.stream(model=spec, max_tokens=10, messages=HI):
            pytest.fail("the stream must not open")


@pytest.mark.anyio
async def test_async_error_after_keeps_the_partial(aclient: AsyncClient, scripted) -> None:
    spec, _ = scripted(text=TEXT, error_after=1, error="overloaded_error")
    async with aclient.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        with pytest.raises(OverloadedError) as info:
            await stream.until_done()
        assert stream.current_message_snapshot.text == "Dogs"
    assert info.value.partial_message.text == "Dogs"


@pytest.mark.anyio
async def test_async_closed_stream_cancels_the_provider(aclient: AsyncClient, scripted) -> None:
    spec, provider = scripted(text=TEXT)
    async with aclient.messages.stream(model=spec, max_tokens=100, messages=HI) as stream:
        async for text in stream.text_stream:
            assert text == "Dogs"
            break
        assert provider.active == 1
    assert (provider.cancelled, provider.completed, provider.active) == (1, 0, 0)
    assert (await stream.get_final_message()).text == "Dogs"


def test_ctrl_c_while_reading_a_sync_stream_closes_it_cleanly(scripted) -> None:
    """KeyboardInterrupt lands while the sync API waits on the loop thread; close() must then
    wait for that read to unwind instead of racing it ("aclose(): ... already running")."""
    import signal
    import threading

    spec, provider = scripted(delay=0.05, repeat=50)
    client = streamchat.Client()
    for attempt in range(10):
        stream = client.messages.create(
            model=spec, max_tokens=500, stream=True, messages=[{"role": "user", "content": "go"}]
        )
        timer = threading.Timer(
            0.1 + attempt * 0.013,
            signal.pthread_kill,
            (threading.main_thread().ident, signal.SIGINT),
        )
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
        stream.close()
        assert stream.current_message_snapshot.text  # the partial reply is kept
    assert provider.cancelled == 10
    assert provider.completed == 0


def test_close_waits_for_a_cancelled_read_that_is_still_unwinding() -> None:
    """A provider may need time to clean up when cancelled (close an HTTP stream, join a
    thread); close() issued meanwhile must wait for it, not fail with "already running"."""
    import asyncio
    import signal
    import threading

    from streamchat.providers.base import message_start, text_block_start, text_delta
    from streamchat.stream import AsyncMessageStream, MessageStream

    cleaned_up = threading.Event()

    async def slow_to_unwind():
        yield message_start("m", 1)
        yield text_block_start()
        yield text_delta("partial")
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.3)  # cleanup that outlives the cancellation
            cleaned_up.set()

    stream = MessageStream(AsyncMessageStream(slow_to_unwind()))
    threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    ).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    stream.close()
    assert cleaned_up.is_set()
    assert stream.current_message_snapshot.text == "partial"
