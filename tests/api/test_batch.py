"""Batches (R4 http.html 3.1.0.11): each entry on its own, HTTP 200 with a batch-response in request order."""

from __future__ import annotations

import uuid

from .support import (
    IDSYS,
    count,
    create,
    delete_entry,
    get_entry,
    location_id,
    observation,
    patient,
    post_bundle,
    post_entry,
    put_entry,
    status_of,
)


def run_batch(fhir, entries, **kw):
    return post_bundle(fhir, entries, "batch", **kw)


def test_batch_entries_fail_independently(fhir, uid):
    entries = [
        post_entry(patient(uid, ident=f"a-{uid}")),
        post_entry(patient(uid, ident=f"b-{uid}", gender="bogus")),
        post_entry(patient(uid, ident=f"c-{uid}")),
    ]
    b = run_batch(fhir, entries)
    st = [status_of(e) for e in b["entry"]]
    assert st[0] == 201 and st[2] == 201
    assert 400 <= st[1] < 500
    outcome = b["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] in ("error", "fatal")
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|a-{uid}"}) == 1
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|b-{uid}"}) == 0
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|c-{uid}"}) == 1
    for i in (0, 2):
        location_id(b["entry"][i]["response"]["location"], "Patient")
        assert b["entry"][i]["response"]["etag"] == 'W/"1"'


def test_batch_reads_and_missing_resources(fhir, uid):
    p = create(fhir, patient(uid))
    b = run_batch(fhir, [get_entry(f"Patient/{p['id']}"), get_entry(f"Patient/nope-{uid}"),
                         get_entry(f"Patient?identifier={IDSYS}|{uid}")])
    assert [status_of(e) for e in b["entry"]] == [200, 404, 200]
    assert b["entry"][0]["resource"]["id"] == p["id"]
    assert b["entry"][2]["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in b["entry"][2]["resource"]["entry"]] == [p["id"]]


def test_batch_responses_are_in_request_order(fhir, uid):
    p = create(fhir, patient(uid))
    q = create(fhir, patient(uid))
    p["gender"] = "male"
    entries = [get_entry(f"Patient/{q['id']}"), put_entry(p, f"Patient/{p['id']}"),
               post_entry(observation(uid, f"Patient/{p['id']}")), delete_entry(f"Patient/gone-{uid}")]
    b = run_batch(fhir, entries)
    st = [status_of(e) for e in b["entry"]]
    assert st[0] == 200 and st[1] == 200 and st[2] == 201 and st[3] in (200, 204)
    assert b["entry"][0]["resource"]["id"] == q["id"]
    assert location_id(b["entry"][1]["response"]["location"], "Patient") == (p["id"], "2")
    location_id(b["entry"][2]["response"]["location"], "Observation")


def test_batch_if_match_fails_only_that_entry(fhir, uid):
    p = create(fhir, patient(uid))
    p["gender"] = "male"
    entries = [put_entry(p, f"Patient/{p['id']}", ifMatch='W/"7"'), post_entry(patient(uid, ident=f"ok-{uid}"))]
    b = run_batch(fhir, entries)
    assert [status_of(e) for e in b["entry"]] == [412, 201]
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "female"


def test_batch_if_none_exist(fhir, uid):
    p = create(fhir, patient(uid))
    b = run_batch(fhir, [post_entry(patient(uid), ifNoneExist=f"identifier={IDSYS}|{uid}")])
    assert status_of(b["entry"][0]) == 200
    assert location_id(b["entry"][0]["response"]["location"], "Patient")[0] == p["id"]
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1


def test_batch_delete_entry(fhir, uid):
    p = create(fhir, patient(uid))
    b = run_batch(fhir, [delete_entry(f"Patient/{p['id']}")])
    assert status_of(b["entry"][0]) in (200, 204)
    assert fhir.get(f"Patient/{p['id']}").status_code == 410


def test_batch_malformed_entry_fails_alone(fhir, uid):
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient(uid, ident=f"x-{uid}")},
               {"resource": patient(uid, ident=f"y-{uid}"), "request": {"method": "POST", "url": "Foo"}},
               post_entry(patient(uid, ident=f"z-{uid}"))]
    b = run_batch(fhir, entries)
    st = [status_of(e) for e in b["entry"]]
    assert st[0] == 400 and st[1] in (400, 404) and st[2] == 201
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|z-{uid}"}) == 1


def test_batch_get_does_not_see_later_entries_dependency_free(fhir, uid):
    # entries of a batch are independent: a failing update does not undo a create
    entries = [post_entry(patient(uid, ident=f"keep-{uid}")),
               put_entry(patient(uid, id=f"mismatch-{uid}"), f"Patient/other-{uid}")]
    b = run_batch(fhir, entries)
    assert status_of(b["entry"][0]) == 201 and status_of(b["entry"][1]) == 400
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|keep-{uid}"}) == 1
