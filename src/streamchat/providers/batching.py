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
arriving requests; events reach each client through its own thread-safe hand-off. Every
llama.cpp call on the context is made on that thread (``reset`` too: a request it runs between
steps).

Supervision: whatever fails on the scheduler thread (placing a request, copying a prefix, a
program, a hook, a decode) fails the request it belongs to, with an ``api_error``, and the
scheduler goes on. A batch llama.cpp refuses is decoded again in halves (as llama.cpp's server
does) until only the sequence that cannot be decoded fails. A scheduler thread that dies, or
makes no step for ``stall_seconds`` with work waiting, is reported by :meth:`Engine.health`
(``/readyz``) and replaced, with a new context, by a supervisor thread; the requests it held fail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import APIError, ModelError, StreamchatError
from .grammar import GrammarCache, TokenSampler

NEED = object()  # yielded by a program: "decode my pending tokens and send me the next one"
# Prompt tokens per step. With no stream decoding, prompts take up to ``PREFILL_BURST`` (n_ubatch)
# a step. While streams decode, they go first, in a llama_decode call of their own, and the prompts
# being prefilled share a budget in a second call (chunked prefill, as llama.cpp's server and
# vLLM do). The budget starts at ``PREFILL_CHUNK`` and is paced by measurement: it grows while
# a step takes under ``PREFILL_STEP_RATIO`` times a decode-only step, and shrinks towards the
# floor when it takes longer. Measured here (2 cores, a 1,500-token prompt beside 8 decoding
# streams): in one call with the prompt, the streams' step went from 50 ms to 1.4 s; the
# prompt's TTFT was 72 s with 32-token chunks in one call, 15.6 s with 128 in their own (13.4 s
# alone). The floor is the smallest chunk that prefills at full speed. With flash attention
# that is 64 tokens: llama.cpp's CPU kernel is tiled from 64 query rows of a sequence
# (GGML_FA_TILE_Q) and takes them one at a time below (measured at ~1,500 tokens of context: 16
# tokens 286 ms, 64 tokens 351 ms). Without it a chunk costs about the same per token at any
# size (16 tokens 94 ms, 64 tokens 333 ms), so the floor can be lower.
PREFILL_CHUNK = 64
PREFILL_CHUNK_PLAIN = 16
PREFILL_BURST = 512
PREFILL_STEP_RATIO = 1.9  # just under 2: the long prompt's TTFT and the streams' gaps share it
STEP_EXTRA = 16  # batch room per slot for a decoding sequence's token and format prefill
SHARE_MIN = 8  # prompt tokens another slot must hold beyond this slot's before they are copied
SHARE_MAX_CELLS = 2048  # a donor slot longer than this is not copied (its whole state moves)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFILL_BUCKETS = (0, 16, 64, 128, 256, 512, 1024)
STALL_SECONDS = 30.0  # no step for this long with work waiting: the scheduler is stuck
SUPERVISE_SECONDS = 1.0  # how often the supervisor looks

log = logging.getLogger("streamchat.local")

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
        self.output_tokens = 0  # the reply's tokens so far (what max_tokens bounds)
        self.discarded = 0  # tokens sampled and then rewound (a result resampled into validity)
        self.reused = 0  # prompt tokens found in the slot's cells (not prefilled again)
        self.cells = len(prompt)  # cells the sequence holds once its pending tokens are decoded
        self.prompting = True  # no token sampled yet: the prompt is prefilled in chunks
        self.seq_id = -1  # the slot (llama.cpp sequence) it runs in, once admitted
        self.rewind_to: int | None = None  # cells to keep, for the scheduler (see rewind)

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

    def mark(self) -> tuple[int, int]:
        """Where the sequence stands now, for :meth:`rewind`."""
        return self.cells, self.output_tokens

    def rewind(self, mark: tuple[int, int]) -> None:
        """Forget every token after ``mark``: the scheduler drops their cells before it decodes
        again, and the next token is sampled from where the mark was taken."""
        self.discarded += self.output_tokens - mark[1]
        self.cells, self.output_tokens = mark
        self.pending.clear()
        self.rewind_to = self.cells

    @property
    def generated(self) -> int:
        """Every token sampled, rewound ones included: the reply's ``usage.output_tokens``."""
        return self.output_tokens + self.discarded

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
    ended: bool = False  # its end was sent: nothing more reaches the client

    def send(self, item: Any, error: BaseException | None = None) -> None:
        """An event for the client, or (``None``) its end; nothing after the end (a restarted
        engine has already failed the job its stuck thread may still be running)."""
        if self.ended:
            return
        self.ended = item is None
        with contextlib.suppress(Exception):  # a hand-off whose event loop is gone
            self.emit(item, error)


@dataclass(eq=False)
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cells hold
    job: _Job | None = None
    used_at: float = 0.0


@dataclass(eq=False)
class _Segment:
    """One sequence's tokens in a batch."""

    slot: _Slot
    job: _Job
    tokens: list[int]
    position: int  # of the first token in the sequence
    prefill: int  # prompt tokens among them
    sample: bool  # the last token's logits are sampled


@dataclass(eq=False)
class _Request:
    """Work the scheduler does between steps for another thread (it alone calls llama.cpp)."""

    call: Callable[[_Context], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class _Context:
    """One llama.cpp context, its slots and the one thread that calls llama.cpp on it. A restart
    builds a new one: a stuck thread keeps its own, and frees it if it ever returns."""

    def __init__(
        self,
        model: Any,
        slots: int,
        window: int,
        n_batch: int,
        threads: int,
        batch_threads: int,
        flash_attn: bool,
    ):
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.n_ctx = slots * window
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = slots
        params.kv_unified = False  # each sequence attends over its own cells only
        params.n_threads = threads  # llama.cpp uses it for a step of one token,
        params.n_threads_batch = batch_threads  # this for a step of more
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise ModelError(f"cannot create a llama.cpp context of {slots} x {window} tokens")
        self.ctx = ctx
        self.window = llama_cpp.llama_n_ctx_seq(ctx)
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.slots = [_Slot(i) for i in range(slots)]
        self.jobs: set[_Job] = set()  # admitted: placed in a slot, or about to be
        self.thread: threading.Thread | None = None
        self.beat = time.monotonic()  # the scheduler's last sign of progress
        self.retired = False  # replaced (a restart) or closed: its thread leaves at its next turn
        self.died: BaseException | None = None
        self.freed = False

    def free(self) -> None:
        import llama_cpp

        if not self.freed:
            self.freed = True
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)


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
    retried_decodes: int = 0  # batches llama.cpp refused, decoded again in halves
    restarts: int = 0  # scheduler threads replaced (died or stuck)


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


def prompt_chunk(whole: int, budget: int, floor: int) -> int:
    """Prompt tokens to prefill in one step, of ``whole`` left, with ``budget`` to spend: the
    rest cut into as many even chunks as the budget needs but none under ``floor`` (a short
    chunk costs about a floor's worth with flash attention). So the largest chunk, which sets
    decoding streams' longest gap, stays near the budget: 1,500 tokens at 64 go in chunks of
    65-66, where cutting at the budget would end on one of 92."""
    if whole <= budget or budget <= 0:
        return max(0, min(whole, budget))
    pieces = min(-(-whole // budget), max(1, whole // floor))
    return -(-whole // pieces)


def _client_error(error: BaseException) -> BaseException:
    """What the client is told: our own errors as they are; anything else is the engine's
    failure, an ``api_error`` (500) whose cause is the original."""
    if isinstance(error, StreamchatError):
        return error
    wrapped = APIError(f"the local model failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


class Engine:
    """``slots`` sequences of ``window`` tokens each in one context, on one scheduler thread;
    ``threads`` decode a step of one token, ``batch_threads`` a step of more; ``flash_attn``
    turns on llama.cpp's flash attention (``local.DEFAULT_FLASH_ATTN`` weighs it). A supervisor
    replaces a scheduler thread that died or made no step for ``stall_seconds`` with work
    waiting (:meth:`health` says why until then)."""

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        window: int,
        threads: int,
        batch_threads: int | None = None,
        flash_attn: bool = True,
        chunk: int | None = None,
        burst: int = PREFILL_BURST,
        name: str = "streamchat-batch",
        stall_seconds: float = STALL_SECONDS,
    ):
        import llama_cpp

        if chunk is None:
            chunk = PREFILL_CHUNK if flash_attn else PREFILL_CHUNK_PLAIN
        self.chunk, self.burst = chunk, burst
        self.prefill_budget = chunk  # prompt tokens a step beside decoding streams: paced, >= chunk
        self._decode_step: float | None = None  # a decode-only step's duration (moving average)
        self.n_batch = burst + slots * STEP_EXTRA
        self._context_args = (
            model, slots, window, self.n_batch, threads, batch_threads or threads, flash_attn
        )  # fmt: skip
        self.gen = _Context(*self._context_args)  # the current context and its scheduler
        self._contexts = [self.gen]  # not yet freed: the current one, and any a stuck thread holds
        self.window = self.gen.window
        self.n_swa = llama_cpp.llama_model_n_swa(model)
        self.stats = EngineStats()
        self.batch_bounds, self.prefill_bounds = BATCH_BUCKETS, PREFILL_BUCKETS
        self._waiting: deque[_Job] = deque()
        self._requests: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._name = name
        self._closed = False
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.stall_seconds = stall_seconds
        self.supervise_every: float | None = SUPERVISE_SECONDS  # None: only supervise() calls
        self.incident: str | None = None  # why the scheduler was last restarted
        # Tests and diagnostics: called with every sampled token, and ``None`` when a run leaves.
        self.observe: Callable[[Run, int | None], None] | None = None

    @property
    def slots(self) -> list[_Slot]:
        return self.gen.slots

    @property
    def active(self) -> int:
        """Slots running a request now."""
        return len(self.gen.jobs)

    @property
    def memory(self) -> Any:
        return self.gen.memory

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
            if self._closed:
                raise APIError("the local model's engine is closed")
            self._running()
            if not self.busy:  # the stall clock starts when work arrives
                self.gen.beat = time.monotonic()
            self._waiting.append(_Job(run, make, emit, cancel))
            self._cond.notify_all()

    def wake(self) -> None:
        """A waiting request was cancelled: let the scheduler drop it."""
        with self._cond:
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget every idle slot's cells (benchmarks: a cold prompt is prefilled in full)."""

        def forget(gen: _Context) -> None:
            import llama_cpp

            for slot in gen.slots:
                if slot.job is None:
                    llama_cpp.llama_memory_seq_rm(gen.memory, slot.seq_id, -1, -1)
                    slot.tokens.clear()

        self._call(forget)

    def _call(self, call: Callable[[_Context], None]) -> None:
        """Run ``call`` on the scheduler thread between two steps, and wait for it: llama.cpp's
        context must not be touched while that thread may be inside ``llama_decode``."""
        request = _Request(call)
        with self._cond:
            if self._closed:
                return
            self._requests.append(request)
            self._running()
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error

    @property
    def busy(self) -> bool:
        return self.active > 0 or bool(self._waiting)

    def health(self) -> str | None:
        """Why this engine cannot serve now (its scheduler died, or made no step for
        ``stall_seconds`` with work waiting); ``None`` when it can."""
        gen = self.gen
        if self._closed:
            return "the local model's engine is closed"
        if gen.thread is not None and not gen.thread.is_alive():
            return f"the scheduler thread died ({type(gen.died).__name__}: {gen.died})"
        idle = time.monotonic() - gen.beat
        if self.busy and idle > self.stall_seconds:
            return f"the scheduler made no step for {idle:.0f} s with work waiting"
        return None

    def supervise(self) -> str | None:
        """Restart the scheduler if :meth:`health` says it cannot serve; returns why (the
        supervisor thread calls this every ``supervise_every`` seconds)."""
        with self._cond:
            reason = self.health()
            if reason is not None and not self._closed:
                self._restart(reason)
            return reason

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the scheduler (requests still waiting or running fail) and free its context.
        Idempotent. True when every context is freed, so the weights may go; a thread stuck
        inside a step keeps its context until it returns."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._stop.set()
                error = APIError("the local model's engine was closed")
                for gen in self._contexts:
                    gen.retired = True
                for job in self._waiting:
                    job.run.sampler.close()
                    job.send(None, error)
                self._waiting.clear()
                for request in self._requests:
                    request.done.set()
                self._requests.clear()
                self._cond.notify_all()
            threads = [gen.thread for gen in self._contexts if gen.thread is not None]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        with self._cond:
            for gen in self._contexts:
                if gen.thread is None:  # never started: no thread owns it
                    gen.free()
            return all(gen.freed for gen in self._contexts)

    # -- supervision (callers hold the lock) ---------------------------------------------------
    def _running(self) -> None:
        """A scheduler thread for the current context, and the supervisor, are running; a dead
        scheduler is replaced now rather than at the supervisor's next look."""
        gen = self.gen
        if gen.thread is not None and not gen.thread.is_alive():
            self._restart(self.health() or "the scheduler thread died")
            gen = self.gen
        if gen.thread is None:
            gen.thread = threading.Thread(
                target=self._loop, args=(gen,), name=self._name, daemon=True
            )
            gen.thread.start()
        if self._supervisor is None:
            self._supervisor = threading.Thread(
                target=self._supervise_loop, name=f"{self._name}-supervisor", daemon=True
            )
            self._supervisor.start()

    def _restart(self, reason: str) -> None:
        """A new context and scheduler thread take over; the old thread's requests fail now (a
        stuck thread cleans them up, and frees its context, if it ever returns)."""
        try:
            fresh = _Context(*self._context_args)
        except ModelError as error:
            self.incident = f"{reason}; restarting failed: {error}"
            return
        old, self.gen = self.gen, fresh
        old.retired = True
        self._contexts = [gen for gen in self._contexts if not gen.freed] + [fresh]
        self.incident = reason
        self.stats.restarts += 1
        log.error("local model engine restarted: %s", reason)
        error = APIError(f"the local model's scheduler was restarted: {reason}")
        for job in list(old.jobs):
            job.send(None, error)
        if self._waiting or self._requests:
            self._running()
        self._cond.notify_all()  # an idle old thread wakes and leaves

    def _supervise_loop(self) -> None:
        while not self._stop.wait(self.supervise_every or SUPERVISE_SECONDS):
            if self.supervise_every is not None:
                self.supervise()

    # -- the scheduler thread ------------------------------------------------------------------
    def _loop(self, gen: _Context) -> None:
        """Turns until ``gen`` is retired; dying or leaving, it fails the requests it holds (an
        error each, never a hang) and frees its context."""
        try:
            while self._turn(gen):
                pass
        except BaseException as error:
            gen.died = error
            log.exception("the local model's scheduler thread died")
        finally:
            reason = gen.died or APIError("the local model's scheduler stopped")
            for job in list(gen.jobs):
                self._fail(gen, job, reason)
            with contextlib.suppress(Exception):
                gen.free()

    def _turn(self, gen: _Context) -> bool:
        """One turn: admit, run requests, drop cancelled runs, start arrived ones, step."""
        with self._cond:
            while not (gen.retired or gen.jobs or self._waiting or self._requests):
                self._cond.wait()
            if gen.retired:
                return False
            gen.beat = time.monotonic()
            requests = list(self._requests)
            self._requests.clear()
            arrived = self._admit(gen)
        for request in requests:
            try:
                request.call(gen)
            except Exception as error:
                request.error = error
            request.done.set()
        for slot in gen.slots:
            if slot.job is not None and slot.job.cancel.is_set():
                self._guarded(gen, slot.job, self._finish, gen, slot, None, keep=False)
        for job in arrived:
            self._guarded(gen, job, self._start, gen, job)
        if gen.jobs:
            try:
                self._step(gen)
            except Exception as error:  # a step broken outside any one sequence: its own fail
                for job in list(gen.jobs):
                    self._fail(gen, job, error)
        gen.beat = time.monotonic()
        return True

    def _admit(self, gen: _Context) -> list[_Job]:
        """Under the lock: drop waiting requests whose clients left, take those slots can hold."""
        waiting = self._waiting
        for job in list(waiting):
            if job.cancel.is_set():  # its client left while it waited
                waiting.remove(job)
                job.run.sampler.close()
                job.send(None, None)
        arrived: list[_Job] = []
        while waiting and len(gen.jobs) < len(gen.slots):
            job = waiting.popleft()
            gen.jobs.add(job)
            arrived.append(job)
        return arrived

    def _guarded(
        self, gen: _Context, job: _Job, action: Callable[..., None], *args: Any, **kwargs: Any
    ) -> None:
        """``action`` for one job: if it raises, that job alone fails."""
        try:
            action(*args, **kwargs)
        except Exception as error:
            self._fail(gen, job, error)

    def _fail(self, gen: _Context, job: _Job, error: BaseException) -> None:
        """The job leaves with ``error``, whatever state its failure left: its slot's cells are
        freed (what they hold is unknown), its program and sampler closed. Never raises."""
        import llama_cpp

        if job in gen.jobs and not isinstance(error, StreamchatError):
            log.error("a local model request failed", exc_info=error)
        gen.jobs.discard(job)
        slot = job.slot
        if slot is not None and slot.job is job:
            slot.job = None
            slot.used_at = time.monotonic()
            slot.tokens.clear()
            with contextlib.suppress(Exception):
                llama_cpp.llama_memory_seq_rm(gen.memory, slot.seq_id, -1, -1)
        with contextlib.suppress(Exception):
            if job.program is not None:
                job.program.close()
        with contextlib.suppress(Exception):
            job.run.sampler.close()
        if not job.ended:
            with contextlib.suppress(Exception):
                if self.observe is not None:
                    self.observe(job.run, None)
        job.send(None, _client_error(error))

    def _place(self, gen: _Context, job: _Job) -> _Slot:
        """The free slot whose cells this prompt continues (a conversation's next turn: most of
        the slot; the same prompt again: all of the prompt); else an empty slot, else the least
        recently used. A prompt that shares only a little with a slot (the system prompt) must
        not wipe that slot's longer conversation."""
        prompt = job.run.prompt
        free = [slot for slot in gen.slots if slot.job is None]
        best = max(free, key=lambda s: (common_prefix(s.tokens, prompt), -s.used_at))
        shared = common_prefix(best.tokens, prompt)
        if shared and (shared >= len(prompt) - 1 or 2 * shared >= len(best.tokens)):
            return best
        empty = [slot for slot in free if not slot.tokens]
        return empty[0] if empty else min(free, key=lambda s: s.used_at)

    def _start(self, gen: _Context, job: _Job) -> None:
        import llama_cpp

        slot = self._place(gen, job)
        slot.job, job.slot = job, slot
        run = job.run
        run.seq_id = slot.seq_id
        prefix = min(common_prefix(slot.tokens, run.prompt), len(run.prompt) - 1)
        seq = slot.seq_id
        if prefix > 0 and self.n_swa > 0:  # sliding-window layers may have dropped old cells
            low = llama_cpp.llama_memory_seq_pos_min(gen.memory, seq)
            if low > max(0, prefix - self.n_swa):
                prefix = 0
        if prefix <= 0 or not llama_cpp.llama_memory_seq_rm(gen.memory, seq, prefix, -1):
            prefix = 0
            llama_cpp.llama_memory_seq_rm(gen.memory, seq, -1, -1)
        del slot.tokens[prefix:]
        prefix = self._share(gen, slot, run.prompt, prefix)
        run.reused = prefix
        run.pending = run.prompt[prefix:]
        self.stats.reused_tokens += prefix
        try:
            job.program = job.make(run)
        except BaseException as error:
            self._finish(gen, slot, error, keep=False)
            return
        self._resume(gen, slot, None)

    def _share(self, gen: _Context, slot: _Slot, prompt: list[int], have: int) -> int:
        """Copy a prefix of ``prompt`` (a shared system prompt, say) from another slot's cells
        into ``slot``, when one holds at least :data:`SHARE_MIN` more of it: moving a sequence's
        state costs far less than prefilling it again. The tokens the slot now holds: ``have``
        when nothing was copied, 0 when a copy failed (the slot is emptied)."""
        import ctypes

        import llama_cpp

        if self.n_swa > 0:  # sliding-window caches keep too little to copy a prefix from
            return have
        donors = [s for s in gen.slots if s is not slot and 0 < len(s.tokens) <= SHARE_MAX_CELLS]
        if not donors:
            return have
        donor = max(donors, key=lambda s: common_prefix(s.tokens, prompt))
        shared = min(common_prefix(donor.tokens, prompt), len(prompt) - 1)
        if shared < have + SHARE_MIN:
            return have
        ctx, memory, seq = gen.ctx, gen.memory, slot.seq_id
        size = llama_cpp.llama_state_seq_get_size(ctx, donor.seq_id)
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, state, size, donor.seq_id)
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        slot.tokens.clear()
        if not written or not llama_cpp.llama_state_seq_set_data(ctx, state, written, seq):
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            return 0
        if not llama_cpp.llama_memory_seq_rm(memory, seq, shared, -1):
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            return 0
        slot.tokens[:] = donor.tokens[:shared]
        self.stats.shared_tokens += shared
        return shared

    def _resume(self, gen: _Context, slot: _Slot, value: int | None) -> None:
        """Run the slot's program until it needs a token (its events go to its client)."""
        job = slot.job
        assert job is not None
        try:
            item = job.program.send(value)
            while item is not NEED:
                job.send(item)
                item = job.program.send(None)
        except StopIteration:
            self._finish(gen, slot, None, keep=True)
        except Exception as error:
            self._finish(gen, slot, error, keep=False)

    def _finish(
        self, gen: _Context, slot: _Slot, error: BaseException | None, *, keep: bool
    ) -> None:
        """The request leaves now. Its cells stay for prefix reuse after a complete reply; after
        a cancel or an error they are freed. If this raises, :meth:`_fail` ends the job."""
        import llama_cpp

        job = slot.job
        assert job is not None
        if not keep:
            llama_cpp.llama_memory_seq_rm(gen.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()
        gen.jobs.discard(job)
        slot.job = None
        slot.used_at = time.monotonic()
        if job.program is not None:
            try:
                job.program.close()
            except Exception as close_error:
                error = error or close_error
        job.run.sampler.close()
        if self.observe is not None:
            self.observe(job.run, None)
        job.send(None, None if error is None else _client_error(error))

    def _step(self, gen: _Context) -> None:
        """One batch: every decoding sequence's pending tokens, then chunks of prompts (a
        small budget beside decoding streams, ``n_ubatch`` when none decodes)."""
        budget: int | None = None  # the prompts' share, known once the decoding ones are in
        capacity = self.n_batch
        segments: list[_Segment] = []
        # Decoding sequences first (one token each, or a short format prefill), then prompts.
        order = sorted(
            (s for s in gen.slots if s.job is not None), key=lambda s: s.job.run.prompting
        )  # type: ignore[union-attr]
        for slot in order:
            job = slot.job
            assert job is not None
            run = job.run
            if run.rewind_to is not None:
                self._rewind(gen, slot, run)
            take = len(run.pending)
            if run.prompting:
                if budget is None:  # any segment so far is a decoding stream's
                    budget = self.prefill_budget if segments else self.burst
                take = prompt_chunk(take, budget, self.chunk)
            take = min(take, capacity)
            if take <= 0:
                continue
            tokens = run.pending[:take]
            prefill = take if run.prompting else 0
            segments.append(_Segment(slot, job, tokens, len(slot.tokens), prefill, False))
            capacity -= take
            if budget is not None:
                budget -= prefill
            del run.pending[:take]
            slot.tokens += tokens
            segments[-1].sample = not run.pending
        # Streams that decode and prompts being prefilled go in separate llama_decode calls:
        # in one batch with a long prompt, the decoding streams' tokens cost far more (measured
        # here: 8 streams' step 50 ms alone, 1.4 s beside 32 tokens of a 1,500-token prompt).
        streams = [segment for segment in segments if not segment.prefill]
        prompts = [segment for segment in segments if segment.prefill]
        decoded = self._decode(gen, streams) if streams else None
        prompted = self._decode(gen, prompts) if prompts else None
        if decoded is not None:
            self._pace(decoded, prompted, sum(segment.prefill for segment in prompts))

    @staticmethod
    def _rewind(gen: _Context, slot: _Slot, run: Run) -> None:
        """Drop the cells after ``run.rewind_to`` and queue the last kept token again, whose
        logits the next token is sampled from (the whole sequence when llama.cpp cannot cut
        its cache there, as a sliding-window one may not)."""
        import llama_cpp

        keep = run.rewind_to - 1  # type: ignore[operator]
        run.rewind_to = None
        if not llama_cpp.llama_memory_seq_rm(gen.memory, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(gen.memory, slot.seq_id, -1, -1)
            keep = 0
        run.pending[:0] = slot.tokens[keep : run.cells]
        del slot.tokens[keep:]

    def _decode(self, gen: _Context, segments: list[_Segment]) -> float | None:
        """Decode ``segments`` in one ``llama_decode`` and sample them; the call's duration
        (``None`` when it was split or failed). When llama.cpp refuses the batch (1: no room in
        the KV cache), decode it again in halves, as llama.cpp's server does, until a sequence
        that still fails alone fails alone."""
        import llama_cpp

        segments = [s for s in segments if s.slot.job is s.job]  # still running
        if not segments:
            return None
        batch, n = gen.batch, 0
        for segment in segments:
            for i, token in enumerate(segment.tokens):
                batch.token[n] = token
                batch.pos[n] = segment.position + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = segment.slot.seq_id
                batch.logits[n] = False
                n += 1
            batch.logits[n - 1] = segment.sample
        batch.n_tokens = n
        started = time.perf_counter()
        code = self._llama_decode(gen)
        elapsed = time.perf_counter() - started
        if code != 0:
            for segment in segments:  # whatever a partial decode wrote
                llama_cpp.llama_memory_seq_rm(gen.memory, segment.slot.seq_id, segment.position, -1)
            if len(segments) > 1:
                self.stats.retried_decodes += 1
                half = len(segments) // 2
                self._decode(gen, segments[:half])
                self._decode(gen, segments[half:])
                return None
            lone = segments[0]
            error = APIError(
                f"llama_decode failed ({code}) on {len(lone.tokens)} tokens of this sequence"
            )
            self._fail(gen, lone.job, error)
            return None
        stats = self.stats
        prefilled = sum(segment.prefill for segment in segments)
        stats.steps += 1
        stats.decoded_tokens += n
        stats.prefill_tokens += prefilled
        stats.prefill_sum += prefilled
        stats.prefill_steps += prefilled > 0
        _bucket(stats.prefill_buckets, PREFILL_BUCKETS, prefilled)
        stats.batch_sum += len(segments)
        _bucket(stats.batch_buckets, BATCH_BUCKETS, len(segments))
        gen.beat = time.monotonic()
        index = -1
        for segment in segments:
            index += len(segment.tokens)
            if segment.sample:
                self._guarded(gen, segment.job, self._sample, gen, segment, index)
        return elapsed

    def _pace(self, decoded: float, prompted: float | None, tokens: int) -> None:
        """Learn how long the decoding streams' call takes; size the prompt budget beside them
        so that a step with both takes about :data:`PREFILL_STEP_RATIO` times as long."""
        last = self._decode_step
        self._decode_step = decoded if last is None else 0.8 * last + 0.2 * decoded
        if prompted is None:
            return
        ratio = (self._decode_step + prompted) / self._decode_step
        if ratio < 0.8 * PREFILL_STEP_RATIO and tokens >= self.prefill_budget:
            self.prefill_budget = min(self.burst, self.prefill_budget * 3 // 2 + 1)
        elif ratio > PREFILL_STEP_RATIO:
            self.prefill_budget = max(self.chunk, self.prefill_budget * 2 // 3)

    def _llama_decode(self, gen: _Context) -> int:
        """``llama_decode`` of the batch as filled (its own method: tests inject failures)."""
        import llama_cpp

        return llama_cpp.llama_decode(gen.ctx, gen.batch)

    def _sample(self, gen: _Context, segment: _Segment, index: int) -> None:
        slot, job = segment.slot, segment.job
        if slot.job is not job:
            return
        if job.cancel.is_set():
            self._finish(gen, slot, None, keep=False)
            return
        run = job.run
        token = run.sampler.sample(gen.ctx, index)
        run.prompting = False
        if self.observe is not None:
            self.observe(run, token)
        self._resume(gen, slot, token)
