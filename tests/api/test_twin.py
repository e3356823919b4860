"""The digital twin over HTTP: $twin state from what was written (and corrected, and deleted),
$simulate with the published worked examples, every 422 and 400 path, persisted RiskAssessments
marked when their inputs change, scopes, and Group $simulate.

Patients are built by hand so every expected number comes from a publication (twin.md) or from the
resources the test wrote; asOf is fixed so ages are exact."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import FhirClient

from .support import LOINC, SNOMED, UCUM, assert_oo, create, entries, oo_text, search

AS_OF = "2025-06-01T00:00:00Z"
TAG = "https://fhirtwin.org/fhir/CodeSystem/twin-tag|basis-outdated"
SMOKING_NEVER = "266919005"
SMOKING_CURRENT = "449868002"


# ---------------------------------------------------------------- builders


def patient(uid: str, gender: str = "male", birth: str = "1970-06-01", black: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}],
                         "gender": gender, "birthDate": birth, "name": [{"family": f"Twin{uid[:6]}"}]}
    if black:
        p["extension"] = [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2054-5",
                                                   "display": "Black or African American"}},
            {"url": "text", "valueString": "Black or African American"}]}]
    return p


def lab(pid: str, code: str, value: float, unit: str, when: str = "2025-05-01T09:00:00Z", **kw: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation", "status": kw.pop("status", "final"),
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    o.update(kw)
    return o


def bp(pid: str, systolic: float, diastolic: float = 80, when: str = "2025-05-01T09:00:00Z",
       panel: str = "85354-9") -> dict[str, Any]:
    def comp(code: str, v: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": v, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}}

    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": LOINC, "code": panel}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "component": [comp("8480-6", systolic), comp("8462-4", diastolic)]}


def smoking(pid: str, code: str, when: str = "2025-05-01T09:00:00Z") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code}]}}


def condition(pid: str, code: str, system: str = SNOMED, onset: str = "2015-01-01", **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": kw.pop("clinical", "active")}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": kw.pop("verification", "confirmed")}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": onset,
    }
    c.update(kw)
    return c


def table_a_man(fhir: FhirClient, uid: str, *, hdl: bool = True, smoker: str = SMOKING_NEVER,
                birth: str = "1970-06-01") -> tuple[str, dict[str, dict[str, Any]]]:
    """Goff 2013 Table A: 55, TC 213 mg/dL, HDL 50 mg/dL, untreated SBP 120, nonsmoker, no diabetes."""
    p = create(fhir, patient(uid, birth=birth))
    pid = p["id"]
    made = {"patient": p,
            "tc": create(fhir, lab(pid, "2093-3", 213, "mg/dL")),
            "bp": create(fhir, bp(pid, 120)),
            "smoking": create(fhir, smoking(pid, smoker))}
    if hdl:
        made["hdl"] = create(fhir, lab(pid, "2085-9", 50, "mg/dL"))
    return pid, made


def twin(fhir: FhirClient, pid: str, as_of: str = AS_OF) -> dict[str, dict[str, Any]]:
    r = fhir.get(f"Patient/{pid}/$twin", params={"asOf": as_of})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters"
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
    return out


def versioned(res: dict[str, Any]) -> str:
    return f"{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}"


def params(*items: tuple[str, Any]) -> dict[str, Any]:
    out = []
    for name, value in items:
        if isinstance(value, dict):
            out.append({"name": name, **value})
        elif isinstance(value, bool):
            out.append({"name": name, "valueBoolean": value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueCode": value})
    return {"resourceType": "Parameters", "parameter": out}


def simulate(fhir: FhirClient, pid: str, *items: tuple[str, Any], status: int = 200) -> dict[str, Any]:
    r = fhir.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}), *items))
    assert r.status_code == status, r.text
    return r.json()


def prob(ra: dict[str, Any], i: int = -1) -> float:
    return float(ra["prediction"][i]["probabilityDecimal"])


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------- $twin


def test_twin_state_in_canonical_units_with_sources(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    # HDL again a year earlier in mmol/L: counted, converted, and a trend appears.
    create(fhir, lab(pid, "14646-4", 1.1, "mmol/L", when="2024-05-01T09:00:00Z"))
    state = twin(fhir, pid)
    assert state["age"]["value"]["value"] == pytest.approx(55, abs=0.01)
    assert state["female"]["value"] is False
    assert state["tc"]["value"] == {"value": 213, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    assert state["tc"]["source"] == {"reference": versioned(made["tc"])}
    assert state["tc"]["count"] == 1
    assert state["sbp"]["value"]["value"] == 120  # a component of the 85354-9 panel
    assert state["sbp"]["source"] == {"reference": versioned(made["bp"])}
    assert state["dbp"]["value"]["value"] == 80
    assert state["hdl"]["value"]["value"] == 50
    assert state["hdl"]["count"] == 2
    # 1.1 mmol/L = 1.1 / 0.02586 mg/dL a year before 50 mg/dL: the slope per year, in mg/dL/a
    earlier = 1.1 / 0.02586
    assert state["hdl"]["trend"]["value"] == pytest.approx((50 - earlier) / (365 / 365.25), rel=0.02)
    assert state["hdl"]["trend"]["code"] == "mg/dL/a"
    assert state["smoker"]["value"] is False
    assert state["diabetes"]["value"] is False and "no-record" in state["diabetes"]["flag"]


def test_twin_follows_corrections_errors_and_deletes(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    tc = made["tc"]
    fixed = {**tc, "valueQuantity": {**tc["valueQuantity"], "value": 230}, "status": "corrected"}
    r = fhir.put(f"Observation/{tc['id']}", json=fixed)
    assert r.status_code == 200, r.text
    state = twin(fhir, pid)
    assert state["tc"]["value"]["value"] == 230
    assert state["tc"]["source"] == {"reference": f"Observation/{tc['id']}/_history/2"}
    # entered-in-error: the value leaves the twin
    r = fhir.put(f"Observation/{tc['id']}", json={**fixed, "status": "entered-in-error"})
    assert r.status_code == 200, r.text
    assert "value" not in twin(fhir, pid).get("tc", {})
    # a deleted blood pressure leaves it too
    assert fhir.delete(f"Observation/{made['bp']['id']}").status_code in (200, 204)
    assert "value" not in twin(fhir, pid).get("sbp", {})


def test_twin_flags_implausible_and_unconvertible(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    create(fhir, lab(pid, "2093-3", 9000, "mg/dL", when="2025-05-20T09:00:00Z"))  # newer, implausible
    create(fhir, lab(pid, "2085-9", 3, "kg", when="2025-05-20T09:00:00Z"))  # newer, wrong kind of unit
    state = twin(fhir, pid)
    assert state["tc"]["value"]["value"] == 213  # the implausible one never becomes current
    assert "implausible" in state["tc"]["flag"]
    assert state["hdl"]["value"]["value"] == 50
    assert "unit-not-convertible" in state["hdl"]["flag"]


def test_twin_errors(fhir: FhirClient, uid: str) -> None:
    assert_oo(fhir.get("Patient/nobody-here/$twin"), 404)
    pid, _ = table_a_man(fhir, uid)
    assert_oo(fhir.get(f"Patient/{pid}/$twin", params={"asOf": "yesterday"}), 400)
    assert_oo(fhir.get(f"Patient/{pid}/$twin", params={"colour": "blue"}), 400)


# ---------------------------------------------------------------- $simulate: equations


def test_pce_table_a_white_man_over_http(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    ra = simulate(fhir, pid, ("model", "pce-ascvd-10y"))
    assert ra["resourceType"] == "RiskAssessment"
    assert ra["status"] == "final"
    assert ra["subject"] == {"reference": f"Patient/{pid}"}
    assert ra["occurrenceDateTime"] == "2025-06-01T00:00:00Z"
    assert ra["method"]["coding"][0]["code"] == "pce-ascvd-10y"
    assert ra["method"]["coding"][0]["version"]
    # Goff 2013 Table A: 5.3 % published for white men (the paper sums rounded terms; +-0.1 pp)
    assert abs(100 * prob(ra) - 5.3) <= 0.1
    basis = {b["reference"] for b in ra["basis"]}
    assert {versioned(made[k]) for k in ("patient", "tc", "hdl", "bp", "smoking")} <= basis
    pred = ra["prediction"][0]
    assert pred["whenRange"]["low"]["value"] == pytest.approx(55, abs=0.01)
    assert pred["whenRange"]["high"]["value"] == pytest.approx(65, abs=0.01)
    assert pred["whenRange"]["low"]["code"] == "a"


def test_pce_black_woman_and_several_models(fhir: FhirClient, uid: str) -> None:
    p = create(fhir, patient(uid, gender="female", black=True))
    pid = p["id"]
    for r in (lab(pid, "2093-3", 213, "mg/dL"), lab(pid, "2085-9", 50, "mg/dL"), bp(pid, 120),
              smoking(pid, SMOKING_NEVER)):
        create(fhir, r)
    b = simulate(fhir, pid, ("model", "pce-ascvd-10y"), ("model", "framingham-cvd-10y"))
    assert b["resourceType"] == "Bundle" and b["type"] == "collection"
    by_model = {e["resource"]["method"]["coding"][0]["code"]: e["resource"] for e in b["entry"]}
    assert abs(100 * prob(by_model["pce-ascvd-10y"]) - 3.0) <= 0.05  # Table A, African-American women
    assert 0 < prob(by_model["framingham-cvd-10y"]) < 1


def test_simulate_by_get(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    r = fhir.get(f"Patient/{pid}/$simulate", params={"model": "pce-ascvd-10y", "asOf": AS_OF})
    assert r.status_code == 200, r.text
    assert abs(100 * prob(r.json()) - 5.3) <= 0.1
    assert_oo(fhir.get(f"Patient/{pid}/$simulate", params={"model": "pce-ascvd-10y", "persist": "true"}), 400)


def test_422_names_missing_inputs_and_the_codes_that_provide_them(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid, hdl=False)
    r = fhir.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                          ("model", "pce-ascvd-10y")))
    oo = assert_oo(r, 422)
    text = oo_text(r)
    assert "hdl" in text and "2085-9" in text
    assert [i["code"] for i in oo["issue"]] == ["required"]
    assert "tc" not in text.replace("hdl", "")  # only what is missing


def test_422_out_of_range_and_prior_event(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid, birth="1990-06-01")  # 35: below PCE's 40
    create(fhir, condition(pid, "22298006"))  # myocardial infarction: not primary prevention
    r = fhir.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                          ("model", "pce-ascvd-10y")))
    oo = assert_oo(r, 422)
    text = oo_text(r)
    assert "age" in text and "40" in text and "79" in text
    assert "ascvd" in text
    assert {i["code"] for i in oo["issue"]} == {"value"}
    assert any(i.get("expression") == ["Patient.birthDate"] for i in oo["issue"])


def test_422_kfre_outside_its_population(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    create(fhir, lab(pid, "98979-8", 75, "mL/min/{1.73_m2}"))
    r = fhir.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}), ("model", "kfre-2y")))
    text = oo_text(r)
    assert_oo(r, 422)
    assert "egfr" in text and "below 60" in text  # eGFR 75 is not CKD G3-G5
    assert "uacr" in text and "9318-7" in text  # and no albumin/creatinine ratio


@pytest.mark.parametrize("body, where", [
    (params(("model", "no-such-model")), "valueCode"),
    (params(), "parameter"),
    (params(("model", "pce-ascvd-10y"), ("horizon", 5)), "horizon"),
    (params(("model", "cvd-microsim"), ("horizon", 99)), "valueInteger"),
    (params(("model", "cvd-microsim"), ("samples", 0)), "valueInteger"),
    (params(("model", "cvd-microsim"), ("intervention", "yoga")), "valueCode"),
    (params(("model", "pce-ascvd-10y"), ("intervention", "statin-high")), "intervention"),
    (params(("model", "cvd-microsim"), ("intervention", {"valueCode": "bp-target"})), "part"),
    (params(("model", "cvd-microsim"), ("intervention", {"valueCode": "bp-target", "part": [
        {"name": "target", "valueQuantity": {"value": 130, "unit": "kPa", "code": "kPa"}}]})), "code"),
    (params(("model", "pce-ascvd-10y"), ("persist", {"valueString": "yes"})), "valueBoolean"),
    (params(("model", "pce-ascvd-10y"), ("colour", "blue")), "name"),
    ({"resourceType": "Patient"}, "resourceType"),
])
def test_400_bad_parameters(fhir: FhirClient, uid: str, body: dict[str, Any], where: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    r = fhir.post(f"Patient/{pid}/$simulate", json=body)
    oo = assert_oo(r, 400)
    exprs = [e for i in oo["issue"] for e in i.get("expression", [])]
    assert any(where in e for e in exprs), oo


def test_simulate_unknown_patient_and_target(fhir: FhirClient) -> None:
    assert_oo(fhir.post("Patient/nobody-here/$simulate", json=params(("model", "pce-ascvd-10y"))), 404)
    assert_oo(fhir.post("Observation/x/$simulate", json=params(("model", "pce-ascvd-10y"))), 404)


# ---------------------------------------------------------------- $simulate: cvd-microsim


def test_microsim_interventions_relative_risk_and_seed(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid, smoker=SMOKING_CURRENT)
    create(fhir, lab(pid, "18262-6", 160, "mg/dL"))  # LDL, for the statin what-if
    create(fhir, bp(pid, 150, when="2025-05-10T09:00:00Z"))
    target = {"valueCode": "bp-target", "part": [
        {"name": "target", "valueQuantity": {"value": 130, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}}]}
    ask = (("model", "cvd-microsim"), ("horizon", 10), ("samples", 2000), ("seed", 7),
           ("intervention", "statin-high"), ("intervention", target), ("intervention", "smoking-cessation"))
    b = simulate(fhir, pid, *ask)
    ras = [e["resource"] for e in b["entry"]]
    baseline, *scenarios = ras
    assert "mitigation" not in baseline
    assert len(baseline["prediction"]) == 10  # one cumulative prediction per year
    cum = [prob(baseline, i) for i in range(10)]
    assert cum == sorted(cum) and 0 < cum[0] < cum[-1] < 1
    for pred in baseline["prediction"]:
        lo, hi = pred["probabilityRange"]["low"], pred["probabilityRange"]["high"]
        assert lo["code"] == hi["code"] == "%"  # ras-1
        assert lo["value"] - 1e-9 <= 100 * pred["probabilityDecimal"] <= hi["value"] + 1e-9
    assert len(scenarios) == 4  # three interventions and the combination
    for ra in scenarios:
        assert ra["mitigation"]
        assert prob(ra) <= prob(baseline)
        rr = ra["prediction"][-1]["relativeRisk"]
        assert 0 < rr <= 1
    combined = scenarios[-1]
    assert prob(combined) == min(prob(ra) for ra in scenarios)
    again = simulate(fhir, pid, *ask)
    assert [prob(e["resource"]) for e in again["entry"]] == [prob(ra) for ra in ras]


def test_microsim_without_ldl_refuses_the_statin_what_if(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    r = fhir.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                          ("model", "cvd-microsim"), ("intervention", "statin-moderate")))
    assert_oo(r, 422)
    assert "ldl" in oo_text(r).lower()


# ---------------------------------------------------------------- persisting


def test_persisted_assessment_is_searchable_and_marked_when_inputs_change(fhir: FhirClient, uid: str) -> None:
    pid, _ = table_a_man(fhir, uid)
    ra = simulate(fhir, pid, ("model", "pce-ascvd-10y"), ("persist", True))
    assert ra["id"] and ra["meta"]["versionId"] == "1"
    found = search(fhir, "RiskAssessment", {"subject": f"Patient/{pid}"})
    assert [e["resource"]["id"] for e in entries(found)] == [ra["id"]]
    assert not entries(search(fhir, "RiskAssessment", {"subject": f"Patient/{pid}", "_tag": TAG}))
    # a blood pressure of another patient changes nothing here; an unrelated code neither
    other, _ = table_a_man(fhir, uid[::-1])
    create(fhir, bp(other, 150, when="2025-05-20T09:00:00Z"))
    create(fhir, lab(pid, "2339-0", 99, "mg/dL"))  # glucose: not a PCE input
    assert not entries(search(fhir, "RiskAssessment", {"subject": f"Patient/{pid}", "_tag": TAG}))
    # a newer systolic pressure of this patient outdates it
    create(fhir, bp(pid, 150, when="2025-05-20T09:00:00Z"))
    tagged = entries(search(fhir, "RiskAssessment", {"subject": f"Patient/{pid}", "_tag": TAG}))
    assert [e["resource"]["id"] for e in tagged] == [ra["id"]]
    got = fhir.get(f"RiskAssessment/{ra['id']}").json()
    assert {"system": TAG.split("|")[0], "code": "basis-outdated"}.items() <= got["meta"]["tag"][0].items()
    assert got["prediction"] == ra["prediction"]


def test_correcting_a_basis_resource_outdates(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    ra = simulate(fhir, pid, ("model", "pce-ascvd-10y"), ("persist", True))
    assert fhir.delete(f"Observation/{made['hdl']['id']}").status_code in (200, 204)
    tagged = entries(search(fhir, "RiskAssessment", {"_id": ra["id"], "_tag": TAG}))
    assert len(tagged) == 1


def test_only_changed_inputs_outdate_patient_edits_included(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    ra = simulate(fhir, pid, ("model", "pce-ascvd-10y"), ("persist", True))

    def outdated() -> bool:
        return bool(entries(search(fhir, "RiskAssessment", {"_id": ra["id"], "_tag": TAG})))

    def put(resource: dict[str, Any]) -> None:
        r = fhir.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code == 200, r.text

    # New versions that say the same about the inputs: a name change, a note on the cholesterol
    person = {k: v for k, v in made["patient"].items() if k != "meta"}
    put({**person, "name": [{"family": "Renamed"}]})
    tc = {k: v for k, v in made["tc"].items() if k != "meta"}
    put({**tc, "note": [{"text": "fasting"}]})
    assert not outdated()
    # A corrected birth date changes age, an input of the model
    put({**person, "name": [{"family": "Renamed"}], "birthDate": "1968-06-01"})
    assert outdated()


def test_a_corrected_sex_outdates(fhir: FhirClient, uid: str) -> None:
    pid, made = table_a_man(fhir, uid)
    ra = simulate(fhir, pid, ("model", "pce-ascvd-10y"), ("persist", True))
    person = {k: v for k, v in made["patient"].items() if k != "meta"}
    assert fhir.put(f"Patient/{pid}", json={**person, "gender": "female"}).status_code == 200
    assert entries(search(fhir, "RiskAssessment", {"_id": ra["id"], "_tag": TAG}))


# ---------------------------------------------------------------- scopes


def test_scopes_decide_what_the_twin_sees(smart: Any, uid: str) -> None:
    from app.auth import internal_token

    admin = smart.admin
    pid, _ = table_a_man(admin, uid)

    def client(scope: str, patient: str | None = pid) -> FhirClient:
        tok = internal_token(smart.app, admin.base, scope=scope, lifetime_s=600, client_id="twin-tests", patient=patient)
        return FhirClient(admin.base, admin._send, tok)

    full = client("patient/*.rs")
    assert twin(full, pid)["tc"]["value"]["value"] == 213
    # Patient only: the state has the demographics and none of the Observations
    only_patient = client("patient/Patient.rs")
    state = twin(only_patient, pid)
    assert state["age"]["value"]["value"] == pytest.approx(55, abs=0.01)
    assert "value" not in state.get("tc", {})
    r = only_patient.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                                 ("model", "pce-ascvd-10y")))
    assert_oo(r, 422)
    assert "tc" in oo_text(r)
    # granular: laboratory Observations only -> no blood pressure (vital signs)
    labs = client("patient/Patient.rs patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
                  "observation-category|laboratory")
    assert "value" not in twin(labs, pid).get("sbp", {})
    # another patient's context: the patient does not exist for this token
    other = create(admin, patient(uid + "x"))
    assert_oo(client("patient/*.rs", other["id"]).get(f"Patient/{pid}/$twin"), 404)
    # persisting needs write access to RiskAssessment
    r = full.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                         ("model", "pce-ascvd-10y"), ("persist", True)))
    assert_oo(r, 403)
    assert not entries(search(admin, "RiskAssessment", {"subject": f"Patient/{pid}"}))
    writer = client("patient/*.rs patient/RiskAssessment.c")
    r = writer.post(f"Patient/{pid}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                           ("model", "pce-ascvd-10y"), ("persist", True)))
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- Group


def test_group_simulate_vectorised_summary_and_persist(fhir: FhirClient, uid: str) -> None:
    a, _ = table_a_man(fhir, uid)
    b, _ = table_a_man(fhir, uid + "b", smoker=SMOKING_CURRENT)
    c, _ = table_a_man(fhir, uid + "c", hdl=False)
    group = create(fhir, {"resourceType": "Group", "type": "person", "actual": True,
                          "member": [{"entity": {"reference": f"Patient/{p}"}} for p in (a, b, c)]
                          + [{"entity": {"reference": "Patient/gone"}, "inactive": True}]})
    single = {p: prob(simulate(fhir, p, ("model", "pce-ascvd-10y"))) for p in (a, b)}
    r = fhir.post(f"Group/{group['id']}/$simulate", json=params(("asOf", {"valueDateTime": AS_OF}),
                                                               ("model", "pce-ascvd-10y"), ("persist", True)))
    assert r.status_code == 200, r.text
    out = r.json()
    top = {p["name"]: p for p in out["parameter"]}
    assert top["members"]["valueInteger"] == 3 and top["visible"]["valueInteger"] == 3
    result = {p["name"]: p for p in top["result"]["part"]}
    assert result["evaluated"]["valueInteger"] == 2 and result["excluded"]["valueInteger"] == 1
    assert result["exclusion"]["part"][0]["valueString"] == "hdl missing"
    assert result["mean"]["valueDecimal"] == pytest.approx(sum(single.values()) / 2, abs=1e-6)
    stored = [p["valueReference"]["reference"] for p in out["parameter"] if p["name"] == "assessment"]
    assert len(stored) == 2
    for ref in stored:
        ra = fhir.get(ref).json()
        subject = ra["subject"]["reference"].split("/")[1]
        assert prob(ra) == pytest.approx(single[subject], abs=1e-6)
    assert_oo(fhir.post(f"Group/{group['id']}/$simulate", json=params(("model", "cvd-microsim"))), 400)
    assert_oo(fhir.post("Group/none/$simulate", json=params(("model", "pce-ascvd-10y"))), 404)


def test_capability_statement_lists_the_operations(fhir: FhirClient) -> None:
    cs = fhir.get("metadata").json()
    ops = {(r["type"], o["name"]) for r in cs["rest"][0]["resource"] for o in r.get("operation", [])}
    assert {("Patient", "twin"), ("Patient", "simulate"), ("Group", "simulate")} <= ops


def test_prevent_worked_example_over_http(fhir: FhirClient, uid: str) -> None:
    """Khan 2024 supplement Table S25: woman 50, TC 200, HDL 45, SBP 160 on antihypertensives,
    diabetes, nonsmoker, eGFR 90, BMI 35, no statin -> 10-year total CVD 14.7 %, HF 8.1 %."""
    p = create(fhir, patient(uid, gender="female", birth="1975-06-01"))
    pid = p["id"]
    for r in (lab(pid, "2093-3", 200, "mg/dL"), lab(pid, "2085-9", 45, "mg/dL"), bp(pid, 160),
              smoking(pid, SMOKING_NEVER), lab(pid, "98979-8", 90, "mL/min/{1.73_m2}"),
              lab(pid, "39156-5", 35, "kg/m2"), condition(pid, "44054006"),
              {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                         "code": "314076", "display": "lisinopril 10 MG Oral Tablet"}]},
               "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2024-01-01"}):
        create(fhir, r)
    b = simulate(fhir, pid, ("model", "prevent-cvd-10y"), ("model", "prevent-hf-10y"))
    by_model = {e["resource"]["method"]["coding"][0]["code"]: e["resource"] for e in b["entry"]}
    assert abs(100 * prob(by_model["prevent-cvd-10y"]) - 14.7) <= 0.05
    assert abs(100 * prob(by_model["prevent-hf-10y"]) - 8.1) <= 0.05
    assert any(ref["reference"].startswith("MedicationRequest/") for ref in by_model["prevent-cvd-10y"]["basis"])
