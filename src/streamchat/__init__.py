"""streamchat: streaming chat with large language models, offline out of the box."""

from .accumulate import accumulate, accumulate_event
from .client import AsyncClient, Client
from .errors import (
    APIError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    StreamchatError,
)
from .events import Message, StreamEvent, TextBlock, ThinkingBlock, ToolUseBlock, Usage
from .metrics import Metrics
from .stream import AsyncMessageStream, MessageStream

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncMessageStream",
    "Client",
    "InvalidRequestError",
    "Message",
    "MessageStream",
    "Metrics",
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
