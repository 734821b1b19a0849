"""The provider registry: a model name routes to the provider that serves it.

- ``None`` → the client's default model (the embedded SmolLM2 unless told otherwise)
- ``PATH.gguf``, ``smollm2``, ``gemma3-270m``, ``local`` or ``local/<name>`` → llama.cpp
- ``scripted`` / ``scripted?options`` → the scripted provider (tests, demos, load)
- ``<provider>/<id>`` for a registered provider → that provider
- any other id (e.g. ``anthropic.claude-3-5-sonnet-20241022-v2:0``) → the default model, with the
  requested id echoed back, so code written for a hosted model runs unchanged (the client warns
  once per such name; the CLI refuses it, see :func:`unknown_model_message`)
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable

from .base import Provider
from .local import (
    _ALIASES,
    BUILTIN_MODELS,
    DEFAULT_LOCAL_MODEL,
    LocalSettings,
    is_local_model,
    local_provider,
)
from .scripted import ScriptedConfig, ScriptedProvider

# prefix -> factory(rest of the model name, the embedded models' settings); adding a provider
# adds one line here
PROVIDERS: dict[str, Callable[[str, LocalSettings], Provider]] = {
    "local": lambda name, settings: local_provider(name or DEFAULT_LOCAL_MODEL, settings),
    "scripted": lambda spec, _: ScriptedProvider(ScriptedConfig.parse(spec)),
    "bedrock": lambda model_id, _: _remote("bedrock", "BedrockProvider", model_id, "bedrock"),
    "anthropic": lambda model_id, _: _remote(
        "anthropic", "AnthropicProvider", model_id, "anthropic"
    ),
    "openai": lambda model_id, _: _remote("openai_compat", "OpenAIProvider", model_id, "openai"),
    "replay": lambda directory, _: _remote("replay", "ReplayProvider", directory),
}


def _remote(module: str, cls: str, model_id: str, extra: str | None = None) -> Provider:
    """Import a remote provider only when used: its SDK costs start-up time, and is an extra."""
    import importlib

    from .._extras import require
    from ..errors import InvalidRequestError

    if not model_id:
        raise InvalidRequestError("name the remote model, e.g. openai/<model-id>", path="model")
    if extra:
        require(extra, f"the model {extra}/{model_id}")
    return getattr(importlib.import_module(f".{module}", __name__), cls)(model_id)


_cache: dict[tuple[str, LocalSettings], Provider] = {}
_cache_lock = threading.Lock()


def split_model(name: str) -> tuple[str, str] | None:
    """``(prefix, rest)`` when ``name`` names a registered provider explicitly, else ``None``."""
    if name == "local" or (name.startswith("scripted") and name[8:9] in ("", "?")):
        return ("local", "") if name == "local" else ("scripted", name)
    prefix, sep, rest = name.partition("/")
    if sep and prefix in PROVIDERS:
        return prefix, rest
    if is_local_model(name):
        return "local", name
    return None


def reads_media(model: str | None) -> bool:
    """Whether ``model`` may be sent images and PDFs as such (the embedded models read text
    only; ``None`` and unknown ids are the embedded default)."""
    routed = split_model(model) if model else None
    return routed is not None and routed[0] != "local"


def get_provider(name: str, local: LocalSettings | None = None) -> Provider:
    """The (cached, process-wide) provider for an explicit model name; ``local``: how an
    embedded model runs (one provider per name and settings)."""
    routed = split_model(name)
    if routed is None:
        raise KeyError(name)
    prefix, rest = routed
    local = local or LocalSettings()
    if prefix == "local":  # its unset settings as the environment says now
        local = local.resolved()
    with _cache_lock:
        provider = _cache.get((name, local))
        if provider is None:
            provider = _cache[(name, local)] = PROVIDERS[prefix](rest, local)
        return provider


def resolve(
    model: str | None, default: str = DEFAULT_LOCAL_MODEL, local: LocalSettings | None = None
) -> tuple[Provider, str]:
    """``(provider, model id to report)`` for a requested model name."""
    if model and split_model(model) is not None:
        provider = get_provider(model, local)
        return provider, _display(provider, model)
    provider = get_provider(default, local)
    return provider, model or _display(provider, default)


def is_known(model: str | None) -> bool:
    """Whether ``model`` names a model or provider (``None``: the default model) rather than
    being an id the default model answers in its stead."""
    return not model or split_model(model) is not None


def known_models() -> list[str]:
    """Model names to suggest: the built-in models and their aliases, then ``scripted``."""
    return [*BUILTIN_MODELS, *_ALIASES, "scripted"]


def provider_prefixes() -> list[str]:
    return [f"{prefix}/" for prefix in PROVIDERS if prefix != "scripted"]


def closest_model(name: str) -> str | None:
    """The known name (or provider prefix) ``name`` most likely misspells, if any is close."""
    candidates = known_models() + [p.rstrip("/") for p in provider_prefixes()]
    lowered = name.lower()
    prefix, sep, _ = lowered.partition("/")
    if sep:  # a misspelt provider prefix: suggest the prefix with the same model id
        match = difflib.get_close_matches(prefix, list(PROVIDERS), n=1, cutoff=0.6)
        return f"{match[0]}/{name.partition('/')[2]}" if match else None
    match = difflib.get_close_matches(lowered, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_model_message(name: str) -> str:
    """One line: the name is unknown, the closest known one, every known name and prefix."""
    suggestion = closest_model(name)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return (
        f"unknown model {name!r}{hint}; known models: {', '.join(known_models())}; "
        f"or PATH.gguf, or a provider prefix: {', '.join(provider_prefixes())}"
    )


def _display(provider: Provider, name: str) -> str:
    return getattr(provider, "display_name", None) or name


__all__ = [
    "PROVIDERS",
    "LocalSettings",
    "Provider",
    "ScriptedProvider",
    "closest_model",
    "get_provider",
    "is_known",
    "known_models",
    "resolve",
    "split_model",
    "unknown_model_message",
]
