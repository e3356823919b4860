"""Content negotiation, Prefer, and the CapabilityStatement (R4 http.html 3.1.0.1.9 - 3.1.0.1.10, 3.1.0.10)."""

from __future__ import annotations

import orjson
import pytest

from .support import IDSYS, assert_oo, count, create, patient


def test_metadata_is_a_capability_statement(fhir):
    r = fhir.get("metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert cs["status"] in ("active", "draft")
    assert any("json" in f for f in cs["format"])
    rest = cs["rest"][0]
    assert rest["mode"] == "server"
    types = {res["type"]: res for res in rest["resource"]}
    assert {"Patient", "Observation", "Encounter", "Condition", "Organization", "Practitioner"} <= set(types)
    pat = types["Patient"]
    codes = {i["code"] for i in pat["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
            "search-type"} <= codes
    sp = {s["name"]: s["type"] for s in pat["searchParam"]}
    assert sp["birthdate"] == "date" and sp["family"] == "string" and sp["identifier"] == "token"
    osp = {s["name"]: s["type"] for s in types["Observation"]["searchParam"]}
    assert osp["value-quantity"] == "quantity" and osp["subject"] == "reference"
    assert osp["code-value-quantity"] == "composite"
    sys_codes = {i["code"] for i in rest.get("interaction", [])}
    assert {"transaction", "batch", "history-system"} <= sys_codes


def test_metadata_advertises_conditional_and_update_create(fhir):
    cs = fhir.get("metadata").json()
    pat = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert pat.get("updateCreate") is True
    assert pat.get("conditionalCreate") is True
    assert pat.get("conditionalUpdate") is True
    assert pat.get("conditionalDelete") in ("single", "multiple")


@pytest.mark.parametrize("accept", ["application/fhir+json", "application/json", "*/*",
                                    "application/xml;q=0.5, application/fhir+json",
                                    "application/fhir+json; fhirVersion=4.0"])
def test_json_accept_headers_are_served(fhir, uid, accept):
    p = create(fhir, patient(uid))
    r = fhir.get(f"Patient/{p['id']}", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] in ("application/fhir+json", "application/json")
    assert r.json()["id"] == p["id"]


def test_accept_fhir_json_answers_fhir_json(fhir, uid):
    r = fhir.get("metadata", headers={"Accept": "application/fhir+json"})
    assert r.headers["Content-Type"].split(";")[0] == "application/fhir+json"


@pytest.mark.parametrize("accept", ["application/xml", "application/fhir+xml", "text/html"])
def test_non_json_accept_is_406(fhir, uid, accept):
    p = create(fhir, patient(uid))
    r = fhir.get(f"Patient/{p['id']}", headers={"Accept": accept})
    assert r.status_code == 406, r.text


def test_format_parameter(fhir, uid):
    p = create(fhir, patient(uid))
    for fmt in ("json", "application/fhir+json"):
        r = fhir.get(f"Patient/{p['id']}", params={"_format": fmt}, headers={"Accept": "application/xml"})
        assert r.status_code == 200, (fmt, r.text)
        assert r.json()["id"] == p["id"]
    assert fhir.get(f"Patient/{p['id']}", params={"_format": "xml"}).status_code in (406, 415)


def test_format_in_search_is_not_an_unknown_parameter(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.get("Patient", params={"family": f"Fam{uid}", "_format": "json", "_pretty": "true"})
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [p["id"]]


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/fhir+xml"])
def test_unsupported_content_type_is_415(fhir, uid, ctype):
    r = fhir.post("Patient", data=orjson.dumps(patient(uid)), headers={"Content-Type": ctype})
    assert_oo(r, 415)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


@pytest.mark.parametrize("ctype", ["application/json", "application/fhir+json; charset=utf-8",
                                   "application/fhir+json; fhirVersion=4.0"])
def test_json_content_types_are_accepted(fhir, uid, ctype):
    r = fhir.post("Patient", data=orjson.dumps(patient(uid)), headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text


def test_prefer_return_minimal(fhir, uid):
    r = fhir.post("Patient", json=patient(uid), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content.strip() == b""
    assert r.headers["Location"] and r.headers["ETag"] == 'W/"1"'


def test_prefer_return_representation(fhir, uid):
    r = fhir.post("Patient", json=patient(uid), headers={"Prefer": "return=representation"})
    assert r.status_code == 201
    assert r.json()["identifier"][0]["value"] == uid


def test_prefer_return_operation_outcome(fhir, uid):
    r = fhir.post("Patient", json=patient(uid), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1


def test_prefer_on_update(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.put(f"Patient/{p['id']}", json=p, headers={"Prefer": "return=minimal"})
    assert r.status_code == 200
    assert r.content.strip() == b""
    assert r.headers["ETag"] == 'W/"2"'


def test_search_post_needs_form_encoding(fhir, uid):
    r = fhir.post("Patient/_search", data=b"family=x", headers={"Content-Type": "text/plain"})
    assert_oo(r, 400, 415)
