"""`GET [base]/Patient/{id}/$twin`: the patient's twin state as a Parameters resource.

The state is folded from the twin facts of the resources *this caller* may read: the facts are
selected through the same confinement as any read (SMART patient/ and granular scopes today,
consent later), so a caller who sees part of the record gets the state of that part.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from app.errors import BadRequest, NotFound
from app.twin import mapping
from app.twin.state import TwinState, Variable

from .. import interactions as ix
from .facts import SOURCE_TYPES, from_rows

UCUM = "http://unitsofmeasure.org"


def parse_instant(value: str, name: str) -> datetime:
    """A FHIR date or dateTime parameter; a date means the end of that day."""
    text = value.strip()
    try:
        if len(text) == 10:
            d = datetime.fromisoformat(text)
            return d.replace(hour=23, minute=59, second=59, tzinfo=UTC)
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Parameter '{name}' must be a FHIR date or dateTime, not '{value}'", expression=name) from None
    if t.tzinfo is None:
        raise BadRequest(f"Parameter '{name}' needs a time zone when it has a time", expression=name)
    return t.astimezone(UTC)


def fhir_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def patient_state(ctx: ix.Context, rid: str, as_of: datetime,
                  stale_after_days: dict[str, int] | None = None) -> tuple[dict[str, Any], int, TwinState]:
    """The Patient (as this caller may read it) and the twin state from what the caller may see."""
    # Outside the caller's reach the patient is answered exactly as an unknown id.
    s = ctx.store.read("Patient", rid, ctx.confine("read", "Patient"))
    if s is None or s.deleted or s.body is None:
        raise NotFound(f"Patient/{rid} is not known", expression="Patient.id")
    patient = orjson.loads(s.body)
    access = ctx.guard.reach("read") if ctx.guard is not None else None
    rows = ctx.store.twin_facts([rid], [t for t in SOURCE_TYPES if t != "Patient"], access)
    facts = from_rows(rows).get(rid, [])
    state = mapping.build_state(patient, s.version, facts, as_of, stale_after_days)
    return patient, s.version, state


def _value_part(v: Variable) -> dict[str, Any] | None:
    if v.value is None:
        return None
    if v.unit in ("1", "{boolean}") or v.name in mapping.BOOLEAN_VARIABLES:
        return {"name": "value", "valueBoolean": bool(v.value)}
    return {"name": "value", "valueQuantity": {"value": round(v.value, 6), "unit": v.unit, "system": UCUM, "code": v.unit}}


def to_parameters(state: TwinState, patient_ref: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "patient", "valueReference": {"reference": patient_ref}},
        {"name": "asOf", "valueDateTime": fhir_time(state.as_of)},
    ]
    for name in sorted(state.variables):
        v = state.variables[name]
        parts: list[dict[str, Any]] = [{"name": "name", "valueCode": name}]
        value = _value_part(v)
        if value is not None:
            parts.append(value)
        if v.time is not None:
            parts.append({"name": "time", "valueDateTime": fhir_time(v.time)})
        if v.source is not None:
            parts.append({"name": "source", "valueReference": {"reference": v.source}})
        parts.append({"name": "count", "valueInteger": v.count})
        if v.trend_per_year is not None:
            unit = f"{v.unit}/a"
            parts.append({"name": "trend", "valueQuantity": {"value": round(v.trend_per_year, 6), "unit": unit,
                                                             "system": UCUM, "code": unit}})
        parts.extend({"name": "flag", "valueCode": f} for f in v.flags)
        params.append({"name": "variable", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}


def twin(ctx: ix.Context, rid: str, params: list[tuple[str, str]]) -> ix.Result:
    as_of = datetime.now(UTC)
    for k, v in params:
        if k == "asOf":
            as_of = parse_instant(v, "asOf")
        elif k not in ("_format", "_pretty"):
            raise BadRequest(f"Unknown parameter '{k}' for $twin (known: asOf)", expression=k)
    _, version, state = patient_state(ctx, rid, as_of)
    return ix.Result(200, resource=to_parameters(state, f"Patient/{rid}/_history/{version}"))
