"""Token :in / :not-in against ValueSets: stored ones (expansion, concept lists, whole stored
CodeSystems) and the R4 value sets the server ships; unknown ones are refused."""

from __future__ import annotations

from .support import LOINC, assert_oo, create, observation, patient, search_ids


def _setup(fhir, uid):
    p = create(fhir, patient(uid))
    obs = {code: create(fhir, observation(uid, f"Patient/{p['id']}", code=code, ident=f"{uid}-{code}"))["id"]
           for code in ("2339-0", "4548-4", "2093-3")}
    return p, obs


def test_in_and_not_in_with_a_stored_value_set(fhir, uid):
    p, obs = _setup(fhir, uid)
    url = f"http://example.org/fhir/ValueSet/glycemia-{uid}"
    create(fhir, {"resourceType": "ValueSet", "url": url, "status": "active",
                  "compose": {"include": [{"system": LOINC, "concept": [{"code": "2339-0"}, {"code": "4548-4"}]}]}})
    base = {"subject": f"Patient/{p['id']}"}
    assert sorted(search_ids(fhir, "Observation", {**base, "code:in": url})) == sorted([obs["2339-0"], obs["4548-4"]])
    assert search_ids(fhir, "Observation", {**base, "code:not-in": url}) == [obs["2093-3"]]


def test_in_with_a_value_set_over_a_whole_stored_code_system(fhir, uid):
    system = f"http://example.org/fhir/CodeSystem/local-{uid}"
    create(fhir, {"resourceType": "CodeSystem", "url": system, "status": "active", "content": "complete",
                  "concept": [{"code": "a", "concept": [{"code": "a1"}]}, {"code": "b"}]})
    url = f"http://example.org/fhir/ValueSet/local-{uid}"
    create(fhir, {"resourceType": "ValueSet", "url": url, "status": "active",
                  "compose": {"include": [{"system": system}], "exclude": [{"system": system, "concept": [{"code": "b"}]}]}})
    p = create(fhir, patient(uid))
    made = {}
    for code in ("a1", "b"):
        o = observation(uid, f"Patient/{p['id']}", ident=f"{uid}-{code}")
        o["code"] = {"coding": [{"system": system, "code": code}]}
        made[code] = create(fhir, o)["id"]
    assert search_ids(fhir, "Observation", {"subject": f"Patient/{p['id']}", "code:in": url}) == [made["a1"]]


def test_in_with_a_shipped_r4_value_set(fhir, uid):
    a = create(fhir, patient(uid, gender="female"))
    create(fhir, patient(uid, gender="unknown"))
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "gender:in": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert len(got) == 2
    assert search_ids(fhir, "Patient", {"family": f"Fam{uid}", "gender": "http://hl7.org/fhir/administrative-gender|female"}) == [a["id"]]


def test_unknown_value_set_and_hierarchy_modifiers_are_refused(fhir, uid):
    r = fhir.get("Observation", params={"code:in": f"http://example.org/fhir/ValueSet/none-{uid}"})
    issue = assert_oo(r, 400)["issue"][0]
    assert "is not known" in issue["diagnostics"] and issue["expression"] == ["code:in"]
    r = fhir.get("Observation", params={"code:below": f"{LOINC}|2339-0"})
    assert assert_oo(r, 400)["issue"][0]["code"] == "not-supported"
