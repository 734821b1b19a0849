"""What tests of the embedded model may assert, whatever the model chooses to write.

Greedy output of a 135M model differs between machines (CPU generation, SIMD paths, thread
counts), so no test asserts its wording, its choices or how long it talks. They assert what the
code guarantees, and these helpers make the guarantees:

- :func:`call_budget`: a ``max_tokens`` under which a grammar-constrained JSON value (a forced
  call's input, JSON output) certainly closes. Every sampled token adds at least one byte
  (llama.cpp's grammar refuses tokens with an empty piece) and the reply ends at the object's
  closing brace, so the longest text the grammar accepts bounds the tokens.
- :func:`digits_format`: JSON output the grammar spells to the last character, runs of digits;
  no token of the default model holds two adjacent digits (checked by a test), so ``n`` digits
  take at least ``n`` tokens: a reply that certainly runs to ``max_tokens`` when that is at most
  ``n``, for tests that need a generation still running or cut.
- :func:`stop_inside` and :func:`cut_of`: a stop sequence or a ``max_tokens`` taken from a reply
  the model already gave, so asking again at temperature 0 (the same tokens, on this machine)
  certainly hits it.
- :func:`check_limit`: what a reply of at most ``max_tokens`` guarantees about its stop reason.
- :func:`may_write_nothing`: whether the model's first token could end the reply or add no text
  (a reply certainly has text when not: min-p sampling and greedy decoding never pick a token
  far less likely than the likeliest, and the model gives those a thousandth of it or less).
- :class:`GenerateSpy`: every token the engine samples (its ``observe`` hook), and a hold that
  keeps a generation running while a test acts.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from functools import cache
from typing import Any

from streamchat.providers.grammar import compile_schema
from streamchat.providers.local import MAX_CALLS, PEEK_TOKENS, LocalProvider, load_weights
from streamchat.request import MessageRequest

_GBNF_TOKEN = re.compile(
    r'\s+|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{\d+(?:,\d*)?\}|[\w-]+|::=|[()|?*+]'
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _literal_bytes(body: str) -> int:
    """UTF-8 bytes of a GBNF literal's text (JSON-style escapes, ``\\xHH``)."""
    text = re.sub(r"\\[xuU]([0-9a-fA-F]+)", lambda m: chr(int(m[1], 16)), body)
    text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), text)
    return len(text.encode("utf-8"))


def _class_bytes(body: str) -> int:
    """Most bytes one character of a character class takes: 4 for a negated class or one that
    names a non-ASCII character, else 1."""
    return 4 if body.startswith("^") or re.search(r"\\[uU]|[^\x00-\x7f]", body) else 1


def longest_output(gbnf: str) -> int:
    """Bytes of the longest text a GBNF grammar accepts (bounded, non-recursive rules)."""
    rules = {}
    for line in gbnf.splitlines():
        if "::=" in line:
            name, _, body = line.partition("::=")
            rules[name.strip()] = [t for t in _GBNF_TOKEN.findall(body) if not t.isspace()]
    done: dict[str, int] = {}

    def rule(name: str, seen: tuple[str, ...]) -> int:
        if name in seen:
            raise ValueError(f"recursive rule {name}: unbounded")
        if name not in done:
            tokens = rules[name]
            length, at = alternatives(tokens, 0, (*seen, name))
            assert at == len(tokens), (name, tokens[at:])
            done[name] = length
        return done[name]

    def alternatives(tokens: list[str], at: int, seen: tuple[str, ...]) -> tuple[int, int]:
        best = 0
        while True:
            length, at = sequence(tokens, at, seen)
            best = max(best, length)
            if at == len(tokens) or tokens[at] != "|":
                return best, at
            at += 1

    def sequence(tokens: list[str], at: int, seen: tuple[str, ...]) -> tuple[int, int]:
        total = 0
        while at < len(tokens) and tokens[at] not in ("|", ")"):
            token = tokens[at]
            if token == "(":
                length, at = alternatives(tokens, at + 1, seen)
                assert tokens[at] == ")"
            elif token.startswith('"'):
                length = _literal_bytes(token[1:-1])
            elif token.startswith("["):
                length = _class_bytes(token[1:-1])
            else:
                length = rule(token, seen)
            at += 1
            quantifier = tokens[at] if at < len(tokens) else ""
            if quantifier in ("*", "+") or re.fullmatch(r"\{\d+,\}", quantifier):
                raise ValueError("unbounded repetition")
            if quantifier == "?":
                at += 1
            elif quantifier.startswith("{"):
                length *= int(quantifier[1:-1].split(",")[-1])
                at += 1
            total += length
        return total, at

    return rule("root", ())


@cache
def _schema_budget(schema_json: str) -> int:
    return longest_output(compile_schema(json.loads(schema_json), "schema").gbnf)


def call_budget(schema: dict[str, Any] | None) -> int:
    """``max_tokens`` under which a JSON value constrained by ``schema`` certainly closes (JSON
    output, or one call whose name is already written)."""
    return _schema_budget(json.dumps(schema, sort_keys=True))


def forced_budget(tools: list[dict[str, Any]], *, parallel: bool = False) -> int:
    """``max_tokens`` under which a forced reply (``any``/``tool``) certainly ends with every call
    closed: each call's name (chosen under a grammar when there are several tools) and input, and
    with parallel calls allowed up to :data:`MAX_CALLS` of them, each followed by a few tokens that
    show whether another starts."""
    one = max(len(t["name"]) + 1 + call_budget(t.get("input_schema")) for t in tools)
    return MAX_CALLS * (one + PEEK_TOKENS) if parallel else one


def digits_format(n: int) -> dict[str, Any]:
    """``output_format`` whose grammar forces ``{"digits": ["0123456789", ...]}``, at least ``n``
    digits in all: as many tokens. The schema stays short (it is shown in the prompt, which every
    stream of a batch must prefill)."""
    count = -(-n // 10)
    digits = {"type": "array", "items": {"const": "0123456789"}}
    digits |= {"minItems": count, "maxItems": count}
    schema = {"type": "object", "properties": {"digits": digits}, "required": ["digits"]}
    return {"type": "json_schema", "schema": schema}


def check_limit(stop_reason: str | None, output_tokens: int, max_tokens: int) -> None:
    """What any reply guarantees about ``max_tokens``, however long the model talks: never more
    tokens, and a reply cut by the limit has used all of them."""
    assert 0 <= output_tokens <= max_tokens, (output_tokens, max_tokens)
    if stop_reason == "max_tokens":
        assert output_tokens == max_tokens, (stop_reason, output_tokens, max_tokens)


def stop_inside(text: str) -> tuple[str, str] | None:
    """``(stop sequence, the text before it)``: up to three characters from the middle of a reply
    the model gave, so the same request at temperature 0 certainly meets it; ``None`` when the
    text has no such place (an empty or one-character reply)."""
    middle = len(text) // 2
    for at in sorted(range(1, len(text)), key=lambda i: abs(i - middle)):
        stop = text[at : at + 3]
        if stop.strip() and text.find(stop) == at:
            return stop, text[:at]
    return None


def cut_of(output_tokens: int, stop_reason: str | None, limit: int) -> tuple[int, str | None]:
    """``(max_tokens, expected stop reason)`` to cut a reply the model gave in ``output_tokens``
    at most ``limit`` tokens: the same request again at temperature 0 is certainly cut there."""
    cut = max(1, min(limit, output_tokens))
    return cut, "max_tokens" if output_tokens >= cut else stop_reason


MIN_P = 0.05  # TokenSampler's min_p: no token below this share of the likeliest is ever sampled
_silent: dict[str, list[int]] = {}
_weights: dict[str, Any] = {}  # a second copy of each model's weights, for may_write_nothing


def _silent_tokens(provider: LocalProvider) -> list[int]:
    """The tokens that end a reply or add no text (special tokens), once per model."""
    import llama_cpp

    if provider.path not in _silent:
        llama = provider.load()
        _silent[provider.path] = [
            t
            for t in range(llama.n_vocab())
            if llama_cpp.llama_vocab_is_eog(llama.vocab, t) or not llama.detokenize([t])
        ]
    return _silent[provider.path]


def may_write_nothing(provider: LocalProvider, request: MessageRequest) -> bool:
    """Whether the model could end its reply, or write a token without text (a special token),
    as its very first token: only if such a token has at least :data:`MIN_P` of the likeliest
    one's probability there. Greedy decoding and min-p sampling never pick one below that, so
    when this is ``False`` a reply certainly has text, whatever the model then writes.

    One decode of the prompt in a small context of its own, on weights of its own.
    """
    import llama_cpp
    import numpy as np

    llama = provider.load()
    tokens, _ = provider.prompt_tokens(request)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = max(64, len(tokens))
    params.n_seq_max = 1
    if provider.path not in _weights:  # the engine's own are its scheduler's business
        _weights[provider.path] = load_weights(provider.path)
    ctx = llama_cpp.llama_init_from_model(_weights[provider.path], params)
    try:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(tokens))) == 0
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), (llama.n_vocab(),))
        nothing = _silent_tokens(provider)
        return bool(np.exp(logits[nothing].max() - logits.max()) >= MIN_P)
    finally:
        llama_cpp.llama_free(ctx)


class GenerateSpy:
    """Watches every token the engine samples (its ``observe`` hook, on the scheduler thread).

    ``hold_after=N`` makes generation wait after its N-th sampled token until :meth:`release`,
    so a test can act while a generation is certainly still running.
    """

    def __init__(self, provider: LocalProvider, hold_after: int | None = None):
        import llama_cpp

        self.llama = provider.load()
        self._is_eog = lambda t: llama_cpp.llama_vocab_is_eog(self.llama.vocab, t)
        self.tokens: list[int] = []
        self.hold_after = hold_after
        self.holding = threading.Event()
        self._release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, run: Any, token: int | None) -> None:
        if token is None:  # the run left the engine
            self.finished.set()
            return
        self.finished.clear()
        self.tokens.append(token)
        if len(self.tokens) == self.hold_after:
            self.holding.set()
            assert self._release.wait(timeout=120), "the test never released generation"

    def release(self) -> None:
        self._release.set()

    def text_tokens(self) -> list[int]:
        """The sampled tokens but the end-of-generation one (those ``output_tokens`` counts)."""
        return [t for t in self.tokens if not self._is_eog(t)]

    def pieces(self) -> list[str]:
        """The text each sampled token added, as a stream delivers it (a token that ends inside
        a UTF-8 character adds nothing until the character is whole)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = [decoder.decode(self.llama.detokenize([t])) for t in self.text_tokens()]
        return [piece for piece in pieces if piece]
