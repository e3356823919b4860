"""CapabilityStatement generated from what is really registered: the types the router accepts,
the search parameters the indexer extracts, the interactions the routes implement."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from app.auth.discovery import security_extension
from app.store.registry import registry

from .resources import RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"
TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]


OPERATION_BASE = "https://fhirtwin.org/fhir/OperationDefinition"
_RISK = ("RiskAssessment.prediction.probabilityDecimal is a fraction 0..1 (as in the R4 example "
         "riskassessment-example-cardiac); probabilityRange is in UCUM %; see docs/twin.md")
OPERATIONS: dict[str, list[tuple[str, str]]] = {
    "Patient": [
        ("twin", "The patient's twin state (Parameters) from the resources the caller may read"),
        ("simulate", "Risk models and the cvd-microsim simulation on the twin, as RiskAssessments. " + _RISK),
    ],
    "Group": [("simulate", "A risk model over every member the caller may read, vectorised: a summary "
                           "(Parameters), and with persist=true one RiskAssessment per member. " + _RISK)],
}


@lru_cache(maxsize=4)
def _rest(base_url: str) -> list[dict[str, Any]]:
    reg = registry()
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        params = reg.params_of(rtype)
        search = []
        for code, p in sorted(params.items()):
            if p.type == "special":
                continue
            sp: dict[str, Any] = {"name": code, "type": p.type}
            if p.url:
                sp["definition"] = p.url
            search.append(sp)
        refs = sorted(c for c, p in params.items() if p.type == "reference")
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": ["*"] + [f"{rtype}:{c}" for c in refs],
            "searchRevInclude": ["*"],
            "searchParam": search,
        }
        if rtype in OPERATIONS:
            entry["operation"] = [{"name": n, "definition": f"{OPERATION_BASE}/{rtype}-{n}", "documentation": d}
                                  for n, d in OPERATIONS[rtype]]
        resources.append(entry)
    return [{
        "mode": "server",
        "documentation": "fhirtwin FHIR R4 server",
        "security": security_extension(base_url),
        "resource": resources,
        "interaction": [{"code": c} for c in ("transaction", "batch", "search-system", "history-system")],
        "searchParam": [
            {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
            {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
        ],
    }]


def capability_statement(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-03",
        "publisher": "fhirtwin",
        "kind": "instance",
        "software": {"name": "fhirtwin", "version": SOFTWARE_VERSION},
        "implementation": {"description": "fhirtwin FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": _rest(base_url),
    }
