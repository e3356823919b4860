"""Search request parsing (pure): URL parameters -> a typed query the SQL builder compiles.

Everything a client can get wrong is caught here and reported as InvalidSearch naming the
parameter, so the SQL layer only ever sees well-formed values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from app.errors import InvalidSearch, NotSupported

# One definition of string normalisation and date ranges for indexing and searching alike.
from .indexer import date_range as parse_date_range
from .indexer import normalize
from .registry import RESULT_PARAMS, ParamDef, Registry

if TYPE_CHECKING:
    from .confine import Confinement, TypeAccess

__all__ = ["normalize", "parse_date_range"]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
TOKEN_MODIFIERS = frozenset({"not", "text", "of-type", "missing", "in", "not-in", "above", "below"})
STRING_MODIFIERS = frozenset({"exact", "contains", "missing"})
URI_MODIFIERS = frozenset({"above", "below", "missing"})
REFERENCE_MODIFIERS = frozenset({"identifier", "missing"})
PLAIN_MODIFIERS = frozenset({"missing"})

def split_values(raw: str) -> list[str]:
    """Split on commas not escaped with a backslash, and unescape \\, \\$ \\|."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            cur.append("\\" + raw[i + 1])
            i += 2
            continue
        if c == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def split_unescaped(raw: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            cur.append(raw[i : i + 2])
            i += 2
            continue
        if c == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw)


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    prefix: str
    value: float
    low: float
    high: float
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None  # None: any system; "" : no system
    code: str | None  # None: any code (system| form)


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    target_type: str | None
    target_id: str | None
    url: str | None  # absolute / canonical form


def _split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and not raw[2].isalpha():
        return raw[:2], raw[2:]
    return "eq", raw


_FRACTION = re.compile(r"T\d\d:\d\d:\d\d\.(\d+)")


def range_us(raw: str) -> tuple[int, int] | None:
    """[low, high) in integer microseconds: exact where floats of seconds are not (server
    instants carry microseconds, and `_lastUpdated=gt<instant>` must not match that instant)."""
    rng = parse_date_range(raw)
    if rng is None:
        return None
    m = _FRACTION.search(raw)
    if not m:
        return round(rng[0] * 1_000_000), round(rng[1] * 1_000_000)  # whole seconds: exact
    digits = m.group(1)
    whole = parse_date_range(raw[: m.start(1) - 1] + raw[m.end(1) :])
    assert whole is not None
    low = round(whole[0]) * 1_000_000 + int((digits + "000000")[:6])
    return low, low + 10 ** (6 - min(len(digits), 6))


def parse_date(param: str, raw: str) -> DateValue:
    prefix, rest = _split_prefix(raw)
    rng = parse_date_range(rest)
    if rng is None:
        raise InvalidSearch(
            f"Invalid date value '{raw}' for parameter '{param}': expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]",
            expression=param,
        )
    return DateValue(prefix, rng[0], rng[1])


def _decimal_range(param: str, raw: str) -> tuple[float, float, float]:
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise InvalidSearch(f"Invalid number '{raw}' for parameter '{param}'", expression=param) from None
    if not d.is_finite():
        raise InvalidSearch(f"Invalid number '{raw}' for parameter '{param}'", expression=param)
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = 0.5 * 10.0**exp
    v = float(d)
    return v, v - half, v + half


def parse_number(param: str, raw: str) -> NumberValue:
    prefix, rest = _split_prefix(raw)
    v, lo, hi = _decimal_range(param, rest)
    return NumberValue(prefix, v, lo, hi)


def parse_quantity(param: str, raw: str) -> QuantityValue:
    parts = split_unescaped(raw, "|", 2)
    prefix, num = _split_prefix(parts[0])
    v, lo, hi = _decimal_range(param, num)
    system = unescape(parts[1]) if len(parts) > 1 and parts[1] else None
    code = unescape(parts[2]) if len(parts) > 2 and parts[2] else None
    return QuantityValue(prefix, v, lo, hi, system, code)


def parse_token(raw: str) -> TokenValue:
    parts = split_unescaped(raw, "|", 1)
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape(parts[1])
    return TokenValue(system, code if code != "" else None)


_REF_RE = re.compile(r"^(?:(?P<base>.*/))?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def parse_reference(raw: str, base_url: str | None = None) -> ReferenceValue:
    value = unescape(raw)
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1 :]
    m = _REF_RE.match(value)
    if m and not m.group("base"):
        return ReferenceValue(m.group("type"), m.group("id"), None)
    if m:
        return ReferenceValue(m.group("type"), m.group("id"), value)
    if "/" not in value and ":" not in value:
        return ReferenceValue(None, value, None)
    return ReferenceValue(None, None, value.split("|", 1)[0])


# ---------------------------------------------------------------- clauses


@dataclass(slots=True)
class Clause:
    """One URL parameter: values are ORed; clauses are ANDed."""

    name: str  # as written, for messages and self links
    param: ParamDef | None  # None for _has
    modifier: str | None
    values: list[str]
    target_type: str | None = None  # reference :Type modifier or chain type
    chain: Clause | None = None  # reference chain: condition on the referenced resource
    has_type: str | None = None  # _has:Type:param:...
    has_param: ParamDef | None = None
    has_clause: Clause | None = None


@dataclass(slots=True)
class Include:
    source_type: str
    param: str  # "*" for all reference params
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(slots=True)
class SortKey:
    param: ParamDef
    descending: bool


@dataclass(slots=True)
class SearchQuery:
    rtype: str | None  # None: whole-system search
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    after: int | None = None  # keyset cursor (default order): resources with pk > after
    before: int | None = None  # keyset cursor backwards: pk < before
    sort: list[SortKey] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "none"
    types: list[str] | None = None  # _type, for whole-system search
    used: list[tuple[str, str]] = field(default_factory=list)  # applied params, for the self link
    # Set by the caller's authorization, never by URL parameters (so never in links):
    confine: Confinement | None = None  # the part of `rtype` the caller may search (None: all)
    chained: TypeAccess | None = None  # what chains and _has may reach of other types (None: all)


SUMMARY_MODES = frozenset({"true", "false", "text", "data", "count"})


class QueryParser:
    def __init__(self, registry: Registry, resource_types: frozenset[str], *, default_count: int, max_count: int):
        self.registry = registry
        self.types = resource_types
        self.default_count = default_count
        self.max_count = max_count

    def parse(self, rtype: str | None, params: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
        q = SearchQuery(rtype=rtype, count=self.default_count)
        for key, raw in params:
            name, _, modifier = key.partition(":")
            if name in RESULT_PARAMS:
                self._result_param(q, name, modifier, raw)
                if name not in ("_format", "_pretty"):
                    q.used.append((key, raw))
                continue
            try:
                clause = self.clause(rtype, key, raw)
            except InvalidSearch:
                if strict:
                    raise
                continue
            if clause is None:
                if strict:
                    where = rtype or "the system"
                    raise InvalidSearch(f"Unknown search parameter '{key}' for {where}", expression=key)
                continue
            q.clauses.append(clause)
            q.used.append((key, raw))
        return q

    def _result_param(self, q: SearchQuery, name: str, modifier: str, raw: str) -> None:
        if name == "_count":
            if not raw.isdigit():
                raise InvalidSearch(f"_count must be a non-negative integer, got '{raw}'", expression="_count")
            q.count = min(int(raw), self.max_count)
        elif name == "_offset":
            if not raw.isdigit():
                raise InvalidSearch(f"_offset must be a non-negative integer, got '{raw}'", expression="_offset")
            q.offset = int(raw)
        elif name == "_page":
            if len(raw) < 2 or raw[0] not in "ab" or not raw[1:].isdigit():
                raise InvalidSearch(f"_page '{raw}' is not a cursor this server issued", expression="_page")
            if raw[0] == "a":
                q.after = int(raw[1:])
            else:
                q.before = int(raw[1:])
        elif name == "_sort":
            for item in raw.split(","):
                desc = item.startswith("-")
                code = item[1:] if desc else item
                p = self.registry.get(q.rtype, code) if q.rtype else self.registry.get("Resource", code)
                if p is None or p.type in ("composite", "special"):
                    raise InvalidSearch(f"Unknown or unsortable _sort parameter '{code}'", expression="_sort")
                q.sort.append(SortKey(p, desc))
        elif name in ("_include", "_revinclude"):
            self._include(q, name, modifier, raw)
        elif name == "_summary":
            if raw not in SUMMARY_MODES:
                raise InvalidSearch(f"_summary must be one of {sorted(SUMMARY_MODES)}, got '{raw}'", expression="_summary")
            q.summary = raw
        elif name == "_elements":
            q.elements = [e.strip() for e in raw.split(",") if e.strip()]
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise InvalidSearch(f"_total must be none, estimate or accurate, got '{raw}'", expression="_total")
            q.total = raw
        elif name == "_type":
            types = [t.strip() for t in raw.split(",") if t.strip()]
            unknown = [t for t in types if t not in self.types]
            if unknown:
                raise InvalidSearch(f"_type names unknown resource types: {', '.join(unknown)}", expression="_type")
            q.types = types
        elif name in ("_contained", "_containedType"):
            raise NotSupported(f"{name} is not supported", expression=name)

    def _include(self, q: SearchQuery, name: str, modifier: str, raw: str) -> None:
        iterate = modifier in ("iterate", "recurse")
        if modifier and not iterate:
            raise InvalidSearch(f"Unknown modifier ':{modifier}' on {name}", expression=name)
        reverse = name == "_revinclude"
        if raw == "*":
            q.includes.append(Include(q.rtype or "*", "*", None, iterate, reverse))
            return
        parts = raw.split(":")
        if len(parts) not in (2, 3) or parts[0] not in self.types:
            raise InvalidSearch(f"{name} must be Type:param[:targetType], got '{raw}'", expression=name)
        src, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if code != "*":
            p = self.registry.get(src, code)
            if p is None or p.type != "reference":
                raise InvalidSearch(f"{name}: '{code}' is not a reference parameter of {src}", expression=name)
        if target is not None and target not in self.types:
            raise InvalidSearch(f"{name}: unknown target type '{target}'", expression=name)
        q.includes.append(Include(src, code, target, iterate, reverse))

    def clause(self, rtype: str | None, key: str, raw: str) -> Clause | None:
        """Parse one parameter; None when the parameter is unknown for this type."""
        if key.startswith("_has:"):
            return self._has(rtype, key, raw)
        name, dot, chain_rest = key.partition(".")
        code, _, modifier = name.partition(":")
        p = self.registry.get(rtype, code) if rtype else self.registry.get("Resource", code)
        if p is None:
            return None
        if dot:
            if p.type != "reference":
                raise InvalidSearch(f"Chained parameter '{key}': '{code}' is not a reference", expression=key)
            target = modifier or None
            if target is not None and target not in self.types:
                raise InvalidSearch(f"Unknown resource type '{target}' in '{key}'", expression=key)
            candidates = [target] if target else [t for t in (p.targets or ()) if t in self.types]
            chain = None
            for t in candidates:
                chain = self.clause(t, chain_rest, raw)
                if chain is not None:
                    target = t if len(candidates) == 1 else target
                    break
            if chain is None:
                raise InvalidSearch(f"Unknown chained parameter '{chain_rest}' in '{key}'", expression=key)
            return Clause(key, p, None, [], target_type=target, chain=chain)
        mod: str | None = modifier or None
        if mod is not None:
            self._check_modifier(key, p, mod)
        if mod == "missing":
            if raw not in ("true", "false"):
                raise InvalidSearch(f":missing takes true or false, got '{raw}'", expression=key)
            return Clause(key, p, mod, [raw])
        target_type = None
        if p.type == "reference" and mod is not None and mod != "identifier":
            target_type, mod = mod, None
        values = [v for v in split_values(raw)]
        if not any(values):
            raise InvalidSearch(f"Parameter '{key}' has no value", expression=key)
        c = Clause(key, p, mod, values, target_type=target_type)
        self._check_values(c)
        return c

    def _check_modifier(self, key: str, p: ParamDef, mod: str) -> None:
        allowed = {
            "token": TOKEN_MODIFIERS,
            "string": STRING_MODIFIERS,
            "uri": URI_MODIFIERS,
            "reference": REFERENCE_MODIFIERS,
        }.get(p.type, PLAIN_MODIFIERS)
        if p.type == "reference" and mod in self.types:
            return
        if mod not in allowed:
            raise InvalidSearch(f"Modifier ':{mod}' is not valid for {p.type} parameter '{p.code}'", expression=key)
        if p.type == "token" and mod in ("above", "below"):
            raise NotSupported(f"Token modifier ':{mod}' is not supported (no terminology service)", expression=key)

    def _check_values(self, c: Clause) -> None:
        p = c.param
        assert p is not None
        for v in c.values:
            if p.type == "date":
                parse_date(c.name, v)
            elif p.type == "number":
                parse_number(c.name, v)
            elif p.type == "quantity":
                parse_quantity(c.name, v)
            elif p.type == "composite":
                parts = split_unescaped(v, "$")
                if len(parts) != len(p.components):
                    raise InvalidSearch(
                        f"Composite '{c.name}' needs {len(p.components)} values separated by '$', got '{v}'",
                        expression=c.name,
                    )
                for comp, part in zip(p.components, parts, strict=True):
                    if comp.type == "date":
                        parse_date(c.name, part)
                    elif comp.type == "number":
                        parse_number(c.name, part)
                    elif comp.type == "quantity":
                        parse_quantity(c.name, part)

    def _has(self, rtype: str | None, key: str, raw: str) -> Clause:
        parts = key.split(":", 3)
        if len(parts) < 4 or rtype is None:
            raise InvalidSearch(f"_has must be _has:Type:reference:parameter, got '{key}'", expression=key)
        _, src, ref, rest = parts
        if src not in self.types:
            raise InvalidSearch(f"Unknown resource type '{src}' in '{key}'", expression=key)
        rp = self.registry.get(src, ref)
        if rp is None or rp.type != "reference":
            raise InvalidSearch(f"'{ref}' is not a reference parameter of {src} in '{key}'", expression=key)
        inner = self.clause(src, rest, raw)
        if inner is None:
            raise InvalidSearch(f"Unknown parameter '{rest}' for {src} in '{key}'", expression=key)
        return Clause(key, None, None, [], has_type=src, has_param=rp, has_clause=inner)


def is_inf(x: float) -> bool:
    return math.isinf(x)
