"""Grammar-constrained sampling for the embedded model: JSON Schema -> GBNF, a grammar cache, and
a per-sequence sampler that samples first and checks the grammar after (as llama.cpp's server).

Why sample-then-check: applying a grammar to all ~49k candidates every token costs 30-50 % of
decode speed on a 135M model. The normal sampler chain picks a token; the grammar checks that one
token; only a rejected token makes the grammar filter every candidate before a resample. The
pieces here are per sequence (:class:`TokenSampler`), so a batching scheduler can hold one each.

A small model under a grammar loops easily, so schemas are bounded before compiling: strings get
a ``maxLength``, arrays a ``maxItems``, objects lose free-form extra keys. What a grammar can
enforce is written as grammar (integer and number ranges included); what it cannot (``not``,
``uniqueItems``...) is checked with ``jsonschema`` after generation (:class:`SchemaGrammar`), or
refused under ``strict``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import InvalidRequestError

MAX_STRING = 96  # characters, for strings without a maxLength
MAX_ITEMS = 8  # for arrays without a maxItems
MAX_EXTRA_KEYS = 8  # keys of a free-form object
MAX_KEY = 48  # characters of a free-form object's key
MAX_DIGITS = 16  # digits of a generated integer (9007199254740991, 2**53 - 1, has 16)
GRAMMAR_CACHE = 64  # compiled grammars kept per model
BEST = 512  # candidates a rejected token's resample looks at first

# Keywords no grammar enforces: accepted, generated under the grammar for the rest, and checked
# against the original schema afterwards (refused only under ``strict``).
LOOSE = (
    "patternProperties",
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
    "unevaluatedProperties",
    "unevaluatedItems",
)
# Annotations and identifiers: no effect on what validates.
ANNOTATIONS = (
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "discriminator",
)
FORMATS = re.compile(r"uuid[1-5]?|date|time|date-time")  # what the grammar writes; others: any
DEFS = ("$defs", "definitions")

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
FRACTION = '"." [0-9]{1,15}'
GBNF = "x-streamchat-gbnf"  # a bounded schema node's own grammar (numbers with bounds)
# JSON strings may not hold raw control characters (llama-cpp-python's rule allows them).
GBNF_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\r": "\\r", "\n": "\\n"})
CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


@dataclass(frozen=True)
class SchemaGrammar:
    """A schema compiled for generation: its grammar, what the grammar leaves unenforced
    (``(where, keyword)`` pairs), and the original schema, which every result is checked
    against."""

    gbnf: str
    loose: tuple[tuple[str, str], ...]
    schema: Any

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not a JSON value valid against the schema (``None``: it is, or the
        schema cannot be checked here, such as a remote ``$ref``)."""
        try:
            value = json.loads(text)
        except ValueError as error:
            return f"not JSON ({error})"
        return _problem(self.schema, value)


def _problem(schema: Any, value: Any) -> str | None:
    """Why ``value`` is not valid against ``schema`` (``None``: it is, or cannot be told)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    if validator is None:
        return None
    try:
        error = next(iter(validator.iter_errors(value)), None)
    except Exception:  # an unresolvable $ref and the like: cannot tell
        return None
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path))
    return f"{error.message} (at /{where})" if where else error.message


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """The schema's own draft's validator (2020-12 when it names none); ``None`` for a schema
    its meta-schema rejects: the grammar alone decides then."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


def compile_schema(schema: Any, where: str, *, strict: bool = False) -> SchemaGrammar:
    """The grammar of a JSON object valid against ``schema`` (any object when ``None``). With
    ``strict``, a keyword the grammar cannot enforce is a 400 naming it (as the real APIs do for
    strict schemas); without, it is left to the check after generation."""
    if schema is None:
        schema = {"type": "object"}
    bounder = _Bounder(schema)
    try:
        bounded = bounder.bound(schema, where)
    except RecursionError:
        raise InvalidRequestError("the schema nests too deeply", path=where) from None
    if strict and bounder.loose:
        at, keyword = bounder.loose[0]
        raise InvalidRequestError(
            f"JSON Schema keyword {keyword!r} cannot be enforced with strict: true", path=at
        )
    try:
        gbnf = _gbnf(json.dumps(bounded))
    except (ValueError, KeyError, AssertionError, RecursionError) as error:
        message = f"cannot compile the schema to a grammar ({error})"
        raise InvalidRequestError(message, path=where) from None
    return SchemaGrammar(gbnf, tuple(bounder.loose), schema)


def bound_schema(schema: Any, where: str) -> dict[str, Any]:
    """``schema`` as the grammar is built from it (see :class:`_Bounder`)."""
    return _Bounder(schema).bound(schema, where)


class _Bounder:
    """Turns a schema into one the converter compiles and a small model finishes: strings,
    arrays and objects bounded, number bounds written as grammar, ``allOf`` merged, annotations
    dropped; what cannot be enforced is noted in :attr:`loose` and left out."""

    def __init__(self, root: Any):
        self.root = root
        self.loose: list[tuple[str, str]] = []

    def _loose(self, where: str, keyword: str) -> None:
        if (where, keyword) not in self.loose:
            self.loose.append((where, keyword))

    def bound(self, schema: Any, where: str) -> dict[str, Any]:
        if schema is True or schema == {}:
            return dict(ANY_VALUE)
        if not isinstance(schema, dict):
            what = "false" if schema is False else type(schema).__name__
            raise InvalidRequestError(f"unsupported JSON Schema {what!r}", path=where)
        node = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
        for keyword in LOOSE:
            if keyword in node:
                self._loose(where, keyword)
                del node[keyword]
        for defs in DEFS:
            if isinstance(node.get(defs), dict):
                node[defs] = {
                    k: self.bound(v, f"{where}.{defs}.{k}") for k, v in node[defs].items()
                }
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                self._loose(where, keyword)
                return dict(ANY_VALUE)
        ref = node.get("$ref")
        if ref is not None:
            if not isinstance(ref, str) or not ref.startswith("#"):
                self._loose(where, "$ref")  # remote: not fetched
                return dict(ANY_VALUE)
            defs, rest = _split_defs(node)
            del rest["$ref"]
            if not rest:
                return node
            node = {"allOf": [{"$ref": ref}], **rest, **defs}  # siblings apply too (2019-09+)
        if "allOf" in node:
            parts = node.pop("allOf")
            if not isinstance(parts, list) or not parts:
                raise InvalidRequestError("expected a non-empty list", path=f"{where}.allOf")
            merged = node
            for part in parts:
                merged = self._merge(merged, self._resolve(part, where), where)
            return self.bound(merged, where)
        kind = node.get("type")
        if isinstance(kind, list):
            rest = {k: v for k, v in node.items() if k != "type"}
            return {"anyOf": [self.bound({**rest, "type": t}, where) for t in kind]}
        for union in ("anyOf", "oneOf"):
            if union in node:
                options = node.pop(union)
                if not isinstance(options, list) or not options:
                    raise InvalidRequestError("expected a non-empty list", path=f"{where}.{union}")
                defs, siblings = _split_defs(node)
                bounded = [
                    self.bound(self._merge(siblings, self._resolve(s, where), where) if siblings
                               else s, f"{where}.{union}.{i}")
                    for i, s in enumerate(options)
                ]  # fmt: skip
                return {**defs, "anyOf": bounded}
        if "const" in node:
            return {"const": node["const"]}
        if "enum" in node:
            return {"enum": node["enum"]}
        if kind in ("integer", "number"):
            return self._number(node, kind, where)
        if kind == "string":
            return self._string(node, where)
        if kind == "array" or (kind is None and ({"items", "prefixItems"} & node.keys())):
            return self._array(node, where)
        if kind == "object" or (kind is None and "properties" in node):
            return self._object(node, where)
        return node

    def _resolve(self, schema: Any, where: str) -> Any:
        """``schema``, or what its local ``$ref`` points to (for merging)."""
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            return schema
        ref = schema["$ref"]
        if not ref.startswith("#"):
            self._loose(where, "$ref")
            return {}
        try:
            target = _pointer(self.root, ref)
        except ValueError as error:
            raise InvalidRequestError(str(error), path=where) from None
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return self._merge(rest, self._resolve(target, where), where) if rest else target

    def _merge(self, a: Any, b: Any, where: str) -> dict[str, Any]:
        """Both ``a`` and ``b`` (``allOf``): properties and required united, bounds narrowed; a
        conflict the grammar cannot express keeps ``a``'s side, checked after generation."""
        if b is True or b == {}:
            return dict(a)
        if a is True or a == {}:
            return dict(b) if isinstance(b, dict) else b
        if not isinstance(a, dict) or not isinstance(b, dict):
            raise InvalidRequestError("unsupported JSON Schema 'false'", path=where)
        merged = dict(a)
        for key, value in b.items():
            if key not in merged or merged[key] == value or key in ANNOTATIONS:
                merged.setdefault(key, value)
            elif key == "properties":
                properties = dict(merged[key])
                for name, sub in value.items():
                    old = properties.get(name)
                    properties[name] = sub if old is None else {"allOf": [old, sub]}
                merged[key] = properties
            elif key == "required":
                merged[key] = [*merged[key], *(n for n in value if n not in merged[key])]
            elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum"):
                merged[key] = max(merged[key], value)
            elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum"):
                merged[key] = min(merged[key], value)
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                merged[key] = {"allOf": [merged[key], value]}
            elif key == "type" and {merged[key], value} == {"integer", "number"}:
                merged[key] = "integer"
            elif key in ("allOf", "anyOf", "oneOf"):
                merged = {**merged, "allOf": [*merged.get("allOf", []), {key: value}]}
            else:
                self._loose(where, "allOf")
        return merged

    def _number(self, node: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
        low, high = node.get("minimum"), node.get("maximum")
        low_open, high_open = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
        if isinstance(low_open, bool):  # draft 4: a flag on minimum
            low_open, low = (low, None) if low_open else (None, low)
        if isinstance(high_open, bool):
            high_open, high = (high, None) if high_open else (None, high)
        bounds = {"minimum": low, "maximum": high, "exclusiveMinimum": low_open,
                  "exclusiveMaximum": high_open}  # fmt: skip
        if all(bound is None for bound in bounds.values()):
            return {"type": kind}
        for keyword, bound in bounds.items():
            if bound is not None and not _finite(bound):
                raise InvalidRequestError("expected a number", path=f"{where}.{keyword}")
        if low_open is not None:
            low = _tighter(max, low, _after(low_open, kind))
        if high_open is not None:
            high = _tighter(min, high, _before(high_open, kind))
        rule = number_gbnf(low, high, kind == "integer")
        if rule is None:  # no integer in range: a plain number, checked afterwards
            self._loose(where, "minimum" if low is not None else "maximum")
            return {"type": kind}
        return {"type": kind, GBNF: rule}

    def _string(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        fmt = node.get("format")
        if fmt is not None and not (isinstance(fmt, str) and FORMATS.fullmatch(fmt)):
            del node["format"]  # an annotation unless asserted (and never asserted here)
        pattern = node.get("pattern")
        if pattern is not None and not _pattern_compiles(pattern):
            self._loose(where, "pattern")
            del node["pattern"]
        if {"pattern", "format"} & node.keys():
            for keyword in ("minLength", "maxLength"):
                if keyword in node:  # the pattern or format decides the length
                    self._loose(where, keyword)
            return node
        node["maxLength"] = max(node.get("maxLength", MAX_STRING), node.get("minLength", 0))
        return node

    def _array(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        prefix = node.get("prefixItems")
        if isinstance(node.get("items"), list):  # draft 7's tuples
            prefix = node.pop("items")
        if isinstance(prefix, list):
            node["prefixItems"] = [
                self.bound(s, f"{where}.prefixItems.{i}") for i, s in enumerate(prefix)
            ]
            node.pop("items", None)
            count = len(prefix)
            if node.get("minItems", 0) > count or node.get("maxItems", count) < count:
                self._loose(where, "minItems" if node.get("minItems", 0) > count else "maxItems")
            return node
        items = node.get("items")
        node["items"] = self.bound(items if items is not None else {}, f"{where}.items")
        low = node.get("minItems", 0)
        node["maxItems"] = max(low, node.get("maxItems", MAX_ITEMS))
        return node

    def _object(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        properties = dict(node.get("properties") or {})
        extra = node.get("additionalProperties")
        value = extra if isinstance(extra, dict) else {}  # the schema of a key not listed
        names = node.pop("propertyNames", None)
        if isinstance(names, dict):
            names = {k: v for k, v in names.items() if k not in ANNOTATIONS}
            listed = names.get("enum", [names["const"]] if "const" in names else None)
            if listed is not None and extra is not False:
                for name in listed:  # the keys allowed: spelled out, none other
                    properties.setdefault(name, value)
                extra = False
            elif extra is False:
                if any(_problem(names, name) for name in properties):
                    self._loose(where, "propertyNames")
            elif set(names) - {"type", "maxLength"} or names.get("maxLength", MAX_KEY) < MAX_KEY:
                self._loose(where, "propertyNames")
        for name in node.get("required", []):
            properties.setdefault(name, value)
        node["properties"] = {
            name: self.bound(s, f"{where}.properties.{name}") for name, s in properties.items()
        }
        if isinstance(extra, dict) and extra:
            node["additionalProperties"] = self.bound(extra, f"{where}.additionalProperties")
        elif node["properties"] or extra is False:
            node["additionalProperties"] = False  # no free-form keys: nothing to loop on
        else:
            node["additionalProperties"] = ANY_VALUE
        return node


def _split_defs(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(its $defs / definitions, the rest)`` of a schema node."""
    defs = {k: v for k, v in node.items() if k in DEFS}
    return defs, {k: v for k, v in node.items() if k not in defs}


def _pointer(root: Any, ref: str) -> Any:
    """What a local ``$ref`` (``#/...``, a JSON pointer) points to in ``root``."""
    target = root
    for part in filter(None, ref.lstrip("#").split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise ValueError(f"unresolvable $ref {ref!r}")
        target = target[part]
    return target


def _tighter(pick: Any, bound: float | None, other: float) -> float:
    return other if bound is None else pick(bound, other)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _after(bound: float, kind: str) -> float:
    """The least value above an exclusive minimum the grammar below can write."""
    return math.floor(bound) + 1 if kind == "integer" or bound == int(bound) else bound


def _before(bound: float, kind: str) -> float:
    return math.ceil(bound) - 1 if kind == "integer" or bound == int(bound) else bound


def number_gbnf(low: float | None, high: float | None, integer: bool) -> str | None:
    """GBNF for JSON numbers in ``[low, high]`` (either side open when ``None``), without an
    exponent: the integers there, and decimals whose integral part keeps them inside. ``None``
    when it holds no integer (a range such as [0.2, 0.7])."""
    if low is not None and low <= -(10**MAX_DIGITS):
        low = None  # beyond what is ever written: no bound
    if high is not None and high >= 10**MAX_DIGITS:
        high = None
    first = None if low is None else math.ceil(low)
    last = None if high is None else math.floor(high)
    if first is not None and last is not None and first > last:
        return None
    parts = [_integers(first, last)]
    if not integer:
        # i.f with i >= 0 lies in [i, i + 1); -k.f in (-(k + 1), -k].
        positive = _naturals(max(first or 0, 0), None if last is None else last - 1)
        if positive:
            parts.append(f"({positive}) {FRACTION}")
        top = None if first is None else -first - 1
        negative = _naturals(max(1, -last if last is not None else 1), top)
        if negative:
            parts.append(f'"-" ({negative}) {FRACTION}')
    return " | ".join(f"({part})" for part in parts if part)


def _integers(first: int | None, last: int | None) -> str:
    """Integers from ``first`` to ``last`` (``None``: unbounded), in JSON's canonical form."""
    parts = []
    if last is None or last >= 0:
        parts.append(_naturals(max(first, 0) if first is not None else 0, last))
    if first is None or first < 0:
        top = None if first is None else -first
        parts.append(f'"-" ({_naturals(1 if last is None or last >= 0 else -last, top)})')
    return " | ".join(f"({part})" for part in parts if part)


def _naturals(first: int, last: int | None) -> str:
    """Naturals from ``first`` to ``last`` (``None``: up to :data:`MAX_DIGITS` digits), one
    alternative per length; '' when none."""
    if last is not None and first > last:
        return ""
    parts = []
    longest = max(MAX_DIGITS, len(str(first))) if last is None else len(str(last))
    for length in range(len(str(first)), longest + 1):
        floor = 10 ** (length - 1) if length > 1 else 0
        start = max(first, floor)
        end = 10**length - 1 if last is None else min(last, 10**length - 1)
        if last is None and start == floor and length > 1:  # this length and every longer one
            parts.append(f"[1-9] [0-9]{{{length - 1},{longest - 1}}}")
            break
        parts.append(_same_length(str(start), str(end)))
    return " | ".join(f"({part})" for part in parts)


def _same_length(a: str, b: str) -> str:
    """The digit strings of ``a``'s length from ``a`` to ``b`` (``a <= b``)."""
    if a == b:
        return f'"{a}"'
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    if shared:
        return f'"{a[:shared]}" ({_same_length(a[shared:], b[shared:])})'
    if len(a) == 1:
        return f"[{a}-{b}]"
    rest = len(a) - 1
    from_floor, to_ceiling = a[1:] == "0" * rest, b[1:] == "9" * rest
    lo, hi = int(a[0]) + (not from_floor), int(b[0]) - (not to_ceiling)
    parts = []
    if not from_floor:
        parts.append(f'"{a[0]}" ({_same_length(a[1:], "9" * rest)})')
    if lo <= hi:
        digit = f"[{lo}]" if lo == hi else f"[{lo}-{hi}]"
        parts.append(f"{digit} [0-9]{{{rest}}}")
    if not to_ceiling:
        parts.append(f'"{b[0]}" ({_same_length("0" * rest, b[1:])})')
    return " | ".join(f"({part})" for part in parts)


@lru_cache(maxsize=256)
def _pattern_compiles(pattern: Any) -> bool:
    """Whether the converter writes ``pattern`` as grammar (anchored, no lookarounds...)."""
    if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
        return False
    try:
        re.compile(pattern)
        _converter_class()(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )._visit_pattern(pattern, "p")
    except Exception:  # any failure of the converter means "not as grammar"
        return False
    return True


def _converter_class() -> type:
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Converter(SchemaConverter):  # type: ignore[misc, valid-type]
        """llama-cpp-python's converter with bounded strings (``char{m,n}``) and the number
        rules :func:`number_gbnf` writes."""

        def visit(self, schema: dict[str, Any], name: str) -> str:
            kind = schema.get("type")
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            if GBNF in schema:
                return self._add_rule(rule_name, f"({schema[GBNF]}) space")
            plain = not ({"pattern", "format", "enum", "const", "$ref"} & schema.keys())
            if kind == "string" and plain and "maxLength" in schema:
                self._rules["char"] = CHAR_RULE
                low, high = schema.get("minLength", 0), schema["maxLength"]
                return self._add_rule(rule_name, rf'"\"" char{{{low},{high}}} "\"" space')
            return super().visit(schema, name)

        def _format_literal(self, literal: str) -> str:
            """A GBNF literal matching ``literal``'s characters. The port leaves backslashes
            unescaped, so the JSON text of a ``const`` or ``enum`` string holding ``\n`` or
            ``\f`` would be read by GBNF as a newline, or refused."""
            escaped = literal.translate(GBNF_ESCAPES)
            return f'"{escaped}"'

    return Converter


@lru_cache(maxsize=256)
def _gbnf(schema_json: str) -> str:
    converter = _converter_class()(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    schema = json.loads(schema_json)
    _local_refs(converter._refs, schema, schema)
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


def _local_refs(refs: dict[str, Any], root: Any, node: Any) -> None:
    """Every local ``$ref`` under ``node`` and its target, for the converter (its own resolver
    skips what lies beside a ``$ref``, such as the ``$defs`` of a root that is a ``$ref``)."""
    if isinstance(node, list):
        for item in node:
            _local_refs(refs, root, item)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in refs:
            refs[ref] = _pointer(root, ref)
        for value in node.values():
            _local_refs(refs, root, value)


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

        self._settings = (top_p, top_k, min_p, repeat_penalty, penalty_last_n)
        # The chain picks among the BEST best-scoring tokens what it would pick among all: its
        # penalties only lower at most ``penalty_last_n`` tokens, and greedy or top-k keep at
        # most ``top_k`` after them. So a constrained token starts from those BEST.
        self._best_first = repeat_penalty >= 1.0 and top_k + penalty_last_n <= BEST < n_vocab
        self.chain: Any = None
        self.n_vocab = n_vocab
        self.reset(seed=seed, temperature=temperature)
        self.grammar: Any = None
        self.resamples = 0  # tokens the grammar rejected (diagnostics, the benchmark)
        self._data = (llama_cpp.llama_token_data * n_vocab)()
        self._view = np.frombuffer(
            self._data, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
        )
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._array = llama_cpp.llama_token_data_array(
            ctypes.cast(self._data, llama_cpp.llama_token_data_p), n_vocab, -1, False
        )
        self._best = (llama_cpp.llama_token_data * BEST)()
        self._best_view = np.frombuffer(self._best, dtype=self._view.dtype)
        self._best_array = llama_cpp.llama_token_data_array(
            ctypes.cast(self._best, llama_cpp.llama_token_data_p), BEST, -1, False
        )
        self._one = llama_cpp.llama_token_data(0, 1.0, 0.0)
        self._one_array = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    def reset(self, *, seed: int, temperature: float) -> None:
        """A new chain (penalties forgotten) with this seed and temperature: the same chain, in
        the same order, as ``Llama.generate`` builds, so seeds behave alike."""
        import llama_cpp

        top_p, top_k, min_p, repeat_penalty, penalty_last_n = self._settings
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        add(
            llama_cpp.llama_sampler_init_penalties(
                self.n_vocab, penalty_last_n, repeat_penalty, 0.0, 0.0
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
        self.seed, self.temperature = seed, temperature
        self.needed = 1 if temperature == 0 else top_k  # allowed tokens a resample must see

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

    def _best_candidates(self, ctx: Any, idx: int) -> Any:
        """The ``BEST`` best-scoring candidates at ``idx``, unsorted."""
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
        return ctypes.byref(array)

    def _resample_best(self, ctx: Any, idx: int) -> int:
        """Resample among the best-scoring tokens the grammar allows (the chain only ever keeps
        the top ``top_k`` anyway): filtering ~49k candidates costs 5-15 ms a token, this ~0.3.
        -1 when fewer than the chain needs are allowed among them."""
        import llama_cpp
        import numpy as np

        candidates = self._best_candidates(ctx, idx)
        llama_cpp.llama_sampler_apply(self.grammar, candidates)
        allowed = int(np.count_nonzero(self._best_view["logit"] != -np.inf))
        if allowed < self.needed:
            return -1
        llama_cpp.llama_sampler_apply(self.chain, candidates)
        return int(self._best_array.data[self._best_array.selected].id)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """Sample the next token from the logits at ``idx`` and accept it (chain and grammar)."""
        import llama_cpp

        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.chain, ctx, idx))
        if self._best_first:
            llama_cpp.llama_sampler_apply(self.chain, self._best_candidates(ctx, idx))
            token = int(self._best_array.data[self._best_array.selected].id)
        else:
            llama_cpp.llama_sampler_apply(self.chain, self._candidates(ctx, idx))
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
