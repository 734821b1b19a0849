"""The optional parts of streamchat (pip extras) and the one error a missing one gives.

The core install is the library, the CLI and the embedded model. Everything else is an extra
(``pyproject.toml``); code that needs one calls :func:`require` before its heavy imports, so a
missing extra is one line naming the ``pip install`` that fixes it, never an ImportError
traceback. :data:`EXTRAS` is the single table of which import needs which extra.
"""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

# extra -> (what it installs, in words; the top-level modules it installs)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "server": (
        "the HTTP server stack",
        ("starlette", "uvicorn", "hypercorn", "h2", "priority", "prometheus_client"),
    ),
    "granian": ("granian", ("granian",)),  # serve --http-server granian
    "bedrock": ("boto3", ("boto3", "botocore")),
    "anthropic": ("the anthropic SDK", ("anthropic",)),
    "openai": ("the openai SDK", ("openai",)),
    "bench": ("matplotlib", ("matplotlib",)),
    "postgres": ("the PostgreSQL driver", ("psycopg", "psycopg_pool")),
}


def missing_extra(extra: str, feature: str | None = None) -> MissingExtraError:
    """The error for ``extra`` missing: one line, naming the install that fixes it."""
    purpose, _ = EXTRAS[extra]
    needs = f"{feature} needs {purpose}" if feature else f"{purpose} is not installed"
    return MissingExtraError(f"{needs}: pip install 'streamchat[{extra}]'", extra)


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found without importing them)."""
    return [name for name in EXTRAS[extra][1] if importlib.util.find_spec(name) is None]


def require(extra: str, feature: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed."""
    if missing(extra):
        raise missing_extra(extra, feature)


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name; its top level decides), if any."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, (_, mods) in EXTRAS.items() if top in mods), None)
