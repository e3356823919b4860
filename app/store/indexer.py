"""Pure indexer: a resource's JSON -> the search index rows of its R4 search parameters.

Everything that depends only on the resource type is prepared once at import: the search
parameter definitions (fhir_profiles/search_parameters.json) are compiled to closures by
app.store.fhirpath and paired with a row emitter for the parameter type, so indexing a
resource is a walk over its dictionaries. A parameter expression outside the compiler's
subset makes the import fail, naming the expression.

Row conventions the search side relies on (see app/store/rows.py and app/store/search.py):
- token rows carry `text` normalised like string rows, for `:text`;
- an Identifier also gives a `CODE:of-type` row (system = type coding system,
  code = "typecode|value"); a Reference.identifier gives a `CODE:identifier` token row;
- a `code` primitive is indexed with system None (its code system is implied by the element;
  searches give `code` alone or `system|code`, and the latter does not match such a row);
- composite components go to `CODE$i` rows sharing one `grp` per matched element (grp numbers
  are unique within a resource, across all its composite parameters);
- a parameter whose expression is the union of other parameters' expressions (Observation
  combo-code = code | component-code) has no rows of its own: `Indexer.derived` names the
  parameters whose rows stand for it, and search looks there (see derived_params);
- _id and _lastUpdated are answered from the resource row, so they are not indexed here.
"""

from __future__ import annotations

import importlib
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from .fhirpath import CompiledPath, Eval, FhirPathError, Node, compile_path, element_name
from .registry import profile_json
from .rows import (
    DateRow,
    IndexResult,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    StringRow,
    TokenRow,
    UriRow,
)

NOT_INDEXED = frozenset({"_id", "_lastUpdated"})
MAX_STRING = 512  # longer strings are indexed by their first MAX_STRING characters
UCUM = "http://unitsofmeasure.org"
ISO4217 = "urn:iso:std:iso:4217"
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_INF = math.inf

# app.store.ucum is written separately; without it quantities are indexed uncanonicalised.
_Canonical = Callable[[float, str], "tuple[float, str] | None"]


def _load_ucum() -> _Canonical | None:
    try:
        module = importlib.import_module("app.store.ucum")
    except ModuleNotFoundError as exc:
        if exc.name != "app.store.ucum":
            raise
        return None
    fn: _Canonical | None = getattr(module, "canonical", None)
    return fn


_ucum_canonical = _load_ucum()


# ---------------------------------------------------------------------------------------------
# Value helpers


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Case-fold, strip accents and collapse whitespace (the same as app.store.query.normalize)."""
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_HALF_UNIT = tuple(0.5 * 10.0**-i for i in range(20))


def _day_start(y: int, m: int, d: int = 1) -> float:
    return float((date(y, m, d).toordinal() - _EPOCH_ORDINAL) * 86400)


def date_range(text: str) -> tuple[float, float] | None:
    """[low, high) in epoch seconds UTC implied by a date/dateTime/instant's precision.

    A value without a timezone is taken as UTC."""
    n = len(text)
    try:
        if n == 4:
            y = int(text)
            return _day_start(y, 1), _day_start(y + 1, 1)
        if n == 7 and text[4] == "-":
            y, m = int(text[:4]), int(text[5:7])
            return _day_start(y, m), (_day_start(y + 1, 1) if m == 12 else _day_start(y, m + 1))
        if n == 10 and text[4] == "-" and text[7] == "-":
            low = _day_start(int(text[:4]), int(text[5:7]), int(text[8:10]))
            return low, low + 86400.0
        if n < 16 or text[10] != "T" or text[4] != "-":
            return None
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    low = dt.timestamp()
    if n == 16 or text[16] != ":":  # hh:mm without seconds
        return low, low + 60.0
    if n > 19 and text[19] == ".":
        digits = 0
        while 20 + digits < n and text[20 + digits].isdigit():
            digits += 1
        return low, low + 10.0**-digits
    return low, low + 1.0


def number_range(value: int | float) -> tuple[float, float]:
    """Implicit range of a number from its written precision: 100 -> [99.5, 100.5)."""
    v = float(value)
    if type(value) is int:
        return v - 0.5, v + 0.5
    r = repr(value)
    dot = r.find(".")
    if dot >= 0 and "e" not in r:
        decimals = len(r) - dot - 1
        half = _HALF_UNIT[decimals] if decimals < 20 else 0.0
        return v - half, v + half
    try:
        exponent = Decimal(r).as_tuple().exponent
    except InvalidOperation:
        return v, v
    if not isinstance(exponent, int):  # nan / inf
        return v, v
    half = 0.5 * 10.0**exponent
    return v - half, v + half


_REF_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@lru_cache(maxsize=16384)
def parse_reference(ref: str) -> tuple[str | None, str | None]:
    """(type, id) of a literal reference; (None, None) for urn:, conditional or unparseable ones."""
    if ref.startswith("urn:"):
        return None, None
    m = _REF_RE.search(ref)
    if m is None:
        return None, None
    return m.group(1), m.group(2)


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


# ---------------------------------------------------------------------------------------------
# Emitters: nodes of one parameter -> rows. Signature: (param, nodes, result, grp).


def _dedupe_tail(out: list[Any], start: int) -> None:
    # Unions and repeated codings can yield identical rows; rows of different parameters
    # differ in `param`, so only what one emission appended needs checking.
    if len(out) - start > 1:
        tail = out[start:]
        unique = list(dict.fromkeys(tail))
        if len(unique) != len(tail):
            del out[start:]
            out.extend(unique)


Emitter = Callable[[str, list[Node], IndexResult, "int | None"], None]


def _coding_row(param: str, c: dict[str, Any], grp: int | None) -> TokenRow | None:
    system, code, display = c.get("system"), c.get("code"), c.get("display")
    if code is None and system is None:
        return None
    return TokenRow(param, system, code, normalize(display) if type(display) is str else None, grp)


def _token_dict(param: str, v: dict[str, Any], typ: str | None, out: list[TokenRow], grp: int | None) -> None:
    if typ == "CodeableConcept" or (typ is None and ("coding" in v or ("text" in v and "value" not in v))):
        texts: list[str | None] = []
        for c in v.get("coding", ()):
            if type(c) is dict:
                row = _coding_row(param, c, grp)
                if row is not None:
                    out.append(row)
                    texts.append(row.text)
        text = v.get("text")
        if type(text) is str:
            ntext = normalize(text)
            if ntext not in texts:
                # Text-only concepts, or text that differs from every display, stay findable by :text.
                out.append(TokenRow(param, None, None, ntext, grp))
        return
    value = v.get("value")
    if typ == "Coding" or (typ is None and value is None):
        row = _coding_row(param, v, grp)
        if row is not None:
            out.append(row)
        return
    if type(value) is not str:
        return
    system = v.get("system")
    if typ == "ContactPoint" or (typ is None and (system in _CONTACT_SYSTEMS or "rank" in v)):
        out.append(TokenRow(param, None, value, None, grp))
        return
    if typ not in (None, "Identifier"):
        return
    id_type = v.get("type")
    type_text = id_type.get("text") if type(id_type) is dict else None
    out.append(TokenRow(param, system, value, normalize(type_text) if type(type_text) is str else None, grp))
    if type(id_type) is dict:
        for c in id_type.get("coding", ()):
            if type(c) is dict and type(c.get("code")) is str:
                out.append(TokenRow(param + ":of-type", c.get("system"), f"{c['code']}|{value}", None, grp))


def _emit_token(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.tokens
    start = len(out)
    for v, typ in nodes:
        tv = type(v)
        if tv is dict:
            _token_dict(param, v, typ, out, grp)
        elif tv is str:
            out.append(TokenRow(param, None, v, None, grp))
        elif tv is bool:
            out.append(TokenRow(param, None, "true" if v else "false", None, grp))
        elif tv is int or tv is float:
            out.append(TokenRow(param, None, str(v), None, grp))
    _dedupe_tail(out, start)


_STRING_PARTS = (
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)


def _string_row(param: str, s: str, grp: int | None) -> StringRow:
    if len(s) > MAX_STRING:
        s = s[:MAX_STRING]
    return StringRow(param, normalize(s), s, grp)


def _emit_string(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.strings
    start = len(out)
    for v, _typ in nodes:
        if type(v) is str:
            out.append(_string_row(param, v, grp))
        elif type(v) is dict:
            # HumanName / Address: every part is searchable on its own.
            for key in _STRING_PARTS:
                part = v.get(key)
                if part is None:
                    continue
                if type(part) is str:
                    out.append(_string_row(param, part, grp))
                elif type(part) is list:
                    out.extend(_string_row(param, p, grp) for p in part if type(p) is str)
    _dedupe_tail(out, start)


_NOT_DATES = frozenset({"Age", "Duration", "Quantity", "Range", "Count", "Distance", "string"})


def _date_rows(param: str, v: Any, typ: str | None, out: list[DateRow], grp: int | None) -> None:
    if typ in _NOT_DATES:
        return
    if type(v) is str:
        r = date_range(v)
        if r is not None:
            out.append(DateRow(param, r[0], r[1], grp))
        return
    if type(v) is not dict:
        return
    if typ == "Timing" or (typ is None and ("event" in v or "repeat" in v)):
        for e in v.get("event", ()):
            if type(e) is str:
                _date_rows(param, e, None, out, grp)
        repeat = v.get("repeat")
        if type(repeat) is dict and type(repeat.get("boundsPeriod")) is dict:
            _date_rows(param, repeat["boundsPeriod"], "Period", out, grp)
        return
    if typ == "Period" or (typ is None and ("start" in v or "end" in v)):
        start, end = v.get("start"), v.get("end")
        s = date_range(start) if type(start) is str else None
        e = date_range(end) if type(end) is str else None
        if s is None and e is None:
            return
        out.append(DateRow(param, s[0] if s is not None else -_INF, e[1] if e is not None else _INF, grp))


def _emit_date(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.dates
    start = len(out)
    for v, typ in nodes:
        _date_rows(param, v, typ, out, grp)
    _dedupe_tail(out, start)


def _emit_number(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.numbers
    start = len(out)
    for v, _typ in nodes:
        if _is_number(v):
            low, high = number_range(v)
            out.append(NumberRow(param, float(v), low, high, grp))
        elif type(v) is str:
            # decimals kept as strings by some producers
            try:
                num = float(v)
            except ValueError:
                continue
            low, high = number_range(int(v) if v.lstrip("-").isdigit() else num)
            out.append(NumberRow(param, num, low, high, grp))
    _dedupe_tail(out, start)


def _canonical(value: float, system: str | None, code: str | None) -> tuple[float | None, str | None]:
    if _ucum_canonical is None or system != UCUM or not code:
        return None, None
    c = _ucum_canonical(value, code)
    return (None, None) if c is None else c


def _quantity_row(param: str, q: dict[str, Any], grp: int | None) -> QuantityRow | None:
    value = q.get("value")
    if type(value) is not int and type(value) is not float:
        return None
    system: str | None
    code: str | None
    if "currency" in q:  # Money
        system, code = ISO4217, q.get("currency")
    else:
        system, code = q.get("system"), q.get("code") or q.get("unit")
    low, high = number_range(value)
    cvalue, ccode = _canonical(float(value), system, q.get("code"))
    return QuantityRow(param, float(value), low, high, system, code, cvalue, ccode, grp)


def _range_row(param: str, v: dict[str, Any], grp: int | None) -> QuantityRow | None:
    # A Range on a quantity parameter is one row spanning [low.value, high.value].
    lo, hi = v.get("low"), v.get("high")
    lo = lo if type(lo) is dict and _is_number(lo.get("value")) else None
    hi = hi if type(hi) is dict and _is_number(hi.get("value")) else None
    ref = lo if lo is not None else hi
    if ref is None:
        return None
    value = float(ref["value"])
    system, code = ref.get("system"), ref.get("code") or ref.get("unit")
    cvalue, ccode = _canonical(value, system, ref.get("code"))
    low = float(lo["value"]) if lo is not None else -_INF
    high = float(hi["value"]) if hi is not None else _INF
    return QuantityRow(param, value, low, high, system, code, cvalue, ccode, grp)


def _emit_quantity(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.quantities
    start = len(out)
    for v, typ in nodes:
        if type(v) is not dict:
            if _is_number(v):
                low, high = number_range(v)
                out.append(QuantityRow(param, float(v), low, high, None, None, None, None, grp))
            continue
        if typ == "Range" or (typ is None and "value" not in v and ("low" in v or "high" in v)):
            row = _range_row(param, v, grp)
            if row is not None:
                out.append(row)
            continue
        row = _quantity_row(param, v, grp)
        if row is not None:
            out.append(row)
    _dedupe_tail(out, start)


def _emit_reference(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.references
    start = len(out)
    token_start = len(res.tokens)
    for v, _typ in nodes:
        if type(v) is str:  # canonical / uri on a reference parameter
            out.append(ReferenceRow(param, None, None, v, grp))
            continue
        if type(v) is not dict:
            continue
        ref = v.get("reference")
        if type(ref) is str:
            if not ref.startswith("#"):  # contained resources are not separately searchable
                rtype, rid = parse_reference(ref)
                out.append(ReferenceRow(param, rtype, rid, ref, grp))
        elif "resourceType" in v:
            # An inline resource (Bundle.entry[0].resource): index it as a reference to itself.
            rid = v.get("id")
            if type(rid) is str:
                out.append(ReferenceRow(param, v["resourceType"], rid, f"{v['resourceType']}/{rid}", grp))
        ident = v.get("identifier")
        if type(ident) is dict and type(ident.get("value")) is str:
            res.tokens.append(TokenRow(param + ":identifier", ident.get("system"), ident["value"], None, grp))
    _dedupe_tail(out, start)
    _dedupe_tail(res.tokens, token_start)


def _emit_uri(param: str, nodes: list[Node], res: IndexResult, grp: int | None) -> None:
    out = res.uris
    start = len(out)
    for v, _typ in nodes:
        if type(v) is str:
            out.append(UriRow(param, v, grp))
    _dedupe_tail(out, start)


EMITTERS: dict[str, Emitter] = {
    "token": _emit_token,
    "string": _emit_string,
    "date": _emit_date,
    "number": _emit_number,
    "quantity": _emit_quantity,
    "reference": _emit_reference,
    "uri": _emit_uri,
}


# ---------------------------------------------------------------------------------------------
# Plans: per resource type, what to evaluate and how to turn it into rows


@dataclass(frozen=True, slots=True)
class ComponentPlan:
    param: str  # "<composite>$<i>"
    emit: Emitter
    fn: Eval


@dataclass(frozen=True, slots=True)
class ParamPlan:
    code: str
    type: str
    expression: str
    fn: Eval
    emit: Emitter | None  # None: composite
    components: tuple[ComponentPlan, ...]
    roots: frozenset[str] | None = None  # top-level elements it reads (None: unknown, always run)


@dataclass(frozen=True, slots=True)
class TypePlan:
    resource_type: str
    params: tuple[ParamPlan, ...]
    compartment_params: frozenset[str]


def _compile(expr: str, where: str, context_type: str | None) -> CompiledPath:
    try:
        return compile_path(expr, context_type)
    except FhirPathError as exc:
        raise FhirPathError(f"search parameter {where}: {exc}") from None


def _param_plan(rtype: str, code: str, p: dict[str, Any]) -> ParamPlan | None:
    ptype = p.get("type")
    expr = p.get("expression")
    if not expr or ptype == "special" or code in NOT_INDEXED:
        return None
    where = f"{rtype}.{code}"
    compiled = _compile(expr, where, rtype)
    fn, root_names = compiled.fn, compiled.roots
    if ptype == "composite":
        comps = []
        for i, c in enumerate(p.get("components", ())):
            emit = EMITTERS.get(c["type"])
            if emit is None:
                raise FhirPathError(f"search parameter {where}: component type {c['type']!r} not indexable")
            comps.append(ComponentPlan(f"{code}${i}", emit, _compile(c["expression"], where, None).fn))
        if not comps:
            raise FhirPathError(f"search parameter {where}: composite without components")
        return ParamPlan(code, ptype, expr, fn, None, tuple(comps), root_names)
    emit = EMITTERS.get(str(ptype))
    if emit is None:
        raise FhirPathError(f"search parameter {where}: type {ptype!r} not indexable")
    return ParamPlan(code, str(ptype), expr, fn, emit, (), root_names)


def _implicit_systems(definitions: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(type, param) -> code system for token parameters on `code` elements bound to a value set
    drawn from one code system (Patient.gender -> administrative-gender), so that
    `gender=http://hl7.org/fhir/administrative-gender|male` matches as it does on other servers."""
    elements = profile_json("elements.json")
    valuesets = profile_json("valuesets.json")
    out: dict[tuple[str, str], str] = {}
    for rtype, table in definitions["params"].items():
        for code, p in table.items():
            if p.get("type") != "token" or not p.get("expression"):
                continue
            systems: set[str | None] = set()
            for alt in str(p["expression"]).split(" | "):
                parts = alt.strip().split(".")
                node = elements.get(parts[0], {})
                for name in parts[1:]:
                    node = node.get("elements", {}).get(name) if isinstance(node, dict) else None
                    if node is None:
                        break
                if not node or node.get("types") != ["code"] or "binding" not in node:
                    systems.add(None)
                    continue
                codes = valuesets.get(node["binding"], {}).get("codes", {})
                systems.add(next(iter(codes)) if len(codes) == 1 else None)
            if len(systems) == 1 and None not in systems:
                out[(rtype, code)] = str(systems.pop())
    return out


def _alternatives(expr: str) -> frozenset[str]:
    """The top-level `|` alternatives of a FHIRPath expression, each without enclosing parentheses."""
    out: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(expr):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(expr[start:i])
            start = i + 1
    out.append(expr[start:])
    alts = set()
    for a in out:
        a = a.strip()
        while a.startswith("(") and a.endswith(")") and _balanced(a[1:-1]):
            a = a[1:-1].strip()
        alts.add(a)
    return frozenset(alts)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


# Parameter types whose rows depend only on the nodes the expression selects, so that a union of
# expressions gives the union of rows (reference rows also depend on the parameter's targets).
_DERIVABLE = frozenset({"token", "quantity", "composite"})


def derived_params(definitions: dict[str, Any], implicit: dict[tuple[str, str], str]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(type, param) -> the parameters of that type whose index rows are together exactly the
    rows the parameter would have: its expression is the union of theirs (compared as sets of
    top-level alternatives), of the same type, with the same implicit code system; a composite
    also needs the same components (types and relative expressions) on a union of base
    expressions. Composite rows can be pooled because grp numbers are unique in a resource.
    Such a parameter is not indexed; search reads its sources instead (fewer rows to write:
    Observation combo-code, combo-value-quantity, combo-code-value-quantity)."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for rtype, table in definitions["params"].items():
        if rtype == "Resource":
            continue
        shapes: dict[str, tuple[str, frozenset[str], tuple[tuple[str, str], ...], str | None]] = {}
        for code, p in table.items():
            if p.get("type") in _DERIVABLE and p.get("expression") and code not in NOT_INDEXED:
                comps = tuple((c["type"], c["expression"].strip()) for c in p.get("components", ()))
                shapes[code] = (p["type"], _alternatives(p["expression"]), comps, implicit.get((rtype, code)))
        for code, (ptype, alts, comps, system) in shapes.items():
            if len(alts) < 2:
                continue
            sources = sorted(q for q, (qt, qa, qc, qs) in shapes.items()
                             if q != code and qt == ptype and qc == comps and qs == system and qa < alts)
            if sources and frozenset().union(*(shapes[q][1] for q in sources)) == alts:
                out[(rtype, code)] = tuple(sources)
    # A source that is itself derived stands for its own sources.
    def expand(key: tuple[str, str]) -> tuple[str, ...]:
        got: set[str] = set()
        for q in out[key]:
            got.update(expand((key[0], q)) if (key[0], q) in out else (q,))
        return tuple(sorted(got))

    return {key: expand(key) for key in out}


class Indexer:
    """Compiled plans for every resource type of a search parameter definition set."""

    def __init__(self, definitions: dict[str, Any], compartment: dict[str, list[str]], *, prefilter: bool = True,
                 derive: bool = True) -> None:
        self.prefilter = prefilter  # skip parameters whose root elements are absent (off: evaluate all)
        self.implicit = _implicit_systems(definitions)
        self.derived = derived_params(definitions, self.implicit) if derive else {}
        params: dict[str, dict[str, Any]] = definitions["params"]
        self.compiled = 0  # expressions compiled (components counted separately)
        self.skipped: list[str] = []  # "Type.code" not indexed: special, no expression, _id...
        tables: dict[str, list[ParamPlan]] = {}
        for rtype, table in params.items():
            plans = tables.setdefault(rtype, [])
            for code, p in table.items():
                plan = _param_plan(rtype, code, p)
                if plan is None:
                    self.skipped.append(f"{rtype}.{code}")
                else:
                    self.compiled += 1 + len(plan.components)
                    if (rtype, code) not in self.derived:  # compiled all the same: the check stays
                        plans.append(plan)
        self.common = tuple(tables.pop("Resource", ()))
        self.plans: dict[str, TypePlan] = {
            rtype: TypePlan(rtype, (*self.common, *own), frozenset(compartment.get(rtype, ())))
            for rtype, own in tables.items()
        }
        self._fallback = TypePlan("Resource", self.common, frozenset())

    def plan(self, rtype: str) -> TypePlan:
        return self.plans.get(rtype, self._fallback)

    def index(self, resource: dict[str, Any]) -> IndexResult:
        rtype = resource.get("resourceType")
        tp = self.plans.get(rtype, self._fallback) if type(rtype) is str else self._fallback
        res = IndexResult()
        focus = [Node(resource, rtype)]
        grp = 0
        # Most parameters of a type read elements a given resource does not have: skip those
        # without evaluating them.
        present: set[str] | None = None
        if self.prefilter:
            present = set(resource)
            present.update(map(element_name, resource))
        for p in tp.params:
            if present is not None and p.roots is not None and p.roots.isdisjoint(present):
                continue
            nodes = p.fn(focus, resource)
            if not nodes:
                continue
            if p.emit is not None:
                start = len(res.tokens)
                p.emit(p.code, nodes, res, None)
                system = self.implicit.get((tp.resource_type, p.code))
                if system is not None:
                    toks = res.tokens
                    for i in range(start, len(toks)):
                        t = toks[i]
                        if t.system is None and t.param == p.code:
                            toks[i] = TokenRow(t.param, system, t.code, t.text, t.grp)
                continue
            comps = p.components
            for node in nodes:
                element = [node]
                # Rows only for elements that have every component: a composite search
                # joins all of them, so a partial element could never match. Last
                # component first, as it (the value) is the one most often absent.
                subs: list[list[Node]] = []
                for c in reversed(comps):
                    sub = c.fn(element, resource)
                    if not sub:
                        break
                    subs.append(sub)
                else:
                    for c, sub in zip(reversed(comps), subs, strict=True):
                        c.emit(c.param, sub, res, grp)
                    grp += 1
        if rtype == "Patient" and type(resource.get("id")) is str:
            res.compartments.add(resource["id"])
        if tp.compartment_params:
            cp = tp.compartment_params
            for r in res.references:
                if r.target_type == "Patient" and r.target_id is not None and r.param in cp:
                    res.compartments.add(r.target_id)
        return res


def load_indexer() -> Indexer:
    """Build an Indexer from the shipped definitions (FileNotFoundError names a missing one)."""
    return Indexer(profile_json("search_parameters.json"), profile_json("compartment_patient.json"))


INDEXER = load_indexer()


def index_resource(resource: dict[str, Any]) -> IndexResult:
    """Index rows and patient compartments of one resource (pure: no I/O, no store)."""
    return INDEXER.index(resource)
