"""An image's or document's URL fetched for an upstream that reads only bytes (Bedrock reads no
URLs; OpenAI's Chat Completions reads no file URLs): one GET each, bounded in size and time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import InvalidRequestError
from ..media import FORMATS, MB, MediaBlock, Source, media_type_named
from ..request import MessageRequest, Turn, media_blocks

FETCH_TIMEOUT = 10.0  # seconds, connect and between reads
FETCH_LIMIT = 32 * MB  # the largest request any of the services takes


def fetch(url: str, kind: str, client: httpx.Client) -> Source:
    """The URL's content as bytes, typed by its ``Content-Type`` (or its name)."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequestError(f"cannot fetch {url}: HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > FETCH_LIMIT:
                    raise InvalidRequestError(f"cannot fetch {url}: over {FETCH_LIMIT:,} bytes")
            declared = response.headers.get("content-type", "").split(";")[0].strip().lower()
    except httpx.HTTPError as error:
        raise InvalidRequestError(f"cannot fetch {url}: {error!r}") from None
    path = httpx.URL(url).path
    known = FORMATS[kind]
    media_type = declared if declared in known else media_type_named(path, kind) or declared
    if media_type not in known and not (kind == "document" and media_type.startswith("text/")):
        raise InvalidRequestError(f"{url} is {media_type or 'of no known type'}, not a {kind}")
    return Source(media_type, bytes(data))


def needs_fetch(request: MessageRequest, reads_url: Callable[[MediaBlock], bool]) -> bool:
    """Whether ``request`` holds a URL source the upstream cannot read."""
    return any(
        block.source.url is not None and not reads_url(block)
        for block in media_blocks(request.messages)
    )


def inline_urls(request: MessageRequest, reads_url: Callable[[MediaBlock], bool]) -> MessageRequest:
    """``request`` with every URL source the upstream cannot read (``reads_url`` says which it
    can) replaced by its content; the request itself when there is none."""
    fetched: dict[str, Source] = {}
    client: httpx.Client | None = None

    def inline(block: Any) -> Any:
        nonlocal client
        if not isinstance(block, MediaBlock) or block.source.url is None or reads_url(block):
            return block
        url = block.source.url
        if url not in fetched:
            client = client or httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True)
            fetched[url] = fetch(url, block.type, client)
        return dataclasses.replace(block, source=fetched[url])

    def turn(turn: Turn) -> Turn:
        blocks = tuple(
            dataclasses.replace(block, content=[inline(part) for part in block.content])
            if block.type == "tool_result"
            else inline(block)
            for block in turn.blocks
        )
        return dataclasses.replace(turn, blocks=blocks) if turn.blocks else turn

    try:
        messages = [turn(t) for t in request.messages]
    finally:
        if client is not None:
            client.close()
    return dataclasses.replace(request, messages=messages) if fetched else request
