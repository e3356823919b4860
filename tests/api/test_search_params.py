"""Search parameter types, modifiers and prefixes (R4 search.html 3.1.1.4 - 3.1.1.5), chaining and _has."""

from __future__ import annotations

import pytest

from .support import (
    IDSYS,
    LOINC,
    MR,
    SNOMED,
    TAGSYS,
    UCUM,
    assert_oo,
    create,
    link,
    link_params,
    observation,
    organization,
    patient,
    search,
    search_ids,
)

# ---------------------------------------------------------------- string


def test_string_default_is_case_insensitive_prefix(fhir, uid):
    p = create(fhir, patient(uid, family=f"Zqx{uid}son"))
    assert search_ids(fhir, "Patient", {"family": f"zqx{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"family": f"ZQX{uid}SON"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"family": f"{uid}son"}) == []  # not a prefix


def test_string_is_accent_insensitive(fhir, uid):
    p = create(fhir, patient(uid, family=f"Ångström{uid}"))
    assert search_ids(fhir, "Patient", {"family": f"angstrom{uid}"}) == [p["id"]]


def test_string_exact_and_contains(fhir, uid):
    p = create(fhir, patient(uid, family=f"Zqx{uid}son"))
    assert search_ids(fhir, "Patient", {"family:exact": f"Zqx{uid}son"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"family:exact": f"zqx{uid}son"}) == []
    assert search_ids(fhir, "Patient", {"family:exact": f"Zqx{uid}"}) == []
    assert search_ids(fhir, "Patient", {"family:contains": f"{uid}SO"}) == [p["id"]]


def test_name_covers_given_and_family(fhir, uid):
    p = create(fhir, patient(uid, given=f"Giv{uid}"))
    assert search_ids(fhir, "Patient", {"name": f"giv{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"given": f"Giv{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"name": f"fam{uid}"}) == [p["id"]]


def test_string_or_with_comma_and_and_with_repetition(fhir, uid):
    a = create(fhir, patient(uid, family=f"Aaa{uid}", given="Ann"))
    b = create(fhir, patient(uid, family=f"Bbb{uid}", given="Bob"))
    create(fhir, patient(uid, family=f"Ccc{uid}"))
    got = search_ids(fhir, "Patient", {"family": f"Aaa{uid},Bbb{uid}"})
    assert sorted(got) == sorted([a["id"], b["id"]])
    got = search_ids(fhir, "Patient", [("family", f"Aaa{uid},Bbb{uid}"), ("given", "bob")])
    assert got == [b["id"]]


def test_address_city(fhir, uid):
    p = create(fhir, patient(uid, address=[{"line": ["1 Main St"], "city": f"Springfield{uid}", "postalCode": "01234"}]))
    assert search_ids(fhir, "Patient", {"address-city": f"springfield{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"address": f"Springfield{uid}"}) == [p["id"]]


# ---------------------------------------------------------------- token


def test_token_system_and_code_forms(fhir, uid):
    p = create(fhir, patient(uid))
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"identifier": uid}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"identifier": f"|{uid}"}) == []  # explicitly no system
    assert search_ids(fhir, "Patient", {"identifier": f"urn:other|{uid}"}) == []
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}x"}) == []


def test_token_system_only(fhir, uid):
    sys_ = f"urn:fhirtwin:sys:{uid}"
    a = create(fhir, patient(uid, identifier=[{"system": sys_, "value": "1"}]))
    b = create(fhir, patient(uid, identifier=[{"system": sys_, "value": "2"}]))
    assert sorted(search_ids(fhir, "Patient", {"identifier": f"{sys_}|"})) == sorted([a["id"], b["id"]])


def test_token_code_is_case_sensitive_on_identifier(fhir, uid):
    p = create(fhir, patient(uid, ident=f"AbC{uid}"))
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|AbC{uid}"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|abc{uid}"}) == []


def test_token_boolean_and_code(fhir, uid):
    fam = f"Fam{uid}"
    a = create(fhir, patient(uid, active=True, gender="female"))
    b = create(fhir, patient(uid, active=False, gender="male"))
    assert search_ids(fhir, "Patient", {"family": fam, "active": "true"}) == [a["id"]]
    assert search_ids(fhir, "Patient", {"family": fam, "active": "false"}) == [b["id"]]
    assert search_ids(fhir, "Patient", {"family": fam, "gender": "male"}) == [b["id"]]


def test_token_not_includes_resources_without_a_value(fhir, uid):
    fam = f"Fam{uid}"
    f = create(fhir, patient(uid, gender="female"))
    create(fhir, patient(uid, gender="male"))
    n = create(fhir, patient(uid, gender=None))
    got = search_ids(fhir, "Patient", {"family": fam, "gender:not": "male"})
    assert sorted(got) == sorted([f["id"], n["id"]])


def test_missing_modifier(fhir, uid):
    fam = f"Fam{uid}"
    f = create(fhir, patient(uid, gender="female"))
    n = create(fhir, patient(uid, gender=None, birthDate=None))
    assert search_ids(fhir, "Patient", {"family": fam, "gender:missing": "true"}) == [n["id"]]
    assert search_ids(fhir, "Patient", {"family": fam, "gender:missing": "false"}) == [f["id"]]
    assert search_ids(fhir, "Patient", {"family": fam, "birthdate:missing": "true"}) == [n["id"]]


def test_token_text_modifier(fhir, uid):
    p = create(fhir, patient(uid))
    o = observation(uid, f"Patient/{p['id']}")
    o["code"]["text"] = f"Fasting glucose {uid}"
    o = create(fhir, o)
    assert search_ids(fhir, "Observation", {"code:text": f"fasting glucose {uid}"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {"subject": f"Patient/{p['id']}", "code:text": "glucose [mass"}) == [o["id"]]


def test_identifier_of_type(fhir, uid):
    p = create(fhir, patient(uid, identifier=[
        {"type": {"coding": [{"system": MR, "code": "MR"}]}, "system": "http://hospital.example.org", "value": f"MR{uid}"}]))
    got = search_ids(fhir, "Patient", {"identifier:of-type": f"{MR}|MR|MR{uid}"})
    assert got == [p["id"]]
    assert search_ids(fhir, "Patient", {"identifier:of-type": f"{MR}|SS|MR{uid}"}) == []


def test_condition_snomed_code_and_clinical_status(fhir, uid):
    p = create(fhir, patient(uid))
    c = create(fhir, {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes mellitus type 2"}]},
        "subject": {"reference": f"Patient/{p['id']}"},
        "onsetDateTime": "2015-06-01",
    })
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Condition", {**base, "code": f"{SNOMED}|44054006"}) == [c["id"]]
    assert search_ids(fhir, "Condition", {**base, "clinical-status": "active"}) == [c["id"]]
    assert search_ids(fhir, "Condition", {**base, "code": f"{LOINC}|44054006"}) == []
    assert search_ids(fhir, "Condition", {**base, "onset-date": "ge2015"}) == [c["id"]]


# ---------------------------------------------------------------- date


@pytest.fixture
def three_births(fhir, uid):
    return {
        d: create(fhir, patient(uid, birthDate=d))["id"]
        for d in ("1970-01-01", "1980-05-17", "1990-12-31")
    }


@pytest.mark.parametrize("value, expected", [
    ("1980", ["1980-05-17"]),
    ("1980-05", ["1980-05-17"]),
    ("1980-05-17", ["1980-05-17"]),
    ("eq1980-05-17", ["1980-05-17"]),
    ("ne1980-05-17", ["1970-01-01", "1990-12-31"]),
    ("gt1980-05-17", ["1990-12-31"]),
    ("ge1980-05-17", ["1980-05-17", "1990-12-31"]),
    ("lt1980-05-17", ["1970-01-01"]),
    ("le1980-05-17", ["1970-01-01", "1980-05-17"]),
    ("lt1980", ["1970-01-01"]),
    ("gt1980", ["1990-12-31"]),
    ("sa1980-12-31", ["1990-12-31"]),
    ("eb1980-01-01", ["1970-01-01"]),
    ("ap1980-05-17", ["1980-05-17"]),
])
def test_date_prefixes(fhir, uid, three_births, value, expected):
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "birthdate": value})
    assert sorted(got) == sorted(three_births[d] for d in expected)


def test_date_range_with_two_prefixes(fhir, uid, three_births):
    got = search_ids(fhir, "Patient", [("family", f"Fam{uid}"), ("birthdate", "ge1975"), ("birthdate", "lt1990")])
    assert got == [three_births["1980-05-17"]]


def test_datetime_with_timezone_is_compared_as_instant(fhir, uid):
    p = create(fhir, patient(uid))
    # 10:00+01:00 is 09:00Z
    o = create(fhir, observation(uid, f"Patient/{p['id']}", effective="2021-03-04T10:00:00+01:00"))
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Observation", {**base, "date": "2021-03-04"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "date": "gt2021-03-04T09:30:00Z"}) == []
    assert search_ids(fhir, "Observation", {**base, "date": "lt2021-03-04T09:30:00Z"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "date": "ge2021-03-04T09:00:00Z"}) == [o["id"]]


def test_date_against_period(fhir, uid):
    p = create(fhir, patient(uid))
    e = create(fhir, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{p['id']}"},
        "period": {"start": "2020-01-01T08:00:00Z", "end": "2020-01-10T17:00:00Z"},
    })
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Encounter", {**base, "date": "2020-01"}) == [e["id"]]
    assert search_ids(fhir, "Encounter", {**base, "date": "ge2020-01-05"}) == [e["id"]]
    assert search_ids(fhir, "Encounter", {**base, "date": "le2020-01-05"}) == [e["id"]]
    assert search_ids(fhir, "Encounter", {**base, "date": "gt2020-01-11"}) == []
    assert search_ids(fhir, "Encounter", {**base, "date": "lt2019-12-31"}) == []


def test_date_eq_needs_search_range_to_contain_the_period(fhir, uid):
    # search.html 3.1.1.4.2: eq means the range of the search value fully contains the range of the target
    p = create(fhir, patient(uid))
    create(fhir, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{p['id']}"},
        "period": {"start": "2020-01-01T08:00:00Z", "end": "2020-01-10T17:00:00Z"},
    })
    assert search_ids(fhir, "Encounter", {"subject": f"Patient/{p['id']}", "date": "2020-01-05"}) == []


# ---------------------------------------------------------------- number and quantity


def test_number(fhir, uid):
    p = create(fhir, patient(uid))
    ra = create(fhir, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": f"Patient/{p['id']}"},
                       "prediction": [{"probabilityDecimal": 0.25}]})
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "RiskAssessment", {**base, "probability": "0.25"}) == [ra["id"]]
    assert search_ids(fhir, "RiskAssessment", {**base, "probability": "gt0.2"}) == [ra["id"]]
    assert search_ids(fhir, "RiskAssessment", {**base, "probability": "lt0.2"}) == []
    assert search_ids(fhir, "RiskAssessment", {**base, "probability": "0.4"}) == []


@pytest.mark.parametrize("value, hit", [
    ("5.4|http://unitsofmeasure.org|mg/dL", True),
    ("5.4||mg/dL", True),
    ("5.4", True),
    ("gt5|http://unitsofmeasure.org|mg/dL", True),
    ("lt5|http://unitsofmeasure.org|mg/dL", False),
    ("ge5.4|http://unitsofmeasure.org|mg/dL", True),
    ("ap5.6|http://unitsofmeasure.org|mg/dL", True),
    ("5.4|http://unitsofmeasure.org|mmol/L", False),
    ("0.054|http://unitsofmeasure.org|g/L", True),   # UCUM: 5.4 mg/dL = 0.054 g/L
    ("gt0.05|http://unitsofmeasure.org|g/L", True),
    ("lt0.05|http://unitsofmeasure.org|g/L", False),
])
def test_quantity(fhir, uid, value, hit):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}", code="2339-0",
                                 value={"value": 5.4, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}))
    got = search_ids(fhir, "Observation", {"subject": f"Patient/{p['id']}", "value-quantity": value})
    assert got == ([o["id"]] if hit else [])


def test_quantity_ucum_normalisation_1_mg_dl_is_0_01_g_l(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}",
                                 value={"value": 1, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}))
    got = search_ids(fhir, "Observation", {"subject": f"Patient/{p['id']}", "value-quantity": f"0.01|{UCUM}|g/L"})
    assert got == [o["id"]]


# ---------------------------------------------------------------- reference


def test_reference_forms(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    for params in ({"subject": f"Patient/{p['id']}"}, {"subject": p["id"]}, {"patient": p["id"]},
                   {"subject:Patient": p["id"]}, {"subject": f"{fhir.base}/Patient/{p['id']}"}):
        assert search_ids(fhir, "Observation", params) == [o["id"]], params
    assert search_ids(fhir, "Observation", {"subject:Group": p["id"]}) == []


def test_reference_identifier_modifier(fhir, uid):
    o = observation(uid, None)
    o["subject"] = {"identifier": {"system": IDSYS, "value": f"logical-{uid}"}}
    o = create(fhir, o)
    got = search_ids(fhir, "Observation", {"subject:identifier": f"{IDSYS}|logical-{uid}"})
    assert got == [o["id"]]


# ---------------------------------------------------------------- uri


def test_uri_exact_below_above(fhir, uid):
    base = f"http://example.org/fhir/{uid}/ValueSet"
    vs = create(fhir, {"resourceType": "ValueSet", "url": f"{base}/blood", "status": "active", "name": "Blood"})
    assert search_ids(fhir, "ValueSet", {"url": f"{base}/blood"}) == [vs["id"]]
    assert search_ids(fhir, "ValueSet", {"url": base}) == []
    assert search_ids(fhir, "ValueSet", {"url:below": f"http://example.org/fhir/{uid}"}) == [vs["id"]]
    assert search_ids(fhir, "ValueSet", {"url:above": f"{base}/blood/pressure"}) == [vs["id"]]
    assert search_ids(fhir, "ValueSet", {"url:above": f"{base}/other"}) == []


# ---------------------------------------------------------------- composite


def blood_pressure(uid, subject, systolic, diastolic):
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2022-02-02T10:00:00Z",
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": {"value": systolic, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": {"value": diastolic, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}},
        ],
    }


def test_composite_code_value_quantity(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}", code="2339-0",
                                 value={"value": 140, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}))
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Observation", {**base, "code-value-quantity": f"{LOINC}|2339-0$gt100"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "code-value-quantity": f"{LOINC}|2339-0$lt100"}) == []
    assert search_ids(fhir, "Observation", {**base, "code-value-quantity": f"{LOINC}|4548-4$gt100"}) == []


def test_composite_components_match_within_one_component(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, blood_pressure(uid, f"Patient/{p['id']}", 120, 80))
    base = {"subject": f"Patient/{p['id']}"}
    ccvq = "component-code-value-quantity"
    assert search_ids(fhir, "Observation", {**base, ccvq: f"{LOINC}|8480-6$gt110"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, ccvq: f"{LOINC}|8462-4$lt90"}) == [o["id"]]
    # 8462-4 is 80; the 120 belongs to another component
    assert search_ids(fhir, "Observation", {**base, ccvq: f"{LOINC}|8462-4$gt110"}) == []
    assert search_ids(fhir, "Observation", {**base, "component-code": f"{LOINC}|8480-6"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "combo-code": f"{LOINC}|8462-4"}) == [o["id"]]


def test_combo_parameters_search_the_panel_and_its_components_with_every_modifier(fhir, uid):
    # combo-* are not indexed on their own: they are searched through code / component-code,
    # value-quantity / component-value-quantity and the two code-value-quantity composites.
    p = create(fhir, patient(uid))
    subject = f"Patient/{p['id']}"
    bp = create(fhir, blood_pressure(uid, subject, 150, 95))
    glucose = create(fhir, observation(uid, subject, code="2339-0", display="Glucose",
                                       value={"value": 140, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}))
    coded = create(fhir, observation(uid, subject, code="72166-2", display="Tobacco smoking status", value=None,
                                     valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct",
                                                                       "code": "8517006", "display": "Ex-smoker"}]}))
    base = {"subject": subject}

    def ids(**params: str) -> set[str]:
        return set(search_ids(fhir, "Observation", {**base, **params}))

    assert ids(**{"combo-code": "85354-9"}) == {bp["id"]}
    assert ids(**{"combo-code": f"{LOINC}|8480-6"}) == {bp["id"]}
    assert ids(**{"combo-code": f"{LOINC}|2339-0,{LOINC}|8462-4"}) == {bp["id"], glucose["id"]}
    assert ids(**{"combo-code": "urn:other|8480-6"}) == set()
    assert ids(**{"combo-code:not": f"{LOINC}|8480-6"}) == {glucose["id"], coded["id"]}
    assert ids(**{"combo-code:text": "glucose"}) == {glucose["id"]}
    assert ids(**{"combo-value-quantity": "gt145"}) == {bp["id"]}  # the systolic component
    assert ids(**{"combo-value-quantity": "gt120"}) == {bp["id"], glucose["id"]}
    assert ids(**{"combo-value-quantity:missing": "true"}) == {coded["id"]}
    assert ids(**{"combo-value-quantity:missing": "false"}) == {bp["id"], glucose["id"]}
    cvq = "combo-code-value-quantity"
    assert ids(**{cvq: f"{LOINC}|8462-4$gt90"}) == {bp["id"]}
    assert ids(**{cvq: f"{LOINC}|8462-4$gt100"}) == set()  # 150 is the systolic's, not the diastolic's
    assert ids(**{cvq: f"{LOINC}|2339-0$gt100"}) == {glucose["id"]}
    assert ids(**{cvq: f"{LOINC}|85354-9$gt1"}) == set()  # the panel itself has no value
    assert ids(**{"combo-value-concept": "http://snomed.info/sct|8517006"}) == {coded["id"]}
    got = search_ids(fhir, "Observation", {**base, "_sort": "combo-code"})
    assert got == [glucose["id"], coded["id"], bp["id"]]  # 2339-0 < 72166-2 < 8462-4 (bp's lowest)
    got = search_ids(fhir, "Observation", {**base, "_sort": "-combo-code"})
    assert got == [bp["id"], coded["id"], glucose["id"]]  # 85354-9 is bp's highest


# ---------------------------------------------------------------- chaining and _has


@pytest.fixture
def chain_world(fhir, uid):
    org = create(fhir, organization(uid, name=f"Orgname{uid}"))
    p = create(fhir, patient(uid, given=f"Giv{uid}", managingOrganization={"reference": f"Organization/{org['id']}"}))
    other = create(fhir, patient(uid, family=f"Other{uid}"))
    enc = create(fhir, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{p['id']}"},
        "serviceProvider": {"reference": f"Organization/{org['id']}"},
    })
    obs = create(fhir, observation(uid, f"Patient/{p['id']}", encounter={"reference": f"Encounter/{enc['id']}"}))
    obs_other = create(fhir, observation(uid, f"Patient/{other['id']}", code="4548-4", display="Hemoglobin A1c"))
    return {"org": org, "p": p, "other": other, "enc": enc, "obs": obs, "obs_other": obs_other}


def test_chain_one_level(fhir, uid, chain_world):
    w = chain_world
    assert search_ids(fhir, "Observation", {"subject:Patient.name": f"Giv{uid}"}) == [w["obs"]["id"]]
    assert search_ids(fhir, "Observation", {"patient.family": f"Other{uid}"}) == [w["obs_other"]["id"]]
    got = search_ids(fhir, "Observation", {"patient.identifier": f"{IDSYS}|{uid}"})
    assert sorted(got) == sorted([w["obs"]["id"], w["obs_other"]["id"]])


def test_chain_two_levels(fhir, uid, chain_world):
    w = chain_world
    assert search_ids(fhir, "Observation", {"patient.organization.name": f"orgname{uid}"}) == [w["obs"]["id"]]
    assert search_ids(fhir, "Encounter", {"subject:Patient.organization.name": f"Orgname{uid}"}) == [w["enc"]["id"]]
    assert search_ids(fhir, "Encounter", {"subject.organization.name": f"Orgname{uid}"}) == [w["enc"]["id"]]
    assert search_ids(fhir, "Observation", {"encounter.subject.family": f"Fam{uid}"}) == [w["obs"]["id"]]
    assert search_ids(fhir, "Observation", {"encounter.service-provider.name": f"Orgname{uid}"}) == [w["obs"]["id"]]


def test_has_reverse_chain(fhir, uid, chain_world):
    w = chain_world
    got = search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}", "_has:Observation:patient:code": f"{LOINC}|4548-4"})
    assert got == [w["other"]["id"]]
    got = search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}", "_has:Observation:subject:code": f"{LOINC}|2339-0"})
    assert got == [w["p"]["id"]]
    got = search_ids(fhir, "Organization", {"_has:Patient:organization:given": f"Giv{uid}"})
    assert got == [w["org"]["id"]]


def test_has_nested(fhir, uid, chain_world):
    w = chain_world
    got = search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}",
                                       "_has:Encounter:subject:_has:Observation:encounter:code": f"{LOINC}|2339-0"})
    assert got == [w["p"]["id"]]


# ---------------------------------------------------------------- common parameters


def test_id_parameter_with_list(fhir, uid):
    a = create(fhir, patient(uid))
    b = create(fhir, patient(uid))
    create(fhir, patient(uid))
    assert sorted(search_ids(fhir, "Patient", {"_id": f"{a['id']},{b['id']}"})) == sorted([a["id"], b["id"]])
    assert search_ids(fhir, "Patient", {"_id": f"nope-{uid}"}) == []


def test_last_updated(fhir, uid):
    a = create(fhir, patient(uid))
    b = create(fhir, patient(uid))
    fam = {"family": f"Fam{uid}"}
    assert search_ids(fhir, "Patient", {**fam, "_lastUpdated": f"gt{a['meta']['lastUpdated']}"}) == [b["id"]]
    assert search_ids(fhir, "Patient", {**fam, "_lastUpdated": f"lt{b['meta']['lastUpdated']}"}) == [a["id"]]
    assert sorted(search_ids(fhir, "Patient", {**fam, "_lastUpdated": f"ge{a['meta']['lastUpdated']}"})) == sorted(
        [a["id"], b["id"]])


def test_tag_profile_security(fhir, uid):
    prof = f"http://example.org/fhir/StructureDefinition/{uid}"
    tagged = create(fhir, patient(uid, meta={
        "tag": [{"system": TAGSYS, "code": f"t{uid}"}],
        "profile": [prof],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
    }))
    plain = create(fhir, patient(uid))
    fam = {"family": f"Fam{uid}"}
    assert search_ids(fhir, "Patient", {"_tag": f"{TAGSYS}|t{uid}"}) == [tagged["id"]]
    assert search_ids(fhir, "Patient", {"_profile": prof}) == [tagged["id"]]
    assert search_ids(fhir, "Patient", {**fam, "_security": "R"}) == [tagged["id"]]
    assert search_ids(fhir, "Patient", {**fam, "_tag:not": f"{TAGSYS}|t{uid}"}) == [plain["id"]]


def test_system_level_search_with_type(fhir, uid):
    tag = {"tag": [{"system": TAGSYS, "code": f"t{uid}"}]}
    p = create(fhir, patient(uid, meta=tag))
    o = create(fhir, observation(uid, f"Patient/{p['id']}", meta=tag))
    create(fhir, organization(uid) | {"meta": tag})
    b = search(fhir, "", {"_type": "Patient,Observation", "_tag": f"{TAGSYS}|t{uid}"})
    got = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b["entry"])
    assert got == sorted([f"Patient/{p['id']}", f"Observation/{o['id']}"])


def test_post_search_form_encoded(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.post("Patient/_search", data=f"family=Fam{uid}&gender=female",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "searchset"
    assert [e["resource"]["id"] for e in b["entry"]] == [p["id"]]


# ---------------------------------------------------------------- errors and handling


def test_unknown_parameter_is_400_under_strict_handling(fhir, uid):
    r = fhir.get("Patient", params={"family": f"Fam{uid}", "nosuchparam": "x"})
    body = assert_oo(r, 400)
    assert "nosuchparam" in str(body)


def test_unknown_parameter_ignored_when_lenient_and_left_out_of_self_link(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.get("Patient", params={"family": f"Fam{uid}", "nosuchparam": "x"}, headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert [e["resource"]["id"] for e in b["entry"]] == [p["id"]]
    names = [k for k, _ in link_params(link(b, "self") or "")]
    assert "nosuchparam" not in names
    assert "family" in names


def test_unknown_modifier_is_400(fhir, uid):
    assert_oo(fhir.get("Patient", params={"family:sideways": f"Fam{uid}"}), 400)


@pytest.mark.parametrize("param, value", [
    ("birthdate", "notadate"),
    ("birthdate", "1980-13-45"),
    ("birthdate", "xx1980"),
    ("value-quantity", "abc"),
    ("probability", "many"),
    ("_count", "-1"),
])
def test_bad_values_are_400(fhir, param, value):
    rtype = {"value-quantity": "Observation", "probability": "RiskAssessment"}.get(param, "Patient")
    assert_oo(fhir.get(rtype, params={param: value}), 400)


def test_chain_on_a_non_reference_parameter_is_400(fhir, uid):
    assert_oo(fhir.get("Patient", params={"family.name": f"Fam{uid}"}), 400)
