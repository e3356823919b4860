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


def test_batch_if_none_exist_criteria_matched_together_answer_each_entry(fhir, uid):
    # Many conditional creates are matched against the store in one go; each entry still gets
    # its own answer: a match, a create, two matches, criteria that do not parse.
    kept = [create(fhir, patient(uid, ident=f"{uid}-kept-{i}")) for i in range(3)]
    for _ in range(2):
        create(fhir, patient(uid, ident=f"{uid}-twice"))
    entries = [post_entry(patient(uid, ident=f"{uid}-kept-{i}"), ifNoneExist=f"identifier={IDSYS}|{uid}-kept-{i}")
               for i in range(3)]
    entries += [post_entry(patient(uid, ident=f"{uid}-new-{i}"), ifNoneExist=f"identifier={IDSYS}|{uid}-new-{i}")
                for i in range(3)]
    entries.append(post_entry(patient(uid, ident=f"{uid}-twice"), ifNoneExist=f"identifier={IDSYS}|{uid}-twice"))
    entries.append(post_entry(patient(uid, ident=f"{uid}-odd"), ifNoneExist="notAParam=1"))
    entries.append(post_entry(patient(uid, ident=f"{uid}-odd2"), ifNoneExist="birthdate=notadate"))
    b = run_batch(fhir, entries)
    got = [status_of(e) for e in b["entry"]]
    assert got == [200, 200, 200, 201, 201, 201, 412, 400, 400], got
    assert [location_id(e["response"]["location"], "Patient")[0] for e in b["entry"][:3]] == [k["id"] for k in kept]
    assert "notAParam" in str(b["entry"][7]["response"]["outcome"])
    for i in range(3):
        assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}-new-{i}"}) == 1
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}-odd"}) == 0


def test_batch_if_none_exist_sees_what_earlier_entries_changed(fhir, uid):
    # Criteria matched up front must not answer for a store that earlier entries changed.
    gone = create(fhir, patient(uid, ident=f"{uid}-gone"))
    entries = [
        post_entry(patient(uid, ident=f"{uid}-a"), ifNoneExist=f"identifier={IDSYS}|{uid}-a"),
        delete_entry(f"Patient/{gone['id']}"),
        put_entry({**patient(uid, ident=f"{uid}-put"), "id": f"put-{uid}"}, f"Patient/put-{uid}"),
        post_entry(patient(uid, ident=f"{uid}-gone"), ifNoneExist=f"identifier={IDSYS}|{uid}-gone"),
        post_entry(patient(uid, ident=f"{uid}-put"), ifNoneExist=f"identifier={IDSYS}|{uid}-put"),
    ]
    b = run_batch(fhir, entries)
    assert [status_of(e) for e in b["entry"]] == [201, 204, 201, 201, 200]
    assert location_id(b["entry"][4]["response"]["location"], "Patient")[0] == f"put-{uid}"
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}-gone"}) == 1
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}-put"}) == 1


def test_conditional_criteria_matched_together_keep_token_search_semantics(fhir, uid):
    # The criteria of a Bundle are matched together; each must still mean what the same
    # search means: a code alone, system|code, |code (no system), another system, a deleted
    # resource, and criteria with two parameters (matched on their own).
    def pat(ident: list[dict[str, str]], **kw):
        return {**patient(uid, **kw), "identifier": ident}

    a = create(fhir, pat([{"system": IDSYS, "value": f"{uid}-v1"}]))
    b = create(fhir, pat([{"value": f"{uid}-v2"}]))
    c = create(fhir, pat([{"system": IDSYS, "value": f"{uid}-v3"}]))
    assert fhir.delete(f"Patient/{c['id']}").status_code in (200, 204)
    criteria = [
        (f"identifier={uid}-v1", a["id"]),
        (f"identifier={IDSYS}|{uid}-v1", a["id"]),
        (f"identifier=urn:other|{uid}-v1", None),
        (f"identifier=|{uid}-v2", b["id"]),
        (f"identifier=|{uid}-v1", None),
        (f"identifier={IDSYS}|{uid}-v3", None),
        (f"identifier={uid}-v2", b["id"]),
        (f"identifier={IDSYS}|{uid}-v1&gender=female", a["id"]),
        (f"identifier={IDSYS}|{uid}-v1&gender=male", None),
    ]
    for kind in ("batch", "transaction"):
        entries = [post_entry(pat([{"system": IDSYS, "value": f"{uid}-{kind}-new-{i}"}]),
                              f"urn:uuid:{uuid.uuid4()}", ifNoneExist=crit) for i, (crit, _) in enumerate(criteria)]
        got = post_bundle(fhir, entries, kind)["entry"]
        for (crit, want), e in zip(criteria, got, strict=True):
            if want is None:
                assert status_of(e) == 201, (kind, crit, e)
            else:
                assert status_of(e) == 200, (kind, crit, e)
                assert location_id(e["response"]["location"], "Patient")[0] == want, (kind, crit)
