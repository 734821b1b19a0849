"""Continuous batching in the embedded engine (issue 15), through the library: one llama.cpp
context with 16 slots, every running stream decoded in one ``llama_decode`` per step.

Each batched reply is checked against the same request run alone; the engine's own counters
(steps, batch sizes, prefill and reused tokens) and its ``observe`` hook show what it did.
No check is timed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import llama_cpp
import pytest

from embedded_model import call_budget, cut_of, forced_budget, stop_inside
from streamchat import InvalidRequestError
from streamchat.accumulate import accumulate
from streamchat.events import Message
from streamchat.providers.batching import (
    BATCH_BUCKETS,
    PREFILL_CHUNK,
    PREFILL_CHUNK_PLAIN,
    Run,
    prompt_chunk,
)
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider
from streamchat.request import build_request

pytestmark = [pytest.mark.model, pytest.mark.anyio]

SLOTS = 16
WINDOW = 1024
TOPICS = [
    "rivers", "bread", "the moon", "cats", "trains", "music", "winter", "coffee",
    "volcanoes", "libraries", "bees", "chess", "the ocean", "bicycles", "clocks", "tea",
]  # fmt: skip


@pytest.fixture(scope="module")
def engine_model() -> Iterator[LocalProvider]:
    """Its own provider (16 slots of 1024 tokens), so the session's default model is untouched."""
    provider = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=SLOTS, n_ctx=WINDOW)
    provider.load()
    yield provider


Seen = dict[Run, list[tuple[int, int, int | None]]]


@pytest.fixture
def watch(engine_model: LocalProvider) -> Iterator[Seen]:
    """Every sampled token per run (``None``: the run left), with the step that sampled it and
    the prompt tokens prefilled up to that step: the scheduler's own counts, never a clock."""
    seen: Seen = {}
    engine = engine_model.engine
    assert engine is not None

    def observe(run: Run, token: int | None) -> None:
        stats = engine.stats  # as the step that sampled ``token`` left them
        seen.setdefault(run, []).append((stats.steps, stats.prefill_tokens, token))

    engine.observe = observe
    yield seen
    engine.observe = None


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def reply(provider: LocalProvider, messages: Any, **options: Any) -> Message:
    options.setdefault("max_tokens", 24)
    options.setdefault("temperature", 0)
    request = build_request(model=DEFAULT_LOCAL_MODEL, messages=messages, **options)
    return accumulate([event async for event in provider.stream(request)])


def whole_prompt(message: Message) -> int:
    return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def same(batched: Message, alone: Message) -> None:
    assert batched.text == alone.text
    assert batched.stop_reason == alone.stop_reason
    assert batched.stop_sequence == alone.stop_sequence
    assert batched.usage.output_tokens == alone.usage.output_tokens
    assert whole_prompt(batched) == whole_prompt(alone)


async def test_sixteen_concurrent_streams_each_get_their_own_reply(
    engine_model: LocalProvider,
) -> None:
    prompts = [ask(f"Write one sentence about {topic}.") for topic in TOPICS]
    alone = [await reply(engine_model, p) for p in prompts]
    stats = engine_model.engine.stats  # type: ignore[union-attr]
    full_steps = stats.batch_buckets[BATCH_BUCKETS.index(16)]
    batched = await asyncio.gather(*(reply(engine_model, p) for p in prompts))
    for one, other in zip(batched, alone, strict=True):
        same(one, other)  # no crossed tokens: each is its prompt's reply
    assert stats.batch_buckets[BATCH_BUCKETS.index(16)] > full_steps  # 9-16 sequences per step


async def test_stop_sequences_and_max_tokens_hold_per_stream(engine_model: LocalProvider) -> None:
    """The stop string and the cut come from the reply the model gives alone (embedded_model's
    stop_inside and cut_of), so at temperature 0 both certainly take effect, batched too."""
    count = ask("List the numbers 1 to 20 on one line.")
    whole = await reply(engine_model, count, max_tokens=30)
    stop, before = stop_inside(whole.text) or ("\x00never", whole.text)
    cut, reason = cut_of(whole.usage.output_tokens, whole.stop_reason, 5)
    cases = [
        {"messages": count, "max_tokens": 30, "stop_sequences": [stop]},
        {"messages": count, "max_tokens": cut},
        {"messages": ask("Tell me a short story about a cat."), "max_tokens": 20},
        {"messages": count, "max_tokens": 30},
    ]
    alone = [await reply(engine_model, **case) for case in cases]
    batched = await asyncio.gather(*(reply(engine_model, **case) for case in cases))
    for one, other in zip(batched, alone, strict=True):
        same(one, other)
    stopped, short, _, full = batched
    same(full, whole)
    assert stopped.text == before and stop not in stopped.text
    if stop in whole.text:
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    assert short.stop_reason == reason
    assert short.usage.output_tokens == min(cut, whole.usage.output_tokens)


async def test_seeds_reproduce_per_stream_whoever_shares_the_batch(
    engine_model: LocalProvider,
) -> None:
    story = ask("Tell me a short story about a dragon.")
    seeds = [1, 2, 3, 4, 5]
    options = {"max_tokens": 16, "temperature": 1.0}
    first = await asyncio.gather(*(reply(engine_model, story, seed=s, **options) for s in seeds))
    second = await asyncio.gather(
        *(reply(engine_model, story, seed=s, **options) for s in reversed(seeds))
    )
    alone = await reply(engine_model, story, seed=3, **options)
    for one, other in zip(first, reversed(second), strict=True):
        assert one.text == other.text
    assert alone.text == first[2].text
    assert len({m.text for m in first}) > 1  # the seeds do sample differently


async def test_cancelling_one_stream_frees_its_slot_for_a_waiting_request(
    engine_model: LocalProvider,
) -> None:
    engine = engine_model.engine
    assert engine is not None
    prompts = [ask(f"Write a long essay about {topic}.") for topic in TOPICS]
    started = [asyncio.Event() for _ in prompts]
    finished: list[str] = []  # who ended, in order
    cancel_victim = asyncio.Event()

    async def stream(i: int, max_tokens: int) -> Message | None:
        request = build_request(model="m", messages=prompts[i % SLOTS], max_tokens=max_tokens,
                                temperature=0)  # fmt: skip
        events = []
        source = engine_model.stream(request)
        try:
            async for event in source:
                events.append(event)
                if event.type == "content_block_delta" and i < SLOTS:
                    started[i].set()
                    if i == 0 and cancel_victim.is_set():
                        return None  # the client goes away mid-stream
                if event.type == "message_start" and i == SLOTS:
                    finished.append("17th started")
        finally:
            await source.aclose()
        finished.append(str(i))
        return accumulate(events)

    tasks = [asyncio.create_task(stream(i, 60)) for i in range(SLOTS)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)
    assert engine.active == SLOTS
    seventeenth = asyncio.create_task(stream(SLOTS, 8))
    for _ in range(6000):  # a hang guard of 60 s; the loop must run for the 17th to be queued
        if engine._waiting:  # queued in the engine
            break
        await asyncio.sleep(0.01)
    assert len(engine._waiting) == 1 and engine.active == SLOTS
    assert "17th started" not in finished  # every slot is taken: it waits in line
    cancel_victim.set()
    results = await asyncio.gather(*tasks, seventeenth)
    assert results[0] is None
    before = finished[: finished.index("17th started")]
    assert len(set(before) - {"0"}) <= 3, finished  # the others were still decoding
    late = results[-1]
    assert late is not None and late.usage.output_tokens > 0
    assert all(m is not None and m.usage.output_tokens > 0 for m in results[1:SLOTS])
    assert engine.active == 0


async def test_a_cancelled_streams_cells_are_freed_at_once(engine_model: LocalProvider) -> None:
    engine = engine_model.engine
    assert engine is not None
    cells: list[int] = []

    def observe(run: Run, token: int | None) -> None:
        if token is None:  # leaving: what its sequence still holds
            cells.append(llama_cpp.llama_memory_seq_pos_max(engine.memory, run.seq_id))

    engine.observe = observe
    try:
        request = build_request(model="m", messages=ask("Write a long essay about tea."),
                                max_tokens=200, temperature=0)  # fmt: skip
        source = engine_model.stream(request)
        async for event in source:
            if event.type == "content_block_delta":
                break
        await source.aclose()
        for _ in range(6000):  # a hang guard of 60 s: the run leaves at the next step
            if cells:
                break
            await asyncio.sleep(0.01)
        assert cells == [-1]  # nothing left in its cells
        await reply(engine_model, ask("Say hi."), max_tokens=4)
        assert cells[-1] >= 0, cells  # a completed reply keeps its cells for the next turn
    finally:
        engine.observe = None


async def test_a_long_prompt_joining_does_not_stall_decoding_streams(
    engine_model: LocalProvider, watch: Seen
) -> None:
    """Chunked prefill: a long prompt joining streams that are decoding is prefilled in
    chunks, in the same steps that give every stream its next token (counted in steps and
    tokens, not timed; how large a chunk grows is paced by the steps' durations)."""
    engine = engine_model.engine
    assert engine is not None
    prompts = [ask(f"Write a long essay about {topic}.") for topic in TOPICS[:8]]
    long_text = " ".join(f"Fact {i}: the {TOPICS[i % 16]} are nice." for i in range(80))
    long_prompt = ask(long_text + "\nSummarise these facts.")
    long_tokens = len(engine_model.prompt_tokens(build_request(model="m", messages=long_prompt))[0])

    tasks = [asyncio.create_task(reply(engine_model, p, max_tokens=40)) for p in prompts]
    while sum(1 for seen in watch.values() if len(seen) >= 5) < 8:
        await asyncio.sleep(0.005)
    steps, sent = engine.stats.prefill_steps, engine.stats.steps
    tasks.append(asyncio.create_task(reply(engine_model, long_prompt, max_tokens=2)))
    await asyncio.gather(*tasks)
    (joined,) = [run for run in watch if len(run.prompt) == long_tokens]
    new = long_tokens - joined.reused  # its prompt, less what was reused
    assert new > engine.chunk and engine.stats.prefill_steps - steps >= 2  # not in one step

    prefilled: dict[int, int] = {}  # step -> prompt tokens prefilled up to it
    decoding: set[int] = set()  # steps that gave one of the eight streams a token
    for run, seen in watch.items():
        for step, prefilled_so_far, token in seen:
            if token is not None:
                prefilled[step] = prefilled_so_far
                if len(run.prompt) < long_tokens:  # not the joining request itself
                    decoding.add(step)
    ordered = sorted(decoding)
    between = {b: prefilled[b] - prefilled[a] for a, b in itertools.pairwise(ordered)}
    mixed = {step: tokens for step, tokens in between.items() if tokens}
    assert mixed, between  # decoding went on while it was prefilled...
    assert max(mixed.values()) <= engine.burst, mixed  # ...between chunks of it,
    chunks = [tokens for step, tokens in mixed.items() if step > sent]  # the long prompt's
    assert min(chunks) >= engine.chunk, mixed  # none under the floor, the last neither


@pytest.mark.parametrize(("budget", "floor"), [(64, 64), (100, 64), (512, 64), (16, 16)])
def test_a_prompt_is_cut_in_even_chunks_none_under_the_floor(budget: int, floor: int) -> None:
    """Each step's share of a prompt (``prompt_chunk``), as the scheduler takes them one after
    another at a steady budget: no more steps than cutting at the budget, no chunk under the
    floor (unless the whole prompt is), and chunks within one token of each other."""
    for whole in range(1, 3000):
        left, chunks = whole, []
        while left:
            chunks.append(prompt_chunk(left, budget, floor))
            left -= chunks[-1]
            assert chunks[-1] > 0 and left >= 0
        assert len(chunks) <= -(-whole // budget), (whole, chunks)
        assert whole < floor or min(chunks) >= floor, (whole, chunks)
        assert max(chunks) - min(chunks) <= 1, (whole, chunks)
    assert prompt_chunk(10, 0, floor) == 0  # a budget spent by another prompt this step


async def test_without_flash_attention_a_prompt_beside_a_stream_is_answered() -> None:
    """``flash_attn=False`` (``serve --flash-attn off``): the engine's floor is the lower one
    that mode allows, and a reply beside a decoding stream is whole, its prompt prefilled over
    several steps (counted in the engine's steps, not timed)."""
    plain = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=2, n_ctx=WINDOW, flash_attn=False)
    plain.load()
    engine = plain.engine
    assert engine is not None and engine.chunk == PREFILL_CHUNK_PLAIN < PREFILL_CHUNK
    seen: Seen = {}
    engine.observe = lambda run, token: seen.setdefault(run, []).append(
        (engine.stats.steps, engine.stats.prefill_tokens, token)
    )
    streaming = asyncio.create_task(reply(plain, ask("Write a long essay about rivers."),
                                          max_tokens=200))  # fmt: skip
    while not any(len(tokens) >= 5 for tokens in seen.values()):
        await asyncio.sleep(0.005)
    text = " ".join(f"Fact {i}: the {TOPICS[i % 16]} are nice." for i in range(60))
    steps = engine.stats.prefill_steps
    message = await reply(plain, ask(text + "\nSummarise."), max_tokens=8)
    assert message.usage.output_tokens > 0 and message.stop_reason in ("max_tokens", "end_turn")
    if not streaming.done():  # the stream decoded beside it: the prompt took several steps
        assert engine.stats.prefill_steps - steps >= 2
    await streaming


async def test_a_long_prompt_alone_is_prefilled_n_ubatch_tokens_a_step(
    engine_model: LocalProvider, watch: Seen
) -> None:
    """With nothing decoding, a prompt takes ``burst`` (n_ubatch) tokens a step, not the
    small chunk that protects decoding streams (counted in the engine's steps, not timed)."""
    engine = engine_model.engine
    assert engine is not None and engine.burst >= 4 * engine.chunk
    text = " ".join(f"Item {i}: one {TOPICS[i % 16]} noted alone." for i in range(80))
    prompt = ask(text + "\nSummarise.")
    tokens = len(engine_model.prompt_tokens(build_request(model="m", messages=prompt))[0])
    steps = engine.stats.prefill_steps
    await reply(engine_model, prompt, max_tokens=1)
    (run,) = [run for run in watch if len(run.prompt) == tokens]
    new = tokens - run.reused
    assert new > engine.burst  # more than one burst, and far more than one chunk
    assert engine.stats.prefill_steps - steps == -(-new // engine.burst), (new, engine.burst)


async def test_a_next_turn_prefills_only_its_new_tokens(engine_model: LocalProvider) -> None:
    engine = engine_model.engine
    assert engine is not None
    first_question = ask("What is the capital of France?")
    first = await reply(engine_model, first_question, max_tokens=16)
    await reply(engine_model, ask("Name three colours."), max_tokens=8)  # in another slot
    turn2 = [
        *first_question,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And of Italy?"},
    ]
    prompt1 = engine_model.prompt_tokens(build_request(model="m", messages=first_question))[0]
    prompt2 = engine_model.prompt_tokens(build_request(model="m", messages=turn2))[0]
    prefilled, reused = engine.stats.prefill_tokens, engine.stats.reused_tokens
    second = await reply(engine_model, turn2, max_tokens=8)
    prefilled = engine.stats.prefill_tokens - prefilled
    reused = engine.stats.reused_tokens - reused
    assert reused >= len(prompt1)  # the whole first turn came from the slot's cells
    assert prefilled == len(prompt2) - reused == second.usage.input_tokens
    assert second.usage.cache_read_input_tokens == reused
    assert whole_prompt(second) == len(prompt2)


async def test_tool_calls_and_json_output_work_batched(engine_model: LocalProvider) -> None:
    weather = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    person = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    single = {"type": "any", "disable_parallel_tool_use": True}
    cases = [  # budgets under which every call and the JSON certainly close
        {"messages": ask("What is the weather in Paris?"), "tools": [weather],
         "tool_choice": single, "max_tokens": forced_budget([weather])},
        {"messages": ask("Invent a person."), "max_tokens": call_budget(person),
         "output_format": {"type": "json_schema", "schema": person}},
        {"messages": ask("Write one sentence about rivers."), "max_tokens": 20},
        {"messages": ask("What is the weather in Rome?"), "tools": [weather],
         "tool_choice": single, "max_tokens": forced_budget([weather])},
    ]  # fmt: skip
    # Alone and batched, the same guarantees (not the same words: a batch's shape changes
    # llama.cpp's arithmetic, and a near-tie between two tokens may go either way).
    alone = [await reply(engine_model, **case) for case in cases]
    batched = await asyncio.gather(*(reply(engine_model, **case) for case in cases))
    for replies in (alone, batched):
        for index in (0, 3):
            (call,) = replies[index].tool_calls
            jsonschema.validate(call.input, weather["input_schema"])
            assert replies[index].stop_reason == "tool_use"
        assert replies[1].stop_reason == "end_turn"
        jsonschema.validate(json.loads(replies[1].text), person)
        assert not replies[2].tool_calls and replies[2].stop_reason in ("end_turn", "max_tokens")
        assert replies[2].usage.output_tokens <= 20


async def test_a_prompt_longer_than_the_per_stream_window_is_refused(
    engine_model: LocalProvider,
) -> None:
    with pytest.raises(InvalidRequestError, match="prompt is too long") as info:
        await reply(engine_model, ask("hello " * (WINDOW + 50)))
    assert f"> {WINDOW} maximum" in info.value.message
    assert engine_model.admission.count == 0


async def test_the_same_prompt_again_reuses_its_slot_and_others_keep_theirs(
    engine_model: LocalProvider,
) -> None:
    engine = engine_model.engine
    assert engine is not None
    essay, colours = ask("Write a long essay about maps."), ask("Name three colours.")
    first = await reply(engine_model, essay, max_tokens=40)
    await reply(engine_model, colours, max_tokens=40)  # shares the system prompt only
    again = await reply(engine_model, essay, max_tokens=40)
    assert again.text == first.text
    assert again.usage.input_tokens == 1  # all but the last prompt token came from its cells
    assert again.usage.cache_read_input_tokens == whole_prompt(first) - 1
    other = await reply(engine_model, colours, max_tokens=4)
    assert other.usage.input_tokens == 1  # its slot was not taken by the essay


async def test_a_new_prompt_copies_the_shared_system_prompt_from_another_slot() -> None:
    two = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=2, n_ctx=WINDOW)  # one slot empty
    two.load()
    engine = two.engine
    assert engine is not None
    await reply(two, ask("Write a long essay about fruit."), max_tokens=48)
    fresh = ask("Describe a lighthouse in one sentence, please.")
    message = await reply(two, fresh, max_tokens=12)  # the conversation's slot is not taken
    assert engine.stats.shared_tokens >= 8  # the template's system turn: copied, not prefilled
    assert message.usage.cache_read_input_tokens == engine.stats.shared_tokens
    alone = LocalProvider(DEFAULT_LOCAL_MODEL, parallel=1, n_ctx=WINDOW)  # nothing to copy from
    assert (await reply(alone, fresh, max_tokens=12)).text == message.text
