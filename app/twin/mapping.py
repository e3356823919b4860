"""FHIR resources -> twin facts -> twin state (pure).

The code maps are data (fhir_profiles/twin/variables.json and medications.json, read once):
which LOINC codes give which quantity (as the Observation's value or as a component, so the
systolic pressure inside the 55284-4 / 85354-9 panels is found), the accepted units with their
factor to the canonical unit, plausible ranges, SNOMED CT codes and ICD-10-CM prefixes of the
conditions, smoking-status answers, RxNorm codes and ingredient names of the treatment classes.

Status rules: Observations count when final, amended or corrected (preliminary ones count with the
flag "preliminary"); registered, cancelled, entered-in-error and unknown ones give nothing.
Conditions give nothing when their verification status is entered-in-error or refuted; they are
active from onset until abatement (resolved, inactive or remission without an abatement date: not
active); a prior ASCVD event counts whatever its clinical status. MedicationRequests count while
their status is active (or on-hold) and their intent is an order or a plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .egfr import ckd_epi_2021
from .state import EXCLUDED, Fact, TwinState, Variable

DATA = Path(__file__).resolve().parents[2] / "fhir_profiles" / "twin"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10")
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
BLACK = "2054-5"
DAYS_PER_YEAR = 365.25

BOOLEAN_VARIABLES = frozenset({"female", "black", "smoker", "diabetes", "hypertension", "ckd", "heart_failure",
                               "ascvd", "bp_treated", "statin", "insulin"})
_OBS_KEEP = {"final": (), "amended": (), "corrected": (), "preliminary": ("preliminary",)}
_MED_ACTIVE = frozenset({"active", "on-hold"})
_MED_INTENTS = frozenset({"order", "original-order", "reflex-order", "filler-order", "instance-order", "plan"})
_INACTIVE = frozenset({"inactive", "remission", "resolved"})


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    unit: str
    units: Mapping[str, tuple[float, float]]  # unit -> (scale, offset) to the canonical unit
    low: float
    high: float
    stale_days: int


@dataclass(frozen=True, slots=True)
class Maps:
    quantities: Mapping[str, Quantity]  # by variable
    by_loinc: Mapping[str, str]  # LOINC code -> variable
    smoking_codes: frozenset[str]
    current: frozenset[str]
    not_current: frozenset[str]
    smoking_stale: int
    by_snomed: Mapping[str, tuple[str, ...]]  # SNOMED code -> condition variables
    icd10: tuple[tuple[str, str], ...]  # (prefix, variable)
    ever: frozenset[str]  # conditions that count once they happened
    rx: Mapping[str, tuple[str, ...]]  # RxNorm code -> treatment classes
    rx_names: tuple[tuple[str, str], ...]  # (ingredient, class)
    stale_default: int
    codes: Mapping[str, tuple[tuple[str, str, str], ...]]  # variable -> codings that provide it


@lru_cache(maxsize=1)
def maps() -> Maps:
    v = json.loads((DATA / "variables.json").read_text())
    m = json.loads((DATA / "medications.json").read_text())
    default = int(v["stale_days_default"])
    quantities: dict[str, Quantity] = {}
    by_loinc: dict[str, str] = {}
    codes: dict[str, list[tuple[str, str, str]]] = {}
    for name, q in v["quantities"].items():
        units = {u: ((float(f["scale"]), float(f["offset"])) if isinstance(f, dict) else (float(f), 0.0))
                 for u, f in q["units"].items()}
        quantities[name] = Quantity(name, q["unit"], units, float(q["plausible"][0]), float(q["plausible"][1]),
                                    int(q.get("stale_days", default)))
        for system, code, display in q["codes"]:
            by_loinc[code] = name
            codes.setdefault(name, []).append((system, code, display))
    sm = v["smoking"]
    codes["smoker"] = [(c[0], c[1], c[2]) for c in sm["codes"]]
    by_snomed: dict[str, list[str]] = {}
    icd10: list[tuple[str, str]] = []
    ever: set[str] = set()
    for name, c in v["conditions"].items():
        for system, code, display in c["snomed"]:
            by_snomed.setdefault(code, []).append(name)
            codes.setdefault(name, []).append((system, code, display))
        for prefix in c["icd10"]:
            icd10.append((prefix, name))
            codes.setdefault(name, []).append((ICD10[0], f"{prefix}.*", f"{c['display']} (ICD-10-CM)"))
        if c.get("ever"):
            ever.add(name)
    rx: dict[str, list[str]] = {}
    names: list[tuple[str, str]] = []
    for cls, c in m["classes"].items():
        for code, display in c["rxnorm"]:
            rx.setdefault(code, []).append(cls)
            codes.setdefault(cls, []).append((m["system"], code, display))
        names.extend((n.lower(), cls) for n in c["names"])
    codes.setdefault("egfr", []).extend(codes.get("creatinine", []))
    return Maps(
        quantities=quantities, by_loinc=by_loinc,
        smoking_codes=frozenset(c[1] for c in sm["codes"]),
        current=frozenset(c[1] for c in sm["current"]), not_current=frozenset(c[1] for c in sm["not_current"]),
        smoking_stale=int(sm.get("stale_days", default)),
        by_snomed={k: tuple(x) for k, x in by_snomed.items()}, icd10=tuple(icd10), ever=frozenset(ever),
        rx={k: tuple(x) for k, x in rx.items()}, rx_names=tuple(names), stale_default=default,
        codes={k: tuple(x) for k, x in codes.items()},
    )


def codes_for(variable: str) -> list[tuple[str, str, str]]:
    """(system, code, display) of the codings that provide a variable (for error messages)."""
    if variable == "age":
        return [("http://hl7.org/fhir", "Patient.birthDate", "birth date")]
    if variable in ("female", "black"):
        return [("http://hl7.org/fhir", "Patient.gender" if variable == "female" else RACE_URL,
                 "administrative gender" if variable == "female" else "US Core race (OMB 2054-5)")]
    return list(maps().codes.get(variable, ()))


# ---------------------------------------------------------------- times


def parse_time(value: Any) -> datetime | None:
    """A FHIR date / dateTime / instant (partial dates at their start, UTC when no zone is given)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)


def _obs_time(r: Mapping[str, Any]) -> datetime | None:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in r:
            return parse_time(r[key])
    period = r.get("effectivePeriod")
    if isinstance(period, dict):
        return parse_time(period.get("end") or period.get("start"))
    return parse_time(r.get("issued"))


def _codes(cc: Any) -> list[tuple[str | None, str]]:
    if not isinstance(cc, dict):
        return []
    return [(c.get("system"), c["code"]) for c in cc.get("coding") or [] if isinstance(c, dict) and isinstance(c.get("code"), str)]


def _status_code(cc: Any) -> str | None:
    got = _codes(cc)
    return got[0][1] if got else None


# ---------------------------------------------------------------- resources -> facts


def facts(resource: Mapping[str, Any], version: int | str) -> list[Fact]:
    """What one resource version says about its patient (an empty list for anything else)."""
    rtype = resource.get("resourceType")
    if rtype == "Observation":
        return _observation(resource, version)
    if rtype == "Condition":
        return _condition(resource, version)
    if rtype == "MedicationRequest":
        return _medication(resource, version)
    return []


def _quantity(m: Maps, name: str, q: Any, when: datetime | None, source: str, flags: tuple[str, ...]) -> Fact | None:
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float) or isinstance(q.get("value"), bool):
        return None
    spec = m.quantities[name]
    unit = q.get("code") or q.get("unit")
    factor = spec.units.get(unit) if isinstance(unit, str) else None
    if factor is None:
        return Fact(name, float(q["value"]), str(unit or ""), when, source, (*flags, "unit-not-convertible"))
    value = float(q["value"]) * factor[0] + factor[1]
    if not spec.low <= value <= spec.high:
        flags = (*flags, "implausible")
    return Fact(name, value, spec.unit, when, source, flags)


def _observation(r: Mapping[str, Any], version: int | str) -> list[Fact]:
    status = r.get("status")
    if status not in _OBS_KEEP:
        return []
    m = maps()
    flags = _OBS_KEEP[status]
    source = f"Observation/{r.get('id')}/_history/{version}"
    when = _obs_time(r)
    out: list[Fact] = []
    for system, code in _codes(r.get("code")):
        if system != LOINC:
            continue
        if code in m.smoking_codes:
            answers = {c for _, c in _codes(r.get("valueCodeableConcept"))}
            if answers & m.current:
                out.append(Fact("smoker", 1.0, "1", when, source, flags))
            elif answers & m.not_current:
                out.append(Fact("smoker", 0.0, "1", when, source, flags))
            break
        name = m.by_loinc.get(code)
        if name is not None:
            f = _quantity(m, name, r.get("valueQuantity"), when, source, flags)
            if f is not None:
                out.append(f)
            break
    for comp in r.get("component") or []:
        if not isinstance(comp, dict):
            continue
        for system, code in _codes(comp.get("code")):
            name = m.by_loinc.get(code) if system == LOINC else None
            if name is not None:
                f = _quantity(m, name, comp.get("valueQuantity"), when, source, flags)
                if f is not None:
                    out.append(f)
                break
    return out


def _condition(r: Mapping[str, Any], version: int | str) -> list[Fact]:
    if _status_code(r.get("verificationStatus")) in ("entered-in-error", "refuted"):
        return []
    m = maps()
    names: list[str] = []
    for system, code in _codes(r.get("code")):
        if system == SNOMED:
            names.extend(m.by_snomed.get(code, ()))
        elif system in ICD10:
            names.extend(n for prefix, n in m.icd10 if code.upper().startswith(prefix))
    if not names:
        return []
    onset = parse_time(r.get("onsetDateTime")) or parse_time((r.get("onsetPeriod") or {}).get("start")) \
        or parse_time(r.get("recordedDate"))
    abated = parse_time(r.get("abatementDateTime")) or parse_time((r.get("abatementPeriod") or {}).get("end"))
    clinical = _status_code(r.get("clinicalStatus"))
    if abated is None and clinical in _INACTIVE:
        abated = onset  # over, and when is not recorded
    source = f"Condition/{r.get('id')}/_history/{version}"
    out: list[Fact] = []
    for name in dict.fromkeys(names):
        out.append(Fact(name, 1.0, "1", onset, source, (), None if name in m.ever else abated))
    return out


def _medication(r: Mapping[str, Any], version: int | str) -> list[Fact]:
    if r.get("status") not in _MED_ACTIVE or r.get("intent") not in _MED_INTENTS:
        return []
    m = maps()
    cc = r.get("medicationCodeableConcept")
    classes: list[str] = []
    if isinstance(cc, dict):
        for _, code in _codes(cc):
            classes.extend(m.rx.get(code, ()))
        if not classes:
            text = " ".join([str(cc.get("text") or "")] + [str(c.get("display") or "") for c in cc.get("coding") or []
                                                           if isinstance(c, dict)]).lower()
            classes.extend(cls for name, cls in m.rx_names if name in text)
    if not classes:
        return []
    when = parse_time(r.get("authoredOn"))
    source = f"MedicationRequest/{r.get('id')}/_history/{version}"
    return [Fact(cls, 1.0, "1", when, source) for cls in dict.fromkeys(classes)]


# ---------------------------------------------------------------- facts -> state


def _years(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 86_400 / DAYS_PER_YEAR


def _quantity_variable(name: str, unit: str, got: list[Fact], as_of: datetime, stale_days: int) -> Variable:
    dated = [f for f in got if f.time is None or f.time <= as_of]
    dated.sort(key=lambda f: (f.time or datetime.min.replace(tzinfo=UTC)))
    usable = [f for f in dated if f.usable]
    current = usable[-1] if usable else None
    flags: list[str] = []
    # Excluded values that would have been the current one say so.
    for f in dated:
        if not f.usable and (current is None or current.time is None or (f.time is not None and f.time >= current.time)):
            flags.extend(x for x in f.flags if x in EXCLUDED and x not in flags)
    trend = None
    timed = [f for f in usable if f.time is not None]
    if len(timed) >= 2 and timed[0].time is not None and timed[-1].time is not None \
            and (timed[-1].time - timed[0].time).days > 30:
        t0 = timed[0].time
        xs = np.fromiter((_years(t0, f.time) for f in timed if f.time is not None), dtype=np.float64)
        ys = np.fromiter((f.value for f in timed if f.value is not None), dtype=np.float64)
        trend = float(stats.linregress(xs, ys).slope)
    if current is None:
        return Variable(name, None, unit, None, None, 0, None, tuple(flags), ())
    flags.extend(x for x in current.flags if x not in flags)
    if current.time is not None and (as_of - current.time).days > stale_days:
        flags.append("stale")
    return Variable(name, current.value, unit, current.time, current.source, len(usable), trend, tuple(flags),
                    (current.source,))


def _boolean_variable(name: str, got: list[Fact], as_of: datetime) -> Variable:
    started = [f for f in got if f.usable and (f.time is None or f.time <= as_of)]
    active = [f for f in started if f.end is None or f.end > as_of]
    if active:
        f = max(active, key=lambda x: x.time or datetime.min.replace(tzinfo=UTC))
        return Variable(name, 1.0, "1", f.time, f.source, len(started), None, (), (f.source,))
    if started:
        f = max(started, key=lambda x: x.end or x.time or datetime.min.replace(tzinfo=UTC))
        return Variable(name, 0.0, "1", f.end or f.time, f.source, len(started), None, ("ended",), (f.source,))
    return Variable(name, 0.0, "1", None, None, 0, None, ("no-record",), ())


def build_state(patient: Mapping[str, Any] | None, patient_version: int | str | None, facts_: Iterable[Fact],
                as_of: datetime, stale_after_days: Mapping[str, int] | None = None) -> TwinState:
    """Fold a patient's facts into the state at `as_of` (facts dated later are ignored)."""
    m = maps()
    stale = dict(stale_after_days or {})
    pid = str((patient or {}).get("id", ""))
    pref = f"Patient/{pid}/_history/{patient_version}" if patient else None
    by_var: dict[str, list[Fact]] = {}
    for f in facts_:
        by_var.setdefault(f.variable, []).append(f)
    out: dict[str, Variable] = {}
    if patient is not None and pref is not None:
        birth = parse_time(patient.get("birthDate"))
        if birth is not None and birth <= as_of:
            out["age"] = Variable("age", round(_years(birth, as_of), 4), "a", birth, pref, 1, None, (), (pref,))
        gender = patient.get("gender")
        if gender in ("female", "male"):
            out["female"] = Variable("female", 1.0 if gender == "female" else 0.0, "1", None, pref, 1, None, (), (pref,))
        race = [e for e in patient.get("extension") or [] if isinstance(e, dict) and e.get("url") == RACE_URL]
        if race:
            omb = {(x.get("valueCoding") or {}).get("code") for x in race[0].get("extension") or []
                   if isinstance(x, dict) and x.get("url") == "ombCategory"}
            out["black"] = Variable("black", 1.0 if BLACK in omb else 0.0, "1", None, pref, 1, None, (), (pref,))
    for name, q in m.quantities.items():
        if name in by_var:
            out[name] = _quantity_variable(name, q.unit, by_var[name], as_of, stale.get(name, q.stale_days))
    smoking = by_var.get("smoker")
    if smoking:
        out["smoker"] = _quantity_variable("smoker", "1", smoking, as_of, stale.get("smoker", m.smoking_stale))
    for name in ("diabetes", "hypertension", "ckd", "heart_failure", "ascvd", "bp_treated", "statin", "insulin"):
        out[name] = _boolean_variable(name, by_var.get(name, []), as_of)
    _derive_egfr(out, by_var.get("creatinine", []), as_of, stale.get("egfr", m.quantities["egfr"].stale_days), pref)
    return TwinState(pid, as_of, out)


def _derive_egfr(out: dict[str, Variable], creatinine: list[Fact], as_of: datetime, stale_days: int,
                 pref: str | None) -> None:
    """eGFR by CKD-EPI 2021 from the latest creatinine, when no eGFR was measured since."""
    scr = out.get("creatinine")
    female = out.get("female")
    birth = out["age"].time if "age" in out else None
    if scr is None or scr.value is None or scr.time is None or female is None or female.value is None \
            or birth is None or pref is None:
        return
    measured = out.get("egfr")
    if measured is not None and measured.value is not None and measured.time is not None and measured.time >= scr.time:
        return
    value = ckd_epi_2021(scr.value, _years(birth, scr.time), female.value)
    flags = ["derived"] + (["stale"] if (as_of - scr.time).days > stale_days else [])
    assert scr.source is not None
    out["egfr"] = Variable("egfr", round(value, 2), "mL/min/{1.73_m2}", scr.time, scr.source, 1, None, tuple(flags),
                           (scr.source, pref))
