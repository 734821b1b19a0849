"""Remote streams that survive the network: an httpx transport for the providers' official
SDKs that resumes a reply whose connection dropped, when the upstream is a streamchat server.

Every POST asks for a resumable reply (``x-streamchat-resumable``: other servers ignore the
header). A streamed answer that names its reply (``x-streamchat-reply``: only a streamchat
server does) is passed on whole frames at a time while the transport notes each frame's
``id:``; if the connection breaks mid-body, the transport resumes with
``GET /v1/streams/{id}`` and ``Last-Event-ID`` and goes on passing frames, so the SDK reading
the body never sees the break. A body closed before its end (the reader stopped: Ctrl-C, a
client gone) cancels the reply upstream, as closing a plain stream would have stopped it.

The SDKs ship their own fork of httpx (``httpx2``) and refuse the other's objects, so the
transport is built on the module of the client class it is given. Where the environment names
an HTTP proxy (``HTTPS_PROXY`` …), the SDKs keep their own transport (httpx applies the proxy
only to transports it builds), and replies are not resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import urllib.request
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

RESUMABLE_HEADER = "x-streamchat-resumable"  # as server/replies.py names them
REPLY_HEADER = "x-streamchat-reply"
ATTEMPTS = 4  # resumes in a row without a frame between them, then the break is raised
FIRST_PAUSE = 0.25  # seconds before the first resume, doubling


def resuming_client(client_class: type) -> Any:
    """An SDK's default async client (``anthropic.DefaultAsyncHttpxClient``, …) on a resuming
    transport; ``None`` (the SDK's own) where a proxy is configured."""
    if urllib.request.getproxies():
        return None
    module = next(
        sys.modules[root]
        for cls in client_class.__mro__
        if (root := cls.__module__.partition(".")[0]) in ("httpx", "httpx2")
    )
    return client_class(transport=resuming_transport(module)())


@functools.cache
def resuming_transport(h: ModuleType) -> type:
    """The resuming transport class on ``h`` (``httpx`` or the SDKs' ``httpx2``)."""
    breaks = (h.ReadError, h.RemoteProtocolError, h.ReadTimeout)

    class ResumingStream(h.AsyncByteStream):  # type: ignore[misc,name-defined]
        """One reply's body: whole frames, across resumes."""

        def __init__(self, inner: Any, request: Any, response: Any, path: str) -> None:
            self.inner = inner
            self.response = response
            self.url = request.url.copy_with(path=path, query=None)
            # the credentials the first request carried (any scheme the SDKs use)
            self.headers = {
                name: value
                for name, value in request.headers.items()
                if name.lower() in ("authorization", "x-api-key", "api-key", "anthropic-version")
            }
            self.last = -1  # the id of the last whole frame passed on
            self.ended = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            failures = 0
            while True:
                pending = b""
                try:
                    async for chunk in self.response.stream:
                        whole, pending = split_frames(pending + chunk)
                        if whole:
                            failures = 0
                            self.last = last_id(whole, self.last)
                            yield whole
                    self.ended = True
                    if pending:
                        yield pending
                    return
                except breaks as error:
                    failures += 1
                    with contextlib.suppress(Exception):
                        await self.response.aclose()
                    if failures > ATTEMPTS:
                        raise
                    self.response = await self._resume(failures, error)

        async def _resume(self, failures: int, error: Exception) -> Any:
            """The reply again, after the last frame passed on; the break if it cannot be."""
            await asyncio.sleep(FIRST_PAUSE * 2 ** (failures - 1))
            headers = {**self.headers, "last-event-id": str(self.last)}
            try:
                response = await self.inner.handle_async_request(
                    h.Request("GET", self.url, headers=headers)
                )
            except h.TransportError:
                raise error from None
            if response.status_code != 200:
                await response.aclose()
                raise error
            return response

        async def aclose(self) -> None:
            await self.response.aclose()
            if not self.ended:  # the reader stopped early: stop generating, as plain ones do
                with contextlib.suppress(Exception):
                    url = self.url.copy_with(path=self.url.path + "/cancel")
                    cancel = h.Request("POST", url, headers=self.headers)
                    answer = await self.inner.handle_async_request(cancel)
                    await answer.aclose()

    class ResumingTransport(h.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        """Wraps ``inner`` (an ``AsyncHTTPTransport`` by default); see the module."""

        def __init__(self, inner: Any = None) -> None:
            self.inner = inner or h.AsyncHTTPTransport(limits=sdk_limits(h))

        async def handle_async_request(self, request: Any) -> Any:
            if request.method == "POST":
                request.headers[RESUMABLE_HEADER] = "true"
            response = await self.inner.handle_async_request(request)
            reply = response.headers.get(REPLY_HEADER)
            if reply is None or "/v1/" not in request.url.path:
                return response
            base = request.url.path[: request.url.path.index("/v1/")]
            stream = ResumingStream(self.inner, request, response, f"{base}/v1/streams/{reply}")
            return h.Response(
                response.status_code,
                headers=response.headers,
                stream=stream,
                extensions=response.extensions,
            )

        async def aclose(self) -> None:
            await self.inner.aclose()

    return ResumingTransport


def sdk_limits(h: ModuleType) -> Any:
    """The SDKs' own connection limits (a client given a transport leaves limits to it)."""
    return h.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0)


def split_frames(data: bytes) -> tuple[bytes, bytes]:
    """``(whole frames, the incomplete rest)`` of SSE bytes."""
    data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    return (data[: end + 2], data[end + 2 :]) if end >= 0 else (b"", data)


def last_id(frames: bytes, before: int) -> int:
    """The last ``id:`` among whole ``frames`` (``before`` if none has one)."""
    for line in reversed(frames.split(b"\n")):
        if line.startswith(b"id:"):
            with contextlib.suppress(ValueError):
                return int(line[3:].strip())
    return before
