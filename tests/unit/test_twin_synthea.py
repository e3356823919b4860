"""The twin mapping on real Synthea R4 bundles (shared/data/synthea, both generations).

For each bundle, facts() + build_state() run over every entry, and the result is compared with
values this test reads straight from the bundle JSON with its own small readers (latest
valueQuantity of a LOINC code by effectiveDateTime, latest component, counts, conditions by
their SNOMED CT code, active prescriptions by drug name). Nothing here comes from the mapping's
code lists, so a wrong list, unit rule or fold shows up as a mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.twin.mapping import build_state, facts
from app.twin.state import TwinState

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea"
END = datetime(2030, 1, 1, tzinfo=UTC)

BUNDLES = {
    # Synthea 2.7 (blaze): 85354-9 panels, hypertension 59621000, US Core profiles.
    "b27-t2dm-htn-black": "blaze-synthea-2.7/c4bf405e-26ad-4bb9-e17c-9ee3a40f86c6.json",
    "b27-t2dm-htn-cad": "blaze-synthea-2.7/b08d10a2-5031-379f-0157-ddceb2196440.json",
    "b27-htn-lipids": "blaze-synthea-2.7/99e6bacf-7def-f6b6-5f1b-888241c8729a.json",
    "b27-smoker": "blaze-synthea-2.7/beb53716-4df8-a51c-c58e-a8b814b8ac88.json",
    # Synthea 2019 (smart-on-fhir): 55284-4 panels, hypertension 38341003.
    "s19-t2dm-htn": "smart-generated-sample-data-r4/Almeda_Conn_67e13ece-8aed-46fa-ab6c-673137d5460e.json",
    "s19-t2dm-htn-black": "smart-generated-sample-data-r4/Raeann_O'Kon_9e8ba712-5bbf-4e3c-8946-b66032309cfc.json",
    "s19-t2dm": "smart-generated-sample-data-r4/Leonel_Hand_6c6f3e04-4e36-4b28-8f8e-41d0edf93cf0.json",
    "s19-chf-bp-no-units": "smart-generated-sample-data-r4/Rich_Kshlerin_ce8c42b0-ce15-46c2-bc8b-707a342d1db2.json",
    "s19-stroke": "smart-generated-sample-data-r4/Elisha_Schroeder_f82884e3-7586-4e78-89de-5e682822ed41.json",
    "s19-creatinine-no-egfr": "smart-generated-sample-data-r4/Joseph_Goodwin_1d572d5f-8403-44f2-8b5f-b25e841e568c.json",
}

# Drug names as they appear in the bundles' coding displays (independent of medications.json).
DRUGS = {
    "bp_treated": ("lisinopril", "hydrochlorothiazide", "amlodipine", "metoprolol", "verapamil", "lasix"),
    "statin": ("simvastatin",),
    "insulin": ("insulin",),
}
CONDITIONS = {
    "diabetes": {"44054006", "368581000119106", "127013003"},
    "hypertension": {"38341003", "59621000"},
    "ckd": {"431855005", "127013003"},
    "heart_failure": {"88805009"},
}
ASCVD = {"53741008", "230690007", "22298006", "399211009"}
QUANTITIES = {"tc": "2093-3", "hdl": "2085-9", "ldl": "18262-6", "tg": "2571-8", "hba1c": "4548-4",
              "glucose": "2339-0", "bmi": "39156-5", "weight": "29463-7", "height": "8302-2", "uacr": "14959-1",
              "creatinine": "38483-4"}


# ---------------------------------------------------------------- independent readers


def when(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


@cache
def resources(key: str) -> tuple[dict[str, Any], ...]:
    bundle = json.loads((SYNTHEA / BUNDLES[key]).read_text(encoding="utf-8"))
    return tuple(e["resource"] for e in bundle["entry"])


def of_type(key: str, rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources(key) if r["resourceType"] == rtype]


def codes(cc: dict[str, Any]) -> set[str]:
    return {c["code"] for c in cc.get("coding", [])}


def measurements(key: str, code: str, as_of: datetime) -> list[tuple[datetime, float, str]]:
    """(time, value, unit) of every final Observation with this code, as its value or a component."""
    out = []
    for r in of_type(key, "Observation"):
        if r["status"] != "final" or when(r["effectiveDateTime"]) > as_of:
            continue
        if code in codes(r["code"]) and "valueQuantity" in r:
            out.append((when(r["effectiveDateTime"]), r["valueQuantity"]["value"], r["valueQuantity"].get("code")))
        for comp in r.get("component", []):
            if code in codes(comp["code"]):
                out.append((when(r["effectiveDateTime"]), comp["valueQuantity"]["value"],
                            comp["valueQuantity"].get("code")))
    return sorted(out, key=lambda x: x[0])


def latest(rows: list[tuple[datetime, float, str]]) -> tuple[datetime, set[float]] | None:
    if not rows:
        return None
    newest = rows[-1][0]
    return newest, {v for t, v, _ in rows if t == newest}


def condition_active(key: str, wanted: set[str], as_of: datetime, ever: bool = False) -> bool:
    for r in of_type(key, "Condition"):
        if not codes(r["code"]) & wanted or when(r["onsetDateTime"]) > as_of:
            continue
        if ever or "abatementDateTime" not in r or when(r["abatementDateTime"]) > as_of:
            return True
    return False


def prescribed(key: str, names: Iterable[str]) -> bool:
    """Some MedicationRequest with status active names one of these drugs (for as_of after all dates)."""
    return any(r["status"] == "active" and any(n in c.get("display", "").lower() for n in names
                                               for c in r["medicationCodeableConcept"]["coding"])
               for r in of_type(key, "MedicationRequest"))


def age_at(birth: str, at: datetime) -> int:
    y, m, d = (int(x) for x in birth.split("-"))
    return at.year - y - ((at.month, at.day) < (m, d))


def egfr_2021(scr: float, age: int, female: bool) -> float:
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    return float(142 * min(scr / kappa, 1) ** alpha * max(scr / kappa, 1) ** -1.2 * 0.9938**age
                 * (1.012 if female else 1))


def slope_per_year(rows: list[tuple[datetime, float, str]]) -> float | None:
    if len(rows) < 2 or (rows[-1][0] - rows[0][0]).days <= 30:
        return None
    xs = [(t - rows[0][0]).total_seconds() / 86400 / 365.25 for t, _, _ in rows]
    return float(np.polyfit(xs, [v for _, v, _ in rows], 1)[0])


@lru_cache(maxsize=64)
def twin(key: str, as_of: datetime) -> TwinState:
    got = [f for r in resources(key) for f in facts(r, 1)]
    pat = of_type(key, "Patient")[0]
    return build_state(pat, 1, got, as_of)


def midpoint(key: str) -> datetime:
    times = sorted(when(r["effectiveDateTime"]) for r in of_type(key, "Observation"))
    return times[len(times) // 2]


CASES = [(k, "end") for k in BUNDLES] + [(k, "mid") for k in BUNDLES]


def as_of_for(key: str, which: str) -> datetime:
    return END if which == "end" else midpoint(key)


# ---------------------------------------------------------------- comparisons


@pytest.mark.parametrize(("key", "which"), CASES)
def test_demographics(key: str, which: str) -> None:
    as_of = as_of_for(key, which)
    pat = of_type(key, "Patient")[0]
    s = twin(key, as_of)
    race = next(e for e in pat["extension"] if e["url"].endswith("us-core-race"))
    omb = next(x["valueCoding"]["code"] for x in race["extension"] if x["url"] == "ombCategory")
    assert s.values()["age"] == age_at(pat["birthDate"], as_of)
    assert s.values()["female"] == (1.0 if pat["gender"] == "female" else 0.0)
    assert s.values()["black"] == (1.0 if omb == "2054-5" else 0.0)
    assert s.basis(["age", "female", "black"]) == [f"Patient/{pat['id']}/_history/1"]
    assert ("deceased" in s.variables["age"].flags) == ("deceasedDateTime" in pat and
                                                         when(pat["deceasedDateTime"]) <= as_of)


@pytest.mark.parametrize(("key", "which"), CASES)
@pytest.mark.parametrize("variable", sorted(QUANTITIES))
def test_latest_lab_and_vital_values(key: str, which: str, variable: str) -> None:
    as_of = as_of_for(key, which)
    rows = measurements(key, QUANTITIES[variable], as_of)
    v = twin(key, as_of).variables[variable]
    assert v.count == len(rows)
    newest = latest(rows)
    if newest is None:
        assert v.value is None
        return
    # Every value of these codes in the shared bundles is in the canonical unit already.
    assert {u for _, _, u in rows} == {v.unit}
    assert v.time == newest[0] and v.value in newest[1]
    expected = slope_per_year(rows)
    assert (v.trend_per_year is None) == (expected is None)
    if expected is not None:
        assert v.trend_per_year == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(("key", "which"), CASES)
@pytest.mark.parametrize(("variable", "code"), [("sbp", "8480-6"), ("dbp", "8462-4")])
def test_blood_pressure_from_panel_components(key: str, which: str, variable: str, code: str) -> None:
    as_of = as_of_for(key, which)
    rows = measurements(key, code, as_of)
    panels = {c for r in of_type(key, "Observation") if any(code in codes(x["code"]) for x in r.get("component", []))
              for c in codes(r["code"])}
    assert panels <= {"55284-4", "85354-9"} and panels  # Synthea writes BP only as panel components
    v = twin(key, as_of).variables[variable]
    newest = latest(rows)
    assert newest is not None
    assert v.count == len(rows) and v.time == newest[0] and v.value in newest[1]
    assert ("unit-assumed" in v.flags) == (next(u for t, _, u in reversed(rows) if t == newest[0]) is None)
    expected = slope_per_year(rows)
    assert v.trend_per_year == (pytest.approx(expected, rel=1e-6) if expected is not None else None)


@pytest.mark.parametrize(("key", "which"), CASES)
def test_egfr_measured_or_derived(key: str, which: str) -> None:
    as_of = as_of_for(key, which)
    pat = of_type(key, "Patient")[0]
    measured = latest(measurements(key, "33914-3", as_of))
    scr = latest(measurements(key, "38483-4", as_of))
    v = twin(key, as_of).variables["egfr"]
    if scr is None and measured is None:
        assert v.value is None
    elif scr is None or (measured is not None and measured[0] >= scr[0]):
        assert measured is not None
        assert v.value in measured[1] and "derived" not in v.flags
    else:
        (scr_value,) = scr[1]
        expected = egfr_2021(scr_value, age_at(pat["birthDate"], scr[0]), pat["gender"] == "female")
        assert v.value == pytest.approx(expected, rel=1e-9)
        assert "derived" in v.flags and v.time == scr[0]
        assert f"Patient/{pat['id']}/_history/1" in v.sources


def test_some_bundle_exercises_the_derivation() -> None:
    s = twin("s19-creatinine-no-egfr", END)
    assert "derived" in s.variables["egfr"].flags and s.values()["egfr"] is not None


@pytest.mark.parametrize(("key", "which"), CASES)
def test_conditions(key: str, which: str) -> None:
    as_of = as_of_for(key, which)
    s = twin(key, as_of)
    for name, wanted in CONDITIONS.items():
        assert s.values()[name] == (1.0 if condition_active(key, wanted, as_of) else 0.0), name
    assert s.values()["ascvd"] == (1.0 if condition_active(key, ASCVD, as_of, ever=True) else 0.0)


@pytest.mark.parametrize("key", BUNDLES)
def test_treatments_after_the_last_record(key: str) -> None:
    s = twin(key, END)
    for name, drugs in DRUGS.items():
        assert s.values()[name] == (1.0 if prescribed(key, drugs) else 0.0), name


@pytest.mark.parametrize(("key", "which"), CASES)
def test_smoking(key: str, which: str) -> None:
    as_of = as_of_for(key, which)
    rows = sorted((when(r["effectiveDateTime"]), codes(r["valueCodeableConcept"]))
                  for r in of_type(key, "Observation") if "72166-2" in codes(r["code"])
                  and when(r["effectiveDateTime"]) <= as_of)
    v = twin(key, as_of).variables["smoker"]
    if not rows:
        assert v.value is None
        return
    current = {"449868002", "428041000124106", "77176002", "428071000124103", "428061000124105"}
    assert v.value == (1.0 if rows[-1][1] & current else 0.0)


def test_the_data_has_a_current_smoker_and_the_twin_sees_it() -> None:
    as_of = datetime(1970, 1, 1, tzinfo=UTC)
    answers = sorted((when(r["effectiveDateTime"]), codes(r["valueCodeableConcept"]))
                     for r in of_type("b27-smoker", "Observation") if "72166-2" in codes(r["code"])
                     and when(r["effectiveDateTime"]) <= as_of)
    assert answers[-1][1] == {"449868002"}  # "Current every day smoker" in the data
    assert twin("b27-smoker", as_of).values()["smoker"] == 1.0


def test_the_chosen_bundles_cover_the_cases() -> None:
    # Guards the test itself: the cases above must meet every branch in real data.
    ends = {k: twin(k, END) for k in BUNDLES}
    for name in ("diabetes", "hypertension", "ckd", "heart_failure", "ascvd", "bp_treated", "statin", "insulin",
                 "black", "female"):
        assert {s.values()[name] for s in ends.values()} == {0.0, 1.0}, name
    assert any(s.values()["hba1c"] is not None for s in ends.values())
    assert any("unit-assumed" in s.variables["sbp"].flags for s in ends.values())


def all_resources(rtype: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(SYNTHEA.glob("*/*.json")):
        if path.name.startswith("0-"):
            continue  # the 2.7 infrastructure bundles (Organization, Practitioner, Location)
        out.extend(e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]
                   if e["resource"]["resourceType"] == rtype)
    return out


def test_every_medication_request_in_the_data_is_classified_by_its_drug_name() -> None:
    # All 32 bundles: the classes must be what the drug names in the display say, and every
    # antihypertensive, statin and insulin code in the data must be listed (no "by-name" match).
    seen: dict[str, int] = {}
    for r in all_resources("MedicationRequest"):
        display = " ".join(c.get("display", "") for c in r["medicationCodeableConcept"]["coding"]).lower()
        expected = {name for name, drugs in DRUGS.items() if any(d in display for d in drugs)}
        got = facts(r, 1)
        assert {f.variable for f in got} == expected, display
        assert not any("by-name" in f.flags for f in got), display
        assert all(("end-unknown" in f.flags) == (r["status"] == "stopped") for f in got)
        for name in expected:
            seen[name] = seen.get(name, 0) + 1
    assert set(seen) == set(DRUGS)


def test_every_condition_in_the_data_maps_by_its_snomed_code() -> None:
    wanted = {**CONDITIONS, "ascvd": ASCVD}
    seen: set[str] = set()
    for r in all_resources("Condition"):
        expected = {name for name, cs in wanted.items() if codes(r["code"]) & cs}
        got = facts(r, 1)
        assert {f.variable for f in got} == expected, r["code"]
        seen |= expected
    assert seen == set(wanted)


@pytest.mark.parametrize(("key", "which"), CASES)
@pytest.mark.parametrize("only", [("tc", "hdl", "sbp", "bp_treated", "smoker", "diabetes"), ("egfr", "uacr"),
                                  ("age",)])
def test_a_partial_state_without_trends_equals_the_full_one(key: str, which: str, only: tuple[str, ...]) -> None:
    """What a Group run folds (only the model's variables, no trends) is the full state's subset."""
    as_of = as_of_for(key, which)
    full = twin(key, as_of)
    got = [f for r in resources(key) for f in facts(r, 1)]
    part = build_state(of_type(key, "Patient")[0], 1, got, as_of, only=only, trends=False)
    assert set(only) | {"age", "female", "black"} <= set(part.variables)
    for name, v in part.variables.items():
        assert v.trend_per_year is None
        assert replace(v, trend_per_year=full.variables[name].trend_per_year) == full.variables[name], name
