"""The search parameters the server indexes and answers, loaded once from fhir_profiles/."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"

# Parameters every search understands that are not in the index (handled by the query itself).
RESULT_PARAMS = frozenset(
    {
        "_count", "_offset", "_page", "_sort", "_include", "_revinclude", "_summary", "_elements",
        "_total", "_format", "_pretty", "_contained", "_containedType", "_type",
    }
)


@dataclass(frozen=True, slots=True)
class Component:
    code: str
    type: str


@dataclass(frozen=True, slots=True)
class ParamDef:
    code: str
    type: str
    expression: str
    url: str
    targets: tuple[str, ...]
    components: tuple[Component, ...]
    base: str  # the resource type, or "Resource"


class Registry:
    def __init__(self, data: dict[str, Any]) -> None:
        self.fhir_version: str = data.get("fhirVersion", "4.0.1")
        self._params: dict[str, dict[str, ParamDef]] = {}
        for rtype, params in data["params"].items():
            table: dict[str, ParamDef] = {}
            for code, p in params.items():
                table[code] = ParamDef(
                    code=code,
                    type=p["type"],
                    expression=p.get("expression", ""),
                    url=p.get("url", ""),
                    targets=tuple(p.get("target", ())),
                    components=tuple(Component(c["code"], c["type"]) for c in p.get("components", ())),
                    base=rtype,
                )
            self._params[rtype] = table
        common = self._params.get("Resource", {})
        # _id and _lastUpdated live on the resource row itself, not in the index tables.
        for code, ptype in (("_id", "token"), ("_lastUpdated", "date")):
            if code not in common:
                common[code] = ParamDef(code, ptype, f"Resource.{code[1:]}", "", (), (), "Resource")
        self._params["Resource"] = common

    def get(self, rtype: str, code: str) -> ParamDef | None:
        table = self._params.get(rtype)
        if table is not None and code in table:
            return table[code]
        return self._params["Resource"].get(code)

    def params_of(self, rtype: str) -> dict[str, ParamDef]:
        out = dict(self._params["Resource"])
        out.update(self._params.get(rtype, {}))
        return out

    def types(self) -> list[str]:
        return sorted(t for t in self._params if t != "Resource")


@lru_cache(maxsize=16)
def profile_json(name: str) -> Any:
    """A definitions file of fhir_profiles/, parsed once per process for every user of it."""
    return orjson.loads((PROFILES / name).read_bytes())


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry(profile_json("search_parameters.json"))
