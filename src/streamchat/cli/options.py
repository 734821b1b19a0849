"""Options shared by the commands that talk to a model, and their validation."""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from ..errors import InvalidRequestError, StreamchatError
from ..providers import is_known, resolve, unknown_model_message
from ..request import MAX_TOKENS_LIMIT, MIN_THINKING_BUDGET


class UsageError(InvalidRequestError):
    """A mistake on the command line: one line on stderr and exit status 2, as argparse's."""

    exit_status = 2


def check_model(model: str | None, option: str = "--model") -> None:
    """Refuse a model name nothing resolves (the library would answer it with the default
    model): one line naming the closest known name, the known names and the prefixes."""
    if not is_known(model):
        raise UsageError(f"{option}: {unknown_model_message(model or '')}")


def bounded(kind: type, low: float, high: float = math.inf):
    """An argparse ``type`` for a number in ``[low, high]``, with a one-line message."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not low <= value <= high:
            limits = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {limits}, got {text}")
        return value

    return parse


def add_base_url_option(parser: argparse.ArgumentParser) -> None:
    """``--base-url``: where the remote provider named by ``--model`` lives (see ENDPOINT_ENV)."""
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="endpoint of the remote provider named by --model (openai/, anthropic/, bedrock/), "
        "e.g. a vLLM, llama.cpp or Ollama server for openai/",
    )


def add_model_options(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    parser.add_argument(
        "-m",
        "--model",
        help="smollm2 (default), gemma3-270m, PATH.gguf, or provider/model-id",
    )
    add_base_url_option(parser)
    parser.add_argument("-s", "--system", help="system prompt")
    parser.add_argument(
        "--max-tokens",
        type=bounded(int, 1, MAX_TOKENS_LIMIT),
        default=max_tokens,
        help=f"most tokens per reply (default {max_tokens})",
    )
    parser.add_argument("-t", "--temperature", type=bounded(float, 0.0, 2.0), help="0 = greedy")
    parser.add_argument("--top-p", type=bounded(float, 0.0, 1.0))
    parser.add_argument("--seed", type=int, help="sampling seed (reproducible replies)")
    parser.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop sequence (repeatable)"
    )
    parser.add_argument(
        "--tools",
        type=tools_file,
        metavar="FILE",
        help="offer the model these tools: a JSON file with a list of Anthropic-style tool "
        "definitions ({name, description, input_schema}); calls are shown, not run",
    )
    parser.add_argument(
        "--thinking",
        type=bounded(int, MIN_THINKING_BUDGET, MAX_TOKENS_LIMIT),
        metavar="BUDGET",
        help=f"let the model think first, up to BUDGET tokens (at least {MIN_THINKING_BUDGET})",
    )
    parser.add_argument(
        "--stats", action="store_true", help="print TTFT, tokens and tokens/s after each reply"
    )


def tools_file(path: str) -> list[Any]:
    """``--tools FILE``: a JSON list of tool definitions (one object is a list of one); the
    definitions themselves are checked with the request, naming the field."""
    try:
        with open(path, encoding="utf-8") as file:
            tools = json.load(file)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{path} is not JSON: {error}") from None
    return [tools] if isinstance(tools, dict) else tools


# The environment variable each SDK reads its endpoint from: --base-url sets it.
ENDPOINT_ENV = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "bedrock": "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
}


def apply_endpoint(args: argparse.Namespace) -> None:
    """Point the SDK of the provider named by ``--model`` at ``--base-url``."""
    if not getattr(args, "base_url", None):
        return
    prefix = (args.model or "").partition("/")[0]
    if prefix not in ENDPOINT_ENV:
        raise InvalidRequestError(
            "--base-url needs --model openai/..., anthropic/... or bedrock/..."
        )
    os.environ[ENDPOINT_ENV[prefix]] = args.base_url


def request_params(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``client.messages.stream`` from the parsed options."""
    params: dict[str, Any] = {
        "model": args.model,
        "system": args.system,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop_sequences": args.stop,
    }
    if getattr(args, "tools", None):
        params["tools"] = args.tools
    if getattr(args, "thinking", None):
        params["thinking"] = {"type": "enabled", "budget_tokens": args.thinking}
    return params


def model_label(model: str | None) -> str:
    """A human name for the model that will answer (fails early on a missing model file)."""
    provider, name = resolve(model)
    return f"{name} ({provider.name})"


def preload(model: str | None) -> None:
    """Load a local model now, so a corrupt file is reported before the first prompt."""
    provider, _ = resolve(model)
    load = getattr(provider, "load", None)
    if load is not None:
        load()


def conversation_info(args: argparse.Namespace, default_model: str) -> dict[str, Any]:
    """How the history describes a conversation: the model name to resume it with, the
    provider, the system prompt and the sampling parameters that were set."""
    model = args.model or default_model
    try:
        provider: str | None = resolve(model)[0].name
    except (KeyError, StreamchatError):
        provider = None
    params = request_params(args)
    skip = ("model", "system", "tools")  # tool definitions are long, and not sampling
    parameters = {k: v for k, v in params.items() if k not in skip and v is not None}
    return {"model": model, "provider": provider, "system": args.system, "parameters": parameters}
