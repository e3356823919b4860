"""Model results as FHIR R4 RiskAssessment resources (pure: dictionaries in, dictionaries out).

Conventions (docs/twin.md):
- `prediction.probabilityDecimal` is a fraction 0..1, as in the official R4 example
  riskassessment-example-cardiac (2 % is 0.02); the percentage appears in `rationale` and `note`.
- `prediction.probabilityRange` carries the uncertainty interval in UCUM `%` (invariant ras-1).
- `prediction.whenRange` is the patient's age span the prediction covers, in UCUM `a`.
- `method` codes the model in the local, versioned code system METHOD_SYSTEM.
- `basis` references the exact resource versions whose values went into the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .models.base import ModelSpec

METHOD_SYSTEM = "https://fhirtwin.org/fhir/CodeSystem/twin-model"
TAG_SYSTEM = "https://fhirtwin.org/fhir/CodeSystem/twin-tag"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One outcome probability over `years` from the occurrence (cumulative)."""

    probability: float  # fraction 0..1
    years: int
    low: float | None = None  # fraction 0..1, the 95 % interval
    high: float | None = None
    relative_risk: float | None = None  # against the baseline scenario


def _pct(p: float) -> str:
    return f"{100 * p:.1f} %"


def _age_quantity(value: float) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": "a", "system": UCUM, "code": "a"}


def _pct_quantity(p: float) -> dict[str, Any]:
    # 4 decimals of a percentage = the 6 decimals of probabilityDecimal: the range holds the point.
    return {"value": round(100 * p, 4), "unit": "%", "system": UCUM, "code": "%"}


def _inputs_text(inputs: Mapping[str, float], units: Mapping[str, str]) -> str:
    parts = []
    for name, value in inputs.items():
        unit = units.get(name, "")
        if unit in ("", "1"):
            parts.append(f"{name} {value:g}")
        else:
            parts.append(f"{name} {value:.4g} {unit}")
    return ", ".join(parts)


def assessment(
    *,
    spec: ModelSpec,
    subject: str,
    occurrence: datetime,
    predictions: Sequence[Prediction],
    inputs: Mapping[str, float],
    units: Mapping[str, str],
    basis: Sequence[str],
    age: float | None,
    mitigation: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """A RiskAssessment for one model run (one scenario)."""
    outcome: dict[str, Any] = {"text": spec.outcome.text}
    if spec.outcome.code is not None:
        outcome["coding"] = [{"system": SNOMED, "code": spec.outcome.code,
                              **({"display": spec.outcome.display} if spec.outcome.display else {})}]
    used = _inputs_text(inputs, units)
    preds: list[dict[str, Any]] = []
    for p in predictions:
        item: dict[str, Any] = {"outcome": outcome, "probabilityDecimal": round(float(p.probability), 6)}
        if p.low is not None and p.high is not None:
            item["probabilityRange"] = {"low": _pct_quantity(p.low), "high": _pct_quantity(p.high)}
        if p.relative_risk is not None:
            item["relativeRisk"] = round(float(p.relative_risk), 4)
        if age is not None:
            item["whenRange"] = {"low": _age_quantity(age), "high": _age_quantity(age + p.years)}
        item["rationale"] = f"{_pct(p.probability)} within {p.years} years; inputs: {used}"
        preds.append(item)
    final = predictions[-1] if predictions else None
    text = [f"{spec.title} (version {spec.version}): "
            + (f"{_pct(final.probability)} risk of {spec.outcome.text} within {final.years} years"
               if final is not None else "no prediction")
            + (f" (95 % interval {_pct(final.low)} to {_pct(final.high)})"
               if final is not None and final.low is not None and final.high is not None else "")
            + ".",
            f"Source: {spec.citation}" + (f", doi:{spec.doi}" if spec.doi else "") + ".",
            f"Validated for: {spec.population}.",
            *notes]
    ra: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": subject},
        "occurrenceDateTime": occurrence.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "method": {"coding": [{"system": METHOD_SYSTEM, "version": spec.version, "code": spec.code,
                               "display": spec.title}], "text": spec.title},
        "basis": [{"reference": ref} for ref in basis],
        "prediction": preds,
        "note": [{"text": t} for t in text],
    }
    if mitigation:
        ra["mitigation"] = mitigation
    if not ra["basis"]:
        del ra["basis"]
    return ra
