"""_summary and _elements: subsets of a resource, tagged SUBSETTED as R4 requires."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

_PATH = Path(__file__).resolve().parents[2] / "fhir_profiles" / "summary_elements.json"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, list[str]]]:
    data: dict[str, dict[str, list[str]]] = orjson.loads(_PATH.read_bytes())
    return data


def _matches(key: str, names: frozenset[str] | set[str]) -> bool:
    if key in names:
        return True
    base = key.lstrip("_")
    if base in names:
        return True
    # choice elements: valueQuantity is kept when value[x] is listed
    return any(base[i].isupper() and f"{base[:i]}[x]" in names for i in range(1, len(base)))


def _tag(doc: dict[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags):
        tags.append(SUBSETTED)
    meta["tag"] = tags
    doc["meta"] = meta
    return doc


def apply_summary(doc: dict[str, Any], mode: str | None) -> dict[str, Any]:
    if mode in (None, "false", "count"):
        return doc
    rtype = doc.get("resourceType", "")
    info = _table().get(rtype, {"summary": [], "mandatory": []})
    if mode == "data":
        out = {k: v for k, v in doc.items() if k != "text"}
    elif mode == "text":
        keep = set(info["mandatory"]) | {"text"}
        out = {k: v for k, v in doc.items() if k in _ALWAYS or _matches(k, keep)}
    else:
        keep = set(info["summary"])
        out = {k: v for k, v in doc.items() if k in _ALWAYS or _matches(k, keep)}
    return _tag(out)


def apply_elements(doc: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    names = {e.split(".", 1)[1] if "." in e else e for e in elements}
    rtype = doc.get("resourceType", "")
    mandatory = set(_table().get(rtype, {}).get("mandatory", []))
    out = {k: v for k, v in doc.items() if k in _ALWAYS or _matches(k, names) or _matches(k, mandatory)}
    return _tag(out)
