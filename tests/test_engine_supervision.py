"""The embedded model's scheduler cannot hang (issue 23.1): a failure at any point on its thread
fails that request alone with an ``api_error`` and the next request is served; a batch llama.cpp
refuses is decoded again in halves; a scheduler thread that dies or gets stuck makes ``/readyz``
503 and is replaced; ``reset`` runs on the scheduler thread; ``close`` stops it.

Failures are injected into the real engine, on the real model: a method of this engine instance
(or its ``observe`` hook) raises once. Nothing is timed: waits poll with a deadline, and a stall
is a hook blocked on an event the test sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import llama_cpp
import pytest

import streamchat.providers
from embedded_model import digits_format
from protocols import PROTOCOLS
from serving import serve_in_thread
from streamchat import StreamchatError
from streamchat.accumulate import accumulate
from streamchat.events import Message
from streamchat.providers.batching import Engine, Run
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider, LocalSettings
from streamchat.request import build_request
from streamchat.server.common import ServerConfig
from waiting import wait_until

pytestmark = [pytest.mark.model, pytest.mark.anyio]

SLOTS = 2
WINDOW = 512
LONG = digits_format(16)  # JSON output the grammar spells: 16 tokens at least, so runs overlap
HANG_GUARD = 120  # seconds: today's engine hangs here; a healthy one is far quicker


@pytest.fixture(scope="module")
def model() -> Iterator[LocalProvider]:
    """Its own provider (2 slots of 512 tokens): failures injected here touch no other test."""
    provider = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=SLOTS, n_ctx=WINDOW)
    provider.load()
    yield provider


@pytest.fixture
def engine(model: LocalProvider) -> Iterator[Engine]:
    """The model's engine, left as found: no hook, supervised by hand (``supervise()``), and
    healthy at the end (a test that broke it has it restarted)."""
    engine = model.engine
    assert engine is not None
    engine.supervise_every = None
    yield engine
    engine.observe = None
    engine.stall_seconds = 30.0
    wait_until(lambda: not engine.busy, what="the engine to be idle")
    engine.supervise()
    assert engine.health() is None


def request(text: str = "Say hello.", **options: Any) -> Any:
    options.setdefault("max_tokens", 8)
    options.setdefault("temperature", 0)
    return build_request(
        model=DEFAULT_LOCAL_MODEL, messages=[{"role": "user", "content": text}], **options
    )


async def outcome(model: LocalProvider, text: str = "Say hello.", **options: Any) -> Any:
    """The reply, or the error the stream ended with."""
    try:
        events = [event async for event in model.stream(request(text, **options))]
    except StreamchatError as error:
        return error
    return accumulate(events)


def served(result: Any) -> bool:
    """A whole reply: what the engine guarantees, whatever the model wrote."""
    return (
        isinstance(result, Message)
        and result.stop_reason in ("end_turn", "max_tokens")
        and result.usage.output_tokens >= 1
    )


def engine_error(result: Any) -> bool:
    """Failed as the protocol says a server failure ends a stream: ``api_error``, 500."""
    return isinstance(result, StreamchatError) and (result.error_type, result.status_code) == (
        "api_error",
        500,
    )


def raising_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, except that its first call raises."""
    fired = threading.Event()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not fired.is_set():
            fired.set()
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    wrapper.fired = fired  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def both_submitted(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The first sampled token waits until two requests were submitted, so the two run in the
    same batches (the scheduler admits the second at its next turn)."""
    submitted = threading.Semaphore(0)
    submit = engine.submit

    def counting(*args: Any) -> None:
        submit(*args)
        submitted.release()

    gate = threading.Event()

    def observe(run: Run, token: int | None) -> None:
        if token is not None and not gate.is_set():
            gate.set()
            for _ in range(2):
                assert submitted.acquire(timeout=HANG_GUARD)

    monkeypatch.setattr(engine, "submit", counting)
    engine.observe = observe
    yield
    engine.observe = None


async def two_then_one(model: LocalProvider) -> tuple[list[Any], Any]:
    """Two requests together, then one more once both ended."""
    pair = await asyncio.wait_for(
        asyncio.gather(outcome(model, max_tokens=24, output_format=LONG), outcome(model)),
        HANG_GUARD,
    )
    after = await asyncio.wait_for(outcome(model), HANG_GUARD)
    return list(pair), after


@pytest.mark.parametrize("point", ["_start", "_share", "_finish", "_sample"])
async def test_a_failure_on_the_scheduler_thread_fails_that_request_alone(
    model: LocalProvider, engine: Engine, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_start`` places a request, ``_share`` copies a prefix into its slot, ``_finish`` ends
    it, ``_sample`` samples its token: each raises once, for one of two requests in flight."""
    restarts = engine.stats.restarts
    with both_submitted(engine, monkeypatch):
        injected = raising_once(getattr(engine, point))
        monkeypatch.setattr(engine, point, injected)
        pair, after = await two_then_one(model)
    assert injected.fired.is_set()
    assert sorted(map(engine_error, pair)) == [False, True], pair  # one failed, one was served
    assert any(map(served, pair)), pair
    assert served(after)  # the scheduler went on
    assert engine.stats.restarts == restarts and engine.health() is None
    assert engine.active == 0 and not any(slot.job for slot in engine.slots)


async def test_a_failing_observe_hook_fails_that_request_alone(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with both_submitted(engine, monkeypatch):
        gate = engine.observe
        assert gate is not None
        hook = raising_once(lambda run, token: None)

        def observe(run: Run, token: int | None) -> None:
            gate(run, token)
            if token is not None and engine.active == SLOTS:  # both in the batch
                hook(run, token)

        engine.observe = observe
        pair, after = await two_then_one(model)
    assert hook.fired.is_set()  # type: ignore[attr-defined]
    assert sorted(map(engine_error, pair)) == [False, True], pair
    assert served(after)


async def test_a_failing_program_fails_that_request_alone(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request's program fails at its first token (reading the token's text)."""
    victims: list[Run] = []
    submit = engine.submit

    def submitting(run: Run, *args: Any) -> None:
        if not victims:
            victims.append(run)
            run.piece = raising_once(run.piece)  # type: ignore[method-assign]
        submit(run, *args)

    monkeypatch.setattr(engine, "submit", submitting)
    pair, after = await two_then_one(model)
    assert sorted(map(engine_error, pair)) == [False, True], pair
    assert served(after)


async def test_a_broken_step_fails_the_requests_in_it_and_the_scheduler_goes_on(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails outside any one sequence fails the sequences it held (what their cells
    hold is unknown): here one request; the next is served."""
    injected = raising_once(engine._step)
    monkeypatch.setattr(engine, "_step", injected)
    failed = await asyncio.wait_for(outcome(model), HANG_GUARD)
    assert injected.fired.is_set() and engine_error(failed), failed
    assert served(await asyncio.wait_for(outcome(model), HANG_GUARD))
    assert engine.health() is None


def batch_sequences(engine: Engine) -> set[int]:
    batch = engine.gen.batch
    return {batch.seq_id[i][0] for i in range(batch.n_tokens)}


async def test_a_batch_llama_cpp_refuses_is_decoded_again_in_halves(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``llama_decode`` returns 1 (no KV cache room) once for a batch of both sequences: each
    is decoded alone and both replies complete."""
    decode = engine._llama_decode
    refused = threading.Event()

    def refusing(gen: Any) -> int:
        if len(batch_sequences(engine)) == SLOTS and not refused.is_set():
            refused.set()
            return 1
        return decode(gen)

    retried = engine.stats.retried_decodes
    with both_submitted(engine, monkeypatch):
        monkeypatch.setattr(engine, "_llama_decode", refusing)
        pair, after = await two_then_one(model)
    assert refused.is_set()
    assert all(map(served, pair)), pair
    assert engine.stats.retried_decodes > retried
    assert served(after)


async def test_a_sequence_llama_cpp_cannot_decode_fails_alone(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch holding the first request's sequence is refused: it fails, the other
    request, halved out of the same batches, completes."""
    decode = engine._llama_decode
    victim: list[int] = []

    def refusing(gen: Any) -> int:
        held = {slot.seq_id for slot in gen.slots if slot.job and id(slot.job.run) in victim}
        return 1 if held & batch_sequences(engine) else decode(gen)

    with both_submitted(engine, monkeypatch):
        submit = engine.submit  # the gate's counting one

        def submitting(run: Run, *args: Any) -> None:
            if not victim:
                victim.append(id(run))
            submit(run, *args)

        monkeypatch.setattr(engine, "submit", submitting)
        monkeypatch.setattr(engine, "_llama_decode", refusing)
        pair, after = await two_then_one(model)
    assert sorted(map(engine_error, pair)) == [False, True], pair
    assert any(map(served, pair)), pair
    failed = next(result for result in pair if engine_error(result))
    assert "llama_decode" in str(failed)
    assert served(after)


@contextlib.contextmanager
def readiness(model: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server in this process whose default model is ``model``; yields its URL."""
    cache = {("smollm2", LocalSettings().resolved()): model}  # keyed as get_provider looks
    monkeypatch.setattr(streamchat.providers, "_cache", cache)
    with serve_in_thread(ServerConfig(default_model="smollm2", models=[])) as url:
        yield url


def ready(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(url + "/readyz", timeout=30)
    return response.status_code, response.json()


async def test_a_dead_scheduler_fails_its_requests_is_unready_and_restarts_at_the_next_request(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler's own turn (admitting requests) raises while a request is in flight: that
    request fails, ``/readyz`` says the thread died, and the next request restarts it."""
    restarts = engine.stats.restarts
    admit = raising_once(engine._admit)
    armed = threading.Event()

    def observe(run: Run, token: int | None) -> None:
        if token is not None and not armed.is_set():
            armed.set()
            monkeypatch.setattr(engine, "_admit", admit)  # its next turn dies

    with readiness(model, monkeypatch) as url:
        assert ready(url)[0] == 200
        engine.observe = observe
        failed = await asyncio.wait_for(
            outcome(model, max_tokens=24, output_format=LONG), HANG_GUARD
        )
        engine.observe = None
        assert admit.fired.is_set() and engine_error(failed), failed
        wait_until(engine.health, what="the dead thread to be reported")
        status, body = await asyncio.to_thread(ready, url)
        assert status == 503 and "died" in body["failing"]["provider"], body
        assert served(await asyncio.wait_for(outcome(model), HANG_GUARD))
        assert engine.stats.restarts == restarts + 1
        assert (await asyncio.to_thread(ready, url))[0] == 200


def test_a_stuck_scheduler_is_unready_and_a_restart_serves_the_next_request(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook blocks the scheduler with a request in flight: past ``stall_seconds`` ``/readyz``
    is 503 naming the stall; ``supervise()`` restarts the engine on a new context, the stuck
    request ends with the protocol's ``api_error``, and the next request is served while the
    old thread is still blocked. Released, the old thread frees its context."""
    release = threading.Event()
    blocked = threading.Event()

    def observe(run: Run, token: int | None) -> None:
        if token is not None and not blocked.is_set():
            blocked.set()
            release.wait(HANG_GUARD)

    protocol = PROTOCOLS["anthropic"]
    old = engine.gen
    with readiness(model, monkeypatch) as url, ThreadPoolExecutor(1) as pool:
        engine.observe = observe
        engine.stall_seconds = 0.2  # the hook blocks until released: certainly a stall
        stuck = pool.submit(httpx.post, url + protocol.stream_path,
                            json=protocol.body("Say hello.", 8), timeout=HANG_GUARD)  # fmt: skip
        try:
            wait_until(blocked.is_set, what="the scheduler to block")
            body = wait_until(lambda: (r := ready(url))[0] == 503 and r[1], what="503")
            assert "no step" in body["failing"]["provider"], body
            assert engine.supervise() is not None  # restarted
            response = stuck.result(HANG_GUARD)
            reader = protocol.reader()
            reader.feed(response.content)
            assert (reader.error, reader.done) == ("api_error", False)
            engine.observe = None
            engine.stall_seconds = 30.0
            assert ready(url)[0] == 200
            assert engine.gen is not old and not old.freed  # the old thread still holds it
            assert served(asyncio.run(outcome(model)))
        finally:
            release.set()
        wait_until(lambda: old.freed, what="the old context to be freed")


async def test_the_supervisor_thread_restarts_a_stuck_scheduler_by_itself(
    model: LocalProvider, engine: Engine
) -> None:
    release = threading.Event()
    restarts = engine.stats.restarts

    def observe(run: Run, token: int | None) -> None:
        if token is not None and not release.is_set():
            release.wait(HANG_GUARD)

    engine.observe = observe
    engine.stall_seconds = 0.2
    engine.supervise_every = 0.05
    try:
        failed = await asyncio.wait_for(outcome(model), HANG_GUARD)
    finally:
        engine.observe = None
        engine.stall_seconds = 30.0
        release.set()
    assert engine_error(failed), failed
    assert engine.stats.restarts == restarts + 1
    assert served(await asyncio.wait_for(outcome(model), HANG_GUARD))


async def test_reset_forgets_cells_on_the_scheduler_thread(
    model: LocalProvider, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's context is not thread-safe: ``reset()`` from another thread is done by the
    scheduler between steps. Afterwards the same prompt is prefilled in full again."""
    again = await outcome(model, "Name a colour.")
    reused = await outcome(model, "Name a colour.")
    assert served(again) and reused.usage.cache_read_input_tokens  # its slot's cells held it
    callers: list[str] = []
    remove = llama_cpp.llama_memory_seq_rm

    def recording(*args: Any) -> Any:
        callers.append(threading.current_thread().name)
        return remove(*args)

    monkeypatch.setattr(llama_cpp, "llama_memory_seq_rm", recording)
    await asyncio.to_thread(engine.reset)
    assert callers and set(callers) == {engine._name}, callers
    cold = await outcome(model, "Name a colour.")
    assert served(cold) and not cold.usage.cache_read_input_tokens


def test_close_stops_the_scheduler_and_is_idempotent() -> None:
    """A provider of its own: closing frees its context and ends its threads."""
    provider = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=1, n_ctx=256)
    provider.load()
    engine = provider.engine
    assert engine is not None
    assert served(asyncio.run(outcome(provider)))
    thread = engine.gen.thread
    assert thread is not None and thread.is_alive()
    assert engine.close() is True
    assert not thread.is_alive() and engine.gen.freed
    assert engine.close() is True  # again: nothing to do
    refused = asyncio.run(outcome(provider))
    assert engine_error(refused), refused
