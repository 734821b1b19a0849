"""One exception hierarchy for the whole package, keyed by the canonical (Anthropic) error types.

``ERROR_STATUS`` is the single table from error type to HTTP status; wire codecs map these types
to each protocol's own names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


_TYPE_BY_STATUS = {status: kind for kind, status in ERROR_STATUS.items()}


def type_for_status(status: int) -> str:
    """Canonical error type for an HTTP status (unknown 5xx -> api_error)."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


class StreamchatError(Exception):
    """Base class of every error streamchat raises on purpose.

    ``path`` names the request field at fault (``tools.0.name``), apart from the message, which
    then reads ``"<path>: <detail>"``: codecs rename the field to their own parameter
    (:meth:`rename`) and report it (OpenAI's ``param``) without parsing the text back.
    """

    error_type: str = "api_error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message: str = self.args[0]
        self.path = path
        self.detail = message

    def rename(self, path: str) -> Self:
        """Name the field ``path`` instead (the client's name for it); returns the error."""
        self.path = path
        self.message = f"{path}: {self.detail}"
        self.args = (self.message,)
        return self

    @property
    def status_code(self) -> int:
        return ERROR_STATUS.get(self.error_type, 500)

    def to_dict(self) -> dict[str, object]:
        """The Anthropic error body: ``{"type": "error", "error": {...}}``."""
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


class InvalidRequestError(StreamchatError):
    """A request refused for what it says; most name the field at fault (``path=``)."""

    error_type = "invalid_request_error"


def field_name(path: str, names: Mapping[str, str], *, parents: bool = True) -> str | None:
    """A canonical field path in a protocol's own names, or ``None`` when ``names`` has none.

    ``names`` maps field paths, ``#`` standing for any index (``tools.#.name`` ->
    ``toolConfig.tools.#.toolSpec.name``); with ``parents``, the longest entry naming the path
    or one of its parents wins and the rest of the path follows (``output_format.schema.x``).
    """
    segments = path.split(".")
    pattern = ["#" if segment.isdigit() else segment for segment in segments]
    for end in range(len(segments), 0, -1) if parents else (len(segments),):
        target = names.get(".".join(pattern[:end]))
        if target is not None:
            indices = iter([segment for segment in segments[:end] if segment.isdigit()])
            head = [next(indices, "#") if part == "#" else part for part in target.split(".")]
            return ".".join(head + segments[end:])
    return None


class AuthenticationError(StreamchatError):
    error_type = "authentication_error"


class PermissionDeniedError(StreamchatError):
    error_type = "permission_error"


class NotFoundError(StreamchatError):
    error_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    """A model id the server does not serve (OpenAI's ``code`` says ``model_not_found``)."""


class RequestTooLargeError(StreamchatError):
    error_type = "request_too_large"


class RateLimitError(StreamchatError):
    error_type = "rate_limit_error"


class APIError(StreamchatError):
    error_type = "api_error"


class TimeoutError_(StreamchatError):
    error_type = "timeout_error"


class OverloadedError(StreamchatError):
    error_type = "overloaded_error"


class ModelError(ModelNotFoundError):
    """A model file is missing, corrupt or cannot be loaded."""


class MissingExtraError(StreamchatError, ImportError):
    """A feature needs a pip extra that is not installed; the message names the ``pip install``
    that fixes it (see :mod:`streamchat._extras`). Also an ImportError, for code that catches
    that."""

    exit_status = 1

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class HistoryError(StreamchatError):
    """The conversation history database cannot be opened, read or written."""

    error_type = "api_error"


class ConversationNotFoundError(HistoryError):
    """No stored conversation has the requested id."""

    error_type = "not_found_error"


_BY_TYPE: dict[str, type[StreamchatError]] = {
    cls.error_type: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        RequestTooLargeError,
        RateLimitError,
        APIError,
        TimeoutError_,
        OverloadedError,
    )
}


def error_from_type(error_type: str, message: str) -> StreamchatError:
    """The exception for a canonical error type (unknown types become :class:`APIError`)."""
    error = _BY_TYPE.get(error_type, APIError)(message)
    error.error_type = error_type
    return error
