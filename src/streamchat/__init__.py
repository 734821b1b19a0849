"""streamchat: streaming chat with large language models, offline out of the box.

``import streamchat`` loads only the event model and the errors; the client, its event loop and
the providers load on first use of a name that needs them (PEP 562), so importing the package
stays cheap for code that only builds or reads events.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager: light, and `accumulate` must stay the function (a lazily imported submodule of the same
# name would otherwise take its place as the package's attribute).
from .accumulate import accumulate, accumulate_event
from .errors import (
    APIError,
    InvalidRequestError,
    MissingExtraError,
    ModelError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    StreamchatError,
)
from .events import Message, StreamEvent, TextBlock, ThinkingBlock, ToolUseBlock, Usage

if TYPE_CHECKING:  # for type checkers and the API reference; loaded by __getattr__ at run time
    from .client import AsyncClient, Client
    from .metrics import Metrics
    from .providers.local import LocalSettings
    from .stream import AsyncMessageStream, MessageStream

__version__ = "0.1.0"

_LAZY = {  # name -> the submodule that defines it, imported on first access
    "AsyncClient": ".client",
    "Client": ".client",
    "AsyncMessageStream": ".stream",
    "MessageStream": ".stream",
    "Metrics": ".metrics",
    "LocalSettings": ".providers.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncMessageStream",
    "Client",
    "InvalidRequestError",
    "LocalSettings",
    "Message",
    "MessageStream",
    "Metrics",
    "MissingExtraError",
    "ModelError",
    "NotFoundError",
    "OverloadedError",
    "RateLimitError",
    "StreamEvent",
    "StreamchatError",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "Usage",
    "accumulate",
    "accumulate_event",
]
