"""Grammar-constrained sampling for the embedded model: JSON Schema -> GBNF, a grammar cache, and
a per-sequence sampler that samples first and checks the grammar after (as llama.cpp's server).

Why sample-then-check: applying a grammar to all ~49k candidates every token costs 30-50 % of
decode speed on a 135M model. The normal sampler chain picks a token; the grammar checks that one
token; only a rejected token makes the grammar filter every candidate before a resample. The
pieces here are per sequence (:class:`TokenSampler`), so a batching scheduler can hold one each.

A small model under a grammar loops easily, so schemas are bounded before compiling: strings get
a ``maxLength``, arrays a ``maxItems``, objects lose free-form extra keys. A schema feature the
grammar cannot enforce is refused (:class:`InvalidRequestError`) instead of generating input that
would not validate.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from ..errors import InvalidRequestError

MAX_STRING = 96  # characters, for strings without a maxLength
MAX_ITEMS = 8  # for arrays without a maxItems
MAX_EXTRA_KEYS = 8  # keys of a free-form object
MAX_KEY = 48  # characters of a free-form object's key
MAX_INT_RANGE = 256  # an integer range with both bounds up to this size becomes an enum
GRAMMAR_CACHE = 64  # compiled grammars kept per model
BEST = 512  # candidates a rejected token's resample looks at first

# Standard keywords the grammar cannot enforce: refused, so a generated input always validates.
UNSUPPORTED = (
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "if",
    "then",
    "else",
    "not",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
)

# Any JSON value, bounded (``{}`` or a free-form object's values): scalars, short strings and
# short lists of them.
SCALARS: list[dict[str, Any]] = [
    {"type": "string", "maxLength": MAX_STRING},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
]
ANY_VALUE: dict[str, Any] = {
    "anyOf": [*SCALARS, {"type": "array", "items": {"anyOf": SCALARS}, "maxItems": MAX_ITEMS}]
}

EXPONENT = "([eE] [-+]? [0-9]{1,2})?"  # up to 1e99: always a finite double
# JSON strings may not hold raw control characters (llama-cpp-python's rule allows them).
CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def _unsupported(where: str, keyword: str) -> InvalidRequestError:
    return InvalidRequestError(f"unsupported JSON Schema feature {keyword!r}", path=where)


def bound_schema(schema: Any, where: str) -> dict[str, Any]:
    """A copy of ``schema`` the grammar can enforce and a small model finishes: bounded strings,
    arrays and objects; refuses (naming the keyword and where) what cannot be enforced."""
    if schema is True or schema == {}:
        return dict(ANY_VALUE)
    if not isinstance(schema, dict):
        raise _unsupported(where, "false" if schema is False else type(schema).__name__)
    for keyword in UNSUPPORTED:
        if keyword in schema:
            raise _unsupported(where, keyword)
    node = dict(schema)
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#/")):
        raise _unsupported(where, "$ref")
    for defs in ("$defs", "definitions"):
        if isinstance(node.get(defs), dict):
            node[defs] = {k: bound_schema(v, f"{where}.{defs}.{k}") for k, v in node[defs].items()}
    if ref is not None:
        return node
    if "allOf" in node:
        parts = node.pop("allOf")
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise _unsupported(where, "allOf")
        return bound_schema({**parts[0], **node}, where)
    kind = node.get("type")
    if isinstance(kind, list):
        rest = {k: v for k, v in node.items() if k != "type"}
        return {"anyOf": [bound_schema({**rest, "type": t}, where) for t in kind]}
    for union in ("anyOf", "oneOf"):
        if union in node:
            options = node[union]
            if not isinstance(options, list) or not options:
                raise _unsupported(where, union)
            node[union] = [bound_schema(s, f"{where}.{union}.{i}") for i, s in enumerate(options)]
            return node
    if "enum" in node or "const" in node:
        return node
    if kind in ("integer", "number"):
        return _bound_number(node, kind, where)
    if kind == "string":
        if not ({"pattern", "format"} & node.keys()):
            node.setdefault("maxLength", max(node.get("minLength", 0), MAX_STRING))
        return node
    if kind == "array" or (kind is None and ("items" in node or "prefixItems" in node)):
        items = node.get("items")
        if isinstance(node.get("prefixItems"), list):
            node["prefixItems"] = [
                bound_schema(s, f"{where}.prefixItems.{i}")
                for i, s in enumerate(node["prefixItems"])
            ]
            node.pop("items", None)
            return node
        node["items"] = bound_schema(items if items is not None else {}, f"{where}.items")
        node.setdefault("maxItems", max(node.get("minItems", 0), MAX_ITEMS))
        return node
    if kind == "object" or (kind is None and "properties" in node):
        properties = node.get("properties") or {}
        node["properties"] = {
            name: bound_schema(s, f"{where}.properties.{name}") for name, s in properties.items()
        }
        for name in node.get("required", []):
            if name not in node["properties"]:
                raise InvalidRequestError(
                    f"{name!r} is not in properties", path=f"{where}.required"
                )
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            node["additionalProperties"] = bound_schema(extra, f"{where}.additionalProperties")
        elif node["properties"] or extra is False:
            node["additionalProperties"] = False  # no free-form keys: nothing to loop on
        else:
            node["additionalProperties"] = ANY_VALUE
        return node
    return node


def _bound_number(node: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    low, high = node.get("minimum"), node.get("maximum")
    if low is None and high is None:
        return node
    bounded = kind == "integer" and low is not None and high is not None
    if bounded and int(low) == low and int(high) == high and 0 <= high - low < MAX_INT_RANGE:
        return {"enum": list(range(int(low), int(high) + 1))}
    if high is None and low in (0, 1) and (kind == "integer" or low == 0):
        return node  # compiled to an unsigned rule by the converter below
    raise _unsupported(where, "maximum" if high is not None else "minimum")


def _converter_class() -> type:
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Converter(SchemaConverter):  # type: ignore[misc, valid-type]
        """llama-cpp-python's converter with bounded strings (``char{m,n}``) and unsigned
        numbers, which it leaves out."""

        def visit(self, schema: dict[str, Any], name: str) -> str:
            kind = schema.get("type")
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            plain = not ({"pattern", "format", "enum", "const", "$ref"} & schema.keys())
            if kind == "string" and plain and "maxLength" in schema:
                self._rules["char"] = CHAR_RULE
                low, high = schema.get("minLength", 0), schema["maxLength"]
                return self._add_rule(rule_name, rf'"\"" char{{{low},{high}}} "\"" space')
            if kind in ("integer", "number") and plain and "minimum" in schema:
                first = "[1-9] [0-9]{0,15}"
                if schema["minimum"] == 0:
                    first = "[0-9] | " + first.replace("{0,15}", "{1,15}")
                rule = f"({first})"
                if kind == "number":
                    rule += ' ("." [0-9]{1,16})? ' + EXPONENT
                return self._add_rule(rule_name, rule + " space")
            return super().visit(schema, name)

    return Converter


@lru_cache(maxsize=256)
def _gbnf(schema_json: str) -> str:
    converter = _converter_class()(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    schema = converter.resolve_refs(json.loads(schema_json), "input")
    converter.visit(schema, "")
    rules = converter._rules
    if "char" in rules:
        rules["char"] = CHAR_RULE
    if "number" in rules:  # a 16-digit exponent parses as infinity, which JSON cannot carry
        rules["number"] = f'("-"? integral-part) ("." decimal-part)? {EXPONENT} space'
    if "string" in rules:  # free-form keys
        rules["string"] = rf'"\"" char{{1,{MAX_KEY}}} "\"" space'
    for name, rule in rules.items():
        if name.endswith("additional-kvs") and rule.endswith(" )*"):
            rules[name] = rule[:-1] + f"{{0,{MAX_EXTRA_KEYS - 1}}}"
    return converter.format_grammar()


def schema_gbnf(schema: dict[str, Any] | None, where: str) -> str:
    """The GBNF grammar of a JSON object valid against ``schema`` (any object when ``None``)."""
    bounded = bound_schema(schema if schema is not None else {"type": "object"}, where)
    try:
        return _gbnf(json.dumps(bounded))
    except (ValueError, KeyError, AssertionError, RecursionError) as error:
        message = f"cannot compile the schema to a grammar ({error})"
        raise InvalidRequestError(message, path=where) from None


def choice_gbnf(options: list[str], suffix: str) -> str:
    """One of ``options`` (plain literals such as tool names) followed by ``suffix``."""
    literal = lambda text: json.dumps(text)  # noqa: E731 - GBNF literals escape as JSON does
    alternatives = " | ".join(literal(option) for option in options)
    return f"root ::= ({alternatives}) {literal(suffix)}"


class GrammarCache:
    """Compiled grammar samplers of one model, by grammar text (LRU); each use gets a clone, so
    a grammar is parsed once however many requests use it."""

    def __init__(self, vocab: Any, size: int = GRAMMAR_CACHE):
        self.vocab = vocab
        self.size = size
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0

    def compile(self, gbnf: str, where: str) -> None:
        """Parse ``gbnf`` now (if not cached): an invalid grammar fails before any event."""
        self.free(self.sampler(gbnf, where))

    @staticmethod
    def free(sampler: Any) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(sampler)

    def sampler(self, gbnf: str, where: str) -> Any:
        """A fresh grammar sampler (owned by the caller: free it, or hand it to a TokenSampler)."""
        import llama_cpp

        with self._lock:
            compiled = self._compiled.get(gbnf)
            if compiled is None:
                compiled = llama_cpp.llama_sampler_init_grammar(
                    self.vocab, gbnf.encode("utf-8"), b"root"
                )
                if not compiled:
                    raise InvalidRequestError("the schema gives an invalid grammar", path=where)
                self.compiles += 1
                self._compiled[gbnf] = compiled
                while len(self._compiled) > self.size:
                    _, old = self._compiled.popitem(last=False)
                    llama_cpp.llama_sampler_free(old)
            else:
                self._compiled.move_to_end(gbnf)
            return llama_cpp.llama_sampler_clone(compiled)

    def close(self) -> None:
        import llama_cpp

        with self._lock:
            for compiled in self._compiled.values():
                llama_cpp.llama_sampler_free(compiled)
            self._compiled.clear()


class TokenSampler:
    """One sequence's sampling: the usual chain (penalties, top-k/p, temperature, seed) and an
    optional grammar checked after sampling. ``sample`` reads the logits at ``idx`` of a context,
    so a batched decode can sample each of its sequences with its own TokenSampler."""

    def __init__(
        self,
        n_vocab: int,
        *,
        seed: int,
        temperature: float,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        penalty_last_n: int = 64,
    ):
        import llama_cpp
        import numpy as np

        # The same chain, in the same order, as Llama.generate builds (so seeds behave alike).
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, penalty_last_n, repeat_penalty, 0.0, 0.0
            )
        )
        if temperature == 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(top_k))
            add(llama_cpp.llama_sampler_init_typical(1.0, 1))
            add(llama_cpp.llama_sampler_init_top_p(top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(temperature))
            add(llama_cpp.llama_sampler_init_dist(seed))
        self.chain = chain
        self.grammar: Any = None
        self.n_vocab = n_vocab
        self.resamples = 0  # tokens the grammar rejected (diagnostics, the benchmark)
        self._data = (llama_cpp.llama_token_data * n_vocab)()
        self._view = np.frombuffer(
            self._data, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
        )
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._array = llama_cpp.llama_token_data_array(
            ctypes.cast(self._data, llama_cpp.llama_token_data_p), n_vocab, -1, False
        )
        self.needed = 1 if temperature == 0 else top_k  # allowed tokens a resample must see
        self._best = (llama_cpp.llama_token_data * BEST)()
        self._best_view = np.frombuffer(self._best, dtype=self._view.dtype)
        self._best_array = llama_cpp.llama_token_data_array(
            ctypes.cast(self._best, llama_cpp.llama_token_data_p), BEST, -1, False
        )
        self._one = llama_cpp.llama_token_data(0, 1.0, 0.0)
        self._one_array = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    def set_grammar(self, grammar: Any) -> None:
        """Constrain what follows with ``grammar`` (a sampler from :class:`GrammarCache`, now
        owned here), or lift the constraint with ``None``."""
        import llama_cpp

        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
        self.grammar = grammar

    def _candidates(self, ctx: Any, idx: int) -> Any:
        import llama_cpp
        import numpy as np

        logits = llama_cpp.llama_get_logits_ith(ctx, idx)
        view = self._view
        view["id"] = self._ids
        view["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        view["p"] = 0.0
        array = self._array
        array.data = ctypes.cast(self._data, llama_cpp.llama_token_data_p)
        array.size = self.n_vocab
        array.selected = -1
        array.sorted = False
        return ctypes.byref(array)

    def _resample_best(self, ctx: Any, idx: int) -> int:
        """Resample among the best-scoring tokens the grammar allows (the chain only ever keeps
        the top ``top_k`` anyway): filtering ~49k candidates costs 5-15 ms a token, this ~0.3.
        -1 when fewer than the chain needs are allowed among them."""
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, idx), (self.n_vocab,))
        best = np.argpartition(logits, -BEST)[-BEST:]
        view = self._best_view
        view["id"] = best
        view["logit"] = logits[best]
        view["p"] = 0.0
        array = self._best_array
        array.data = ctypes.cast(self._best, llama_cpp.llama_token_data_p)
        array.size, array.selected, array.sorted = BEST, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        allowed = int(np.count_nonzero(view["logit"] != -np.inf))
        if allowed < self.needed:
            return -1
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """Sample the next token from the logits at ``idx`` and accept it (chain and grammar)."""
        import llama_cpp

        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.chain, ctx, idx))
        candidates = self._candidates(ctx, idx)
        llama_cpp.llama_sampler_apply(self.chain, candidates)
        token = int(self._array.data[self._array.selected].id)
        one = self._one
        one.id, one.logit, one.p = token, 1.0, 0.0
        self._one_array.selected, self._one_array.size = -1, 1
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        if one.logit == float("-inf"):
            self.resamples += 1
            token = self._resample_best(ctx, idx)
            if token < 0:  # too few allowed among the best: the grammar filters every token
                candidates = self._candidates(ctx, idx)
                llama_cpp.llama_sampler_apply(self.grammar, candidates)
                llama_cpp.llama_sampler_apply(self.chain, candidates)
                token = int(self._array.data[self._array.selected].id)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def close(self) -> None:
        import llama_cpp

        self.set_grammar(None)
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter teardown
            self.close()


class JSONEnd:
    """Finds where a streamed JSON object ends (outside strings, depth back to zero), so
    generation stops at its last token instead of decoding one more for the grammar's end."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False

    def feed(self, text: str) -> int:
        """Index just past the object's closing brace in ``text``, or -1 if it has not closed."""
        for i, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
                self.started = True
            elif char in "}]":
                self.depth -= 1
                if self.started and self.depth == 0:
                    return i + 1
        return -1
