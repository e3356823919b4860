"""A compiler for the FHIRPath subset that FHIR R4 SearchParameter expressions use.

An expression is parsed once into a small tree and then turned into nested Python closures
that walk the resource's JSON dictionaries directly, so evaluating a search parameter on a
resource costs a few dictionary lookups rather than an interpreter pass. The indexer compiles
every R4 expression at import time; anything outside the subset raises FhirPathError there,
naming the expression, instead of silently losing a search parameter.

Semantics follow FHIRPath N1 where the search expressions depend on them:
- a collection is a list of Node(value, type); JSON arrays flatten into separate nodes;
- choice elements (`value[x]`) are found from their JSON name (`valueQuantity`), and that
  suffix is the only place a FHIR type is known without the StructureDefinitions;
- `resolve()` cannot fetch anything in a pure module: it yields a placeholder whose type is
  read from the reference string ("Patient/1", "https://x/fhir/Patient/1", "Patient?identifier=",
  "#contained"), which is all `resolve() is Patient` needs; urn: references stay undecided.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple


class FhirPathError(ValueError):
    """The expression is outside the supported subset (raised at compile time)."""


class Node(NamedTuple):
    value: Any  # dict (complex type or resource), str, int, float or bool
    type: str | None  # FHIR type name when known (choice suffix, resolve(), ofType), else None


# Evaluates a compiled sub-expression: (focus collection, root resource for %resource) -> result.
Eval = Callable[[list[Node], Any], list[Node]]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Element names that are a choice ([x]) somewhere in R4 (from the R4 StructureDefinitions).
# A name here is looked up as `name` first (it is a plain element in other types, e.g.
# Identifier.value) and then by scanning for `name<Type>` keys.
CHOICE_NAMES = _words(
    "abatement additive age allowed amount answer asNeeded author born bounds characteristic "
    "chargeItem code collected content created date deceased defaultValue definingSubstance "
    "definition detail diagnosis dose doseNumber due duration effective entity event example "
    "fastingStatus fixed identified indication instances item legallyBinding location manufacturer "
    "maxValue medication minValue minimumVolume module multipleBirth name occurred occurrence offset "
    "onset participantEffective pattern performed probability procedure product quantity rate "
    "reported scheduled seriesDoses serviced source start statusReason studyEffective subject "
    "substance target time timing topic used value when"
)

PRIMITIVE_TYPES = _words(
    "base64Binary boolean canonical code date dateTime decimal id instant integer markdown oid "
    "positiveInt string time unsignedInt uri url uuid xhtml"
)
_COMPLEX_TYPES = _words(
    "Address Age Annotation Attachment CodeableConcept Coding ContactDetail ContactPoint Contributor "
    "Count DataRequirement Distance Dosage Duration Expression Extension HumanName Identifier Meta "
    "Money ParameterDefinition Period Quantity Range Ratio Reference RelatedArtifact SampledData "
    "Signature Timing TriggerDefinition UsageContext"
)
_STRING_TYPES = frozenset(PRIMITIVE_TYPES - {"boolean", "decimal", "integer", "positiveInt", "unsignedInt"})
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})

# JSON key suffix of a choice element -> FHIR type name ("DateTime" -> "dateTime").
_SUFFIX_TYPES: dict[str, str] = {t[0].upper() + t[1:]: t for t in PRIMITIVE_TYPES}
_SUFFIX_TYPES.update({t: t for t in _COMPLEX_TYPES})

# Specialisations that FHIRPath type tests accept for their base type.
_SUBTYPES: dict[str, tuple[str, ...]] = {
    "Quantity": ("Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"),
    "string": ("code", "id", "markdown"),
    "uri": ("url", "canonical", "oid", "uuid"),
    "integer": ("positiveInt", "unsignedInt"),
}

_ENV_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


def normalize_type(name: str) -> str:
    """FHIR type name from a type specifier: drops `FHIR.`/`System.`, `DateTime` -> `dateTime`."""
    if "." in name:
        name = name.rsplit(".", 1)[1]
    lowered = name[0].lower() + name[1:]
    if lowered in PRIMITIVE_TYPES:
        return lowered
    return name


def _type_matches(node: Node, wanted: str) -> bool:
    t = node.type
    if t is None:
        v = node.value
        # Without a known type, judge by the JSON shape (lenient where JSON cannot tell).
        if type(v) is dict:
            rt = v.get("resourceType")
            if rt is not None:
                return rt == wanted or wanted in ("Resource", "DomainResource")
            return wanted not in PRIMITIVE_TYPES
        if type(v) is str:
            return wanted in _STRING_TYPES
        if type(v) is bool:
            return wanted == "boolean"
        if type(v) is int:
            return wanted in _INTEGER_TYPES or wanted == "decimal"
        if type(v) is float:
            return wanted == "decimal"
        return False
    if t == wanted:
        return True
    if wanted in ("Resource", "DomainResource"):
        return t[0].isupper() and type(node.value) is dict and "resourceType" in node.value
    return t in _SUBTYPES.get(wanted, ())


# ---------------------------------------------------------------------------------------------
# Tokenizer and parser

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<bq>`(?:[^`\\]|\\.)*`)
  | (?P<date>@[0-9][0-9T:\-+.Z]*)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<ext>%(?:[A-Za-z_][A-Za-z0-9_\-]*|'(?:[^'\\]|\\.)*'))
  | (?P<var>\$[A-Za-z]+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>!=|!~|<=|>=|[=~<>|.()\[\],+\-*/&{}])
    """,
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 6 <= len(body):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise FhirPathError(f"unexpected character {expr[pos]!r} at {pos}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    type: str | None


@dataclass(frozen=True, slots=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True)
class TypeRoot:  # a leading type name: `Observation` in `Observation.code`
    name: str


@dataclass(frozen=True, slots=True)
class Member:  # base None: a member of the focus (`code` in a composite component)
    base: Ast | None
    name: str


@dataclass(frozen=True, slots=True)
class Call:  # base None: a function of the focus (`exists()` inside where)
    base: Ast | None
    name: str
    args: tuple[Ast, ...]


@dataclass(frozen=True, slots=True)
class Index:
    base: Ast
    index: Ast


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Ast
    right: Ast


@dataclass(frozen=True, slots=True)
class TypeOp:  # `x is T` / `x as T`
    op: str
    operand: Ast
    type_name: str


@dataclass(frozen=True, slots=True)
class Var:  # %resource, $this...
    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Ast


Ast = Literal | Empty | TypeRoot | Member | Call | Index | Binary | TypeOp | Var | Unary

# Binary operators by precedence, loosest first (FHIRPath N1 section 6).
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"implies"}),
    frozenset({"or", "xor"}),
    frozenset({"and"}),
    frozenset({"in", "contains"}),
    frozenset({"=", "~", "!=", "!~"}),
    frozenset({"<", ">", "<=", ">="}),
    frozenset({"|"}),
)
_TYPE_LEVEL = len(_LEVELS)
_ARITH_LEVELS: tuple[frozenset[str], ...] = (frozenset({"+", "-", "&"}), frozenset({"*", "/", "div", "mod"}))


class _Parser:
    def __init__(self, expr: str) -> None:
        self.tokens = _tokenize(expr)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FhirPathError("unexpected end of expression")
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok[1] != text:
            raise FhirPathError(f"expected {text!r}, got {tok[1]!r}")

    def at_op(self, ops: frozenset[str]) -> str | None:
        tok = self.peek()
        if tok is not None and tok[0] in ("op", "id") and tok[1] in ops:
            return tok[1]
        return None

    def parse(self) -> Ast:
        node = self.expression(0)
        extra = self.peek()
        if extra is not None:
            raise FhirPathError(f"unexpected {extra[1]!r}")
        return node

    def expression(self, level: int) -> Ast:
        if level == _TYPE_LEVEL:
            return self.type_expression()
        left = self.expression(level + 1)
        while (op := self.at_op(_LEVELS[level])) is not None:
            self.pos += 1
            left = Binary(op, left, self.expression(level + 1))
        return left

    def type_expression(self) -> Ast:
        left = self.arith(0)
        while (op := self.at_op(frozenset({"is", "as"}))) is not None:
            self.pos += 1
            left = TypeOp(op, left, self.type_specifier())
        return left

    def type_specifier(self) -> str:
        kind, text = self.next()
        if kind not in ("id", "bq"):
            raise FhirPathError(f"expected a type name, got {text!r}")
        name = text if kind == "id" else _unquote(text)
        while (
            self.peek() == ("op", ".")
            and self.pos + 1 < len(self.tokens)
            and self.tokens[self.pos + 1][0] == "id"
        ):
            self.pos += 1
            name += "." + self.next()[1]
        return normalize_type(name)

    def arith(self, level: int) -> Ast:
        if level == len(_ARITH_LEVELS):
            return self.unary()
        left = self.arith(level + 1)
        while (op := self.at_op(_ARITH_LEVELS[level])) is not None:
            self.pos += 1
            left = Binary(op, left, self.arith(level + 1))
        return left

    def unary(self) -> Ast:
        op = self.at_op(frozenset({"+", "-"}))
        if op is not None:
            self.pos += 1
            return Unary(op, self.unary())
        return self.postfix()

    def postfix(self) -> Ast:
        node = self.term()
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.pos += 1
                kind, name = self.next()
                if kind == "bq":
                    name = _unquote(name)
                elif kind != "id":
                    raise FhirPathError(f"expected a name after '.', got {name!r}")
                if self.peek() == ("op", "("):
                    node = Call(node, name, self.arguments(name))
                else:
                    node = Member(node, name)
            elif tok == ("op", "["):
                self.pos += 1
                index = self.expression(0)
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def arguments(self, name: str) -> tuple[Ast, ...]:
        self.expect("(")
        args: list[Ast] = []
        if self.peek() == ("op", ")"):
            self.pos += 1
            return ()
        while True:
            if name in ("ofType", "as", "is"):
                args.append(TypeRoot(self.type_specifier()))
            else:
                args.append(self.expression(0))
            _, text = self.next()
            if text == ")":
                return tuple(args)
            if text != ",":
                raise FhirPathError(f"expected ',' or ')', got {text!r}")

    def term(self) -> Ast:
        kind, text = self.next()
        if kind == "op":
            if text == "(":
                inner = self.expression(0)
                self.expect(")")
                return inner
            if text == "{":
                self.expect("}")
                return Empty()
            raise FhirPathError(f"unexpected {text!r}")
        if kind == "str":
            return Literal(_unquote(text), "string")
        if kind == "num":
            return Literal(float(text) if "." in text else int(text), "decimal" if "." in text else "integer")
        if kind == "date":
            return Literal(text[1:], "dateTime" if "T" in text else "date")
        if kind == "ext":
            name = text[1:]
            return Var("%" + (_unquote(name) if name.startswith("'") else name))
        if kind == "var":
            return Var(text)
        name = text if kind == "id" else _unquote(text)
        if kind == "id" and name in ("true", "false"):
            return Literal(name == "true", "boolean")
        if self.peek() == ("op", "("):
            return Call(None, name, self.arguments(name))
        # A leading capitalised name is a type (FHIRPath: the context's type name); R4
        # element names are all lowerCamelCase.
        if name[0].isupper():
            return TypeRoot(name)
        return Member(None, name)


def parse(expr: str) -> Ast:
    """Parse `expr` into a tree; FhirPathError names the expression on failure."""
    try:
        return _Parser(expr).parse()
    except FhirPathError as exc:
        raise FhirPathError(f"cannot parse FHIRPath {expr!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Compiler: tree -> closures


def _identity(focus: list[Node], root: Any) -> list[Node]:
    return focus


def _add(out: list[Node], x: Any, typ: str | None) -> None:
    if type(x) is list:
        for item in x:
            out.append(Node(item, typ))
    else:
        out.append(Node(x, typ))


# Per choice name, every JSON key it can take ("valueQuantity" -> "Quantity").
_CHOICE_KEYS: dict[str, dict[str, str]] = {
    name: {name + suffix: typ for suffix, typ in _SUFFIX_TYPES.items()} for name in CHOICE_NAMES
}


def _scan_choice(v: dict[str, Any], name: str, out: list[Node]) -> None:
    keys = _CHOICE_KEYS[name]
    # The key-view intersection runs in C; a JSON object holds one key of a choice, rarely more.
    found = v.keys() & keys.keys()
    if found:
        for key in v if len(found) > 1 else found:  # JSON order when several
            if key in found:
                _add(out, v[key], keys[key])


def _step_values(values: list[Any], name: str, choice: bool) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if type(v) is dict:
            x = v.get(name)
            if x is not None:
                if type(x) is list:
                    out.extend(x)
                else:
                    out.append(x)
            elif choice:
                found = v.keys() & _CHOICE_KEYS[name].keys()
                if found:
                    for key in v if len(found) > 1 else found:
                        if key in found:
                            y = v[key]
                            if type(y) is list:
                                out.extend(y)
                            else:
                                out.append(y)
    return out


def _member_chain(base: Eval | None, names: tuple[str, ...]) -> Eval:
    """`base.a.b.c` as one closure: raw values in between, Nodes only for the last step.

    base None: the chain starts at the focus (a relative path, or a leading type filter that
    the context type already settled)."""
    inner = tuple((n, n in CHOICE_NAMES) for n in names[:-1])
    last = names[-1]
    last_choice = last in CHOICE_NAMES

    def chain(focus: list[Node], root: Any) -> list[Node]:
        start = focus if base is None else base(focus, root)
        values = [n[0] for n in start]
        for name, choice in inner:
            if not values:
                return []
            values = _step_values(values, name, choice)
        out: list[Node] = []
        for v in values:
            if type(v) is dict:
                x = v.get(last)
                if x is not None:
                    if type(x) is list:
                        for item in x:
                            out.append(Node(item, None))
                    else:
                        out.append(Node(x, None))
                elif last_choice:
                    _scan_choice(v, last, out)
        return out

    return chain


def _choice_of_type(base: Eval, name: str, wanted: str) -> Eval:
    """`name.ofType(T)` / `name as T`: look up `nameT` (and its subtypes) directly."""
    keys = tuple(
        (name + t[0].upper() + t[1:], t)
        for t in (wanted, *_SUBTYPES.get(wanted, ()))
        if t[0].upper() + t[1:] in _SUFFIX_TYPES
    )

    def choice(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            v = node[0]
            if type(v) is dict:
                for key, typ in keys:
                    x = v.get(key)
                    if x is not None:
                        _add(out, x, typ)
                plain = v.get(name)
                if plain is not None:
                    tmp: list[Node] = []
                    _add(tmp, plain, None)
                    out.extend(n for n in tmp if _type_matches(n, wanted))
        return out

    return choice


def _of_type(base: Eval, wanted: str) -> Eval:
    def of_type(focus: list[Node], root: Any) -> list[Node]:
        return [n for n in base(focus, root) if _type_matches(n, wanted)]

    return of_type


def _is_type(base: Eval, wanted: str) -> Eval:
    def is_type(focus: list[Node], root: Any) -> list[Node]:
        nodes = base(focus, root)
        if len(nodes) != 1:
            return []
        return [Node(_type_matches(nodes[0], wanted), "boolean")]

    return is_type


_REF_TYPE_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")
_CONDITIONAL_RE = re.compile(r"^([A-Z][A-Za-z]+)\?")


def reference_type(ref: str, root: Any = None) -> str | None:
    """Resource type a reference string points at, or None when the string cannot tell."""
    if ref.startswith("#"):
        if type(root) is dict:
            for c in root.get("contained", ()):
                if type(c) is dict and c.get("id") == ref[1:]:
                    rt = c.get("resourceType")
                    return rt if type(rt) is str else None
        return None
    return _literal_reference_type(ref)


@lru_cache(maxsize=16384)
def _literal_reference_type(ref: str) -> str | None:
    # Cached: the same subject/encounter references recur across a patient's resources.
    if ref.startswith("urn:"):
        return None
    m = _REF_TYPE_RE.search(ref)
    if m is not None:
        return m.group(1)
    m = _CONDITIONAL_RE.match(ref)
    return m.group(1) if m is not None else None


def _resolve(base: Eval) -> Eval:
    def resolve(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            v = node[0]
            ref = v.get("reference") if type(v) is dict else v
            if type(ref) is str:
                rt = reference_type(ref, root)
                if rt is not None:
                    # Stands in for the target: only its type is known without a store.
                    out.append(Node({"resourceType": rt}, rt))
        return out

    return resolve


def _where_resolves_to(base: Eval, wanted: str) -> Eval:
    """`where(resolve() is T)`, the commonest R4 filter, without building placeholders."""

    def where_resolves(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            v = node[0]
            ref = v.get("reference") if type(v) is dict else v
            if type(ref) is str:
                rt = reference_type(ref, root)
                if rt is not None and (rt == wanted or wanted in ("Resource", "DomainResource")):
                    out.append(node)
        return out

    return where_resolves


def _truth(nodes: list[Node]) -> bool | None:
    """FHIRPath singleton evaluation as a boolean: empty -> None, non-boolean singleton -> True."""
    if not nodes:
        return None
    if len(nodes) == 1:
        v = nodes[0][0]
        return v if type(v) is bool else True
    return True


def _where(base: Eval, crit: Eval) -> Eval:
    def where(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            r = crit([node], root)
            if r and _truth(r) is True:
                out.append(node)
        return out

    return where


def _select(base: Eval, proj: Eval) -> Eval:
    def select(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            out.extend(proj([node], root))
        return out

    return select


def _extension(base: Eval, url: str) -> Eval:
    def extension(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for node in base(focus, root):
            v = node[0]
            if type(v) is dict:
                for e in v.get("extension", ()):
                    if type(e) is dict and e.get("url") == url:
                        out.append(Node(e, "Extension"))
        return out

    return extension


def _has_extension(base: Eval, url: str) -> Eval:
    ext = _extension(base, url)

    def has_extension(focus: list[Node], root: Any) -> list[Node]:
        return [Node(bool(ext(focus, root)), "boolean")]

    return has_extension


def _bool(value: bool | None) -> list[Node]:
    return [] if value is None else [Node(value, "boolean")]


def _values_equal(a: Any, b: Any, equivalent: bool) -> bool:
    # bool is an int subclass in Python but a distinct type in FHIRPath.
    if (type(a) is bool) != (type(b) is bool):
        return False
    if equivalent and type(a) is str and type(b) is str:
        return " ".join(a.casefold().split()) == " ".join(b.casefold().split())
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _equality(op: str, left: Eval, right: Eval) -> Eval:
    negate = op in ("!=", "!~")
    equivalent = op in ("~", "!~")

    def equality(focus: list[Node], root: Any) -> list[Node]:
        a = left(focus, root)
        b = right(focus, root)
        if not a or not b:
            if equivalent:
                return [Node((not a and not b) != negate, "boolean")]
            return []
        same = len(a) == len(b) and all(
            _values_equal(x[0], y[0], equivalent) for x, y in zip(a, b, strict=True)
        )
        return [Node(same != negate, "boolean")]

    return equality


def _comparison(op: str, left: Eval, right: Eval) -> Eval:
    def comparison(focus: list[Node], root: Any) -> list[Node]:
        a = left(focus, root)
        b = right(focus, root)
        if len(a) != 1 or len(b) != 1:
            return []
        x, y = a[0][0], b[0][0]
        numeric = type(x) in (int, float) and type(y) in (int, float)
        if not numeric and not (type(x) is str and type(y) is str):
            return []
        if op == "<":
            return [Node(x < y, "boolean")]
        if op == ">":
            return [Node(x > y, "boolean")]
        if op == "<=":
            return [Node(x <= y, "boolean")]
        return [Node(x >= y, "boolean")]

    return comparison


def _logic(op: str, left: Eval, right: Eval) -> Eval:
    def logic(focus: list[Node], root: Any) -> list[Node]:
        a = _truth(left(focus, root))
        if op == "and":
            if a is False:
                return _bool(False)
            b = _truth(right(focus, root))
            if b is False:
                return _bool(False)
            return _bool(True if a is True and b is True else None)
        if op == "or":
            if a is True:
                return _bool(True)
            b = _truth(right(focus, root))
            if b is True:
                return _bool(True)
            return _bool(False if a is False and b is False else None)
        b = _truth(right(focus, root))
        if op == "xor":
            return _bool(None if a is None or b is None else a != b)
        # implies
        if a is False:
            return _bool(True)
        if a is True:
            return _bool(b)
        return _bool(True if b is True else None)

    return logic


def _union(left: Eval, right: Eval) -> Eval:
    def union(focus: list[Node], root: Any) -> list[Node]:
        a = left(focus, root)
        b = right(focus, root)
        if not a:
            return b
        if not b:
            return a
        # FHIRPath union drops duplicates; complex values compare by identity here, which is
        # what `X.a | X.a` style overlaps produce.
        out: list[Node] = []
        seen: set[Any] = set()
        for n in (*a, *b):
            v = n[0]
            key = id(v) if type(v) in (dict, list) else (type(v), v)
            if key not in seen:
                seen.add(key)
                out.append(n)
        return out

    return union


def _pipe(base: Eval, fn: Callable[[list[Node]], list[Node]]) -> Eval:
    def piped(focus: list[Node], root: Any) -> list[Node]:
        return fn(base(focus, root))

    return piped


def _literal_arg(call: Call, expr_type: type) -> Any:
    if (
        len(call.args) != 1
        or not isinstance(call.args[0], Literal)
        or not isinstance(call.args[0].value, expr_type)
    ):
        raise FhirPathError(f"{call.name}() needs one {expr_type.__name__} literal argument")
    return call.args[0].value


def _type_arg(call: Call) -> str:
    if len(call.args) != 1 or not isinstance(call.args[0], TypeRoot):
        raise FhirPathError(f"{call.name}() needs one type argument")
    return call.args[0].name


def _compile_call(node: Call, ctx: str | None) -> Eval:
    name = node.name
    base = _identity if node.base is None else _compile(node.base, ctx)
    if name in ("ofType", "as"):
        wanted = _type_arg(node)
        if isinstance(node.base, Member) and node.base.name in CHOICE_NAMES:
            return _choice_of_type(_member_base(node.base, ctx), node.base.name, wanted)
        return _of_type(base, wanted)
    if name == "is":
        return _is_type(base, _type_arg(node))
    if name == "where":
        if len(node.args) != 1:
            raise FhirPathError("where() needs one argument")
        arg = node.args[0]
        if (
            isinstance(arg, TypeOp)
            and arg.op == "is"
            and isinstance(arg.operand, Call)
            and arg.operand.name == "resolve"
            and arg.operand.base is None
            and not arg.operand.args
        ):
            return _where_resolves_to(base, arg.type_name)
        return _where(base, _compile(arg, None))
    if name == "select":
        if len(node.args) != 1:
            raise FhirPathError("select() needs one argument")
        return _select(base, _compile(node.args[0], None))
    if name == "exists":
        if len(node.args) > 1:
            raise FhirPathError("exists() takes at most one argument")
        inner = _where(base, _compile(node.args[0], None)) if node.args else base
        return _pipe(inner, lambda nodes: [Node(bool(nodes), "boolean")])
    if name == "resolve":
        return _resolve(base)
    if name == "extension":
        return _extension(base, _literal_arg(node, str))
    if name == "hasExtension":
        return _has_extension(base, _literal_arg(node, str))
    if node.args and name not in ("iif",):
        raise FhirPathError(f"{name}() takes no arguments")
    simple: dict[str, Callable[[list[Node]], list[Node]]] = {
        "empty": lambda nodes: [Node(not nodes, "boolean")],
        "not": lambda nodes: _bool(None if (t := _truth(nodes)) is None else not t),
        "first": lambda nodes: nodes[:1],
        "last": lambda nodes: nodes[-1:],
        "tail": lambda nodes: nodes[1:],
        "single": lambda nodes: nodes if len(nodes) == 1 else [],
        "count": lambda nodes: [Node(len(nodes), "integer")],
        "hasValue": lambda nodes: [
            Node(len(nodes) == 1 and type(nodes[0][0]) in (str, int, float, bool), "boolean")
        ],
    }
    fn = simple.get(name)
    if fn is None:
        raise FhirPathError(f"unsupported function {name}()")
    return _pipe(base, fn)


def _member_base(node: Member, ctx: str | None) -> Eval:
    return _identity if node.base is None else _compile(node.base, ctx)


def _type_root(name: str) -> Eval:
    any_resource = name in ("Resource", "DomainResource")

    def type_root(focus: list[Node], root: Any) -> list[Node]:
        out: list[Node] = []
        for n in focus:
            v = n[0]
            if type(v) is dict and (v.get("resourceType") == name or (any_resource and "resourceType" in v)):
                out.append(n)
        # The usual case (the resource itself matches) hands back the same list.
        return focus if len(out) == len(focus) else out

    return type_root


def _compile(node: Ast, ctx: str | None) -> Eval:
    """`ctx`: the resource type the focus is known to have (top level of an expression the
    caller evaluates on a resource of that type), None inside where()/select() arguments."""
    if isinstance(node, Member):
        names = [node.name]
        start: Ast | None = node.base
        while isinstance(start, Member):
            names.append(start.name)
            start = start.base
        names.reverse()
        if start is None:
            return _member_chain(None, tuple(names))
        base = _compile(start, ctx)
        return _member_chain(None if base is _identity else base, tuple(names))
    if isinstance(node, TypeRoot):
        if ctx is not None:
            # The caller guarantees the focus type: the leading type filter is settled now.
            if node.name in (ctx, "Resource", "DomainResource"):
                return _identity
            return lambda focus, root: []
        return _type_root(node.name)
    if isinstance(node, Call):
        return _compile_call(node, ctx)
    if isinstance(node, TypeOp):
        if node.op == "is":
            return _is_type(_compile(node.operand, ctx), node.type_name)
        if isinstance(node.operand, Member) and node.operand.name in CHOICE_NAMES:
            return _choice_of_type(_member_base(node.operand, ctx), node.operand.name, node.type_name)
        return _of_type(_compile(node.operand, ctx), node.type_name)
    if isinstance(node, Index):
        if not isinstance(node.index, Literal) or type(node.index.value) is not int:
            raise FhirPathError("only integer literal indexers are supported")
        i = node.index.value
        return _pipe(_compile(node.base, ctx), lambda nodes: nodes[i : i + 1])
    if isinstance(node, Literal):
        const = [Node(node.value, node.type)]
        return lambda focus, root: const
    if isinstance(node, Empty):
        return lambda focus, root: []
    if isinstance(node, Var):
        if node.name == "$this":
            return _identity
        if node.name in ("%resource", "%rootResource", "%context"):
            return lambda focus, root: [Node(root, root.get("resourceType") if type(root) is dict else None)]
        constant = _ENV_CONSTANTS.get(node.name[1:])
        if constant is not None:
            const_node = [Node(constant, "string")]
            return lambda focus, root: const_node
        raise FhirPathError(f"unsupported variable {node.name}")
    if isinstance(node, Binary):
        left, right = _compile(node.left, ctx), _compile(node.right, ctx)
        if node.op == "|":
            return _union(left, right)
        if node.op in ("=", "!=", "~", "!~"):
            return _equality(node.op, left, right)
        if node.op in ("<", ">", "<=", ">="):
            return _comparison(node.op, left, right)
        if node.op in ("and", "or", "xor", "implies"):
            return _logic(node.op, left, right)
        raise FhirPathError(f"unsupported operator {node.op!r}")
    raise FhirPathError(f"unsupported expression {type(node).__name__}")


# Functions whose results all come from their input collection: empty in, empty out.
_NAVIGATION_CALLS = frozenset({"where", "resolve", "ofType", "as", "first", "last", "tail", "skip", "take",
                               "single", "distinct", "select", "extension"})


def roots(node: Ast, ctx: str | None) -> frozenset[str] | None:
    """The top-level element names of a `ctx` resource that every result of `node` comes from:
    on a resource that has none of them the expression yields nothing, so it need not run.
    None when that is not known (the resource itself, variables, constants, booleans)."""
    if ctx is None:
        return None
    if isinstance(node, Member):
        if isinstance(node.base, TypeRoot):
            return frozenset((node.name,)) if node.base.name in (ctx, "Resource", "DomainResource") else frozenset()
        return roots(node.base, ctx) if node.base is not None else None
    if isinstance(node, TypeRoot):
        return None if node.name in (ctx, "Resource", "DomainResource") else frozenset()
    if isinstance(node, Call):
        if node.name not in _NAVIGATION_CALLS or node.base is None:
            return None
        if node.name == "extension" and isinstance(node.base, TypeRoot):
            return frozenset(("extension",)) if node.base.name in (ctx, "Resource", "DomainResource") else frozenset()
        return roots(node.base, ctx)
    if isinstance(node, TypeOp):
        return roots(node.operand, ctx) if node.op == "as" else None
    if isinstance(node, Index):
        return roots(node.base, ctx)
    if isinstance(node, Binary) and node.op == "|":
        left, right = roots(node.left, ctx), roots(node.right, ctx)
        return None if left is None or right is None else left | right
    return None


@lru_cache(maxsize=8192)
def element_name(key: str) -> str:
    """The choice element a JSON property may belong to: `effective` for `effectiveDateTime`;
    the key itself when it is no choice name followed by a type (callers keep the key too)."""
    for i in range(1, len(key)):
        if key[i].isupper() and key[:i] in CHOICE_NAMES:
            return key[:i]
    return key


class CompiledPath:
    """A compiled expression; call it with a resource (or any element) to get its nodes."""

    __slots__ = ("expression", "fn", "roots")

    def __init__(self, expression: str, fn: Eval, root_names: frozenset[str] | None = None) -> None:
        self.expression = expression
        self.fn = fn  # the raw closure: fn(focus nodes, root resource)
        self.roots = root_names  # see roots(); None: always evaluate

    def __call__(self, resource: dict[str, Any], root: Any = None) -> list[Node]:
        focus = [Node(resource, resource.get("resourceType"))]
        return self.fn(focus, resource if root is None else root)

    def on(self, focus: list[Node], root: Any) -> list[Node]:
        """Evaluate relative to `focus` (e.g. a composite component on its matched element)."""
        return self.fn(focus, root)

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"


@cache
def compile_path(expr: str, context_type: str | None = None) -> CompiledPath:
    """Compile a FHIRPath expression once; FhirPathError (naming it) if outside the subset.

    With `context_type`, the result may only be called on resources of that type: the
    leading `Type.` filters are then resolved at compile time instead of on every call.
    """
    tree = parse(expr)
    try:
        fn = _compile(tree, context_type)
    except FhirPathError as exc:
        raise FhirPathError(f"cannot compile FHIRPath {expr!r}: {exc}") from None
    return CompiledPath(expr, fn, roots(tree, context_type))
