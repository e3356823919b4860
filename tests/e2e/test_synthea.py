"""All 32 shared Synthea bundles load over HTTP into a real server with zero errors, and search
answers match counts computed independently from the bundle files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from conftest import Server, synthea_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HDR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _codes(concept: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])}


class Expected:
    """What the files say, computed without the server."""

    def __init__(self, files: list[Path]) -> None:
        self.patients: dict[str, dict[str, Any]] = {}  # fullUrl/identifier key -> facts
        self.totals: Counter[str] = Counter()
        for f in files:
            bundle = orjson.loads(f.read_bytes())
            entries = bundle.get("entry", [])
            patient = next((e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient"), None)
            for e in entries:
                self.totals[e["resource"]["resourceType"]] += 1
            if patient is None:
                continue
            facts: Counter[str] = Counter()
            for e in entries:
                r = e["resource"]
                if r["resourceType"] == "Observation":
                    for s, c in _codes(r.get("code")):
                        facts[f"obs:{s}|{c}"] += 1
                    comp = {cc for comp in r.get("component", []) for cc in _codes(comp.get("code"))}
                    for s, c in comp:
                        facts[f"comp:{s}|{c}"] += 1
                    facts["obs"] += 1
                elif r["resourceType"] == "Condition":
                    for s, c in _codes(r.get("code")):
                        facts[f"cond:{s}|{c}"] += 1
            ident = next(i for i in patient["identifier"] if i.get("system") == "https://github.com/synthetichealth/synthea")
            self.patients[ident["value"]] = {"facts": facts, "family": patient["name"][0]["family"],
                                             "birthDate": patient["birthDate"], "gender": patient["gender"]}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("synthea")
    srv = Server(tmp, "synthea", workers=1)
    files = synthea_files()
    session = srv.session()
    errors: list[Any] = []
    for f in files:
        r = session.post(srv.base, data=f.read_bytes(), headers=HDR, timeout=600)
        if r.status_code != 200:
            errors.append((f.name, r.status_code, r.text[:500]))
            continue
        bad = [e["response"] for e in r.json()["entry"] if not e["response"]["status"].startswith(("200", "201"))]
        if bad:
            errors.append((f.name, bad[:2]))
    yield srv, Expected(files), errors, session
    srv.stop()


def _count(session: requests.Session, url: str, **params: str) -> int:
    params["_summary"] = "count"
    r = session.get(url, params=params, headers=HDR, timeout=60)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def _pid(session: requests.Session, base: str, ident: str) -> str:
    r = session.get(f"{base}/Patient", params={"identifier": f"https://github.com/synthetichealth/synthea|{ident}"}, headers=HDR, timeout=60)
    entries = r.json()["entry"]
    assert len(entries) == 1
    return str(entries[0]["resource"]["id"])


def test_every_bundle_loads_without_error(loaded: Any) -> None:
    _, expected, errors, _ = loaded
    assert errors == []
    assert len(expected.patients) == 30


def test_type_totals_match_the_files(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for rtype in ("Patient", "Observation", "Condition", "Encounter", "Claim", "Immunization"):
        assert _count(s, f"{srv.base}/{rtype}") == expected.totals[rtype], rtype


@pytest.mark.parametrize("code", ["http://loinc.org|4548-4", "http://loinc.org|2093-3", "http://loinc.org|39156-5"])
def test_observations_by_code_per_patient(loaded: Any, code: str) -> None:
    srv, expected, _, s = loaded
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        assert _count(s, f"{srv.base}/Observation", patient=pid, code=code) == p["facts"][f"obs:{code}"], ident


def test_conditions_by_snomed_per_patient(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        code = "http://snomed.info/sct|44054006"
        assert _count(s, f"{srv.base}/Condition", subject=f"Patient/{pid}", code=code) == p["facts"][f"cond:{code}"]


def test_blood_pressure_components_found_by_component_and_combo_code(loaded: Any) -> None:
    srv, expected, _, s = loaded
    total = 0
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        want = p["facts"]["comp:http://loinc.org|8480-6"]
        total += want
        assert _count(s, f"{srv.base}/Observation", patient=pid, **{"component-code": "http://loinc.org|8480-6"}) == want
        assert _count(s, f"{srv.base}/Observation", patient=pid, **{"combo-code": "8480-6"}) == want
        assert _count(s, f"{srv.base}/Observation", patient=pid, code="8480-6") == p["facts"]["obs:http://loinc.org|8480-6"]
    assert total > 100


def test_chained_search_by_patient_family_matches(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for ident, p in list(expected.patients.items())[:8]:
        families = [q for q in expected.patients.values() if q["family"] == p["family"]]
        want = sum(q["facts"]["obs"] for q in families)
        got = _count(s, f"{srv.base}/Observation", **{"patient.family:exact": p["family"]})
        assert got == want, (ident, p["family"])


def test_birthdate_and_gender(loaded: Any) -> None:
    srv, expected, _, s = loaded
    want = sum(1 for p in expected.patients.values() if p["birthDate"] < "1960-01-01" and p["gender"] == "female")
    assert _count(s, f"{srv.base}/Patient", birthdate="lt1960-01-01", gender="female") == want
    want = sum(1 for p in expected.patients.values() if p["birthDate"].startswith("1990") or p["birthDate"] > "1990")
    assert _count(s, f"{srv.base}/Patient", birthdate="ge1990") == want


def test_loading_the_practitioner_batch_twice_creates_no_second_practitioner(loaded: Any) -> None:
    srv, _, _, s = loaded
    before = _count(s, f"{srv.base}/Practitioner")
    f = next(f for f in synthea_files() if f.name.startswith("0-practitioner"))
    bundle = orjson.loads(f.read_bytes())
    r = s.post(srv.base, data=f.read_bytes(), headers=HDR, timeout=600)
    assert r.status_code == 200
    conditional = [resp for e, resp in zip(bundle["entry"], r.json()["entry"], strict=True) if e["request"].get("ifNoneExist")]
    assert len(conditional) > 100
    assert {resp["response"]["status"] for resp in conditional} == {"200 OK"}
    assert _count(s, f"{srv.base}/Practitioner") == before


# ---------------------------------------------------------------- $twin against the files
#
# "Load real Synthea patients, then $twin values equal what the bundle says": every expected value
# below is computed here from the bundle JSON, with the code lists, units, plausible ranges and
# staleness limits of docs/twin.md and fhir_profiles/twin/README.md written out again (no app code is
# imported). One $twin GET per patient, then one batch of vreads for every source the twins name.

AS_OF = "2025-06-01T00:00:00Z"  # after every date in the data (checked), so every record is current
AS_OF_T = datetime(2025, 6, 1, tzinfo=UTC)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBS_KEEP = {"final", "amended", "corrected"}  # twin.md: these count (preliminary too, flagged; none here)
PATIENT_FILES = [f for f in synthea_files() if not f.name.startswith("0-")]
_MISSING: Any = object()  # a Quantity without code and unit (key of the "unit assumed" conversion)


@dataclass(frozen=True)
class Spec:
    """A measured twin variable as the docs define it: the LOINC codes (as the Observation's code or a
    component's), canonical unit, conversion of the units the files use, plausible range, stale days."""

    codes: frozenset[str]
    unit: str
    units: dict[Any, float]
    plausible: tuple[float, float]
    stale_days: int


def _spec(codes: str, unit: str, low: float, high: float, stale: int) -> Spec:
    return Spec(frozenset(codes.split()), unit, {unit: 1.0}, (low, high), stale)


# Codes: those twin.md lists that Synthea writes. Units: the canonical one, plus the only other
# spellings in the files: no unit at all on 137 Synthea 2019 blood-pressure components (twin README:
# taken as mm[Hg], flag unit-assumed) and "mL/min" on some 2019 eGFR values (README: factor 1).
QUANTITIES: dict[str, Spec] = {
    "sbp": Spec(frozenset({"8480-6"}), "mm[Hg]", {"mm[Hg]": 1.0, _MISSING: 1.0}, (50, 300), 365),
    "dbp": Spec(frozenset({"8462-4"}), "mm[Hg]", {"mm[Hg]": 1.0, _MISSING: 1.0}, (20, 200), 365),
    "tc": _spec("2093-3 14647-2", "mg/dL", 40, 1000, 1825),
    "hdl": _spec("2085-9 14646-4", "mg/dL", 5, 250, 1825),
    "ldl": _spec("18262-6 13457-7 2089-1 22748-8", "mg/dL", 5, 800, 1825),
    "tg": _spec("2571-8 14927-8", "mg/dL", 10, 10000, 1825),
    "hba1c": _spec("4548-4 17856-6 59261-8", "%", 3, 20, 365),
    "glucose": _spec("2339-0 2345-7 1558-6", "mg/dL", 10, 2000, 365),
    "creatinine": _spec("2160-0 38483-4", "mg/dL", 0.1, 30, 365),
    "uacr": _spec("14959-1 9318-7", "mg/g", 0, 30000, 365),
    "bmi": _spec("39156-5", "kg/m2", 8, 150, 730),
    "weight": _spec("29463-7 3141-9", "kg", 0.3, 700, 730),
    "height": _spec("8302-2 8306-3", "cm", 20, 280, 3650),
}
EGFR = Spec(frozenset(["33914-3", "98979-8", "62238-1", "48642-3", "48643-1"]), "mL/min/{1.73_m2}",
            {"mL/min/{1.73_m2}": 1.0, "mL/min": 1.0}, (1, 200), 365)
SMOKER_CURRENT = {"449868002", "428041000124106", "77176002", "428071000124103", "428061000124105", "65568007"}
SMOKER_NOT = {"8517006", "266919005"}
CONDITIONS = {
    "diabetes": {"44054006", "73211009", "46635009", "127013003", "368581000119106"},
    "hypertension": {"38341003", "59621000", "1201005"},
}

# Cases where the server disagrees with the files: (test, variable, file) -> reason (xfail strict).
KNOWN_MISMATCHES: dict[tuple[str, str, str], str] = {}


def _utc(text: str) -> datetime:
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    t = datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _years(birth: datetime, at: datetime) -> int:
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Point:
    time: datetime
    value: float
    resource: dict[str, Any]  # the Observation (or Condition) of the file it comes from
    unit_given: bool = True


def _values(obs: dict[str, Any], spec: Spec) -> list[tuple[float, bool]]:
    """The (canonical value, unit given) pairs an Observation gives for a variable: its own value when
    its code is one of the variable's, else its components with such a code."""
    found: list[dict[str, Any]] = []
    if {c for s, c in _codes(obs.get("code")) if s == LOINC} & spec.codes:
        found.append(obs.get("valueQuantity") or {})
    else:
        found += [comp.get("valueQuantity") or {} for comp in obs.get("component", [])
                  if {c for s, c in _codes(comp.get("code")) if s == LOINC} & spec.codes]
    out = []
    for q in found:
        if "value" not in q:
            continue
        unit = q.get("code") or q.get("unit") or _MISSING
        assert unit in spec.units, f"unit {unit!r} in the data: add it with its factor from the twin README"
        out.append((float(q["value"]) * spec.units[unit], unit is not _MISSING))
    return out


def _points(resources: list[dict[str, Any]], spec: Spec) -> tuple[list[Point], list[Point]]:
    """(usable, excluded as implausible) measurements of a variable at or before AS_OF, by time."""
    usable: list[Point] = []
    excluded: list[Point] = []
    for r in resources:
        if r["resourceType"] != "Observation" or r.get("status") not in OBS_KEEP:
            continue
        t = _utc(r["effectiveDateTime"])
        if t > AS_OF_T:
            continue
        for value, given in _values(r, spec):
            low, high = spec.plausible
            (usable if low <= value <= high else excluded).append(Point(t, value, r, given))
    return sorted(usable, key=lambda p: p.time), sorted(excluded, key=lambda p: p.time)


def _slope(points: list[tuple[datetime, float]]) -> float | None:
    """Least-squares slope per year (days / 365.25), as twin.md defines the trend: two or more values
    spanning over 30 days, else none."""
    if len(points) < 2 or (points[-1][0] - points[0][0]) <= timedelta(days=30):
        return None
    t0 = points[0][0]
    xs = np.array([(t - t0).total_seconds() / 86400 / 365.25 for t, _ in points])
    ys = np.array([v for _, v in points])
    return float(np.polyfit(xs, ys, 1)[0])


def _fingerprint(r: dict[str, Any]) -> dict[str, Any]:
    """What identifies an Observation or Condition across the load (the server gives new ids and
    rewrites the urn:uuid references, so those are left out)."""
    keys = ("resourceType", "status", "code", "effectiveDateTime", "valueQuantity", "valueCodeableConcept",
            "component", "onsetDateTime", "abatementDateTime", "clinicalStatus", "verificationStatus")
    return {k: r[k] for k in keys if k in r}


@dataclass
class Case:
    name: str
    resources: list[dict[str, Any]]
    patient: dict[str, Any]
    patient_ref: str  # Patient/{id}/_history/{v} as $twin names it
    variables: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, Any]]  # versioned reference -> the resource the server serves for it


def _parse_twin(body: dict[str, Any]) -> tuple[str, str, dict[str, dict[str, Any]]]:
    assert body["resourceType"] == "Parameters"
    top = {p["name"]: p for p in body["parameter"] if p["name"] != "variable"}
    out: dict[str, dict[str, Any]] = {}
    for p in body["parameter"]:
        if p["name"] != "variable":
            continue
        parts: dict[str, Any] = {"flag": []}
        for part in p["part"]:
            if part["name"] == "flag":
                parts["flag"].append(part["valueCode"])
            else:
                parts[part["name"]] = next(v for k, v in part.items() if k.startswith("value"))
        out[parts["name"]] = parts
    return top["patient"]["valueReference"]["reference"], top["asOf"]["valueDateTime"], out


@pytest.fixture(scope="module")
def twins(loaded: Any) -> dict[str, Case]:
    srv, _, errors, s = loaded
    assert errors == []
    cases: dict[str, Case] = {}
    for f in PATIENT_FILES:
        resources = [e["resource"] for e in orjson.loads(f.read_bytes())["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        ident = next(i["value"] for i in patient["identifier"] if i.get("system") == "https://github.com/synthetichealth/synthea")
        pid = _pid(s, srv.base, ident)
        r = s.get(f"{srv.base}/Patient/{pid}/$twin", params={"asOf": AS_OF}, headers=HDR, timeout=60)
        assert r.status_code == 200, r.text
        ref, as_of, variables = _parse_twin(r.json())
        assert ref.startswith(f"Patient/{pid}/_history/") and as_of == AS_OF
        cases[f.name] = Case(f.name, resources, patient, ref, variables, {})
    refs = sorted({v["source"]["reference"] for c in cases.values() for v in c.variables.values()
                   if "source" in v and not v["source"]["reference"].startswith("Patient/")})
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": x}} for x in refs]}
    r = s.post(srv.base, json=batch, headers=HDR, timeout=120)
    assert r.status_code == 200, r.text
    served = {}
    for ref, e in zip(refs, r.json()["entry"], strict=True):
        assert e["response"]["status"].startswith("200"), (ref, e["response"])
        served[ref] = e["resource"]
    for c in cases.values():
        c.sources = served
    return cases


def _case(twins: dict[str, Case], fname: str) -> Case:
    return twins[fname]


def _served(case: Case, ref: str, rtype: str) -> dict[str, Any]:
    """The resource a versioned source reference names, checked to be that exact version."""
    kind, rid, hist, version = ref.split("/")
    assert (kind, hist) == (rtype, "_history"), ref
    res = case.sources[ref]
    assert res["id"] == rid and res["meta"]["versionId"] == version, ref
    return res


def _params(test: str, names: list[str]) -> list[Any]:
    out = []
    for name in names:
        for f in PATIENT_FILES:
            reason = KNOWN_MISMATCHES.get((test, name, f.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(name, f.name, marks=marks, id=f"{name}-{f.stem[:24]}"))
    return out


def _check_measured(case: Case, name: str, spec: Spec, usable: list[Point], excluded: list[Point]) -> None:
    got = case.variables[name]
    assert got["count"] == len(usable)
    if not usable:
        assert "value" not in got and "source" not in got
        return
    latest = usable[-1].time
    candidates = [p for p in usable if p.time == latest]  # same time: the server may pick either (by id)
    assert got["time"] == _fmt(latest)
    q = got["value"]
    assert (q["unit"], q["code"], q["system"]) == (spec.unit, spec.unit, "http://unitsofmeasure.org")
    assert any(q["value"] == pytest.approx(p.value, abs=1e-6) for p in candidates), (q, [p.value for p in candidates])
    # The source is the file's Observation that holds this value at that time.
    src = _served(case, got["source"]["reference"], "Observation")
    assert _utc(src["effectiveDateTime"]) == latest
    assert any(v == pytest.approx(q["value"], abs=1e-6) for v, _ in _values(src, spec))
    assert _fingerprint(src) in [_fingerprint(p.resource) for p in candidates]
    trend = _slope([(p.time, p.value) for p in usable])
    if trend is None:
        assert "trend" not in got
    else:
        assert got["trend"]["value"] == pytest.approx(trend, rel=1e-6, abs=1e-5)
        assert got["trend"]["code"] == f"{spec.unit}/a"
    flags = set(got["flag"])
    assert ("stale" in flags) == (AS_OF_T - latest > timedelta(days=spec.stale_days))
    if all(not p.unit_given for p in candidates):
        assert "unit-assumed" in flags
    if all(p.unit_given for p in candidates):
        assert "unit-assumed" not in flags
    # An implausible value newer than the current one is named by the flag (twin.md); none older.
    if any(p.time > latest for p in excluded):
        assert "implausible" in flags
    if not any(p.time >= latest for p in excluded):
        assert "implausible" not in flags


@pytest.mark.parametrize(("name", "fname"), _params("quantity", list(QUANTITIES)))
def test_twin_measured_value_count_source_trend(twins: dict[str, Case], name: str, fname: str) -> None:
    case = _case(twins, fname)
    spec = QUANTITIES[name]
    usable, excluded = _points(case.resources, spec)
    _check_measured(case, name, spec, usable, excluded)


def _ckd_epi_2021(scr: float, age: int, female: bool) -> float:
    """Inker et al., N Engl J Med 2021;385:1737 (race-free creatinine equation), mL/min/1.73 m2."""
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    r = scr / kappa
    return float(142 * min(r, 1) ** alpha * max(r, 1) ** -1.2 * 0.9938**age * (1.012 if female else 1.0))


@pytest.mark.parametrize(("name", "fname"), _params("egfr", ["egfr"]))
def test_twin_egfr_measured_or_derived_from_creatinine(twins: dict[str, Case], name: str, fname: str) -> None:
    """twin.md: the measured eGFR, unless the latest creatinine is newer than the latest measured eGFR;
    then CKD-EPI 2021 from that creatinine at the age then (completed years), flag `derived`."""
    case = _case(twins, fname)
    measured, excluded = _points(case.resources, EGFR)
    scr, _ = _points(case.resources, QUANTITIES["creatinine"])
    got = case.variables[name]
    if measured and (not scr or measured[-1].time >= scr[-1].time):
        _check_measured(case, name, EGFR, measured, excluded)
        assert "derived" not in got["flag"]
        return
    if not scr:
        assert "value" not in got and got["count"] == 0
        return
    birth = _utc(case.patient["birthDate"])
    female = case.patient["gender"] == "female"
    derived = [Point(p.time, _ckd_epi_2021(p.value, _years(birth, p.time), female), p.resource)
               for p in scr if p.time >= birth]
    usable = [p for p in derived if EGFR.plausible[0] <= p.value <= EGFR.plausible[1]]
    latest = derived[-1].time
    candidates = [p for p in derived if p.time == latest]
    assert "derived" in got["flag"]
    assert got["time"] == _fmt(latest) and got["count"] == len(usable)
    assert any(got["value"]["value"] == pytest.approx(p.value, abs=1e-6) for p in candidates)
    src = _served(case, got["source"]["reference"], "Observation")
    assert _fingerprint(src) in [_fingerprint(p.resource) for p in candidates]
    assert got["value"]["value"] == pytest.approx(
        _ckd_epi_2021(_values(src, QUANTITIES["creatinine"])[0][0], _years(birth, latest), female), abs=1e-6)
    trend = _slope([(p.time, p.value) for p in usable])
    assert (got.get("trend") or {}).get("value") == (None if trend is None else pytest.approx(trend, rel=1e-6, abs=1e-5))


@pytest.mark.parametrize(("name", "fname"), _params("condition", list(CONDITIONS)))
def test_twin_condition_presence(twins: dict[str, Case], name: str, fname: str) -> None:
    """twin.md / twin README: a Condition counts unless verificationStatus is entered-in-error or refuted
    (unconfirmed, provisional, differential never set the variable); it is active from onset (else
    recordedDate) until abatement; resolved, inactive or remission without an abatement date is over.
    The variable is 1 while any counting record is active at asOf; `count` is the counting records."""
    case = _case(twins, fname)
    counting: list[Point] = []
    active: list[Point] = []
    for r in case.resources:
        if r["resourceType"] != "Condition" or not {c for s, c in _codes(r.get("code")) if s == SNOMED} & CONDITIONS[name]:
            continue
        verification = (r.get("verificationStatus") or {}).get("coding", [{}])[0].get("code")
        if verification in ("entered-in-error", "refuted", "unconfirmed", "provisional", "differential"):
            continue
        onset = _utc(r.get("onsetDateTime") or r["recordedDate"])
        if onset > AS_OF_T:
            continue
        counting.append(Point(onset, 1.0, r))
        clinical = (r.get("clinicalStatus") or {}).get("coding", [{}])[0].get("code")
        abated = r.get("abatementDateTime") or (r.get("abatementPeriod") or {}).get("end")
        if abated is not None:
            if _utc(abated) > AS_OF_T:
                active.append(Point(onset, 1.0, r))
        elif clinical not in ("resolved", "inactive", "remission"):
            active.append(Point(onset, 1.0, r))
    got = case.variables[name]
    assert got["value"] is bool(active)
    assert got["count"] == len(counting)
    if active:
        first = min(p.time for p in active)
        assert got["time"] == _fmt(first)
        src = _served(case, got["source"]["reference"], "Condition")
        assert _fingerprint(src) in [_fingerprint(p.resource) for p in active if p.time == first]
        assert not {"ended", "no-record"} & set(got["flag"])
    else:
        assert ("ended" if counting else "no-record") in got["flag"]


@pytest.mark.parametrize(("name", "fname"), _params("smoker", ["smoker"]))
def test_twin_smoking_status(twins: dict[str, Case], name: str, fname: str) -> None:
    """The latest LOINC 72166-2 with an answer twin.md lists (current: 1, former/never: 0; other
    answers say nothing); no such observation: no value (never "non-smoker")."""
    case = _case(twins, fname)
    points = []
    for r in case.resources:
        if r["resourceType"] != "Observation" or r.get("status") not in OBS_KEEP \
                or (LOINC, "72166-2") not in _codes(r.get("code")):
            continue
        answers = {c for s, c in _codes(r.get("valueCodeableConcept"))}
        t = _utc(r["effectiveDateTime"])
        if t <= AS_OF_T and answers & (SMOKER_CURRENT | SMOKER_NOT):
            points.append(Point(t, 1.0 if answers & SMOKER_CURRENT else 0.0, r))
    points.sort(key=lambda p: p.time)
    got = case.variables[name]
    assert got["count"] == len(points)
    if not points:
        assert "value" not in got
        return
    latest = points[-1].time
    candidates = [p for p in points if p.time == latest]
    assert got["time"] == _fmt(latest)
    assert got["value"] in {bool(p.value) for p in candidates}
    src = _served(case, got["source"]["reference"], "Observation")
    assert _fingerprint(src) in [_fingerprint(p.resource) for p in candidates if bool(p.value) is got["value"]]
    assert ("stale" in got["flag"]) == (AS_OF_T - latest > timedelta(days=730))


@pytest.mark.parametrize(("name", "fname"), _params("patient", ["demographics"]))
def test_twin_sex_age_race_from_the_patient(twins: dict[str, Case], name: str, fname: str) -> None:
    case = _case(twins, fname)
    p, v = case.patient, case.variables
    birth = _utc(p["birthDate"])
    assert v["age"]["value"]["value"] == _years(birth, AS_OF_T) and v["age"]["value"]["code"] == "a"
    assert v["age"]["time"] == _fmt(birth)
    assert v["age"]["source"]["reference"] == case.patient_ref
    died = p.get("deceasedDateTime")
    assert ("deceased" in v["age"]["flag"]) == (died is not None and _utc(died) <= AS_OF_T)
    assert v["female"].get("value") == {"female": True, "male": False}.get(p["gender"])
    omb = {x["valueCoding"]["code"] for e in p.get("extension", [])
           if e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
           for x in e.get("extension", []) if x["url"] == "ombCategory"} - {"UNK", "ASKU"}
    assert v["black"].get("value") == (("2054-5" in omb) if omb else None)


def test_twin_checks_cover_the_data(twins: dict[str, Case]) -> None:
    """The per-patient checks above are not vacuous: the data has what the Synthea README says."""
    assert len(twins) == 30
    dates = [r["effectiveDateTime"] for c in twins.values() for r in c.resources if "effectiveDateTime" in r]
    assert max(_utc(d) for d in dates) < AS_OF_T
    has = Counter(n for c in twins.values() for n, v in c.variables.items() if v.get("value") is not None)
    true = Counter(n for c in twins.values() for n, v in c.variables.items() if v.get("value") is True)
    # Synthea README: 22 patients with a lipid panel, 15 with HbA1c, 8 with T2DM, 11 with hypertension.
    assert has["tc"] == has["hdl"] == has["ldl"] == has["tg"] == 22 and has["hba1c"] == 15
    assert true["diabetes"] == 8 and true["hypertension"] == 11
    assert has["sbp"] == has["dbp"] == has["smoker"] == has["weight"] == 30
    assert has["creatinine"] >= 10 and has["uacr"] >= 5 and has["egfr"] >= 10
    assert sum("derived" in c.variables["egfr"]["flag"] for c in twins.values()) >= 1
    assert sum("unit-assumed" in c.variables["sbp"]["flag"] for c in twins.values()) >= 1
