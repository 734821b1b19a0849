"""What every protocol endpoint shares: configuration, body limits, opening a provider stream.

Each protocol module is thin: parse (wire codec) -> :func:`open_events` -> encode (wire codec).
Errors raised here are canonical :class:`~streamchat.errors.StreamchatError`s; each protocol
module renders them in its own error shape.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ..errors import InvalidRequestError, ModelNotFoundError, RequestTooLargeError
from ..events import StreamEvent
from ..media import MediaBlock
from ..providers import get_provider, split_model
from ..providers.local import BUILTIN_MODELS, DEFAULT_LOCAL_MODEL, LocalSettings
from ..recording.commit import COMMIT_SECONDS
from ..recording.tap import record_stream
from ..request import MAX_TOKENS_LIMIT, MessageRequest
from ..tape import record_tape
from .faults import FaultInjector, inject
from .metrics import request_observer

CONVERSATION_HEADER = "x-streamchat-conversation"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(slots=True)
class ServerConfig:
    """``default_model`` serves every request whose model is not in ``models``."""

    default_model: str = DEFAULT_LOCAL_MODEL
    models: list[str] = field(default_factory=lambda: list(BUILTIN_MODELS))
    api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024  # Anthropic's own request limit (images, PDFs)
    max_tokens_limit: int = MAX_TOKENS_LIMIT
    history_path: str | None = None  # log requests and replies here (serve --history)
    history_commit_seconds: float = COMMIT_SECONDS  # the group commit's interval
    history_strict: bool = False  # no token leaves before the commit that keeps it
    faults: FaultInjector | None = None  # serve --faults: injected failures, per request
    record_dir: str | None = None  # serve --record: one tape per stream, for replay/<dir>
    loopback_only: bool = False  # serve sets it when bound to loopback: loopback names only
    strict_models: bool = False  # serve --strict-models: an unknown model id is a not-found
    local: LocalSettings = field(default_factory=LocalSettings)  # embedded models' settings
    resume_seconds: float = 600.0  # serve --resume-seconds: a finished resumable reply is kept
    resume_grace_seconds: float = 30.0  # ... and an unfollowed one generates on this long

    def served_models(self) -> list[str]:
        """Model names a client may pick (the default first)."""
        names = [self.default_model, *self.models]
        return list(dict.fromkeys(names))


async def read_json(request: Request, config: ServerConfig) -> Any:
    """The request body as JSON, refusing bodies over the configured size (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
        raise RequestTooLargeError(f"request body exceeds {config.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > config.max_body_bytes:
            raise RequestTooLargeError(f"request body exceeds {config.max_body_bytes} bytes")
    return parse_json(bytes(body))


def parse_json(body: bytes) -> Any:
    """JSON the rest of the server can trust; anything else is a 400, never a 500.

    ``json.loads`` also fails with ``RecursionError`` (deep nesting), ``ValueError`` (integers of
    over 4300 digits) and accepts lone surrogates (``"\\ud800"``), which no UTF-8 encoder can
    write back (the echo, the model's tokenizer, the history).
    """
    try:
        value = json.loads(body)
        if _SURROGATE_ESCAPE.search(body):  # only an escape can smuggle in a lone surrogate
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except UnicodeEncodeError:
        raise InvalidRequestError("request body is not valid JSON: lone surrogate") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequestError(f"request body is not valid JSON: {error}") from None
    except (RecursionError, ValueError):
        raise InvalidRequestError(
            "request body is not valid JSON: nested too deeply or a number too long"
        ) from None


def route_model(config: ServerConfig, requested: str | None) -> str:
    """The provider model name that serves a requested model id (unknown ids -> default, or
    with ``strict_models`` a not-found error each protocol words in its own shape)."""
    if requested and requested in config.served_models() and split_model(requested) is not None:
        return requested
    if config.strict_models and requested and requested != config.default_model:
        served = ", ".join(config.served_models())
        raise ModelNotFoundError(
            f"model: {requested!r} is not served here; served models: {served}"
        )
    return config.default_model


def media_chars(block: MediaBlock) -> int:
    """What an image or document weighs in :func:`estimate_tokens`: an image as Anthropic's
    largest (1,600 tokens), a document as its text or its size."""
    if block.type != "document":
        return 4 * 1600
    text = block.source.text
    return len(text) if text is not None else len(block.source.data or b"")


def estimate_tokens(request: MessageRequest) -> int:
    """About four characters a token: only for providers that cannot count exactly. Every
    block counts (tool calls and results, thinking, images and documents), and so do the system
    prompt and tools."""
    chars = len(request.system or "")
    for turn in request.messages:
        for block in turn.parts:
            if block.type == "tool_use":
                chars += len(block.name) + len(json.dumps(block.input))
            elif block.type == "thinking":
                chars += len(block.thinking)
            elif isinstance(block, MediaBlock):
                chars += media_chars(block)
            else:  # text, tool_result
                chars += len(block.text)
                if block.type == "tool_result":
                    chars += sum(map(media_chars, block.media))
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.input_schema))
    return max(1, round(chars / 4))


async def count_prompt_tokens(
    config: ServerConfig, requested_model: str, request: MessageRequest
) -> int:
    """Prompt tokens of ``request`` as the serving provider counts them (its tokenizer and
    prompt format), or an estimate where it cannot count (CountTokens and count_tokens)."""
    provider = get_provider(route_model(config, requested_model), config.local)
    count = getattr(provider, "count_tokens", None)
    if count is None:
        return estimate_tokens(request)
    return await asyncio.to_thread(count, request)  # may load a model or call a remote API


def requested_conversation(headers: Mapping[str, str] | None) -> int | None:
    """The history conversation a client (the web page) asks its turn to be logged to, by the
    ``x-streamchat-conversation`` header; anything but a plausible id is ignored."""
    value = (headers or {}).get(CONVERSATION_HEADER, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else None


async def open_events(
    config: ServerConfig,
    requested_model: str | None,
    build: Callable[[str], MessageRequest],
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Start a provider stream and wait for its first event.

    Anything that fails before streaming (bad request, overload, missing model) raises here, so
    the endpoint can still answer with an HTTP error status. ``build(model_id)`` returns the
    validated request; the requested id is echoed back to the client. ``headers`` (the HTTP
    request's) may ask for an injected fault when the server runs with ``--faults``, and name
    the history conversation to log to (:func:`requested_conversation`).
    """
    model = route_model(config, requested_model)
    observer = request_observer(model)  # /metrics; None outside a server app
    try:
        provider = get_provider(model, config.local)
        if observer is not None:
            observer.watch(provider)
        request = build(requested_model or config.default_model)
        faults = config.faults.decide(headers) if config.faults is not None else None
        if faults is not None:
            faults.refuse()  # an injected overload never reaches the provider
        events = provider.stream(request)
        if config.record_dir:  # the backend's stream as it was, before any injected fault
            events = record_tape(config.record_dir, request, events, provider=provider.name)
        if config.history_path:  # one place for every protocol; fail-soft, off the event loop
            events = record_stream(
                config.history_path,
                request,
                events,
                provider=provider.name,
                conversation_id=requested_conversation(headers),
                strict=config.history_strict,
                interval=config.history_commit_seconds,
            )
        if faults is not None and faults.active:
            events = inject(events, faults)
        try:
            first = await events.__anext__()
        except BaseException:
            await events.aclose()
            raise
    except BaseException as error:
        if observer is not None:
            observer.failed(error)
        raise
    stream = _prepend(first, events)
    return stream if observer is None else observer.wrap(stream)


async def _prepend(
    first: StreamEvent, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    try:
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()
