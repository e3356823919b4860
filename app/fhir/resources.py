"""The validation boundary: nothing that is not valid FHIR R4 JSON gets past validate().

Two layers. A walker over the R4 element definitions (fhir_profiles/elements.json, compiled
once at import) checks what the JSON itself must get right: JSON types of primitives and their
R4 regexes, unknown elements and wrong choice suffixes, cardinality (array or not, required),
required bindings, the `_element` siblings, and nested resources (contained, Bundle.entry) by
their own type. Then the fhir.resources R4B models parse the resource as a second opinion.
The walker runs first because it is cheap and R4-exact; R4B differs from R4 in places, and
there the walker's verdict stands (see _R4B_WALKER_ONLY and _R4B_ONLY_R4_KEYS).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pydantic
from fhir.resources.R4B import fhirtypes as _r4b_types
from fhir.resources.R4B import get_fhir_model_class

from app.errors import InvalidResource, Issue

_PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
_MAX_ISSUES = 50

_ELEMENTS: dict[str, Any] = orjson.loads((_PROFILES / "elements.json").read_bytes())
_VALUESETS: dict[str, Any] = orjson.loads((_PROFILES / "valuesets.json").read_bytes())

RESOURCE_TYPES: frozenset[str] = frozenset(
    name for name, s in _ELEMENTS.items() if s["kind"] == "resource" and not s.get("abstract")
)

# R4 resources whose R4B model is missing or reshaped (R4B rewrote the evidence resources and
# replaced MedicinalProduct*/Substance* with new ones): the walker alone judges these.
_R4B_WALKER_ONLY: frozenset[str] = frozenset({"Evidence", "EvidenceVariable"})
# R4 allows Meta as an open type (Extension.valueMeta, ElementDefinition.fixedMeta, ...);
# R4B dropped it, so R4B's complaints about these keys are not R4 errors.
_R4B_ONLY_R4_KEYS: frozenset[str] = frozenset({"valueMeta", "defaultValueMeta", "fixedMeta", "patternMeta"})


class _TooMany(Exception):
    """Stops the walk once enough issues are collected."""


# ---------------------------------------------------------------- primitives

_INT32 = (-(2**31), 2**31 - 1)


def _regex(name: str) -> re.Pattern[str] | None:
    spec = _ELEMENTS.get(name, {}).get("regex")
    # The spec regexes follow XML Schema/Java semantics: \s and \S are ASCII only.
    return re.compile(spec, re.ASCII) if spec else None


def _string_check(name: str) -> Callable[[Any], str | None]:
    pattern = _regex(name)
    # Whole-value regexes with nested quantifiers are slow on big strings; these two are
    # checked equivalently by hand.
    if name in ("string", "markdown", "xhtml"):
        pattern = None
    full_date = name in ("date", "dateTime", "instant")
    xhtml = name == "xhtml"

    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a JSON string ({name}), not {_json_kind(value)}"
        if not value or value.isspace():
            return "must not be empty"
        if pattern is not None and pattern.fullmatch(value) is None:
            return f"'{_short(value)}' is not a valid {name}"
        if xhtml:
            text = value.strip()
            # Narrative.div is one xhtml div element (R4 narrative.html#xhtml, txt-1/txt-2).
            if not (text.startswith("<div") and text.endswith(">")):
                return "must be an xhtml <div> element"
            return None
        if full_date and len(value) >= 10:
            try:
                date(int(value[0:4]), int(value[5:7]), int(value[8:10]))
            except ValueError:
                return f"'{_short(value)}' is not a valid {name} (no such day)"
        return None

    return check


_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_BASE64_SPACE = re.compile(r"[ \t\r\n]+")


def _check_base64(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a JSON string (base64Binary), not {_json_kind(value)}"
    if not value:
        return "must not be empty"
    compact = _BASE64_SPACE.sub("", value) if any(c in value for c in " \t\r\n") else value
    if len(compact) % 4 or _BASE64_CHARS.fullmatch(compact) is None:
        return "is not valid base64"
    return None


def _check_boolean(value: Any) -> str | None:
    if value is True or value is False:
        return None
    return f"must be a JSON boolean (true or false), not {_json_kind(value)}"


def _int_check(name: str, low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                return f"must be a JSON integer ({name}), not {_json_kind(value)}"
        if value < low or value > _INT32[1]:
            return f"{value} is out of range for {name}"
        return None

    return check


def _check_decimal(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a JSON number (decimal), not {_json_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."


def _primitive_checks() -> dict[str, Callable[[Any], str | None]]:
    checks: dict[str, Callable[[Any], str | None]] = {}
    for name, struct in _ELEMENTS.items():
        if struct["kind"] != "primitive-type":
            continue
        if name == "boolean":
            checks[name] = _check_boolean
        elif name == "integer":
            checks[name] = _int_check(name, _INT32[0])
        elif name == "positiveInt":
            checks[name] = _int_check(name, 1)
        elif name == "unsignedInt":
            checks[name] = _int_check(name, 0)
        elif name == "decimal":
            checks[name] = _check_decimal
        elif name == "base64Binary":
            checks[name] = _check_base64
        else:
            checks[name] = _string_check(name)
    return checks


_PRIMITIVES = _primitive_checks()


# ---------------------------------------------------------------- compiled definitions


class _Prop:
    """One JSON key an object may carry."""

    __slots__ = ("codes", "edef", "element", "group", "key", "kind", "many", "node", "origin", "prim", "systems",
                 "type", "vs")

    def __init__(self, key: str, element: str, type_: str, many: bool, group: str | None) -> None:
        self.key = key
        self.element = element  # the definition's name, e.g. value[x]
        self.type = type_
        self.many = many
        self.group = group  # choice group (value[x]) or None
        self.prim: Callable[[Any], str | None] | None = _PRIMITIVES.get(type_)
        self.kind = "primitive" if self.prim else ("resource" if type_ == "Resource" else "complex")
        self.node: _Node | None = None  # for complex types, resolved lazily
        self.vs: str | None = None
        self.codes: frozenset[str] | None = None  # for code elements: allowed codes
        self.systems: dict[str, frozenset[str]] | None = None  # for Coding/CodeableConcept
        self.origin: str | None = None  # path of an inline backbone definition
        self.edef: dict[str, Any] | None = None


class _Node:
    """The compiled definition of one object shape (a type or an inline backbone element)."""

    __slots__ = ("choices", "name", "props", "required", "resource")

    def __init__(self, name: str) -> None:
        self.name = name
        self.props: dict[str, _Prop] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []  # (element name, keys that satisfy it)
        self.choices: dict[str, tuple[str, ...]] = {}  # group -> keys
        self.resource = False


_TYPE_NODES: dict[str, _Node] = {}
_BACKBONES: dict[str, _Node] = {}  # by definition path, shared so contentReference cycles end


def _vs_codes(url: str) -> dict[str, frozenset[str]] | None:
    entry = _VALUESETS.get(url)
    if entry is None or url == "unenforced":
        return None
    return {system: frozenset(codes) for system, codes in entry["codes"].items()}


def _lookup_path(path: str) -> dict[str, Any]:
    parts = path.split(".")
    cur: dict[str, Any] = _ELEMENTS[parts[0]]
    for part in parts[1:]:
        cur = cur["elements"][part]
    return cur


def _compile(name: str, elements: dict[str, Any], *, implied: tuple[str, ...], resource: bool) -> _Node:
    node = _Node(name)
    node.resource = resource
    defs = dict(elements)
    for key in implied:
        defs.setdefault(key, {"min": 0, "max": "*" if key != "id" else "1",
                              "types": ["Extension"] if key != "id" else ["string"]})
    for ename, edef in defs.items():
        if "ref" in edef:
            origin = edef["ref"]
            edef = {**_lookup_path(origin), "min": edef["min"], "max": edef["max"]}
        else:
            origin = f"{name}.{ename}"
        many = edef["max"] != "1"
        if edef["max"] == "0":
            continue  # prohibited by a constraint profile (SimpleQuantity.comparator)
        types: list[str] = edef["types"]
        if ename.endswith("[x]"):
            base = ename[:-3]
            keys = []
            for t in types:
                key = base + t[0].upper() + t[1:]
                keys.append(key)
                node.props[key] = _make_prop(key, ename, t, many, ename, edef, origin)
            node.choices[ename] = tuple(keys)
            if edef["min"] > 0:
                node.required.append((ename, tuple(keys) + tuple("_" + k for k in keys)))
        else:
            node.props[ename] = _make_prop(ename, ename, types[0], many, None, edef, origin)
            if edef["min"] > 0:
                node.required.append((ename, (ename, "_" + ename)))
    return node


def _make_prop(key: str, ename: str, type_: str, many: bool, group: str | None,
               edef: dict[str, Any], origin: str) -> _Prop:
    prop = _Prop(key, ename, type_, many, group)
    url = edef.get("binding")
    if url and type_ in ("code", "Coding", "CodeableConcept"):
        systems = _vs_codes(url)
        if systems is not None:
            prop.vs = url
            if type_ == "code":
                prop.codes = frozenset().union(*systems.values())
            else:
                prop.systems = systems
    if prop.kind == "complex":
        if type_ in ("BackboneElement", "Element") and "elements" in edef:
            prop.origin = origin
            prop.edef = edef
        elif type_ == "Quantity" and edef.get("profile") in _ELEMENTS:
            prop.type = edef["profile"]
    return prop


def _type_node(name: str) -> _Node:
    node = _TYPE_NODES.get(name)
    if node is None:
        struct = _ELEMENTS[name]
        resource = struct["kind"] == "resource"
        node = _compile(name, struct.get("elements", {}), implied=(), resource=resource)
        _TYPE_NODES[name] = node
    return node


def _prop_node(prop: _Prop) -> _Node:
    node = prop.node
    if node is None:
        if prop.origin is not None and prop.edef is not None:
            node = _BACKBONES.get(prop.origin)
            if node is None:
                implied = ("id", "extension", "modifierExtension") if prop.type == "BackboneElement" else (
                    "id", "extension")
                node = _compile(prop.origin, prop.edef["elements"], implied=implied, resource=False)
                _BACKBONES[prop.origin] = node
        else:
            node = _type_node(prop.type)
        prop.node = node
    return node


def _compile_all() -> int:
    """Compile every type and backbone once at import, so that requests pay nothing."""
    stack = [_type_node(name) for name, s in _ELEMENTS.items() if s["kind"] != "primitive-type"]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(_prop_node(p) for p in node.props.values() if p.kind == "complex")
    return len(seen)


_compile_all()


# ---------------------------------------------------------------- the walker


class _Walker:
    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, path: str, message: str) -> None:
        self.issues.append(Issue(f"{path}: {message}", (path,)))
        if len(self.issues) >= _MAX_ISSUES:
            raise _TooMany

    def resource(self, obj: Any, path: str, expected: str | None = None) -> None:
        if not isinstance(obj, dict):
            self.add(path, f"a resource must be a JSON object, not {_json_kind(obj)}")
            return
        rtype = obj.get("resourceType")
        if rtype is None:
            self.add(path + ".resourceType" if path else "resourceType", "resourceType is missing")
            return
        if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
            shown = rtype if isinstance(rtype, str) else _json_kind(rtype)
            self.add(path + ".resourceType" if path else "resourceType",
                     f"'{shown}' is not an R4 resource type")
            return
        if expected is not None and rtype != expected:
            self.add(path + ".resourceType" if path else "resourceType",
                     f"resourceType is '{rtype}' but '{expected}' is expected here")
            return
        self.object(obj, _TYPE_NODES[rtype], path or rtype)

    def object(self, obj: dict[str, Any], node: _Node, path: str) -> None:
        if not obj:
            self.add(path, "must not be an empty object")
            return
        props = node.props
        seen_groups: dict[str, str] | None = None
        for key, value in obj.items():
            prop = props.get(key)
            if prop is None:
                if key[:1] == "_" and key[1:] in props and props[key[1:]].kind == "primitive":
                    self.extension_sibling(obj, props[key[1:]], value, path)
                    continue
                if key == "resourceType" and node.resource:
                    continue
                self.unknown(key, node, path)
                continue
            if prop.group is not None:
                if seen_groups is None:
                    seen_groups = {}
                other = seen_groups.get(prop.group)
                if other is not None and other != key:
                    self.add(f"{path}.{key}", f"only one of {other} and {key} ({prop.group}) may be present")
                seen_groups[prop.group] = key
            self.value(obj, prop, value, f"{path}.{key}")
        for ename, keys in node.required:
            for k in keys:
                if k in obj:
                    break
            else:
                self.add(f"{path}.{ename}", f"required element {ename} is missing")

    def unknown(self, key: str, node: _Node, path: str) -> None:
        hint = ""
        for group in node.choices:
            base = group[:-3]
            if key.startswith(base) and key[len(base):len(base) + 1].isupper():
                allowed = ", ".join(node.choices[group])
                hint = f" (not an allowed type for {group}; allowed: {allowed})"
                break
        self.add(f"{path}.{key}", f"unknown element '{key}'{hint}")

    def value(self, obj: dict[str, Any], prop: _Prop, value: Any, path: str) -> None:
        if prop.many:
            if not isinstance(value, list):
                self.add(path, f"{prop.element} repeats, so it must be a JSON array, not {_json_kind(value)}")
                return
            if not value:
                self.add(path, "must not be an empty array")
                return
            ext = obj.get("_" + prop.key) if prop.kind == "primitive" else None
            for i, item in enumerate(value):
                if item is None and isinstance(ext, list) and i < len(ext) and ext[i] is not None:
                    continue  # the value is carried by the _element sibling
                self.item(prop, item, f"{path}[{i}]")
        else:
            if isinstance(value, list):
                self.add(path, f"{prop.element} does not repeat, so it must not be a JSON array")
                return
            self.item(prop, value, path)

    def item(self, prop: _Prop, value: Any, path: str) -> None:
        if value is None:
            self.add(path, "must not be null")
            return
        kind = prop.kind
        if kind == "primitive":
            assert prop.prim is not None
            problem = prop.prim(value)
            if problem is not None:
                self.add(path, problem)
            elif prop.codes is not None and value not in prop.codes:
                self.add(path, f"'{_short(str(value))}' is not one of the codes of {prop.vs} (required binding)")
            return
        if kind == "resource":
            self.resource(value, path)
            return
        if not isinstance(value, dict):
            self.add(path, f"must be a JSON object ({prop.type}), not {_json_kind(value)}")
            return
        node = prop.node if prop.node is not None else _prop_node(prop)
        self.object(value, node, path)
        if prop.systems is not None:
            self.binding(prop, value, path)

    def binding(self, prop: _Prop, value: dict[str, Any], path: str) -> None:
        assert prop.systems is not None
        if prop.type == "Coding":
            codings: list[tuple[str, Any]] = [(path, value)]
        else:
            raw = value.get("coding")
            if not isinstance(raw, list):
                return
            codings = [(f"{path}.coding[{i}]", c) for i, c in enumerate(raw)]
        for cpath, coding in codings:
            if not isinstance(coding, dict):
                continue
            allowed = prop.systems.get(coding.get("system"))  # type: ignore[arg-type]
            code = coding.get("code")
            if allowed is not None and isinstance(code, str) and code not in allowed:
                self.add(f"{cpath}.code",
                         f"'{_short(code)}' is not a code of {coding['system']} in {prop.vs} (required binding)")

    def extension_sibling(self, obj: dict[str, Any], prop: _Prop, value: Any, path: str) -> None:
        key = "_" + prop.key
        where = f"{path}.{key}"
        ext_node = _ELEMENT_NODE
        if prop.many:
            if not isinstance(value, list):
                self.add(where, f"must be a JSON array like {prop.key}, not {_json_kind(value)}")
                return
            main = obj.get(prop.key)
            if isinstance(main, list) and len(main) != len(value):
                self.add(where, f"must have as many items as {prop.key} ({len(main)}), not {len(value)}")
            for i, item in enumerate(value):
                if item is None:
                    if not isinstance(main, list) or i >= len(main) or main[i] is None:
                        self.add(f"{where}[{i}]", f"null here needs a value in {prop.key}[{i}]")
                    continue
                if isinstance(item, dict):
                    self.object(item, ext_node, f"{where}[{i}]")
                else:
                    self.add(f"{where}[{i}]", f"must be a JSON object, not {_json_kind(item)}")
        elif isinstance(value, dict):
            self.object(value, ext_node, where)
        else:
            self.add(where, f"must be a JSON object, not {_json_kind(value)}")


# What an `_element` sibling may carry: the id and extensions of the primitive.
_ELEMENT_NODE = _compile("Element", {}, implied=("id", "extension"), resource=False)
_prop_node(_ELEMENT_NODE.props["extension"])


# ---------------------------------------------------------------- fhir.resources (R4B)


# Types R4B has no model for (checked by name: importing every model would take seconds).
R4B_WALKER_ONLY_TYPES: frozenset[str] = frozenset(
    t for t in RESOURCE_TYPES if t in _R4B_WALKER_ONLY or not hasattr(_r4b_types, t + "Type")
)
_MODELS: dict[str, Any] = {}


def _model(rtype: str) -> Any:
    """The R4B model class, imported on first use (about 25 ms each)."""
    if rtype in R4B_WALKER_ONLY_TYPES:
        return None
    model = _MODELS.get(rtype)
    if model is None:
        model = _MODELS[rtype] = get_fhir_model_class(rtype)
    return model


def _loc_path(resource: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[str, bool]:
    """The FHIRPath-style expression of a pydantic loc, and whether R4 and R4B disagree there."""
    path = str(resource.get("resourceType", ""))
    cur: Any = resource
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            cur = cur[part] if isinstance(cur, list) and part < len(cur) else None
        else:
            name = part.removesuffix("__ext")
            if part.endswith("__ext"):
                name = "_" + name
            if name in _R4B_ONLY_R4_KEYS:
                return path + "." + name, True
            path += "." + name
            cur = cur.get(name) if isinstance(cur, dict) else None
        if isinstance(cur, dict) and cur is not resource and cur.get("resourceType") in R4B_WALKER_ONLY_TYPES:
            return path, True
    return path, False


def _pydantic_issues(resource: dict[str, Any], exc: pydantic.ValidationError) -> list[Issue]:
    issues: list[Issue] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path, conflict = _loc_path(resource, loc)
        if conflict:
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        issues.append(Issue(f"{path}: {msg}", (path,)))
        if len(issues) >= _MAX_ISSUES:
            break
    return issues


# ---------------------------------------------------------------- public API


def walk(resource: Any, expected_type: str | None = None) -> list[Issue]:
    """The walker's issues alone (no fhir.resources); [] when the resource is valid R4 JSON."""
    walker = _Walker()
    with contextlib.suppress(_TooMany):
        walker.resource(resource, "", expected_type)
    return walker.issues


def validate(resource: dict[str, Any], expected_type: str | None = None) -> None:
    """Raise InvalidResource listing what is wrong with this R4 resource (JSON as parsed)."""
    issues = walk(resource, expected_type)
    if issues:
        raise InvalidResource(issues=issues)
    model = _model(resource["resourceType"])
    if model is None:
        return
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        issues = _pydantic_issues(resource, exc)
        if issues:
            raise InvalidResource(issues=issues) from None
