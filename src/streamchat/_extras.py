"""The optional parts of streamchat (pip extras) and the one error a missing one gives.

The core install is the library, the CLI and the embedded model. Everything else is an extra
(``pyproject.toml``); code that needs one calls :func:`require` before its heavy imports, so a
missing extra is one line naming the ``pip install`` that fixes it, never an ImportError
traceback. :data:`EXTRAS` is the single table of which import needs which extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from .errors import StreamchatError

# extra -> (what it installs, in words; the top-level modules it installs)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "server": (
        "the HTTP server stack",
        ("starlette", "uvicorn", "hypercorn", "h2", "prometheus_client"),
    ),
    "bedrock": ("boto3", ("boto3", "botocore")),
    "anthropic": ("the anthropic SDK", ("anthropic",)),
    "openai": ("the openai SDK", ("openai",)),
    "bench": ("matplotlib", ("matplotlib",)),
    "postgres": ("the PostgreSQL driver", ("psycopg", "psycopg_pool")),
}


class MissingExtraError(StreamchatError, ImportError):
    """A feature needs an extra that is not installed (also an ImportError, for code that
    already catches that)."""

    error_type = "api_error"
    exit_status = 1

    def __init__(self, extra: str, feature: str | None = None) -> None:
        purpose, _ = EXTRAS[extra]
        needs = f"{feature} needs {purpose}" if feature else f"{purpose} is not installed"
        super().__init__(f"{needs}: pip install 'streamchat[{extra}]'")
        self.extra = extra


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found without importing them)."""
    return [name for name in EXTRAS[extra][1] if importlib.util.find_spec(name) is None]


def require(extra: str, feature: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed."""
    if missing(extra):
        raise MissingExtraError(extra, feature)


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name; its top level decides), if any."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, (_, mods) in EXTRAS.items() if top in mods), None)


@contextlib.contextmanager
def needs(feature: str | None = None) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` for an extra's module into :class:`MissingExtraError`;
    any other missing module is a real bug and propagates."""
    try:
        yield
    except ModuleNotFoundError as error:
        extra = extra_for(error.name)
        if extra is None:
            raise
        raise MissingExtraError(extra, feature) from None
