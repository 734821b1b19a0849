"""Continuous batching for the embedded model: one llama.cpp context, many sequences, one
``llama_decode`` per step.

Why: one generation at a time leaves every other user waiting for whole replies, and a 135M
model decoding one token barely uses the CPU's vector units; sixteen tokens in one decode cost
little more than one. A scheduler thread owns the context. Each request is a *program*: a
generator that yields events for its client and :data:`NEED` when it wants its next token (see
:meth:`Run.next_token`). Every step the scheduler

1. drops cancelled programs (their slot's KV cells freed at once) and admits waiting ones into
   free slots, the slot whose cells already hold the longest prefix of the prompt first (its
   cells are reused: a chat's next turn prefills only the new tokens);
2. builds one ``llama_batch``: every decoding sequence's pending token(s), then a bounded chunk
   of pending prompts (chunked prefill: a long prompt never freezes the streams in flight);
3. decodes once, samples each finished sequence with its own :class:`TokenSampler` (its chain,
   seed and grammar), and resumes its program until it needs a token again.

The programs run on the scheduler thread, so nothing here needs a lock except the queue of
arriving requests; events reach each client through its own thread-safe hand-off.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError
from .grammar import GrammarCache, TokenSampler

NEED = object()  # yielded by a program: "decode my pending tokens and send me the next one"
# Prompt tokens per step. On a small model a CPU is compute-bound at batch 1 already, so a step
# costs about its token count: a prompt chunk of P tokens beside D decoding streams makes their
# next token (P + D) / D times later. While streams decode, each prompt being prefilled gets
# ``PREFILL_CHUNK`` tokens a step (many new prompts together still go in one step: TTFT); with
# none decoding, ``PREFILL_BURST``.
PREFILL_CHUNK = 32
PREFILL_BURST = 512
STEP_EXTRA = 16  # batch room per slot for a decoding sequence's token and format prefill
SHARE_MIN = 8  # prompt tokens another slot must hold beyond this slot's before they are copied
SHARE_MAX_CELLS = 2048  # a donor slot longer than this is not copied (its whole state moves)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFILL_BUCKETS = (0, 16, 64, 128, 256, 512, 1024)

Program = Generator[Any, Any, None]


class Run:
    """One request's sequence as its program sees it: queue text, constrain, take tokens.

    ``next_token`` is a sub-generator (``token = yield from run.next_token()``): it yields
    :data:`NEED` to the scheduler, which decodes :attr:`pending` in the next batch and sends the
    sampled token back.
    """

    EOG = -1
    LIMIT = -2

    def __init__(
        self,
        prompt: list[int],
        sampler: TokenSampler,
        max_tokens: int,
        window: int,
        grammars: GrammarCache | None,
        tokenize: Callable[[str], list[int]],
        detokenize: Callable[[int], bytes],
        is_eog: Callable[[int], bool],
    ):
        self.prompt = prompt
        self.sampler = sampler
        self.max_tokens = max_tokens
        self.window = window
        self.grammars = grammars
        self._tokenize = tokenize
        self.piece = detokenize
        self._is_eog = is_eog
        self.pending: list[int] = []
        self.output_tokens = 0
        self.reused = 0  # prompt tokens found in the slot's cells (not prefilled again)
        self.cells = len(prompt)  # cells the sequence holds once its pending tokens are decoded
        self.prompting = True  # no token sampled yet: the prompt is prefilled in chunks
        self.seq_id = -1  # the slot (llama.cpp sequence) it runs in, once admitted

    def prefill(self, text: str) -> None:
        """Text the reply format dictates (not sampled, not counted): decoded before the next
        token, in the same batch."""
        if text:
            tokens = self._tokenize(text)
            self.pending += tokens
            self.cells += len(tokens)

    def constrain(self, gbnf: str | None) -> None:
        assert self.grammars is not None
        self.sampler.set_grammar(None if gbnf is None else self.grammars.sampler(gbnf, "grammar"))

    def next_token(self) -> Generator[Any, int, int]:
        """The next sampled token, or :attr:`EOG` / :attr:`LIMIT`."""
        if self.output_tokens >= self.max_tokens or self.cells > self.window:
            return self.LIMIT
        token: int = yield NEED
        if self._is_eog(token):
            return self.EOG
        self.output_tokens += 1
        self.pending.append(token)
        self.cells += 1
        return token


@dataclass(eq=False)
class _Job:
    run: Run
    make: Callable[[Run], Iterator[Any]]  # the program, started once the run has its slot
    emit: Callable[[Any, BaseException | None], None]  # to the client: item, or (DONE, error)
    cancel: threading.Event
    program: Any = None
    slot: _Slot | None = None


@dataclass(eq=False)
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cells hold
    job: _Job | None = None
    used_at: float = 0.0


@dataclass
class EngineStats:
    """The scheduler's counters (read by ``/metrics`` and tests; written by its thread only)."""

    steps: int = 0
    decoded_tokens: int = 0  # every token in every batch
    prefill_tokens: int = 0  # prompt tokens decoded (not reused from a slot's cells)
    reused_tokens: int = 0  # prompt tokens served from a slot's cells (its own or copied)
    shared_tokens: int = 0  # of those, copied from another slot's cells
    batch_buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_sum: int = 0  # sequences summed over steps
    prefill_buckets: list[int] = field(default_factory=lambda: [0] * (len(PREFILL_BUCKETS) + 1))
    prefill_sum: int = 0
    prefill_steps: int = 0  # steps that prefilled prompt tokens


def _bucket(counts: list[int], bounds: tuple[int, ...], value: int) -> None:
    for i, bound in enumerate(bounds):
        if value <= bound:
            counts[i] += 1
            return
    counts[-1] += 1


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Engine:
    """``slots`` sequences of ``window`` tokens each in one context, on one scheduler thread;
    ``threads`` decode a step of one token, ``batch_threads`` a step of more."""

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        window: int,
        threads: int,
        batch_threads: int | None = None,
        chunk: int = PREFILL_CHUNK,
        burst: int = PREFILL_BURST,
        name: str = "streamchat-batch",
    ):
        import llama_cpp

        self.slots = [_Slot(i) for i in range(slots)]
        self.chunk, self.burst = chunk, burst
        self.n_batch = burst + slots * STEP_EXTRA
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * window
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, 512)
        params.n_seq_max = slots
        params.kv_unified = False  # each sequence attends over its own cells only
        params.n_threads = threads  # llama.cpp uses it for a step of one token,
        params.n_threads_batch = batch_threads or threads  # this for a step of more
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise ModelError(f"cannot create a llama.cpp context of {slots} x {window} tokens")
        self.ctx = ctx
        self.window = llama_cpp.llama_n_ctx_seq(ctx)
        self.n_swa = llama_cpp.llama_model_n_swa(model)
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.stats = EngineStats()
        self.batch_bounds, self.prefill_bounds = BATCH_BUCKETS, PREFILL_BUCKETS
        self.active = 0  # slots running a request
        self._waiting: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._name = name
        self._thread: threading.Thread | None = None
        self._closed = False
        # Tests and diagnostics: called with every sampled token, and ``None`` when a run leaves.
        self.observe: Callable[[Run, int | None], None] | None = None

    # -- from other threads --------------------------------------------------------------------
    def submit(
        self,
        run: Run,
        make: Callable[[Run], Iterator[Any]],
        emit: Callable[[Any, BaseException | None], None],
        cancel: threading.Event,
    ) -> None:
        """Queue a request; it joins the batch at the next step a slot is free."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._waiting.append(_Job(run, make, emit, cancel))
            self._cond.notify()

    def wake(self) -> None:
        """A waiting request was cancelled: let the scheduler drop it."""
        with self._cond:
            self._cond.notify()

    def reset(self) -> None:
        """Forget every idle slot's cells (benchmarks: a cold prompt is prefilled in full)."""
        import llama_cpp

        with self._cond:
            for slot in self.slots:
                if slot.job is None:
                    llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                    slot.tokens.clear()

    @property
    def busy(self) -> bool:
        return self.active > 0 or bool(self._waiting)

    def close(self) -> None:
        """Free the context (only when idle: the scheduler may be inside llama_decode)."""
        import llama_cpp

        if self._closed or self.busy:
            return
        self._closed = True
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)

    # -- the scheduler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.active and not self._waiting:
                    self._cond.wait()
                waiting = self._waiting
                arrived: list[_Job] = []
                for job in list(waiting):
                    if job.cancel.is_set():  # its client left while it waited
                        waiting.remove(job)
                        job.run.sampler.close()
                        job.emit(None, None)
                while waiting and self.active < len(self.slots):
                    arrived.append(waiting.popleft())
                    self.active += 1
            for slot in self.slots:
                if slot.job is not None and slot.job.cancel.is_set():
                    self._finish(slot, None, keep=False)
            for job in arrived:
                self._start(job)
            if self.active:
                try:
                    self._step()
                except Exception as error:  # a decode failure fails the requests in flight
                    for slot in self.slots:
                        if slot.job is not None:
                            self._finish(slot, error, keep=False)

    def _place(self, job: _Job) -> _Slot:
        """The free slot whose cells this prompt continues (a conversation's next turn: most of
        the slot; the same prompt again: all of the prompt); else an empty slot, else the least
        recently used. A prompt that shares only a little with a slot (the system prompt) must
        not wipe that slot's longer conversation."""
        prompt = job.run.prompt
        free = [slot for slot in self.slots if slot.job is None]
        best = max(free, key=lambda s: (common_prefix(s.tokens, prompt), -s.used_at))
        shared = common_prefix(best.tokens, prompt)
        if shared and (shared >= len(prompt) - 1 or 2 * shared >= len(best.tokens)):
            return best
        empty = [slot for slot in free if not slot.tokens]
        return empty[0] if empty else min(free, key=lambda s: s.used_at)

    def _start(self, job: _Job) -> None:
        import llama_cpp

        slot = self._place(job)
        slot.job, job.slot = job, slot
        run = job.run
        run.seq_id = slot.seq_id
        prefix = min(common_prefix(slot.tokens, run.prompt), len(run.prompt) - 1)
        seq = slot.seq_id
        if prefix > 0 and self.n_swa > 0:  # sliding-window layers may have dropped old cells
            low = llama_cpp.llama_memory_seq_pos_min(self.memory, seq)
            if low > max(0, prefix - self.n_swa):
                prefix = 0
        if prefix <= 0 or not llama_cpp.llama_memory_seq_rm(self.memory, seq, prefix, -1):
            prefix = 0
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        del slot.tokens[prefix:]
        prefix = self._share(slot, run.prompt, prefix)
        run.reused = prefix
        run.pending = run.prompt[prefix:]
        self.stats.reused_tokens += prefix
        try:
            job.program = job.make(run)
        except BaseException as error:
            self._finish(slot, error, keep=False)
            return
        self._resume(slot, None)

    def _share(self, slot: _Slot, prompt: list[int], have: int) -> int:
        """Copy a prefix of ``prompt`` (a shared system prompt, say) from another slot's cells
        into ``slot``, when one holds at least :data:`SHARE_MIN` more of it: moving a sequence's
        state costs far less than prefilling it again. The tokens the slot now holds: ``have``
        when nothing was copied, 0 when a copy failed (the slot is emptied)."""
        import ctypes

        import llama_cpp

        if self.n_swa > 0:  # sliding-window caches keep too little to copy a prefix from
            return have
        donors = [s for s in self.slots if s is not slot and 0 < len(s.tokens) <= SHARE_MAX_CELLS]
        if not donors:
            return have
        donor = max(donors, key=lambda s: common_prefix(s.tokens, prompt))
        shared = min(common_prefix(donor.tokens, prompt), len(prompt) - 1)
        if shared < have + SHARE_MIN:
            return have
        ctx, seq = self.ctx, slot.seq_id
        size = llama_cpp.llama_state_seq_get_size(ctx, donor.seq_id)
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, state, size, donor.seq_id)
        llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        slot.tokens.clear()
        if not written or not llama_cpp.llama_state_seq_set_data(ctx, state, written, seq):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            return 0
        if not llama_cpp.llama_memory_seq_rm(self.memory, seq, shared, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            return 0
        slot.tokens[:] = donor.tokens[:shared]
        self.stats.shared_tokens += shared
        return shared

    def _resume(self, slot: _Slot, value: int | None) -> None:
        """Run the slot's program until it needs a token (its events go to its client)."""
        job = slot.job
        assert job is not None
        try:
            item = job.program.send(value)
            while item is not NEED:
                job.emit(item, None)
                item = job.program.send(None)
        except StopIteration:
            self._finish(slot, None, keep=True)
        except BaseException as error:
            self._finish(slot, error, keep=False)

    def _finish(self, slot: _Slot, error: BaseException | None, *, keep: bool) -> None:
        """The request leaves now. Its cells stay for prefix reuse after a complete reply; after
        a cancel or an error they are freed."""
        import llama_cpp

        job = slot.job
        assert job is not None
        slot.job = None
        slot.used_at = time.monotonic()
        self.active -= 1
        if not keep:
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()
        try:
            if job.program is not None:
                job.program.close()
        except BaseException as close_error:
            error = error or close_error
        finally:
            job.run.sampler.close()
            if self.observe is not None:
                self.observe(job.run, None)
            job.emit(None, error)

    def _step(self) -> None:
        import llama_cpp

        batch = self.batch
        n = 0
        budget, capacity = self.chunk, self.n_batch
        sampled: list[tuple[_Slot, int]] = []
        prefilled = members = 0
        # Decoding sequences first (one token each, or a short format prefill), then prompts.
        order = sorted(
            (s for s in self.slots if s.job is not None), key=lambda s: s.job.run.prompting
        )  # type: ignore[union-attr]
        for slot in order:
            run = slot.job.run  # type: ignore[union-attr]
            take = len(run.pending)
            if run.prompting:
                take = min(take, budget)
            take = min(take, capacity)
            if take <= 0:
                continue
            tokens, position = run.pending[:take], len(slot.tokens)
            for i, token in enumerate(tokens):
                batch.token[n + i] = token
                batch.pos[n + i] = position + i
                batch.n_seq_id[n + i] = 1
                batch.seq_id[n + i][0] = slot.seq_id
                batch.logits[n + i] = False
            n += take
            members += 1
            capacity -= take
            if run.prompting:
                budget -= take
                prefilled += take
            del run.pending[:take]
            slot.tokens += tokens
            if not run.pending:
                batch.logits[n - 1] = True
                sampled.append((slot, n - 1))
        if n == 0:
            return
        batch.n_tokens = n
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            raise ModelError(f"llama_decode failed ({code}) with {n} tokens in the batch")
        stats = self.stats
        stats.steps += 1
        stats.decoded_tokens += n
        stats.prefill_tokens += prefilled
        stats.prefill_sum += prefilled
        stats.prefill_steps += prefilled > 0
        _bucket(stats.prefill_buckets, PREFILL_BUCKETS, prefilled)
        stats.batch_sum += members
        _bucket(stats.batch_buckets, BATCH_BUCKETS, members)
        for slot, index in sampled:
            job = slot.job
            if job is None:
                continue
            if job.cancel.is_set():
                self._finish(slot, None, keep=False)
                continue
            run = job.run
            token = run.sampler.sample(self.ctx, index)
            run.prompting = False
            if self.observe is not None:
                self.observe(run, token)
            self._resume(slot, token)
