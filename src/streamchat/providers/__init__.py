"""The provider registry: a model name routes to the provider that serves it.

- ``None`` → the client's default model (the embedded SmolLM2 unless told otherwise)
- ``PATH.gguf``, ``smollm2``, ``gemma3-270m``, ``local`` or ``local/<name>`` → llama.cpp
- ``scripted`` / ``scripted?options`` → the scripted provider (tests, demos, load)
- ``<provider>/<id>`` for a registered provider → that provider
- any other id (e.g. ``anthropic.claude-3-5-sonnet-20241022-v2:0``) → the default model, with the
  requested id echoed back, so code written for a hosted model runs unchanged
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .base import Provider
from .local import DEFAULT_LOCAL_MODEL, is_local_model, local_provider
from .scripted import ScriptedConfig, ScriptedProvider

# prefix -> factory(rest of the model name) ; adding a provider adds one line here
PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "local": lambda name: local_provider(name or DEFAULT_LOCAL_MODEL),
    "scripted": lambda spec: ScriptedProvider(ScriptedConfig.parse(spec)),
    "bedrock": lambda model_id: _remote("bedrock", "BedrockProvider", model_id),
    "anthropic": lambda model_id: _remote("anthropic", "AnthropicProvider", model_id),
    "openai": lambda model_id: _remote("openai_compat", "OpenAIProvider", model_id),
    "replay": lambda directory: _remote("replay", "ReplayProvider", directory),
}


def _remote(module: str, cls: str, model_id: str) -> Provider:
    """Import a remote provider only when used: its SDK costs start-up time."""
    import importlib

    from ..errors import InvalidRequestError

    if not model_id:
        raise InvalidRequestError("model: name the remote model, e.g. openai/<model-id>")
    return getattr(importlib.import_module(f".{module}", __name__), cls)(model_id)


_cache: dict[str, Provider] = {}
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


def get_provider(name: str) -> Provider:
    """The (cached, process-wide) provider for an explicit model name."""
    routed = split_model(name)
    if routed is None:
        raise KeyError(name)
    with _cache_lock:
        provider = _cache.get(name)
        if provider is None:
            prefix, rest = routed
            provider = _cache[name] = PROVIDERS[prefix](rest)
        return provider


def resolve(model: str | None, default: str = DEFAULT_LOCAL_MODEL) -> tuple[Provider, str]:
    """``(provider, model id to report)`` for a requested model name."""
    if model and split_model(model) is not None:
        provider = get_provider(model)
        return provider, _display(provider, model)
    provider = get_provider(default)
    return provider, model or _display(provider, default)


def _display(provider: Provider, name: str) -> str:
    return getattr(provider, "display_name", None) or name


__all__ = ["PROVIDERS", "Provider", "ScriptedProvider", "get_provider", "resolve", "split_model"]
