"""read, vread, create, update, patch, delete (R4 http.html 3.1.0.2 - 3.1.0.7)."""

from __future__ import annotations

import base64
from email.utils import parsedate_to_datetime

import orjson

from .support import ETAG1, IDSYS, assert_oo, count, create, location_id, observation, patient


def test_create_answers_201_with_location_etag_last_modified(fhir, uid):
    r = fhir.post("Patient", json=patient(uid))
    assert r.status_code == 201, r.text
    rid, vid = location_id(r.headers["Location"], "Patient")
    assert vid == "1"
    assert r.headers["ETag"] == ETAG1
    assert parsedate_to_datetime(r.headers["Last-Modified"]).year >= 2024
    body = r.json()
    assert body["id"] == rid
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"]
    assert body["name"][0]["family"] == f"Fam{uid}"


def test_create_ignores_client_id_and_meta_version(fhir, uid):
    # http.html#create: "If an id is provided, the server SHALL ignore it"; the server sets meta.versionId.
    res = patient(uid, id=f"client-{uid}", meta={"versionId": "7"})
    body = create(fhir, res)
    assert body["id"] != f"client-{uid}"
    assert body["meta"]["versionId"] == "1"
    assert fhir.get(f"Patient/client-{uid}").status_code == 404


def test_read_returns_stored_resource_with_headers(fhir, uid):
    p = create(fhir, patient(uid, gender="male", birthDate="1975-02-03"))
    r = fhir.get(f"Patient/{p['id']}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/fhir+json")
    assert r.headers["ETag"] == ETAG1
    assert parsedate_to_datetime(r.headers["Last-Modified"])
    body = r.json()
    assert body["id"] == p["id"]
    assert body["gender"] == "male" and body["birthDate"] == "1975-02-03"
    assert body["identifier"] == [{"system": IDSYS, "value": uid}]
    assert body["meta"]["lastUpdated"] == p["meta"]["lastUpdated"]


def test_read_unknown_id_is_404_operation_outcome(fhir, uid):
    r = fhir.get(f"Patient/nope-{uid}")
    assert_oo(r, 404)


def test_head_read_has_headers_no_body(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.head(f"Patient/{p['id']}")
    assert r.status_code == 200
    assert r.headers["ETag"] == ETAG1
    assert r.content == b""


def test_update_creates_new_version(fhir, uid):
    p = create(fhir, patient(uid))
    p["gender"] = "other"
    r = fhir.put(f"Patient/{p['id']}", json=p)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    body = r.json()
    assert body["meta"]["versionId"] == "2"
    assert body["gender"] == "other"
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "other"


def test_update_as_create_with_client_id_is_201(fhir, uid):
    rid = f"pt-{uid}"
    r = fhir.put(f"Patient/{rid}", json=patient(uid, id=rid))
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == ETAG1
    assert r.json()["id"] == rid
    got = fhir.get(f"Patient/{rid}")
    assert got.status_code == 200 and got.json()["meta"]["versionId"] == "1"


def test_vread_each_version_and_unknown_version(fhir, uid):
    p = create(fhir, patient(uid, gender="female"))
    p["gender"] = "male"
    assert fhir.put(f"Patient/{p['id']}", json=p).status_code == 200
    v1 = fhir.get(f"Patient/{p['id']}/_history/1")
    v2 = fhir.get(f"Patient/{p['id']}/_history/2")
    assert v1.status_code == 200 and v2.status_code == 200
    assert v1.json()["gender"] == "female" and v1.json()["meta"]["versionId"] == "1"
    assert v2.json()["gender"] == "male" and v2.json()["meta"]["versionId"] == "2"
    assert v1.headers["ETag"] == ETAG1
    assert_oo(fhir.get(f"Patient/{p['id']}/_history/3"), 404)


def test_update_needs_matching_body_id(fhir, uid):
    p = create(fhir, patient(uid))
    other = dict(p, id=f"other-{uid}")
    assert_oo(fhir.put(f"Patient/{p['id']}", json=other), 400)
    no_id = {k: v for k, v in p.items() if k != "id"}
    assert_oo(fhir.put(f"Patient/{p['id']}", json=no_id), 400)
    assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_update_with_other_resource_type_in_body_is_400(fhir, uid):
    p = create(fhir, patient(uid))
    obs = observation(uid, f"Patient/{p['id']}", id=p["id"])
    assert_oo(fhir.put(f"Patient/{p['id']}", json=obs), 400)
    assert fhir.get(f"Observation/{p['id']}").status_code == 404


def test_invalid_id_on_update_as_create_is_400(fhir, uid):
    rid = "x" * 65  # ids are at most 64 characters
    assert_oo(fhir.put(f"Patient/{rid}", json=patient(uid, id=rid)), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_delete_then_read_is_410_and_search_hides_it(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.delete(f"Patient/{p['id']}")
    assert r.status_code in (200, 204), r.text
    assert_oo(fhir.get(f"Patient/{p['id']}"), 410)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0
    # the version before the deletion stays readable
    assert fhir.get(f"Patient/{p['id']}/_history/1").status_code == 200


def test_delete_again_and_delete_unknown_succeed(fhir, uid):
    p = create(fhir, patient(uid))
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    assert fhir.delete(f"Patient/never-{uid}").status_code in (200, 204)
    assert fhir.get(f"Patient/never-{uid}").status_code == 404


def test_update_after_delete_recreates_with_next_version(fhir, uid):
    p = create(fhir, patient(uid))
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    r = fhir.put(f"Patient/{p['id']}", json=p)
    assert r.status_code in (200, 201), r.text
    assert r.json()["meta"]["versionId"] == "3"
    assert r.headers["ETag"] == 'W/"3"'
    assert fhir.get(f"Patient/{p['id']}").status_code == 200


def test_if_match_on_update(fhir, uid):
    p = create(fhir, patient(uid))
    p["gender"] = "male"
    bad = fhir.put(f"Patient/{p['id']}", json=p, headers={"If-Match": 'W/"5"'})
    assert_oo(bad, 412)
    assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"
    ok = fhir.put(f"Patient/{p['id']}", json=p, headers={"If-Match": ETAG1})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == 'W/"2"'
    stale = fhir.put(f"Patient/{p['id']}", json=p, headers={"If-Match": ETAG1})
    assert_oo(stale, 412)


JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def test_json_patch(fhir, uid):
    p = create(fhir, patient(uid, gender="female"))
    ops = [{"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/name/0/given/-", "value": "Beth"}]
    r = fhir.patch(f"Patient/{p['id']}", data=orjson.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["gender"] == "male"
    assert got["name"][0]["given"] == ["Ann", "Beth"]
    assert got["meta"]["versionId"] == "2"


def test_json_patch_with_if_match_mismatch_is_412(fhir, uid):
    p = create(fhir, patient(uid))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    r = fhir.patch(f"Patient/{p['id']}", data=orjson.dumps(ops), headers={**JSON_PATCH, "If-Match": 'W/"9"'})
    assert_oo(r, 412)
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "female"


def test_json_patch_making_resource_invalid_is_422(fhir, uid):
    p = create(fhir, patient(uid))
    ops = [{"op": "replace", "path": "/gender", "value": "bogus"}]
    r = fhir.patch(f"Patient/{p['id']}", data=orjson.dumps(ops), headers=JSON_PATCH)
    assert_oo(r, 422)
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["gender"] == "female" and got["meta"]["versionId"] == "1"


def test_json_patch_failing_test_op_changes_nothing(fhir, uid):
    p = create(fhir, patient(uid))
    ops = [{"op": "test", "path": "/gender", "value": "male"},
           {"op": "replace", "path": "/birthDate", "value": "2001-01-01"}]
    r = fhir.patch(f"Patient/{p['id']}", data=orjson.dumps(ops), headers=JSON_PATCH)
    assert_oo(r, 409, 422)
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["birthDate"] == "1980-05-17" and got["meta"]["versionId"] == "1"


def test_json_patch_document_not_an_array_is_400(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.patch(f"Patient/{p['id']}", data=b'{"op": "replace"}', headers=JSON_PATCH)
    assert_oo(r, 400)


def test_patch_of_unknown_resource_is_404(fhir, uid):
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    assert_oo(fhir.patch(f"Patient/none-{uid}", data=orjson.dumps(ops), headers=JSON_PATCH), 404)


def test_fhirpath_patch_parameters(fhir, uid):
    p = create(fhir, patient(uid))
    params = {"resourceType": "Parameters", "parameter": [{
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.birthDate"},
            {"name": "value", "valueDate": "1999-09-09"},
        ],
    }]}
    r = fhir.patch(f"Patient/{p['id']}", json=params)
    assert r.status_code == 200, r.text
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["birthDate"] == "1999-09-09" and got["meta"]["versionId"] == "2"


def test_create_binary_keeps_data(fhir, uid):
    data = base64.b64encode(f"hello {uid}".encode()).decode()
    b = create(fhir, {"resourceType": "Binary", "contentType": "text/plain", "data": data})
    got = fhir.get(f"Binary/{b['id']}")
    assert got.status_code == 200
    assert got.json()["data"] == data
