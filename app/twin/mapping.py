"""FHIR resources -> twin facts -> twin state (pure).

The code maps are data: fhir_profiles/twin/variables.json (which LOINC codes give which quantity,
as the Observation's value or as a component, so the systolic pressure inside the 55284-4 / 85354-9
panels is found; accepted units and their conversion to the canonical unit; plausible ranges;
staleness; SNOMED CT codes and ICD-10-CM patterns of the conditions; smoking-status answers; the
status rules below) and fhir_profiles/twin/medications.json (RxNorm codes and ingredient names of
the treatment classes). Both are read once, on first use.

Status rules (from variables.json "statuses"):
- Observation: final, amended and corrected count; preliminary counts with the flag "preliminary";
  registered, cancelled, entered-in-error and unknown give no facts.
- Condition: verificationStatus entered-in-error or refuted gives no facts; unconfirmed,
  provisional and differential give facts flagged "unconfirmed" that never set a variable to 1.
  A condition is active from onset (else recordedDate) until abatement; resolved, inactive or
  remission without an abatement date ends at an unknown time ("end-unknown"). A prior ASCVD
  event ("history": true) counts once it has happened, whatever its clinical status.
- MedicationRequest: intent order (any kind) or plan; status active is ongoing; stopped,
  completed and on-hold have ended (at dosageInstruction.timing.repeat.boundsPeriod.end if given,
  else at an unknown time); draft, cancelled, entered-in-error and unknown give no facts.

A deleted or corrected resource is handled by the caller replacing that resource's facts: facts()
of an entered-in-error version is empty, so the next build_state() recomputes without it.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .egfr import ckd_epi_2021
from .state import EXCLUDED, Fact, TwinState, Variable

DATA = Path(__file__).resolve().parents[2] / "fhir_profiles" / "twin"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10",
                           "urn:oid:2.16.840.1.113883.6.90"})
DAYS_PER_YEAR = 365.25
MIN_TREND_SPAN = timedelta(days=30)

# The twin vocabulary (the models take these names); variables.json must define exactly these.
VOCABULARY: tuple[str, ...] = (
    "age", "female", "black", "sbp", "dbp", "tc", "hdl", "ldl", "tg", "hba1c", "glucose", "creatinine",
    "egfr", "uacr", "bmi", "weight", "height", "smoker", "diabetes", "hypertension", "ckd", "heart_failure",
    "ascvd", "bp_treated", "statin", "insulin",
)
BOOLEAN_VARIABLES = frozenset({"female", "black", "smoker", "diabetes", "hypertension", "ckd", "heart_failure",
                               "ascvd", "bp_treated", "statin", "insulin"})
CONDITIONS: tuple[str, ...] = ("diabetes", "hypertension", "ckd", "heart_failure", "ascvd")
TREATMENTS: tuple[str, ...] = ("bp_treated", "statin", "insulin")
# Facts a Patient gives; build_state() takes them from the Patient itself when it has it.
PATIENT_FACTS = frozenset({"female", "black", "birth_date", "deceased"})

_MIN_TIME = datetime.min.replace(tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Resolver = Callable[[str], Mapping[str, Any] | None]


# ---------------------------------------------------------------- the code maps (data)


@dataclass(frozen=True, slots=True)
class QuantitySpec:
    name: str
    unit: str
    units: Mapping[str, tuple[float, float]]  # unit -> (multiply, add) to the canonical unit
    missing_unit: bool  # a value without a unit is taken as the canonical unit ("unit-assumed")
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Maps:
    units: Mapping[str, str]  # variable -> canonical unit
    quantities: Mapping[str, QuantitySpec]
    by_loinc: Mapping[str, str]  # LOINC code -> quantity variable (value or component)
    smoking_codes: frozenset[str]
    smoke_current: frozenset[str]
    smoke_not_current: frozenset[str]
    by_snomed: Mapping[str, tuple[str, ...]]  # SNOMED CT code -> condition variables
    icd_exact: Mapping[str, tuple[str, ...]]  # ICD-10 code without dots -> condition variables
    icd_prefix: tuple[tuple[str, str], ...]  # (prefix without dots, variable) for "E11.*" patterns
    history: frozenset[str]  # conditions that count once they happened
    rx: Mapping[str, tuple[str, ...]]  # RxNorm code -> treatment classes
    rx_exclude: frozenset[str]
    rx_names: tuple[tuple[str, str], ...]  # (ingredient, class)
    obs_keep: Mapping[str, tuple[str, ...]]  # Observation.status -> flags
    cond_ignore: frozenset[str]
    cond_unconfirmed: frozenset[str]
    cond_ended: frozenset[str]
    med_active: frozenset[str]
    med_ended: frozenset[str]
    med_intents: frozenset[str]
    female: frozenset[str]
    male: frozenset[str]
    race_url: str
    race_system: str
    black: frozenset[str]
    race_unknown: frozenset[str]
    age_range: tuple[float, float]
    stale_days: Mapping[str, int]
    codes: Mapping[str, tuple[tuple[str, str, str], ...]]  # variable -> codings that provide it


def _conversion(spec: Any) -> tuple[float, float]:
    if isinstance(spec, int | float):
        return float(spec), 0.0
    multiply = float(spec.get("multiply", 1.0)) / float(spec.get("divide", 1.0))
    return multiply, float(spec.get("add", 0.0))


def _icd_key(code: str) -> str:
    return code.replace(".", "").strip().upper()


@lru_cache(maxsize=1)
def maps() -> Maps:
    """The code maps, read once from fhir_profiles/twin (replace the files and restart to change them)."""
    v = json.loads((DATA / "variables.json").read_text(encoding="utf-8"))
    m = json.loads((DATA / "medications.json").read_text(encoding="utf-8"))
    variables: dict[str, Any] = v["variables"]
    if set(variables) != set(VOCABULARY):
        raise ValueError(f"variables.json must define exactly the twin vocabulary; differs in "
                         f"{sorted(set(variables) ^ set(VOCABULARY))}")
    default = int(v["stale_days_default"])
    units: dict[str, str] = {}
    quantities: dict[str, QuantitySpec] = {}
    by_loinc: dict[str, str] = {}
    by_snomed: dict[str, list[str]] = {}
    icd_exact: dict[str, list[str]] = {}
    icd_prefix: list[tuple[str, str]] = []
    history: set[str] = set()
    stale: dict[str, int] = {}
    codes: dict[str, list[tuple[str, str, str]]] = {}
    for name, spec in variables.items():
        units[name] = spec["unit"]
        found = codes.setdefault(name, [])
        found.extend((s, c, d) for s, c, d in spec.get("provided_by", []))
        if spec["kind"] == "quantity":
            low, high = spec["plausible"]
            quantities[name] = QuantitySpec(name, spec["unit"], {u: _conversion(f) for u, f in spec["units"].items()},
                                            bool(spec.get("missing_unit")), float(low), float(high))
            for system, code, display in spec["codes"]:
                if system != LOINC or by_loinc.setdefault(code, name) != name:
                    raise ValueError(f"variables.json: {code} must be a LOINC code of one variable only")
                found.append((system, code, display))
            found.extend((s, c, f"{d} (its {spec['display']} component)") for s, c, d in spec.get("panels", []))
        if spec.get("source") == "Condition":
            for system, code, display in spec["snomed"]:
                by_snomed.setdefault(code, []).append(name)
                found.append((system, code, display))
            for pattern, display in spec["icd10"]:
                if pattern.endswith("*"):
                    icd_prefix.append((_icd_key(pattern[:-1]), name))
                else:
                    icd_exact.setdefault(_icd_key(pattern), []).append(name)
                found.append(("http://hl7.org/fhir/sid/icd-10-cm", pattern, display))
            if spec.get("history"):
                history.add(name)
        if "stale_days" in spec or spec["kind"] == "quantity":
            stale[name] = int(spec.get("stale_days", default))
    smoking = variables["smoker"]
    codes["smoker"].extend((s, c, d) for s, c, d in smoking["codes"])
    rx: dict[str, list[str]] = {}
    names: list[tuple[str, str]] = []
    for cls, c in m["classes"].items():
        if cls not in TREATMENTS:
            raise ValueError(f"medications.json: unknown treatment class {cls!r}")
        for code, display, *_ in c["rxnorm"]:
            rx.setdefault(code, []).append(cls)
            codes[cls].append((m["system"], code, display))
        names.extend((n.lower(), cls) for n in c["names"])
    # eGFR can also be derived from creatinine.
    codes["egfr"].extend(x for x in codes["creatinine"] if x not in codes["egfr"])
    statuses = v["statuses"]
    obs = statuses["observation"]
    cond = statuses["condition"]
    med = statuses["medication_request"]
    race = variables["black"]
    sex = variables["female"]
    age_low, age_high = variables["age"]["plausible"]
    return Maps(
        units=units, quantities=quantities, by_loinc=by_loinc,
        smoking_codes=frozenset(c for s, c, _ in smoking["codes"] if s == LOINC),
        smoke_current=frozenset(c for _, c, _ in smoking["current"]),
        smoke_not_current=frozenset(c for _, c, _ in smoking["not_current"]),
        by_snomed={k: tuple(x) for k, x in by_snomed.items()},
        icd_exact={k: tuple(x) for k, x in icd_exact.items()}, icd_prefix=tuple(icd_prefix),
        history=frozenset(history),
        rx={k: tuple(x) for k, x in rx.items()}, rx_exclude=frozenset(e[0] for e in m.get("exclude", [])),
        rx_names=tuple(names),
        obs_keep={**{s: () for s in obs["keep"]}, **{s: (f,) for s, f in obs["keep_flagged"].items()}},
        cond_ignore=frozenset(cond["verification_ignore"]), cond_unconfirmed=frozenset(cond["verification_unconfirmed"]),
        cond_ended=frozenset(cond["clinical_ended"]),
        med_active=frozenset(med["active"]), med_ended=frozenset(med["ended"]), med_intents=frozenset(med["intents"]),
        female=frozenset(sex["female"]), male=frozenset(sex["male"]),
        race_url=race["extension"], race_system=race["system"], black=frozenset(race["black"]),
        race_unknown=frozenset(race["unknown"]),
        age_range=(float(age_low), float(age_high)),
        stale_days=stale,
        codes={k: tuple(x) for k, x in codes.items()},
    )


def codes_for(variable: str) -> list[tuple[str, str, str]]:
    """(system, code, display) of the codings that provide a variable, for error messages."""
    return list(maps().codes.get(variable, ()))


# ---------------------------------------------------------------- small readers


def parse_time(value: Any) -> datetime | None:
    """A FHIR date / dateTime / instant, in UTC (partial dates at their start; no zone given: UTC)."""
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
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _codings(cc: Any) -> list[tuple[str | None, str, str]]:
    """(system, code, display) of a CodeableConcept's codings."""
    if not isinstance(cc, dict):
        return []
    out: list[tuple[str | None, str, str]] = []
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            system = c.get("system")
            display = c.get("display")
            out.append((system if isinstance(system, str) else None, c["code"], display if isinstance(display, str) else ""))
    return out


def _first_code(cc: Any) -> str | None:
    got = _codings(cc)
    return got[0][1] if got else None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _obs_time(r: Mapping[str, Any]) -> datetime | None:
    if "effectiveDateTime" in r:
        return parse_time(r["effectiveDateTime"])
    if "effectiveInstant" in r:
        return parse_time(r["effectiveInstant"])
    period = _dict(r.get("effectivePeriod"))
    if period:
        return parse_time(period.get("start")) or parse_time(period.get("end"))
    timing = _dict(r.get("effectiveTiming"))
    events = timing.get("event")
    if isinstance(events, list) and events:
        return parse_time(events[0])
    return parse_time(r.get("issued"))


# ---------------------------------------------------------------- resources -> facts


def facts(resource: Mapping[str, Any], version: int | str, resolve: Resolver | None = None) -> list[Fact]:
    """What one resource version says about its patient (an empty list for anything else).

    `resolve` (optional) returns the Medication a MedicationRequest.medicationReference names when it
    is not contained; without it such a request is recognised only by the reference's display text.
    """
    handler = _HANDLERS.get(resource.get("resourceType", ""))
    return handler(resource, version, resolve) if handler is not None else []


def _quantity(spec: QuantitySpec, q: Any, when: datetime | None, source: str, flags: tuple[str, ...]) -> Fact | None:
    if not isinstance(q, dict):
        return None
    raw = q.get("value")
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
        return None
    code, unit = q.get("code"), q.get("unit")
    given = code if isinstance(code, str) and code else unit if isinstance(unit, str) and unit else ""
    conv = spec.units.get(code) if isinstance(code, str) else None
    if conv is None and isinstance(unit, str):
        conv = spec.units.get(unit)
    if conv is None and not given and spec.missing_unit:
        conv, flags = (1.0, 0.0), (*flags, "unit-assumed")
    if conv is None:
        return Fact(spec.name, float(raw), given, when, source, (*flags, "unit-not-convertible"))
    value = float(raw) * conv[0] + conv[1]
    if q.get("comparator"):
        flags = (*flags, "censored")
    if not spec.low <= value <= spec.high:
        flags = (*flags, "implausible")
    return Fact(spec.name, value, spec.unit, when, source, flags)


def _observation(r: Mapping[str, Any], version: int | str, _resolve: Resolver | None) -> list[Fact]:
    m = maps()
    name: str | None = None
    smoking = False
    for system, code, _ in _codings(r.get("code")):
        if system == LOINC:
            name = m.by_loinc.get(code)
            smoking = code in m.smoking_codes
            if name is not None or smoking:
                break
    components = r.get("component")
    if name is None and not smoking and not components:
        return []  # the common case: an Observation the twin does not use
    flags = m.obs_keep.get(r.get("status", ""))
    if flags is None:
        return []
    source = f"Observation/{r.get('id')}/_history/{version}"
    when = _obs_time(r)
    out: list[Fact] = []
    if smoking:
        answers = {c for _, c, _ in _codings(r.get("valueCodeableConcept"))}
        if answers & m.smoke_current:
            out.append(Fact("smoker", 1.0, "1", when, source, flags))
        elif answers & m.smoke_not_current:
            out.append(Fact("smoker", 0.0, "1", when, source, flags))
    elif name is not None:
        f = _quantity(m.quantities[name], r.get("valueQuantity"), when, source, flags)
        if f is not None:
            out.append(f)
    for comp in components if isinstance(components, list) else ():
        if not isinstance(comp, dict):
            continue
        for system, code, _ in _codings(comp.get("code")):
            cname = m.by_loinc.get(code) if system == LOINC else None
            if cname is not None:
                f = _quantity(m.quantities[cname], comp.get("valueQuantity"), when, source, flags)
                if f is not None:
                    out.append(f)
                break
    return out


def _condition_variables(m: Maps, cc: Any) -> list[str]:
    names: list[str] = []
    for system, code, _ in _codings(cc):
        if system == SNOMED:
            names.extend(m.by_snomed.get(code, ()))
        elif system in ICD10_SYSTEMS:
            key = _icd_key(code)
            names.extend(m.icd_exact.get(key, ()))
            names.extend(n for prefix, n in m.icd_prefix if key.startswith(prefix))
    return list(dict.fromkeys(names))


def _condition(r: Mapping[str, Any], version: int | str, _resolve: Resolver | None) -> list[Fact]:
    m = maps()
    names = _condition_variables(m, r.get("code"))
    if not names:
        return []
    verification = _first_code(r.get("verificationStatus"))
    if verification in m.cond_ignore:
        return []
    flags: tuple[str, ...] = ("unconfirmed",) if verification in m.cond_unconfirmed else ()
    onset = (parse_time(r.get("onsetDateTime")) or parse_time(_dict(r.get("onsetPeriod")).get("start"))
             or parse_time(r.get("recordedDate")))
    abated = parse_time(r.get("abatementDateTime"))
    if abated is None:
        period = _dict(r.get("abatementPeriod"))
        abated = parse_time(period.get("end")) or parse_time(period.get("start"))
    ended = abated is not None or _first_code(r.get("clinicalStatus")) in m.cond_ended \
        or r.get("abatementBoolean") is True or "abatementString" in r or "abatementAge" in r
    end_flags = ("end-unknown",) if ended and abated is None else ()
    source = f"Condition/{r.get('id')}/_history/{version}"
    return [Fact(n, 1.0, "1", onset, source, flags) if n in m.history
            else Fact(n, 1.0, "1", onset, source, (*flags, *end_flags), abated)
            for n in names]


def _medication_codings(r: Mapping[str, Any], resolve: Resolver | None) -> tuple[list[tuple[str | None, str, str]], str]:
    """The drug's codings and its free text (CodeableConcept text, reference display)."""
    cc = r.get("medicationCodeableConcept")
    if isinstance(cc, dict):
        return _codings(cc), str(cc.get("text") or "")
    ref = _dict(r.get("medicationReference"))
    target = ref.get("reference")
    text = str(ref.get("display") or "")
    med: Mapping[str, Any] | None = None
    if isinstance(target, str) and target.startswith("#"):
        med = next((c for c in r.get("contained") or () if isinstance(c, dict) and c.get("resourceType") == "Medication"
                    and c.get("id") == target[1:]), None)
    elif isinstance(target, str) and resolve is not None:
        med = resolve(target)
    if med is not None:
        code = _dict(med.get("code"))
        return _codings(code), " ".join(x for x in (text, str(code.get("text") or "")) if x)
    return [], text


def _medication(r: Mapping[str, Any], version: int | str, resolve: Resolver | None) -> list[Fact]:
    m = maps()
    status = r.get("status")
    if (status not in m.med_active and status not in m.med_ended) or r.get("intent") not in m.med_intents:
        return []
    codings, text = _medication_codings(r, resolve)
    classes: list[str] = []
    known = False
    for system, code, _ in codings:
        if system == RXNORM:
            if code in m.rx_exclude:
                known = True
            elif code in m.rx:
                known = True
                classes.extend(m.rx[code])
    flags: tuple[str, ...] = ()
    if not known:
        words = " ".join([text, *(d for _, _, d in codings)]).lower()
        classes = [cls for name, cls in m.rx_names if name in words]
        flags = ("by-name",)
    if not classes:
        return []
    dosage = next((d for d in r.get("dosageInstruction") or () if isinstance(d, dict)), {})
    bounds = _dict(_dict(_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod"))
    when = (parse_time(r.get("authoredOn")) or parse_time(bounds.get("start"))
            or parse_time(_dict(_dict(r.get("dispenseRequest")).get("validityPeriod")).get("start")))
    end = parse_time(bounds.get("end"))
    if status in m.med_ended and end is None:
        flags = (*flags, "end-unknown")
    source = f"MedicationRequest/{r.get('id')}/_history/{version}"
    return [Fact(cls, 1.0, "1", when, source, flags, end) for cls in dict.fromkeys(classes)]


def _patient(r: Mapping[str, Any], version: int | str, _resolve: Resolver | None) -> list[Fact]:
    m = maps()
    source = f"Patient/{r.get('id')}/_history/{version}" if version != "" else f"Patient/{r.get('id')}"
    out: list[Fact] = []
    gender = r.get("gender")
    if gender in m.female or gender in m.male:
        out.append(Fact("female", 1.0 if gender in m.female else 0.0, "1", None, source))
    for ext in r.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == m.race_url:
            omb = {_dict(x.get("valueCoding")).get("code") for x in ext.get("extension") or ()
                   if isinstance(x, dict) and x.get("url") == "ombCategory"
                   and _dict(x.get("valueCoding")).get("system") in (m.race_system, None)}
            omb -= m.race_unknown
            omb.discard(None)
            if omb:
                out.append(Fact("black", 1.0 if omb & m.black else 0.0, "1", None, source))
            break
    birth = parse_time(r.get("birthDate"))
    if birth is not None:
        out.append(Fact("birth_date", (birth - _EPOCH).total_seconds(), "s", birth, source))
    died = parse_time(r.get("deceasedDateTime"))
    if died is not None or r.get("deceasedBoolean") is True:
        out.append(Fact("deceased", 1.0, "1", died, source))
    return out


_HANDLERS: dict[str, Callable[[Mapping[str, Any], int | str, Resolver | None], list[Fact]]] = {
    "Observation": _observation,
    "Condition": _condition,
    "MedicationRequest": _medication,
    "Patient": _patient,
}


# ---------------------------------------------------------------- facts -> state


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _key(f: Fact) -> tuple[datetime, str]:
    return (f.time or _MIN_TIME, f.source)


def _completed_years(birth: datetime, at: datetime) -> int:
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


def _trend(points: Sequence[tuple[datetime, float]]) -> float | None:
    """Least-squares slope per year (scipy.stats.linregress) over >= 2 points spanning > 30 days."""
    if len(points) < 2 or points[-1][0] - points[0][0] <= MIN_TREND_SPAN:
        return None
    t0 = points[0][0]
    xs = np.fromiter(((t - t0).total_seconds() / 86_400 / DAYS_PER_YEAR for t, _ in points), dtype=np.float64)
    ys = np.fromiter((y for _, y in points), dtype=np.float64)
    from scipy import stats  # imported on first use: it costs the server's start ~0.4 s

    return float(stats.linregress(xs, ys).slope)


def _stale(t: datetime | None, as_of: datetime, days: int) -> tuple[str, ...]:
    return ("stale",) if t is not None and as_of - t > timedelta(days=days) else ()


def _measured(name: str, unit: str, got: list[Fact], as_of: datetime, stale_days: int, trend: bool = True) -> Variable:
    """A measured variable: the latest usable value at or before as_of, its count and trend."""
    if not got:
        return Variable(name, None, unit, None, None, 0, None, (), ())
    dated = sorted((f for f in got if f.time is None or f.time <= as_of), key=_key)
    usable = [f for f in dated if f.usable]
    current = usable[-1] if usable else None
    flags: dict[str, None] = {}
    # Excluded values at least as new as the current one say why the newest value is not used.
    for f in dated:
        if not f.usable and (current is None or _key(f) >= _key(current)):
            flags.update(dict.fromkeys(x for x in f.flags if x in EXCLUDED))
    if current is None:
        return Variable(name, None, unit, None, None, 0, None, tuple(flags), ())
    flags.update(dict.fromkeys(current.flags))
    flags.update(dict.fromkeys(_stale(current.time, as_of, stale_days)))
    slope = _trend([(f.time, f.value) for f in usable if f.time is not None]) if trend else None
    return Variable(name, current.value, unit, current.time, current.source, len(usable), slope, tuple(flags),
                    (current.source,))


def _ends(got: list[Fact]) -> dict[int, tuple[datetime, bool] | None]:
    """Each fact's end (None: ongoing), and whether it was inferred. A missing end ("end-unknown")
    is the start of the next record of the same variable (a renewal), else the fact's own start."""
    starts = sorted({f.time for f in got if f.usable and f.time is not None})
    out: dict[int, tuple[datetime, bool] | None] = {}
    for f in got:
        if f.end is not None:
            out[id(f)] = (f.end, False)
        elif "end-unknown" not in f.flags:
            out[id(f)] = None
        else:
            i = bisect_right(starts, f.time) if f.time is not None else len(starts)
            out[id(f)] = (starts[i], True) if i < len(starts) else (f.time or _MIN_TIME, False)
    return out


def _flag(name: str, got: list[Fact], as_of: datetime) -> Variable:
    """A condition or treatment: 1 while a usable record is active at as_of, else 0."""
    if not got:
        return Variable(name, 0.0, "1", None, None, 0, None, ("no-record",), ())
    relevant = [f for f in got if f.time is None or f.time <= as_of]
    started = sorted((f for f in relevant if f.usable), key=_key)
    extra = ("unconfirmed",) if any("unconfirmed" in f.flags for f in relevant) else ()
    ends = _ends(got)

    def over(f: Fact) -> bool:
        end = ends[id(f)]
        return end is not None and end[0] <= as_of

    active = [f for f in started if not over(f)]
    if active:
        first = active[0]
        flags: dict[str, None] = {}
        if any((ends[id(f)] or (as_of, False))[1] for f in active):
            flags["end-inferred"] = None
        if any("by-name" in f.flags for f in active):
            flags["by-name"] = None
        flags.update(dict.fromkeys(extra))
        return Variable(name, 1.0, "1", first.time, first.source, len(started), None, tuple(flags),
                        tuple(dict.fromkeys(f.source for f in active)))
    if started:
        def ended_at(f: Fact) -> datetime:
            end = ends[id(f)]
            return end[0] if end is not None else _MIN_TIME

        last = max(started, key=lambda f: (ended_at(f), f.source))
        when = ended_at(last)
        return Variable(name, 0.0, "1", None if when == _MIN_TIME else when, last.source, len(started), None,
                        ("ended", *extra), (last.source,))
    return Variable(name, 0.0, "1", None, None, 0, None, ("no-record", *extra), ())


def build_state(patient: Mapping[str, Any] | None, patient_version: int | str | None, facts: Iterable[Fact],
                as_of: datetime, stale_after_days: Mapping[str, int] | None = None, *,
                only: Iterable[str] | None = None, trends: bool = True) -> TwinState:
    """Fold a patient's facts into the twin state at `as_of` (values measured later are not current).

    With `patient`, age, sex and race come from that Patient version and any Patient facts among
    `facts` are ignored; without it they come from Patient facts among `facts`.
    `stale_after_days` overrides the per-variable staleness of variables.json. With `only`, the
    state holds just those variables (plus age, sex and race); `trends=False` leaves trends out
    (a population run needs neither the rest nor the trends).
    """
    m = maps()
    wanted = None if only is None else set(only)
    as_of = _aware(as_of)
    stale = {**m.stale_days, **(stale_after_days or {})}
    by_var: dict[str, list[Fact]] = {}
    for f in facts:
        if patient is not None and f.variable in PATIENT_FACTS:
            continue
        if (f.time is not None and f.time.tzinfo is None) or (f.end is not None and f.end.tzinfo is None):
            f = Fact(f.variable, f.value, f.unit, f.time and _aware(f.time), f.source, f.flags, f.end and _aware(f.end))
        by_var.setdefault(f.variable, []).append(f)
    if patient is not None:
        version = patient_version if patient_version is not None else _dict(patient.get("meta")).get("versionId", "")
        for f in _patient(patient, version, None):
            by_var.setdefault(f.variable, []).append(f)
    pid = str(patient.get("id", "")) if patient is not None else ""
    if not pid:
        for name in PATIENT_FACTS:
            if by_var.get(name):
                pid = by_var[name][0].source.split("/")[1]
                break

    if wanted is not None and "egfr" in wanted:
        wanted.add("creatinine")
    out: dict[str, Variable] = {}
    out.update(_demographics(m, by_var, as_of))
    for name, spec in m.quantities.items():
        if wanted is None or name in wanted:
            out[name] = _measured(name, spec.unit, by_var.get(name, []), as_of, stale[name], trend=trends)
    if wanted is None or "smoker" in wanted:
        out["smoker"] = _measured("smoker", "1", by_var.get("smoker", []), as_of, stale["smoker"], trend=False)
    for name in (*CONDITIONS, *TREATMENTS):
        if wanted is None or name in wanted:
            out[name] = _flag(name, by_var.get(name, []), as_of)
    if "egfr" in out:
        _derive_egfr(out, by_var, as_of, stale["egfr"], trends)
    return TwinState(pid, as_of, {name: out[name] for name in VOCABULARY if name in out})


def sources_of(variables: Iterable[str]) -> set[str]:
    """The fact variables that state variables are folded from (see build_state's `only`): age
    from the birth date (and death), a derived eGFR from creatinine, birth date and sex."""
    out = set(variables)
    if "egfr" in out:
        out |= {"creatinine", "birth_date", "female"}
    if "age" in out:
        out |= {"birth_date", "deceased"}
    return out


def _latest(got: list[Fact] | None) -> Fact | None:
    return max(got, key=_key) if got else None


def _demographics(m: Maps, by_var: Mapping[str, list[Fact]], as_of: datetime) -> dict[str, Variable]:
    out: dict[str, Variable] = {}
    birth = _latest(by_var.get("birth_date"))
    age: float | None = None
    flags: tuple[str, ...] = ()
    if birth is not None and birth.time is not None:
        years = _completed_years(birth.time, as_of)
        if m.age_range[0] <= years <= m.age_range[1]:
            age = float(years)
        else:
            flags = ("implausible",)
        died = _latest(by_var.get("deceased"))
        if died is not None and (died.time is None or died.time <= as_of):
            flags = (*flags, "deceased")
    out["age"] = (Variable("age", age, "a", birth.time, birth.source, 1, None, flags, (birth.source,))
                  if birth is not None and age is not None
                  else Variable("age", None, "a", None, None, 0, None, flags, ()))
    for name in ("female", "black"):
        f = _latest(by_var.get(name))
        out[name] = (Variable(name, f.value, "1", None, f.source, 1, None, (), (f.source,)) if f is not None
                     else Variable(name, None, "1", None, None, 0, None, (), ()))
    return out


def _derive_egfr(out: dict[str, Variable], by_var: Mapping[str, list[Fact]], as_of: datetime, stale_days: int,
                 trend: bool = True) -> None:
    """eGFR by CKD-EPI 2021 from creatinine when no eGFR was measured at or after the latest creatinine."""
    scr, measured = out["creatinine"], out["egfr"]
    birth = _latest(by_var.get("birth_date"))
    sex = out["female"]
    if scr.value is None or scr.time is None or scr.source is None or birth is None or birth.time is None \
            or sex.value is None or sex.source is None:
        return
    if measured.value is not None and measured.time is not None and measured.time >= scr.time:
        return
    series = sorted((f for f in by_var.get("creatinine", []) if f.usable and f.time is not None and f.time <= as_of
                     and f.time >= birth.time), key=_key)
    if not series:
        return
    ages = np.array([_completed_years(birth.time, f.time) for f in series if f.time is not None], dtype=np.float64)
    values = ckd_epi_2021(np.array([f.value for f in series], dtype=np.float64), ages, sex.value)
    spec = maps().quantities["egfr"]
    usable = [(f.time, float(v)) for f, v in zip(series, values, strict=True)
              if f.time is not None and spec.low <= v <= spec.high]
    current = float(values[-1])
    flags: dict[str, None] = {"derived": None}
    flags.update(dict.fromkeys(x for x in scr.flags if x != "stale"))
    if not spec.low <= current <= spec.high:
        out["egfr"] = Variable("egfr", None, spec.unit, None, None, 0, None, (*flags, "implausible"), ())
        return
    flags.update(dict.fromkeys(_stale(scr.time, as_of, stale_days)))
    out["egfr"] = Variable("egfr", current, spec.unit, scr.time, scr.source, len(usable), _trend(usable) if trend else None, tuple(flags),
                           tuple(dict.fromkeys((scr.source, sex.source, birth.source))))
