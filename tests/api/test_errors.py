"""Errors: every failure is an OperationOutcome with the right 4xx status and an expression naming the
element; nothing is written; never a 500 or a stack trace."""

from __future__ import annotations

import orjson
import pytest

from .support import IDSYS, assert_oo, count, create, expressions, observation, patient

CT = {"Content-Type": "application/fhir+json"}


def nothing_written(fhir, uid):
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0
    assert count(fhir, "Patient", {"family": f"Fam{uid}"}) == 0


def test_malformed_json_is_400(fhir, uid):
    r = fhir.post("Patient", data=b'{"resourceType": "Patient", "name": [', headers=CT)
    assert_oo(r, 400)


def test_empty_body_is_400(fhir):
    assert_oo(fhir.post("Patient", data=b"", headers=CT), 400)


def test_json_array_body_is_400(fhir):
    assert_oo(fhir.post("Patient", data=b"[1, 2]", headers=CT), 400)


def test_deeply_nested_json_is_refused_cleanly(fhir, uid):
    deep = b'{"resourceType": "Patient", "extension": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = fhir.post("Patient", data=deep, headers=CT)
    assert_oo(r, 400, 413, 422)
    # 300 levels of nested extensions (valid FHIR shape, absurd depth); built as text, as JSON encoders
    # refuse such depth
    inner = b'{"url": "http://example.org/x", "valueString": "leaf"}'
    for _ in range(300):
        inner = b'{"url": "http://example.org/x", "extension": [' + inner + b"]}"
    body = orjson.dumps(patient(uid))[:-1] + b', "extension": [' + inner + b"]}"
    r = fhir.post("Patient", data=body, headers=CT)
    assert_oo(r, 400, 413, 422)
    nothing_written(fhir, uid)


@pytest.mark.parametrize("change, where", [
    ({"foo": 1}, "foo"),
    ({"active": "yes"}, "active"),
    ({"gender": "bogus"}, "gender"),
    ({"birthDate": "1980-13-45"}, "birthDate"),
    ({"birthDate": "17/05/1980"}, "birthDate"),
    ({"name": [{"family": ["Smith"]}]}, "name"),
    ({"name": {"family": "Smith"}}, "name"),
    ({"gender": None}, "gender"),
    ({"managingOrganization": {"reference": 42}}, "managingOrganization"),
    ({"deceasedBoolean": True, "deceasedDateTime": "2020-01-01"}, "deceased"),
])
def test_invalid_patient_is_400_with_expression(fhir, uid, change, where):
    res = patient(uid)
    res.update(change)
    r = fhir.post("Patient", data=orjson.dumps(res), headers=CT)
    assert_oo(r, 400, 422)
    exprs = expressions(r)
    assert any(where in x for x in exprs), f"expression should name {where}: {exprs}"
    nothing_written(fhir, uid)


def test_empty_string_value_is_invalid(fhir, uid):
    # json.html: empty strings are not valid values
    r = fhir.post("Patient", json=patient(uid, birthDate=None, gender=""))
    assert_oo(r, 400, 422)
    nothing_written(fhir, uid)


def test_invalid_observation_status_is_400(fhir, uid):
    r = fhir.post("Observation", json=observation(uid, None, status="bogus"))
    assert_oo(r, 400, 422)
    assert any("status" in x for x in expressions(r)), expressions(r)
    assert count(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == 0


def test_missing_required_element_is_refused(fhir, uid):
    o = observation(uid, None)
    del o["status"]
    r = fhir.post("Observation", json=o)
    assert_oo(r, 400, 422)
    assert any("status" in x for x in expressions(r)), expressions(r)
    assert count(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == 0


def test_bad_quantity_value_type(fhir, uid):
    o = observation(uid, None, value={"value": "ninety", "unit": "mg/dL"})
    r = fhir.post("Observation", json=o)
    assert_oo(r, 400, 422)
    assert any("value" in x for x in expressions(r)), expressions(r)


def test_unknown_resource_type_is_404(fhir, uid):
    assert_oo(fhir.get("Foo"), 404)
    assert_oo(fhir.get("Foo/1"), 404)
    assert_oo(fhir.post("Foo", json={"resourceType": "Foo"}), 404)


def test_body_type_differing_from_url_is_400(fhir, uid):
    r = fhir.post("Observation", json=patient(uid))
    assert_oo(r, 400)
    nothing_written(fhir, uid)


def test_missing_resource_type_is_400(fhir, uid):
    res = patient(uid)
    del res["resourceType"]
    assert_oo(fhir.post("Patient", json=res), 400)
    nothing_written(fhir, uid)


def test_update_with_invalid_body_changes_nothing(fhir, uid):
    p = create(fhir, patient(uid))
    bad = dict(p, gender="bogus")
    assert_oo(fhir.put(f"Patient/{p['id']}", json=bad), 400, 422)
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["gender"] == "female" and got["meta"]["versionId"] == "1"


def test_unsupported_methods_are_405(fhir, uid):
    p = create(fhir, patient(uid))
    assert_oo(fhir.post(f"Patient/{p['id']}", json=p), 405)
    assert_oo(fhir.delete("metadata"), 404, 405)
    assert_oo(fhir.put("Patient", json=patient(uid)), 400, 405)


def test_vread_of_non_numeric_version_is_404(fhir, uid):
    p = create(fhir, patient(uid))
    assert_oo(fhir.get(f"Patient/{p['id']}/_history/abc"), 400, 404)


def test_unknown_route_is_404_operation_outcome(fhir):
    assert_oo(fhir.get("Patient/1/2/3/4/5"), 400, 404)


def test_error_bodies_have_fhir_content_type(fhir, uid):
    r = fhir.get(f"Patient/none-{uid}")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_huge_id_in_read_is_clean(fhir):
    r = fhir.get("Patient/" + "9" * 1000)
    assert_oo(r, 400, 404)


def test_bundle_posted_to_type_endpoint_is_not_a_transaction(fhir, uid):
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": patient(uid), "request": {"method": "POST", "url": "Patient"}}]}
    r = fhir.post("Patient", json=bundle)
    assert_oo(r, 400)
    nothing_written(fhir, uid)
