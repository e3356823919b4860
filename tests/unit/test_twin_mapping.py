"""app.twin.mapping: FHIR resources -> twin facts -> twin state, table-tested per resource shape.

Reference numbers: the CKD-EPI 2021 values are the NKF calculator's, as recorded in
shared/research/twin.md 4a (1.09 mg/dL, 55, male -> 80; 85 umol/L, 65, female -> 66). Unit factors
are checked against their definitions (molar masses in fhir_profiles/twin/README.md) and, where no
molar mass is involved, against the project's UCUM parser.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from app.store import ucum
from app.twin import mapping
from app.twin.egfr import ckd_epi_2021
from app.twin.mapping import build_state, codes_for, facts
from app.twin.state import Fact, TwinState

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
AS_OF = datetime(2021, 6, 1, tzinfo=UTC)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def qty(value: float, unit: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "system": UCUM}
    if unit is not None:
        q.update(unit=unit, code=unit)
    return q


def obs(code: str, value: float | None = None, unit: str | None = None, when: str = "2021-01-10T09:00:00Z",
        status: str = "final", rid: str = "o1", components: list[tuple[str, float, str | None]] | None = None,
        answer: tuple[str, str] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": status,
                         "code": {"coding": [{"system": LOINC, "code": code}]},
                         "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when}
    if value is not None:
        r["valueQuantity"] = qty(value, unit)
    if components is not None:
        r["component"] = [{"code": {"coding": [{"system": LOINC, "code": c}]}, "valueQuantity": qty(v, u)}
                          for c, v, u in components]
    if answer is not None:
        r["valueCodeableConcept"] = {"coding": [{"system": answer[0], "code": answer[1]}]}
    return r


def cond(system: str, code: str, onset: str = "2010-03-01", abated: str | None = None, clinical: str | None = "active",
         verification: str | None = "confirmed", rid: str = "c1") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Condition", "id": rid, "code": {"coding": [{"system": system, "code": code}]},
                         "subject": {"reference": "Patient/p1"}, "onsetDateTime": onset}
    if clinical is not None:
        r["clinicalStatus"] = {"coding": [{"code": clinical}]}
    if verification is not None:
        r["verificationStatus"] = {"coding": [{"code": verification}]}
    if abated is not None:
        r["abatementDateTime"] = abated
    return r


def medreq(code: str, display: str = "", status: str = "active", intent: str = "order",
           authored: str = "2015-01-01", rid: str = "m1") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": intent,
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
            "subject": {"reference": "Patient/p1"}, "authoredOn": authored}


def patient(gender: str = "male", birth: str = "1966-01-01", race: str | None = "2106-3", rid: str = "p1",
            **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Patient", "id": rid, "gender": gender, "birthDate": birth, **extra}
    if race is not None:
        r["extension"] = [{"url": RACE, "extension": [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": race}},
            {"url": "text", "valueString": "x"}]}]
    return r


def state(*resources: dict[str, Any], as_of: datetime = AS_OF, pat: dict[str, Any] | None = None,
          stale: dict[str, int] | None = None) -> TwinState:
    got = [f for i, r in enumerate(resources) for f in facts(r, i + 1)]
    return build_state(pat if pat is not None else patient(), 7, got, as_of, stale)


def one(r: dict[str, Any]) -> Fact:
    got = facts(r, 3)
    assert len(got) == 1, got
    return got[0]


# ---------------------------------------------------------------- Observations


@pytest.mark.parametrize("panel", ["85354-9", "55284-4", "35094-2"])
def test_blood_pressure_panel_components(panel: str) -> None:
    r = obs(panel, components=[("8480-6", 142.0, "mm[Hg]"), ("8462-4", 88.0, "mm[Hg]")])
    got = {f.variable: f for f in facts(r, 2)}
    assert set(got) == {"sbp", "dbp"}
    assert (got["sbp"].value, got["dbp"].value) == (142.0, 88.0)
    assert got["sbp"].unit == "mm[Hg]" and got["sbp"].source == "Observation/o1/_history/2"
    assert got["sbp"].time == t("2021-01-10T09:00:00")


def test_blood_pressure_as_its_own_observation() -> None:
    f = one(obs("8480-6", 131.0, "mm[Hg]"))
    assert (f.variable, f.value, f.flags) == ("sbp", 131.0, ())


def test_component_without_unit_is_assumed_and_flagged() -> None:
    # Synthea 2019 writes some BP components as {"value": ..., "system": UCUM} with no code.
    r = obs("55284-4", components=[("8480-6", 135.66, None), ("8462-4", 78.4, None)])
    got = {f.variable: f for f in facts(r, 1)}
    assert got["sbp"].value == 135.66 and got["sbp"].flags == ("unit-assumed",)
    s = state(r)
    assert s.variables["sbp"].value == 135.66 and "unit-assumed" in s.variables["sbp"].flags


def test_lab_without_unit_is_not_assumed() -> None:
    f = one(obs("2093-3", 190.0, None))
    assert "unit-not-convertible" in f.flags


@pytest.mark.parametrize(("code", "value", "unit", "variable", "expected"), [
    ("2093-3", 190.0, "mg/dL", "tc", 190.0),
    ("14647-2", 5.0, "mmol/L", "tc", 5.0 * 38.67),
    ("2093-3", 1.9, "g/L", "tc", 190.0),
    ("2085-9", 1.2, "mmol/L", "hdl", 1.2 * 38.67),
    ("18262-6", 3.0, "mmol/L", "ldl", 3.0 * 38.67),
    ("13457-7", 101.0, "mg/dL", "ldl", 101.0),
    ("2571-8", 1.7, "mmol/L", "tg", 1.7 * 88.57),
    ("2339-0", 5.5, "mmol/L", "glucose", 5.5 * 18.016),
    ("2345-7", 99.0, "mg/dL", "glucose", 99.0),
    ("38483-4", 88.4, "umol/L", "creatinine", 1.0),
    ("14682-9", 0.0884, "mmol/L", "creatinine", 1.0),
    ("2160-0", 10.9, "mg/L", "creatinine", 1.09),
    ("4548-4", 6.5, "%", "hba1c", 6.5),
    ("59261-8", 48.0, "mmol/mol", "hba1c", 48.0 / 10.929 + 2.15),
    ("14959-1", 3.0, "mg/mmol", "uacr", 3.0 * 8.84),
    ("9318-7", 30.0, "mg/g", "uacr", 30.0),
    ("33914-3", 61.0, "mL/min/{1.73_m2}", "egfr", 61.0),
    ("33914-3", 61.0, "mL/min", "egfr", 61.0),
    ("39156-5", 27.1, "kg/m2", "bmi", 27.1),
    ("29463-7", 176.0, "[lb_av]", "weight", 176.0 * 0.45359237),
    ("29463-7", 3500.0, "g", "weight", 3.5),
    ("8302-2", 70.0, "[in_i]", "height", 177.8),
    ("8302-2", 1.75, "m", "height", 175.0),
])
def test_units_convert_to_canonical(code: str, value: float, unit: str, variable: str, expected: float) -> None:
    f = one(obs(code, value, unit))
    assert f.variable == variable
    assert f.value == pytest.approx(expected, rel=1e-12)
    assert f.unit == mapping.maps().units[variable]
    assert f.flags == ()


def test_hba1c_ifcc_48_is_about_6_5_percent() -> None:
    # The IFCC/NGSP master equation: 48 mmol/mol is the 6.5 % diagnostic threshold (to 0.05 %).
    assert one(obs("59261-8", 48.0, "mmol/mol")).value == pytest.approx(6.54, abs=0.005)


def test_unit_only_in_text_is_used() -> None:
    r = obs("2093-3", 200.0, None)
    r["valueQuantity"]["unit"] = "mg/dL"
    assert one(r).value == 200.0


def test_unconvertible_unit_is_excluded_and_flagged() -> None:
    bad = obs("2093-3", 5.2, "mg", rid="bad", when="2021-02-01T00:00:00Z")
    f = one(bad)
    assert f.flags == ("unit-not-convertible",) and f.unit == "mg" and f.value == 5.2
    alone = state(bad).variables["tc"]
    assert alone.value is None and alone.flags == ("unit-not-convertible",)
    assert state(bad).values()["tc"] is None
    older = obs("2093-3", 190.0, "mg/dL", rid="good", when="2020-02-01T00:00:00Z")
    v = state(older, bad).variables["tc"]
    assert v.value == 190.0 and v.source == "Observation/good/_history/1"
    assert "unit-not-convertible" in v.flags and v.count == 1


@pytest.mark.parametrize(("code", "value", "unit"), [
    ("8480-6", 1200.0, "mm[Hg]"), ("8480-6", 20.0, "mm[Hg]"), ("2093-3", 19000.0, "mg/dL"),
    ("4548-4", 65.0, "%"), ("2160-0", 88.0, "mg/dL"), ("39156-5", 250.0, "kg/m2"),
])
def test_implausible_value_is_excluded(code: str, value: float, unit: str) -> None:
    f = one(obs(code, value, unit))
    assert "implausible" in f.flags and not f.usable
    v = state(obs(code, value, unit)).variables[f.variable]
    assert v.value is None and v.flags == ("implausible",) and v.count == 0


def test_older_implausible_value_does_not_flag_a_newer_good_one() -> None:
    v = state(obs("8480-6", 1200.0, "mm[Hg]", rid="a", when="2020-01-01T00:00:00Z"),
              obs("8480-6", 130.0, "mm[Hg]", rid="b", when="2021-01-01T00:00:00Z")).variables["sbp"]
    assert v.value == 130.0 and v.flags == () and v.count == 1


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered", "unknown"])
def test_observation_statuses_without_facts(status: str) -> None:
    assert facts(obs("2093-3", 190.0, "mg/dL", status=status), 1) == []


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_observation_statuses_that_count(status: str) -> None:
    assert one(obs("2093-3", 190.0, "mg/dL", status=status)).flags == ()


def test_preliminary_counts_with_a_flag() -> None:
    assert one(obs("2093-3", 190.0, "mg/dL", status="preliminary")).flags == ("preliminary",)
    assert "preliminary" in state(obs("2093-3", 190.0, "mg/dL", status="preliminary")).variables["tc"].flags


def test_comparator_is_flagged_censored() -> None:
    r = obs("33914-3", 90.0, "mL/min/{1.73_m2}")
    r["valueQuantity"]["comparator"] = ">"
    assert one(r).flags == ("censored",)


def test_unrelated_observation_gives_nothing() -> None:
    assert facts(obs("8867-4", 70.0, "/min"), 1) == []
    assert facts(obs("2093-3", 190.0, "mg/dL") | {"code": {"coding": [{"system": "http://x", "code": "2093-3"}]}},
                 1) == []


def test_observation_without_value_gives_nothing() -> None:
    r = obs("2093-3")
    r["dataAbsentReason"] = {"coding": [{"code": "not-performed"}]}
    assert facts(r, 1) == []


def test_correction_and_entered_in_error_recompute() -> None:
    # The caller keeps only each resource's current version's facts; the state follows.
    a = obs("2093-3", 180.0, "mg/dL", rid="a", when="2019-01-01T00:00:00Z")
    b1 = obs("2093-3", 250.0, "mg/dL", rid="b", when="2020-01-01T00:00:00Z")
    b2 = b1 | {"status": "corrected", "valueQuantity": qty(205.0, "mg/dL")}
    b3 = b1 | {"status": "entered-in-error"}
    assert build_state(patient(), 1, facts(a, 1) + facts(b1, 1), AS_OF).variables["tc"].value == 250.0
    v2 = build_state(patient(), 1, facts(a, 1) + facts(b2, 2), AS_OF).variables["tc"]
    assert (v2.value, v2.source) == (205.0, "Observation/b/_history/2")
    assert facts(b3, 3) == []
    v3 = build_state(patient(), 1, facts(a, 1) + facts(b3, 3), AS_OF).variables["tc"]
    assert (v3.value, v3.source, v3.count) == (180.0, "Observation/a/_history/1", 1)


# ---------------------------------------------------------------- smoking


@pytest.mark.parametrize(("system", "code", "expected"), [
    (SNOMED, "449868002", 1.0), (SNOMED, "428041000124106", 1.0), (SNOMED, "77176002", 1.0),
    (SNOMED, "428071000124103", 1.0), (SNOMED, "428061000124105", 1.0),
    (SNOMED, "8517006", 0.0), (SNOMED, "266919005", 0.0),
    (LOINC, "LA18976-3", 1.0), (LOINC, "LA15920-4", 0.0), (LOINC, "LA18978-9", 0.0),
])
def test_smoking_status_answers(system: str, code: str, expected: float) -> None:
    f = one(obs("72166-2", answer=(system, code)))
    assert (f.variable, f.value) == ("smoker", expected)
    assert state(obs("72166-2", answer=(system, code))).variables["smoker"].value == expected


@pytest.mark.parametrize("code", ["266927001", "999999999"])
def test_unknown_smoking_answer_gives_nothing(code: str) -> None:
    assert facts(obs("72166-2", answer=(SNOMED, code)), 1) == []


def test_no_smoking_observation_is_unknown_not_non_smoker() -> None:
    v = state().variables["smoker"]
    assert v.value is None and v.count == 0
    assert state().values()["smoker"] is None


def test_latest_smoking_status_wins() -> None:
    s = state(obs("72166-2", answer=(SNOMED, "449868002"), rid="a", when="2015-01-01T00:00:00Z"),
              obs("72166-2", answer=(SNOMED, "8517006"), rid="b", when="2020-01-01T00:00:00Z"))
    assert s.variables["smoker"].value == 0.0 and s.variables["smoker"].count == 2


# ---------------------------------------------------------------- Conditions


@pytest.mark.parametrize(("system", "code", "variables"), [
    (SNOMED, "44054006", {"diabetes"}), (SNOMED, "73211009", {"diabetes"}), (SNOMED, "46635009", {"diabetes"}),
    (SNOMED, "38341003", {"hypertension"}), (SNOMED, "59621000", {"hypertension"}),
    (SNOMED, "431855005", {"ckd"}), (SNOMED, "127013003", {"diabetes", "ckd"}),
    (SNOMED, "88805009", {"heart_failure"}), (SNOMED, "84114007", {"heart_failure"}),
    (SNOMED, "22298006", {"ascvd"}), (SNOMED, "230690007", {"ascvd"}), (SNOMED, "53741008", {"ascvd"}),
    (ICD10, "E11.9", {"diabetes"}), (ICD10, "E119", {"diabetes"}), (ICD10, "E11.65", {"diabetes"}),
    (ICD10, "E10.9", {"diabetes"}), (ICD10, "E11.22", {"diabetes", "ckd"}),
    (ICD10, "I10", {"hypertension"}), (ICD10, "N18.3", {"ckd"}), (ICD10, "I50.9", {"heart_failure"}),
    (ICD10, "I13.0", {"hypertension", "ckd", "heart_failure"}), (ICD10, "I21.4", {"ascvd"}),
    (ICD10, "I70.213", {"ascvd"}), (ICD10, "G45.9", {"ascvd"}),
    (SNOMED, "15777000", set()), (ICD10, "R73.03", set()), (ICD10, "I70.0", set()), (ICD10, "E1", set()),
    ("http://example.org", "44054006", set()),
])
def test_condition_codes(system: str, code: str, variables: set[str]) -> None:
    got = facts(cond(system, code), 4)
    assert {f.variable for f in got} == variables
    assert all(f.value == 1.0 and f.time == t("2010-03-01T00:00:00") and f.source == "Condition/c1/_history/4"
               for f in got)
    s = state(cond(system, code))
    for name in mapping.CONDITIONS:
        assert s.variables[name].value == (1.0 if name in variables else 0.0)


@pytest.mark.parametrize("code", ["38341003", "59621000"])
def test_both_hypertension_snomed_codes(code: str) -> None:
    v = state(cond(SNOMED, code)).variables["hypertension"]
    assert v.value == 1.0 and v.source == "Condition/c1/_history/1" and v.time == t("2010-03-01T00:00:00")


@pytest.mark.parametrize("verification", ["entered-in-error", "refuted"])
def test_condition_entered_in_error_or_refuted_gives_nothing(verification: str) -> None:
    assert facts(cond(SNOMED, "44054006", verification=verification), 1) == []


@pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed"])
def test_unconfirmed_condition_does_not_count_but_shows(verification: str) -> None:
    f = one(cond(SNOMED, "44054006", verification=verification))
    assert f.flags == ("unconfirmed",) and not f.usable
    v = state(cond(SNOMED, "44054006", verification=verification)).variables["diabetes"]
    assert v.value == 0.0 and "unconfirmed" in v.flags and "no-record" in v.flags


def test_abated_condition() -> None:
    r = cond(SNOMED, "38341003", onset="2010-01-01", abated="2015-06-01", clinical="resolved")
    assert one(r).end == t("2015-06-01T00:00:00")
    during = state(r, as_of=t("2012-01-01T00:00:00")).variables["hypertension"]
    assert during.value == 1.0 and during.flags == ()
    after = state(r, as_of=t("2016-01-01T00:00:00")).variables["hypertension"]
    assert after.value == 0.0 and after.flags == ("ended",) and after.time == t("2015-06-01T00:00:00")
    assert after.count == 1 and after.sources == ("Condition/c1/_history/1",)
    before = state(r, as_of=t("2009-01-01T00:00:00")).variables["hypertension"]
    assert before.value == 0.0 and before.flags == ("no-record",)


def test_condition_is_over_at_its_abatement_instant() -> None:
    r = cond(SNOMED, "38341003", onset="2010-01-01", abated="2015-06-01", clinical="resolved")
    assert state(r, as_of=t("2015-06-01T00:00:00")).variables["hypertension"].value == 0.0
    assert state(r, as_of=t("2010-01-01T00:00:00")).variables["hypertension"].value == 1.0


def test_resolved_without_abatement_date_is_not_active() -> None:
    r = cond(SNOMED, "38341003", onset="2010-01-01", clinical="resolved")
    assert one(r).flags == ("end-unknown",)
    assert state(r).variables["hypertension"].value == 0.0


def test_prior_ascvd_event_counts_after_it_resolved() -> None:
    r = cond(SNOMED, "22298006", onset="2012-01-01", abated="2012-02-01", clinical="resolved")
    assert one(r).end is None
    assert state(r).variables["ascvd"].value == 1.0
    assert state(r, as_of=t("2011-01-01T00:00:00")).variables["ascvd"].value == 0.0


def test_missing_conditions_and_treatments_default_to_zero_with_no_record() -> None:
    s = state()
    for name in (*mapping.CONDITIONS, *mapping.TREATMENTS):
        v = s.variables[name]
        assert (v.value, v.flags, v.count, v.source) == (0.0, ("no-record",), 0, None)


# ---------------------------------------------------------------- MedicationRequests


@pytest.mark.parametrize(("code", "display", "variable"), [
    ("314076", "lisinopril 10 MG Oral Tablet", "bp_treated"),
    ("316049", "Hydrochlorothiazide 25 MG", "bp_treated"),
    ("308136", "amLODIPine 2.5 MG Oral Tablet", "bp_treated"),
    ("312961", "Simvastatin 20 MG Oral Tablet", "statin"),
    ("106892", "insulin human, isophane 70 UNT/ML / Regular Insulin, Human 30 UNT/ML Injectable Suspension [Humulin]",
     "insulin"),
])
def test_treatment_classes_by_rxnorm_code(code: str, display: str, variable: str) -> None:
    f = one(medreq(code, display))
    assert (f.variable, f.value, f.flags, f.end) == (variable, 1.0, (), None)
    assert f.time == t("2015-01-01T00:00:00") and f.source == "MedicationRequest/m1/_history/3"
    assert state(medreq(code, display)).variables[variable].value == 1.0


def test_code_decides_before_name() -> None:
    # A listed code is classified by the list even if its text says nothing.
    assert one(medreq("314231", "")).variable == "statin"


def test_unlisted_code_counts_by_ingredient_name() -> None:
    f = one(medreq("617318", "atorvastatin 20 MG Oral Tablet"))
    assert (f.variable, f.flags) == ("statin", ("by-name",))
    assert "by-name" in state(medreq("617318", "atorvastatin 20 MG Oral Tablet")).variables["statin"].flags


def test_combination_product_gives_both_classes() -> None:
    got = {f.variable for f in facts(medreq("000001", "amlodipine 5 MG / atorvastatin 10 MG Oral Tablet"), 1)}
    assert got == {"bp_treated", "statin"}


@pytest.mark.parametrize(("code", "display"), [
    ("1719286", "10 ML Furosemide 10 MG/ML Injection"),  # excluded on purpose
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("705129", "Nitroglycerin 0.4 MG/ACTUAT Mucosal Spray"),
])
def test_not_a_treatment_class(code: str, display: str) -> None:
    assert facts(medreq(code, display), 1) == []


@pytest.mark.parametrize("status", ["draft", "cancelled", "entered-in-error", "unknown"])
def test_medication_statuses_without_facts(status: str) -> None:
    assert facts(medreq("314076", status=status), 1) == []


@pytest.mark.parametrize("intent", ["proposal", "option", "directive"])
def test_medication_intents_without_facts(intent: str) -> None:
    assert facts(medreq("314076", intent=intent), 1) == []


@pytest.mark.parametrize("status", ["stopped", "completed", "on-hold"])
def test_stopped_medication_is_not_active(status: str) -> None:
    f = one(medreq("312961", status=status))
    assert f.flags == ("end-unknown",)
    v = state(medreq("312961", status=status)).variables["statin"]
    assert v.value == 0.0 and v.flags == ("ended",) and v.count == 1


def test_stopped_with_recorded_end() -> None:
    r = medreq("312961", status="stopped", authored="2015-01-01")
    r["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": "2015-01-01", "end": "2017-01-01"}}}}]
    assert one(r).end == t("2017-01-01T00:00:00") and one(r).flags == ()
    assert state(r, as_of=t("2016-01-01T00:00:00")).variables["statin"].value == 1.0
    assert state(r, as_of=t("2018-01-01T00:00:00")).variables["statin"].value == 0.0


def test_renewed_prescription_keeps_treatment_continuous() -> None:
    # Synthea marks each yearly order "stopped" when it writes the next one.
    old = medreq("314076", status="stopped", authored="2015-01-01", rid="a")
    new = medreq("314076", status="active", authored="2016-01-01", rid="b")
    mid = state(old, new, as_of=t("2015-06-01T00:00:00")).variables["bp_treated"]
    assert mid.value == 1.0 and mid.flags == ("end-inferred",) and mid.source == "MedicationRequest/a/_history/1"
    now = state(old, new).variables["bp_treated"]
    assert now.value == 1.0 and now.flags == () and now.sources == ("MedicationRequest/b/_history/2",)
    assert now.count == 2


def test_medication_reference_to_contained_medication() -> None:
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": "m9", "status": "active", "intent": "order",
        "contained": [{"resourceType": "Medication", "id": "med",
                       "code": {"coding": [{"system": RXNORM, "code": "314231", "display": "Simvastatin 10 MG"}]}}],
        "medicationReference": {"reference": "#med"}, "authoredOn": "2020-01-01"}
    assert one(r).variable == "statin"


def test_medication_reference_resolved_by_the_caller() -> None:
    med = {"resourceType": "Medication", "id": "x", "code": {"coding": [{"system": RXNORM, "code": "106892"}]}}
    r: dict[str, Any] = {"resourceType": "MedicationRequest", "id": "m9", "status": "active", "intent": "order",
                         "medicationReference": {"reference": "Medication/x"}, "authoredOn": "2020-01-01"}
    assert facts(r, 1) == []
    assert [f.variable for f in facts(r, 1, resolve={"Medication/x": med}.get)] == ["insulin"]
    r["medicationReference"]["display"] = "Insulin Glargine 100 UNT/ML"
    assert [(f.variable, f.flags) for f in facts(r, 1)] == [("insulin", ("by-name",))]


# ---------------------------------------------------------------- Patient, age, eGFR


def test_patient_facts() -> None:
    got = {f.variable: f for f in facts(patient("female", "1970-05-20", "2054-5", deceasedDateTime="2020-01-01"), 4)}
    assert got["female"].value == 1.0 and got["black"].value == 1.0
    assert got["birth_date"].time == t("1970-05-20T00:00:00")
    assert got["deceased"].time == t("2020-01-01T00:00:00")
    assert {f.source for f in got.values()} == {"Patient/p1/_history/4"}


@pytest.mark.parametrize(("race", "black"), [("2054-5", 1.0), ("2106-3", 0.0), ("2028-9", 0.0), ("2135-2", 0.0),
                                             ("UNK", None), (None, None)])
def test_race(race: str | None, black: float | None) -> None:
    assert state(pat=patient(race=race)).values()["black"] == black


@pytest.mark.parametrize(("gender", "female"), [("female", 1.0), ("male", 0.0), ("other", None), ("unknown", None)])
def test_sex(gender: str, female: float | None) -> None:
    assert state(pat=patient(gender=gender)).values()["female"] == female


@pytest.mark.parametrize(("birth", "as_of", "age"), [
    ("1966-06-01", "2021-06-01", 55), ("1966-06-02", "2021-06-01", 54), ("1966-06-01", "2021-05-31", 54),
    ("2000-02-29", "2021-02-28", 20), ("2000-02-29", "2021-03-01", 21), ("1966", "2021-06-01", 55),
])
def test_age_in_completed_years(birth: str, as_of: str, age: int) -> None:
    s = state(pat=patient(birth=birth), as_of=t(f"{as_of}T12:00:00"))
    assert s.values()["age"] == age
    assert s.basis(["age"]) == ["Patient/p1/_history/7"]


def test_deceased_patient_age_is_flagged() -> None:
    s = state(pat=patient(deceasedDateTime="2020-01-01T00:00:00Z"))
    assert "deceased" in s.variables["age"].flags
    assert "deceased" not in state(pat=patient(deceasedDateTime="2022-01-01T00:00:00Z")).variables["age"].flags


def test_patient_facts_from_the_store_when_no_patient_is_given() -> None:
    pat = patient("female", "1956-01-01", "2054-5")
    got = facts(pat, 3) + facts(obs("2093-3", 190.0, "mg/dL"), 1)
    s = build_state(None, None, got, AS_OF)
    assert s.patient == "p1"
    assert (s.values()["age"], s.values()["female"], s.values()["black"]) == (65.0, 1.0, 1.0)
    # With the Patient given, its own version is used and stored Patient facts are ignored.
    s2 = build_state(patient("male", "1956-01-01"), 9, got, AS_OF)
    assert s2.values()["female"] == 0.0 and s2.variables["age"].source == "Patient/p1/_history/9"


@pytest.mark.parametrize(("scr", "unit", "age", "gender", "nkf"), [
    (1.09, "mg/dL", 55, "male", 80),
    (85.0, "umol/L", 65, "female", 66),
])
def test_egfr_derived_from_creatinine_matches_nkf_calculator(scr: float, unit: str, age: int, gender: str,
                                                             nkf: int) -> None:
    when = datetime(2021, 1, 10, 9, tzinfo=UTC)
    pat = patient(gender=gender, birth=f"{2021 - age}-01-01")
    s = state(obs("2160-0", scr, unit, rid="scr"), pat=pat)
    v = s.variables["egfr"]
    assert round(v.value or 0.0) == nkf
    assert v.flags == ("derived",) and v.time == when and v.count == 1
    assert v.source == "Observation/scr/_history/1"
    assert s.basis(["egfr"]) == ["Observation/scr/_history/1", "Patient/p1/_history/7"]


def test_ckd_epi_2021_formula_and_vectorisation() -> None:
    assert ckd_epi_2021(1.09, 55, 0) == pytest.approx(80.15, abs=0.005)  # twin.md 4a, "mine 80.15"
    assert ckd_epi_2021(85 / 88.4, 65, 1) == pytest.approx(65.53, abs=0.005)  # "mine 65.53"
    # Hand evaluation for Scr below kappa (female, 0.6 mg/dL, 40 y).
    by_hand = 142 * (0.6 / 0.7) ** -0.241 * 0.9938**40 * 1.012
    assert ckd_epi_2021(0.6, 40, True) == pytest.approx(by_hand, rel=1e-12)
    male_low = 142 * (0.7 / 0.9) ** -0.302 * 0.9938**50  # male, Scr below kappa
    assert ckd_epi_2021(0.7, 50, 0) == pytest.approx(male_low, rel=1e-12)
    male_high = 142 * (1.8 / 0.9) ** -1.200 * 0.9938**70  # male, Scr above kappa
    assert ckd_epi_2021(1.8, 70, 0.0) == pytest.approx(male_high, rel=1e-12)
    arr = ckd_epi_2021(np.array([1.09, 85 / 88.4, 0.6]), np.array([55.0, 65.0, 40.0]), np.array([0.0, 1.0, 1.0]))
    assert arr.shape == (3,)
    assert arr == pytest.approx([ckd_epi_2021(1.09, 55, 0), ckd_epi_2021(85 / 88.4, 65, 1), by_hand])
    assert math.isnan(ckd_epi_2021(0.0, 50, 0))


def test_measured_egfr_wins_when_as_new_as_the_creatinine() -> None:
    same = "2021-01-10T09:00:00Z"
    s = state(obs("2160-0", 1.09, "mg/dL", rid="scr", when=same), obs("33914-3", 77.0, "mL/min/{1.73_m2}", rid="e",
                                                                        when=same))
    v = s.variables["egfr"]
    assert (v.value, v.flags, v.source) == (77.0, (), "Observation/e/_history/2")


def test_newer_creatinine_replaces_an_older_measured_egfr() -> None:
    s = state(obs("33914-3", 95.0, "mL/min/{1.73_m2}", rid="e", when="2019-01-01T00:00:00Z"),
              obs("2160-0", 1.09, "mg/dL", rid="scr", when="2021-01-10T09:00:00Z"),
              pat=patient(birth="1966-01-01"))
    v = s.variables["egfr"]
    assert v.flags == ("derived",) and round(v.value or 0) == 80


def test_egfr_not_derived_without_sex() -> None:
    v = state(obs("2160-0", 1.09, "mg/dL"), pat=patient(gender="unknown")).variables["egfr"]
    assert v.value is None


def test_derived_egfr_trend_uses_age_at_each_creatinine() -> None:
    pat = patient(birth="1960-01-01")
    s = state(obs("2160-0", 1.0, "mg/dL", rid="a", when="2015-01-01T00:00:00Z"),
              obs("2160-0", 1.2, "mg/dL", rid="b", when="2020-01-01T00:00:00Z"), pat=pat)
    v = s.variables["egfr"]
    e1, e2 = ckd_epi_2021(1.0, 55, 0), ckd_epi_2021(1.2, 60, 0)
    years = (t("2020-01-01T00:00:00") - t("2015-01-01T00:00:00")).days / 365.25
    assert v.value == pytest.approx(e2) and v.count == 2
    assert v.trend_per_year == pytest.approx((e2 - e1) / years)


# ---------------------------------------------------------------- trend, staleness, basis


def test_trend_per_year_and_count() -> None:
    rows = [("2018-01-01", 150.0), ("2019-01-01", 145.0), ("2020-01-01", 140.0), ("2021-01-01", 135.0)]
    s = state(*(obs("8480-6", v, "mm[Hg]", rid=f"b{i}", when=f"{d}T00:00:00Z") for i, (d, v) in enumerate(rows)))
    v = s.variables["sbp"]
    xs = [(t(f"{d}T00:00:00") - t("2018-01-01T00:00:00")).days / 365.25 for d, _ in rows]
    assert v.count == 4 and v.value == 135.0
    assert v.trend_per_year == pytest.approx(float(np.polyfit(xs, [y for _, y in rows], 1)[0]), rel=1e-9)


def test_no_trend_within_30_days_or_from_one_point() -> None:
    close = state(obs("8480-6", 150.0, "mm[Hg]", rid="a", when="2021-01-01T00:00:00Z"),
                  obs("8480-6", 130.0, "mm[Hg]", rid="b", when="2021-01-20T00:00:00Z"))
    assert close.variables["sbp"].trend_per_year is None and close.variables["sbp"].count == 2
    assert state(obs("8480-6", 150.0, "mm[Hg]")).variables["sbp"].trend_per_year is None


def test_values_after_as_of_are_ignored() -> None:
    s = state(obs("8480-6", 150.0, "mm[Hg]", rid="a", when="2020-01-01T00:00:00Z"),
              obs("8480-6", 120.0, "mm[Hg]", rid="b", when="2022-01-01T00:00:00Z"))
    assert s.variables["sbp"].value == 150.0 and s.variables["sbp"].count == 1


def test_stale_flag_default_and_override() -> None:
    r = obs("8480-6", 130.0, "mm[Hg]", when="2020-01-01T00:00:00Z")
    assert "stale" in state(r).variables["sbp"].flags  # 517 days > 365
    assert "stale" not in state(r, stale={"sbp": 600}).variables["sbp"].flags
    lipid = obs("2093-3", 190.0, "mg/dL", when="2020-01-01T00:00:00Z")
    assert "stale" not in state(lipid).variables["tc"].flags  # lipids: 5 years


def test_every_vocabulary_variable_is_in_the_state_and_values() -> None:
    s = state()
    assert tuple(s.variables) == mapping.VOCABULARY
    assert set(s.values()) == set(mapping.VOCABULARY)
    assert s.values()["sbp"] is None and s.variables["sbp"].count == 0


def test_basis_lists_exact_versions_of_used_variables() -> None:
    s = state(obs("2093-3", 190.0, "mg/dL", rid="tc"), cond(SNOMED, "44054006", rid="dm"),
              obs("2085-9", 50.0, "mg/dL", rid="hdl"))
    assert s.basis(["age", "tc", "hdl", "diabetes", "female", "sbp", "statin"]) == [
        "Patient/p1/_history/7", "Observation/tc/_history/1", "Observation/hdl/_history/3",
        "Condition/dm/_history/2"]


def test_naive_as_of_is_utc() -> None:
    r = obs("8480-6", 130.0, "mm[Hg]", when="2021-01-01T00:00:00Z")
    assert state(r, as_of=datetime(2021, 6, 1)).variables["sbp"].value == 130.0


# ---------------------------------------------------------------- the code maps themselves


def test_codes_for_names_the_providing_codings() -> None:
    sbp = {c for _, c, _ in codes_for("sbp")}
    assert {"8480-6", "85354-9", "55284-4"} <= sbp
    assert {"98979-8", "33914-3", "2160-0", "38483-4"} <= {c for _, c, _ in codes_for("egfr")}
    assert ("http://hl7.org/fhir/sid/icd-10-cm", "E11.*") in {(s, c) for s, c, _ in codes_for("diabetes")}
    assert {"314231", "312961"} <= {c for _, c, _ in codes_for("statin")}
    assert codes_for("smoker")[0][1] == "72166-2"
    assert codes_for("age")[0][1] == "Patient.birthDate"
    assert codes_for("no-such-variable") == []


def test_variables_json_matches_the_vocabulary_and_is_well_formed() -> None:
    v = json.loads((mapping.DATA / "variables.json").read_text())["variables"]
    assert set(v) == set(mapping.VOCABULARY)
    assert {n for n, x in v.items() if x["kind"] in ("boolean",) or n in ("female", "black")} \
        == mapping.BOOLEAN_VARIABLES
    for name, spec in mapping.maps().quantities.items():
        assert spec.low < spec.high, name
        assert spec.unit in spec.units and spec.units[spec.unit] == (1.0, 0.0), name
        assert all(m > 0 and math.isfinite(m) and math.isfinite(a) for m, a in spec.units.values()), name


def test_dimension_only_factors_agree_with_ucum() -> None:
    # Where no molar mass is involved the table factor must equal UCUM's.
    checked = 0
    for name, spec in mapping.maps().quantities.items():
        base = ucum.conversion(spec.unit)
        assert base is not None, name
        for unit, (mul, add) in spec.units.items():
            conv = ucum.conversion(unit)
            if conv is None or conv[1] != base[1] or add != 0.0 or name == "hba1c":
                continue
            assert mul == pytest.approx(conv[0] / base[0], rel=1e-9), (name, unit)
            checked += 1
    assert checked >= 20


def test_molar_mass_factors() -> None:
    q = mapping.maps().quantities
    assert q["tc"].units["mmol/L"][0] == pytest.approx(386.65 / 10, rel=1e-3)  # cholesterol C27H46O
    assert q["tg"].units["mmol/L"][0] == pytest.approx(885.7 / 10, rel=1e-3)  # triolein
    assert q["glucose"].units["mmol/L"][0] == pytest.approx(180.16 / 10, rel=1e-3)
    assert q["creatinine"].units["umol/L"][0] == pytest.approx(1 / 88.4, rel=1e-12)
    assert q["creatinine"].units["umol/L"][0] == pytest.approx(113.12 / 10 / 1000, rel=1e-3)
    assert q["uacr"].units["mg/mmol"][0] == pytest.approx(1000 / 113.12, rel=1e-3)


def test_medications_json_lists_each_code_once() -> None:
    m = json.loads((mapping.DATA / "medications.json").read_text())
    codes = [c[0] for cls in m["classes"].values() for c in cls["rxnorm"]]
    assert len(codes) == len(set(codes))
    assert not set(codes) & {e[0] for e in m["exclude"]}
    assert set(m["classes"]) == set(mapping.TREATMENTS)
