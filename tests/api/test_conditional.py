"""Conditional create/update/delete/patch and conditional read (R4 http.html 3.1.0.4.3, 3.1.0.5.3, 3.1.0.7.1,
3.1.0.8.1; concurrency 3.1.0.5.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson

from .support import ETAG1, IDSYS, assert_oo, count, create, location_id, patient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def ident(uid: str) -> str:
    return f"identifier={IDSYS}|{uid}"


def test_conditional_create_no_match_creates(fhir, uid):
    r = fhir.post("Patient", json=patient(uid), headers={"If-None-Exist": ident(uid)})
    assert r.status_code == 201, r.text
    location_id(r.headers["Location"], "Patient")
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1


def test_conditional_create_one_match_returns_existing(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.post("Patient", json=patient(uid, gender="male"), headers={"If-None-Exist": ident(uid)})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == p["id"]
    assert r.json()["gender"] == "female"  # nothing was written
    assert location_id(r.headers["Location"], "Patient")[0] == p["id"]
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1
    assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_conditional_create_several_matches_is_412(fhir, uid):
    create(fhir, patient(uid))
    create(fhir, patient(uid))
    r = fhir.post("Patient", json=patient(uid), headers={"If-None-Exist": ident(uid)})
    assert_oo(r, 412)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 2


def test_conditional_create_with_two_criteria(fhir, uid):
    create(fhir, patient(uid, gender="male"))
    # identifier matches but gender does not: no match, so create
    r = fhir.post("Patient", json=patient(uid), headers={"If-None-Exist": f"{ident(uid)}&gender=female"})
    assert r.status_code == 201, r.text
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 2


def test_conditional_create_with_unknown_parameter_is_400(fhir, uid):
    r = fhir.post("Patient", json=patient(uid), headers={"If-None-Exist": f"nosuchparam={uid}"})
    assert_oo(r, 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_conditional_update_no_match_creates(fhir, uid):
    r = fhir.put(f"Patient?{ident(uid)}", json=patient(uid))
    assert r.status_code == 201, r.text
    rid, vid = location_id(r.headers["Location"], "Patient")
    assert vid == "1"
    assert fhir.get(f"Patient/{rid}").json()["identifier"][0]["value"] == uid


def test_conditional_update_one_match_updates_it(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.put(f"Patient?{ident(uid)}", json=patient(uid, gender="male"))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == p["id"]
    assert r.headers["ETag"] == 'W/"2"'
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "male"
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1


def test_conditional_update_body_id_differing_from_match_is_400(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.put(f"Patient?{ident(uid)}", json=patient(uid, id=f"other-{uid}", gender="male"))
    assert_oo(r, 400)
    assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"
    assert fhir.get(f"Patient/other-{uid}").status_code == 404


def test_conditional_update_several_matches_is_412(fhir, uid):
    a = create(fhir, patient(uid))
    b = create(fhir, patient(uid))
    r = fhir.put(f"Patient?{ident(uid)}", json=patient(uid, gender="male"))
    assert_oo(r, 412)
    for p in (a, b):
        assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_conditional_delete_one_match(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.delete(f"Patient?{ident(uid)}")
    assert r.status_code in (200, 204), r.text
    assert_oo(fhir.get(f"Patient/{p['id']}"), 410)


def test_conditional_delete_no_match_succeeds(fhir, uid):
    r = fhir.delete(f"Patient?{ident(uid)}")
    assert r.status_code in (200, 204), r.text


def test_conditional_delete_several_matches_deletes_all_or_412(fhir, uid):
    a = create(fhir, patient(uid))
    b = create(fhir, patient(uid))
    r = fhir.delete(f"Patient?{ident(uid)}")
    if r.status_code == 412:
        assert_oo(r, 412)
        assert fhir.get(f"Patient/{a['id']}").status_code == 200
        assert fhir.get(f"Patient/{b['id']}").status_code == 200
    else:
        assert r.status_code in (200, 204), r.text
        assert fhir.get(f"Patient/{a['id']}").status_code == 410
        assert fhir.get(f"Patient/{b['id']}").status_code == 410


def test_conditional_patch(fhir, uid):
    p = create(fhir, patient(uid))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    r = fhir.patch(f"Patient?{ident(uid)}", data=orjson.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "male"


def test_conditional_patch_several_matches_is_412(fhir, uid):
    create(fhir, patient(uid))
    create(fhir, patient(uid))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    r = fhir.patch(f"Patient?{ident(uid)}", data=orjson.dumps(ops), headers=JSON_PATCH)
    assert_oo(r, 412)


def test_if_none_match_gives_304_on_current_version(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.get(f"Patient/{p['id']}", headers={"If-None-Match": ETAG1})
    assert r.status_code == 304, r.text
    assert r.content == b""
    r = fhir.get(f"Patient/{p['id']}", headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 200 and r.json()["id"] == p["id"]


def test_if_none_match_after_update_returns_new_version(fhir, uid):
    p = create(fhir, patient(uid))
    assert fhir.put(f"Patient/{p['id']}", json=p).status_code == 200
    r = fhir.get(f"Patient/{p['id']}", headers={"If-None-Match": ETAG1})
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"2"'


def test_if_modified_since(fhir, uid):
    p = create(fhir, patient(uid))
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=2), usegmt=True)
    r = fhir.get(f"Patient/{p['id']}", headers={"If-Modified-Since": later})
    assert r.status_code == 304, r.text
    r = fhir.get(f"Patient/{p['id']}", headers={"If-Modified-Since": earlier})
    assert r.status_code == 200 and r.json()["id"] == p["id"]
