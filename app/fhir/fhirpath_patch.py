"""FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of operations add, insert, delete,
replace and move. Paths are the simple FHIRPath subset patches use in practice: element names,
`[n]` indexers, `first()`, `last()` and `where(path = 'literal')` filters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequest, Unprocessable

_STEP = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<idx>\[\d+\])|(?P<fn>(?:first|last)\(\))"
    r"|where\((?P<where>[^()]*)\))\s*"
)


@dataclass
class Loc:
    parent: Any  # dict or list holding the value
    key: Any  # key in dict, or index in list
    value: Any


def _steps(path: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = path.strip()
    while pos < len(text):
        if text[pos] == ".":
            pos += 1
            continue
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise BadRequest(f"FHIRPath Patch path '{path}' is not supported at '{text[pos:]}'")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _where(item: Any, expr: str) -> bool:
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*'((?:[^'\\]|\\.)*)'\s*", expr)
    if not m:
        raise BadRequest(f"where({expr}) is not supported in FHIRPath Patch paths")
    cur: list[Any] = [item]
    for name in m.group(1).split("."):
        nxt: list[Any] = []
        for c in cur:
            if isinstance(c, dict) and name in c:
                v = c[name]
                nxt.extend(v if isinstance(v, list) else [v])
        cur = nxt
    return any(str(v) == m.group(2) for v in cur if not isinstance(v, (dict, list)))


def evaluate(resource: dict[str, Any], path: str) -> list[Loc]:
    steps = _steps(path)
    if not steps or steps[0] != ("name", resource.get("resourceType")):
        raise BadRequest(f"FHIRPath Patch path '{path}' must start with {resource.get('resourceType')}")
    locs = [Loc(None, None, resource)]
    for kind, text in steps[1:]:
        nxt: list[Loc] = []
        if kind == "name":
            for loc in locs:
                v = loc.value
                if isinstance(v, dict) and text in v:
                    child = v[text]
                    if isinstance(child, list):
                        nxt.extend(Loc(child, i, c) for i, c in enumerate(child))
                    else:
                        nxt.append(Loc(v, text, child))
        elif kind == "idx":
            i = int(text[1:-1])
            nxt = [locs[i]] if i < len(locs) else []
        elif kind == "fn":
            nxt = locs[:1] if text.startswith("first") else locs[-1:]
        else:
            nxt = [loc for loc in locs if _where(loc.value, text)]
        locs = nxt
    return locs


def _parts(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in op.get("part") or []:
        name = part.get("name")
        value_keys = [k for k in part if k.startswith("value")]
        if value_keys:
            out[name] = part[value_keys[0]]
        elif "part" in part:
            out[name] = {p["name"]: next((p[k] for k in p if k.startswith("value")), None) for p in part["part"]}
        else:
            out[name] = None
    return out


def _one(locs: list[Loc], path: str) -> Loc:
    if len(locs) != 1:
        raise Unprocessable(f"FHIRPath Patch path '{path}' must select exactly one element, selected {len(locs)}")
    return locs[0]


def apply_fhirpath_patch(resource: dict[str, Any], params: Any) -> dict[str, Any]:
    if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
        raise BadRequest("A FHIRPath Patch body must be a Parameters resource (or send application/json-patch+json)")
    for n, op in enumerate(params.get("parameter") or []):
        if op.get("name") != "operation":
            raise BadRequest(f"Parameters.parameter[{n}] must be named 'operation'", expression=f"Parameters.parameter[{n}]")
        p = _parts(op)
        kind, path = p.get("type"), p.get("path")
        if not isinstance(path, str):
            raise BadRequest(f"operation {n} has no path", expression=f"Parameters.parameter[{n}]")
        locs = evaluate(resource, path)
        if kind == "add":
            target = _one(locs, path).value
            name = p.get("name")
            if not isinstance(target, dict) or not isinstance(name, str):
                raise Unprocessable(f"operation {n}: add needs a path to an element and a name")
            if name in target and isinstance(target[name], list):
                target[name].append(p.get("value"))
            elif name in target:
                raise Unprocessable(f"operation {n}: '{name}' already has a value; use replace")
            else:
                target[name] = p.get("value")
        elif kind == "insert":
            loc_list = locs[0].parent if locs and isinstance(locs[0].parent, list) else None
            if loc_list is None:
                raise Unprocessable(f"operation {n}: insert needs a path to a list")
            idx = int(p.get("index", 0))
            if idx > len(loc_list):
                raise Unprocessable(f"operation {n}: index {idx} is past the end of the list")
            loc_list.insert(idx, p.get("value"))
        elif kind == "delete":
            if not locs:
                continue
            loc = _one(locs, path)
            if isinstance(loc.parent, list):
                loc.parent.pop(loc.key)
            elif isinstance(loc.parent, dict):
                del loc.parent[loc.key]
        elif kind == "replace":
            loc = _one(locs, path)
            if loc.parent is None:
                raise Unprocessable(f"operation {n}: cannot replace the whole resource")
            loc.parent[loc.key] = p.get("value")
        elif kind == "move":
            if not locs or not isinstance(locs[0].parent, list):
                raise Unprocessable(f"operation {n}: move needs a path to a list")
            lst = locs[0].parent
            src, dst = int(p.get("source", -1)), int(p.get("destination", -1))
            if not (0 <= src < len(lst) and 0 <= dst < len(lst)):
                raise Unprocessable(f"operation {n}: source/destination out of range")
            lst.insert(dst, lst.pop(src))
        else:
            raise BadRequest(f"operation {n}: unknown type '{kind}'", expression=f"Parameters.parameter[{n}]")
        _prune(resource)
    return resource


def _prune(node: Any) -> None:
    """Drop lists and objects a delete left empty (FHIR forbids empty elements)."""
    if isinstance(node, dict):
        for k in list(node):
            _prune(node[k])
            if node[k] in ({}, []):
                del node[k]
    elif isinstance(node, list):
        for v in node:
            _prune(v)
