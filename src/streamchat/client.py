"""``Client`` / ``AsyncClient``: ``messages.create(...)`` and ``messages.stream(...)``.

The API mirrors the Anthropic SDK so its users' code (and the notebook) runs unchanged. The sync
client is a thin bridge over the async one.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any

from . import _bridge
from .events import Message
from .providers import is_known, resolve
from .providers.local import DEFAULT_LOCAL_MODEL, LocalSettings
from .request import build_request
from .stream import (
    AsyncMessageStream,
    AsyncMessageStreamManager,
    MessageStream,
    MessageStreamManager,
)

_warned: set[str] = set()
_warned_lock = threading.Lock()


class UnknownModelWarning(UserWarning):
    """A request named a model streamchat does not know; the default model answered it."""


def warn_unknown_model(requested: str, answering: str, stacklevel: int = 2) -> None:
    """Warn once per process and name that an unknown model id is answered by another model
    (code written for a hosted model runs unchanged, but a typo should not pass unnoticed)."""
    with _warned_lock:
        if requested in _warned:
            return
        _warned.add(requested)
    warnings.warn(
        f"model {requested!r} is not a model streamchat knows; {answering} answers it "
        "(name a known model or a provider prefix such as openai/ to silence this)",
        UnknownModelWarning,
        stacklevel=stacklevel + 1,
    )


def _check_model(params: dict[str, Any], client: AsyncClient) -> None:
    """Called by each public method, so that the warning points at the caller's line."""
    model = params.get("model")
    if is_known(model):
        return
    default = client.default_model
    provider, _ = resolve(None, default, client.local)
    answering = getattr(provider, "display_name", None) or default
    named = f"{answering} ({default})" if answering != default else default
    warn_unknown_model(model, named, stacklevel=3)


class AsyncMessages:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def _open(
        self,
        *,
        messages: Any,
        model: str | None = None,
        max_tokens: int = 1024,
        system: Any = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: list[str] | None = None,
        seed: int | None = None,
        tools: Any = None,
        tool_choice: Any = None,
        thinking: Any = None,
        output_format: Any = None,
        metadata: Any = None,
        helper_events: bool = False,
    ) -> AsyncMessageStream:
        started_at = time.perf_counter()
        provider, model_id = resolve(model, self._client.default_model, self._client.local)
        request = build_request(
            model=model_id,
            messages=messages,
            max_tokens=max_tokens,
            system=system,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_sequences=stop_sequences,
            seed=seed,
            tools=tools,
            tool_choice=tool_choice,
            thinking=thinking,
            output_format=output_format,
        )
        stream = AsyncMessageStream(
            provider.stream(request), started_at=started_at, helper_events=helper_events
        )
        return await stream.start()

    async def create(self, *, stream: bool = False, **params: Any) -> Message | AsyncMessageStream:
        """A complete :class:`Message`, or with ``stream=True`` an :class:`AsyncMessageStream`."""
        _check_model(params, self._client)
        opened = await self._open(**params)
        if stream:
            return opened
        try:
            return await opened.get_final_message()
        finally:
            await opened.close()

    def stream(self, **params: Any) -> AsyncMessageStreamManager:
        """``async with client.messages.stream(...) as stream:`` (same parameters as create)."""
        _check_model(params, self._client)
        return AsyncMessageStreamManager(lambda: self._open(**params, helper_events=True))


class AsyncClient:
    """The async client. ``default_model`` serves requests that name no known model;
    ``local`` says how embedded models run (streams batched together, requests queued)."""

    def __init__(self, default_model: str | None = None, *, local: LocalSettings | None = None):
        self.default_model = (
            default_model or os.environ.get("STREAMCHAT_MODEL") or DEFAULT_LOCAL_MODEL
        )
        self.local = local or LocalSettings()
        self.messages = AsyncMessages(self)

    async def close(self) -> None:
        """Nothing to release today; present for parity with the SDKs."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Messages:
    def __init__(self, inner: AsyncMessages):
        self._inner = inner

    def create(self, *, stream: bool = False, **params: Any) -> Message | MessageStream:
        """A complete :class:`Message`, or with ``stream=True`` a :class:`MessageStream`."""
        _check_model(params, self._inner._client)
        if stream:
            return MessageStream(_bridge.run(self._inner.create(stream=True, **params)))
        return _bridge.run(self._inner.create(**params))

    def stream(self, **params: Any) -> MessageStreamManager:
        """``with client.messages.stream(...) as stream:`` (same parameters as create)."""
        _check_model(params, self._inner._client)
        return MessageStreamManager(lambda: self._inner._open(**params, helper_events=True))


class Client:
    """The sync client; same API as :class:`AsyncClient`, blocking."""

    def __init__(self, default_model: str | None = None, *, local: LocalSettings | None = None):
        self._async = AsyncClient(default_model, local=local)
        self.messages = Messages(self._async.messages)

    @property
    def default_model(self) -> str:
        return self._async.default_model

    def close(self) -> None:
        _bridge.run(self._async.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
