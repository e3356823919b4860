"""Transactions (R4 http.html 3.1.0.11): atomicity, processing order, urn:uuid rewriting, conditional
references, ifNoneExist/ifMatch, identity rules and the response Bundle."""

from __future__ import annotations

import base64
import copy
import uuid

import orjson

from .support import (
    IDSYS,
    LOINC,
    assert_oo,
    count,
    create,
    delete_entry,
    get_entry,
    location_id,
    observation,
    oo_text,
    organization,
    patient,
    post_bundle,
    post_entry,
    put_entry,
    search_ids,
    status_of,
    synthea_smallest,
    tx,
)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def run_tx(fhir, entries, **kw):
    return post_bundle(fhir, entries, "transaction", **kw)


def new_id(entry, rtype):
    return location_id(entry["response"]["location"], rtype)[0]


def test_create_with_internal_reference(fhir, uid):
    pu, ou = urn(), urn()
    b = run_tx(fhir, [post_entry(patient(uid), pu), post_entry(observation(uid, pu), ou)])
    assert [status_of(e) for e in b["entry"]] == [201, 201]
    pid = new_id(b["entry"][0], "Patient")
    oid = new_id(b["entry"][1], "Observation")
    for e in b["entry"]:
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["location"].endswith("/_history/1")
    obs = fhir.get(f"Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert fhir.get(f"Patient/{pid}").json()["identifier"][0]["value"] == uid


def test_reference_to_a_later_entry_and_circular_references(fhir, uid):
    au, bu = urn(), urn()
    a = patient(uid, given="A", link=[{"other": {"reference": bu}, "type": "seealso"}])
    b_ = patient(uid, given="B", link=[{"other": {"reference": au}, "type": "seealso"}])
    b = run_tx(fhir, [post_entry(a, au), post_entry(b_, bu)])
    aid, bid = new_id(b["entry"][0], "Patient"), new_id(b["entry"][1], "Patient")
    assert fhir.get(f"Patient/{aid}").json()["link"][0]["other"]["reference"] == f"Patient/{bid}"
    assert fhir.get(f"Patient/{bid}").json()["link"][0]["other"]["reference"] == f"Patient/{aid}"


def test_urn_rewritten_in_extensions_uri_elements_and_narrative(fhir, uid):
    pu, ou, bu, du = urn(), urn(), urn(), urn()
    org = organization(uid)
    p = patient(uid,
                managingOrganization={"reference": ou},
                extension=[{"url": "http://example.org/fhir/StructureDefinition/linked-org",
                            "valueReference": {"reference": ou}}],
                text={"status": "generated",
                      "div": f'<div xmlns="http://www.w3.org/1999/xhtml">See <a href="{ou}">the organization</a></div>'})
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"note").decode()}
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": pu},
           "content": [{"attachment": {"contentType": "text/plain", "url": bu}}]}
    b = run_tx(fhir, [post_entry(p, pu), post_entry(org, ou), post_entry(binary, bu), post_entry(doc, du)])
    pid = new_id(b["entry"][0], "Patient")
    oid = new_id(b["entry"][1], "Organization")
    bid = new_id(b["entry"][2], "Binary")
    did = new_id(b["entry"][3], "DocumentReference")
    got = fhir.get(f"Patient/{pid}").json()
    assert got["managingOrganization"]["reference"] == f"Organization/{oid}"
    assert got["extension"][0]["valueReference"]["reference"] == f"Organization/{oid}"
    assert "urn:uuid" not in got["text"]["div"]
    assert f"Organization/{oid}" in got["text"]["div"]
    d = fhir.get(f"DocumentReference/{did}").json()
    assert d["subject"]["reference"] == f"Patient/{pid}"
    assert d["content"][0]["attachment"]["url"].endswith(f"Binary/{bid}")
    assert not d["content"][0]["attachment"]["url"].startswith("urn:")


def test_foreign_absolute_reference_is_left_alone(fhir, uid):
    foreign = f"http://other.example.org/fhir/Patient/{uid}"
    b = run_tx(fhir, [post_entry(observation(uid, foreign), urn())])
    oid = new_id(b["entry"][0], "Observation")
    assert fhir.get(f"Observation/{oid}").json()["subject"]["reference"] == foreign


def test_processing_order_delete_post_put_get_regardless_of_entry_order(fhir, uid):
    gone = create(fhir, patient(uid, ident=f"gone-{uid}"))
    entries = [
        get_entry(f"Patient?identifier={IDSYS}|new-{uid}"),
        get_entry(f"Patient?_id={gone['id']}"),
        put_entry(patient(uid, ident=f"put-{uid}", id=f"put-{uid}"), f"Patient/put-{uid}"),
        post_entry(patient(uid, ident=f"new-{uid}"), urn()),
        delete_entry(f"Patient/{gone['id']}"),
    ]
    b = run_tx(fhir, entries)
    st = [status_of(e) for e in b["entry"]]
    assert st[0] == 200 and st[1] == 200 and st[2] == 201 and st[3] == 201 and st[4] in (200, 204)
    seen_new = b["entry"][0]["resource"]
    assert seen_new["type"] == "searchset"
    new_pid = new_id(b["entry"][3], "Patient")
    assert [e["resource"]["id"] for e in seen_new.get("entry") or []] == [new_pid]
    seen_gone = b["entry"][1]["resource"]
    assert not [e for e in seen_gone.get("entry") or [] if (e.get("search") or {}).get("mode", "match") == "match"]
    assert fhir.get(f"Patient/{gone['id']}").status_code == 410
    assert fhir.get(f"Patient/put-{uid}").status_code == 200


def test_get_entry_sees_transactions_writes(fhir, uid):
    pu = urn()
    b = run_tx(fhir, [post_entry(patient(uid), pu), get_entry(f"Patient?identifier={IDSYS}|{uid}")])
    pid = new_id(b["entry"][0], "Patient")
    bundle = b["entry"][1]["resource"]
    assert [e["resource"]["id"] for e in bundle["entry"]] == [pid]


def test_read_entry_returns_resource(fhir, uid):
    p = create(fhir, patient(uid))
    b = run_tx(fhir, [get_entry(f"Patient/{p['id']}")])
    assert status_of(b["entry"][0]) == 200
    assert b["entry"][0]["resource"]["id"] == p["id"]


def test_conditional_reference_resolved(fhir, uid):
    p = create(fhir, patient(uid))
    o = observation(uid, f"Patient?identifier={IDSYS}|{uid}")
    b = run_tx(fhir, [post_entry(o, urn())])
    oid = new_id(b["entry"][0], "Observation")
    assert fhir.get(f"Observation/{oid}").json()["subject"]["reference"] == f"Patient/{p['id']}"


def test_conditional_reference_with_no_match_fails_and_writes_nothing(fhir, uid):
    entries = [post_entry(patient(uid, ident=f"side-{uid}"), urn()),
               post_entry(observation(uid, f"Patient?identifier={IDSYS}|nobody-{uid}"), urn())]
    r = fhir.post("", json=tx(entries))
    assert_oo(r, 400, 404, 412, 422)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|side-{uid}"}) == 0
    assert count(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == 0


def test_conditional_reference_with_several_matches_fails(fhir, uid):
    create(fhir, patient(uid))
    create(fhir, patient(uid))
    r = fhir.post("", json=tx([post_entry(observation(uid, f"Patient?identifier={IDSYS}|{uid}"), urn())]))
    assert_oo(r, 400, 409, 412, 422)
    assert count(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == 0


def test_if_none_exist_match_points_references_at_existing(fhir, uid):
    p = create(fhir, patient(uid))
    pu = urn()
    b = run_tx(fhir, [post_entry(patient(uid, gender="male"), pu, ifNoneExist=f"identifier={IDSYS}|{uid}"),
                      post_entry(observation(uid, pu), urn())])
    assert status_of(b["entry"][0]) == 200
    assert new_id(b["entry"][0], "Patient") == p["id"]
    assert status_of(b["entry"][1]) == 201
    oid = new_id(b["entry"][1], "Observation")
    assert fhir.get(f"Observation/{oid}").json()["subject"]["reference"] == f"Patient/{p['id']}"
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 1
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "female"


def test_if_none_exist_several_matches_fails_whole_transaction(fhir, uid):
    create(fhir, patient(uid))
    create(fhir, patient(uid))
    entries = [post_entry(organization(uid), urn()),
               post_entry(patient(uid), urn(), ifNoneExist=f"identifier={IDSYS}|{uid}")]
    assert_oo(fhir.post("", json=tx(entries)), 412)
    assert count(fhir, "Organization", {"identifier": f"{IDSYS}|org-{uid}"}) == 0
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 2


def conditional_bundle(uid):
    pu = urn()
    return [
        post_entry(patient(uid), pu, ifNoneExist=f"identifier={IDSYS}|{uid}"),
        put_entry(observation(uid, pu), f"Observation?identifier={IDSYS}|obs-{uid}", urn()),
    ]


def test_same_conditional_bundle_twice_is_idempotent(fhir, uid):
    first = run_tx(fhir, conditional_bundle(uid))
    assert [status_of(e) for e in first["entry"]] == [201, 201]
    pid = new_id(first["entry"][0], "Patient")
    oid = new_id(first["entry"][1], "Observation")
    second = run_tx(fhir, conditional_bundle(uid))
    assert [status_of(e) for e in second["entry"]] == [200, 200]
    assert new_id(second["entry"][0], "Patient") == pid
    assert new_id(second["entry"][1], "Observation") == oid
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == [pid]
    assert search_ids(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == [oid]
    obs = fhir.get(f"Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert obs["meta"]["versionId"] == "2"


def test_failure_late_in_bundle_rolls_back_earlier_writes(fhir, uid):
    keep = create(fhir, patient(uid, ident=f"keep-{uid}"))
    target = create(fhir, patient(uid, ident=f"target-{uid}"))
    target["gender"] = "male"
    bad_url = urn()
    entries = [
        post_entry(patient(uid, ident=f"new-{uid}"), urn()),
        delete_entry(f"Patient/{keep['id']}"),
        put_entry(target, f"Patient/{target['id']}", bad_url, ifMatch='W/"9"'),
    ]
    r = fhir.post("", json=tx(entries))
    assert_oo(r, 409, 412)
    text = oo_text(r)
    assert "Bundle.entry[2]" in text and bad_url in text
    assert fhir.get(f"Patient/{keep['id']}").status_code == 200
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|new-{uid}"}) == 0
    assert fhir.get(f"Patient/{target['id']}").json()["gender"] == "female"


def test_invalid_resource_names_the_entry_and_writes_nothing(fhir, uid):
    bad_url = urn()
    entries = [post_entry(patient(uid), urn()), post_entry(observation(uid, None, status="bogus"), bad_url)]
    r = fhir.post("", json=tx(entries))
    assert_oo(r, 400, 422)
    text = oo_text(r)
    assert "Bundle.entry[1]" in text and bad_url in text
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_if_match_in_entry(fhir, uid):
    p = create(fhir, patient(uid))
    p["gender"] = "male"
    b = run_tx(fhir, [put_entry(p, f"Patient/{p['id']}", ifMatch='W/"1"')])
    assert status_of(b["entry"][0]) == 200
    assert b["entry"][0]["response"]["etag"] == 'W/"2"'


def test_same_resource_twice_fails(fhir, uid):
    rid = f"twice-{uid}"
    entries = [put_entry(patient(uid, id=rid), f"Patient/{rid}"), put_entry(patient(uid, id=rid, gender="male"), f"Patient/{rid}")]
    assert_oo(fhir.post("", json=tx(entries)), 400, 409, 422)
    assert fhir.get(f"Patient/{rid}").status_code == 404


def test_delete_and_put_on_same_resource_fails(fhir, uid):
    p = create(fhir, patient(uid))
    entries = [delete_entry(f"Patient/{p['id']}"), put_entry(p, f"Patient/{p['id']}")]
    assert_oo(fhir.post("", json=tx(entries)), 400, 409, 422)
    got = fhir.get(f"Patient/{p['id']}")
    assert got.status_code == 200 and got.json()["meta"]["versionId"] == "1"


def test_conditional_update_and_delete_hitting_same_resource_fails(fhir, uid):
    p = create(fhir, patient(uid))
    entries = [put_entry(patient(uid, gender="male"), f"Patient?identifier={IDSYS}|{uid}"),
               delete_entry(f"Patient/{p['id']}")]
    assert_oo(fhir.post("", json=tx(entries)), 400, 409, 412, 422)
    assert fhir.get(f"Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_duplicate_full_urls_fail(fhir, uid):
    u = urn()
    entries = [post_entry(patient(uid), u), post_entry(patient(uid), u)]
    assert_oo(fhir.post("", json=tx(entries)), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_same_id_under_two_types_is_fine(fhir, uid):
    rid = f"same-{uid}"
    org = organization(uid) | {"id": rid}
    b = run_tx(fhir, [put_entry(patient(uid, id=rid), f"Patient/{rid}"), put_entry(org, f"Organization/{rid}")])
    assert [status_of(e) for e in b["entry"]] == [201, 201]


def test_patch_entry_with_binary_json_patch(fhir, uid):
    p = create(fhir, patient(uid))
    ops = orjson.dumps([{"op": "replace", "path": "/gender", "value": "male"}])
    entry = {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                          "data": base64.b64encode(ops).decode()},
             "request": {"method": "PATCH", "url": f"Patient/{p['id']}"}}
    b = run_tx(fhir, [entry])
    assert status_of(b["entry"][0]) == 200
    got = fhir.get(f"Patient/{p['id']}").json()
    assert got["gender"] == "male" and got["meta"]["versionId"] == "2"


def test_return_minimal_and_representation(fhir, uid):
    b = run_tx(fhir, [post_entry(patient(uid, ident=f"min-{uid}"), urn())], headers={"Prefer": "return=minimal"})
    assert "resource" not in b["entry"][0]
    b = run_tx(fhir, [post_entry(patient(uid, ident=f"rep-{uid}"), urn())], headers={"Prefer": "return=representation"})
    res = b["entry"][0]["resource"]
    assert res["resourceType"] == "Patient" and res["identifier"][0]["value"] == f"rep-{uid}"
    assert res["id"] == new_id(b["entry"][0], "Patient")


def test_wrong_bundle_type_is_400(fhir, uid):
    bundle = tx([post_entry(patient(uid), urn())], "collection")
    assert_oo(fhir.post("", json=bundle), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_unknown_type_in_request_url_is_400(fhir, uid):
    entries = [post_entry(patient(uid), urn()),
               {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Foo"}}]
    assert_oo(fhir.post("", json=tx(entries)), 400, 404)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_entry_without_request_is_400(fhir, uid):
    entries = [post_entry(patient(uid), urn()), {"fullUrl": urn(), "resource": patient(uid)}]
    assert_oo(fhir.post("", json=tx(entries)), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_body_type_differing_from_entry_url_is_400(fhir, uid):
    entries = [{"fullUrl": urn(), "resource": patient(uid), "request": {"method": "POST", "url": "Observation"}}]
    assert_oo(fhir.post("", json=tx(entries)), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_synthea_patient_bundle(fhir, uid):
    bundle = copy.deepcopy(synthea_smallest())
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            for i in e["resource"].get("identifier", []):
                i["value"] = f"{i['value']}-{uid}"
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, r.text[:2000]
    out = r.json()
    assert len(out["entry"]) == len(bundle["entry"])
    assert all(status_of(e) == 201 for e in out["entry"])
    pid = next(new_id(e, "Patient") for e in out["entry"] if "/Patient/" in "/" + e["response"]["location"])
    want = {}
    for e in bundle["entry"]:
        want[e["resource"]["resourceType"]] = want.get(e["resource"]["resourceType"], 0) + 1
    obs = fhir.get("Observation", params={"subject": f"Patient/{pid}", "_summary": "count"}).json()
    assert obs["total"] == want["Observation"]
    enc = fhir.get("Encounter", params={"patient": pid, "_summary": "count"}).json()
    assert enc["total"] == want["Encounter"]
    height = fhir.get("Observation", params={"subject": f"Patient/{pid}", "code": f"{LOINC}|8302-2",
                                          "_summary": "count"}).json()
    assert height["total"] >= 1


def test_many_conditional_references_and_criteria_are_resolved_each_to_its_own_match(fhir, uid):
    # A Synthea-like bundle: references to several existing resources by identifier, conditional
    # creates and a conditional update, all matched together against the store.
    people = [create(fhir, patient(uid, ident=f"{uid}-p{i}")) for i in range(5)]
    entries = [post_entry(observation(uid, f"Patient?identifier={IDSYS}|{uid}-p{i}"), urn()) for i in range(5)]
    entries.append(post_entry(patient(uid, ident=f"{uid}-p2"), urn(), ifNoneExist=f"identifier={IDSYS}|{uid}-p2"))
    entries.append(post_entry(patient(uid, ident=f"{uid}-fresh"), urn(), ifNoneExist=f"identifier={IDSYS}|{uid}-fresh"))
    entries.append(put_entry(patient(uid, ident=f"{uid}-p4", family=f"Changed{uid}"), f"Patient?identifier={IDSYS}|{uid}-p4"))
    b = run_tx(fhir, entries)
    subjects = [fhir.get(f"Observation/{new_id(e, 'Observation')}").json()["subject"]["reference"] for e in b["entry"][:5]]
    assert subjects == [f"Patient/{p['id']}" for p in people]
    assert [status_of(e) for e in b["entry"][5:]] == [200, 201, 200]
    assert new_id(b["entry"][5], "Patient") == people[2]["id"]
    assert fhir.get(f"Patient/{people[4]['id']}").json()["name"][0]["family"] == f"Changed{uid}"


def test_of_several_bad_conditional_references_the_first_entry_holding_one_is_named(fhir, uid):
    create(fhir, patient(uid, ident=f"{uid}-one"))
    entries = [post_entry(observation(uid, f"Patient?identifier={IDSYS}|{uid}-one"), urn()),
               post_entry(observation(uid, f"Patient?identifier={IDSYS}|{uid}-zzz-none"), urn()),
               post_entry(observation(uid, f"Patient?identifier={IDSYS}|{uid}-aaa-none"), urn())]
    r = fhir.post("", json=tx(entries))
    assert_oo(r, 412)
    assert f"{uid}-zzz-none" in oo_text(r) and f"{uid}-aaa-none" not in oo_text(r)
    assert "Bundle.entry[1]" in oo_text(r) and entries[1]["fullUrl"] in oo_text(r)
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    entries.insert(1, post_entry(observation(uid, "Patient?birthdate=notadate"), urn()))
    r = fhir.post("", json=tx(entries))
    assert_oo(r, 400)
    assert "notadate" in oo_text(r) and "Bundle.entry[1]" in oo_text(r)
    assert count(fhir, "Observation", {"identifier": f"{IDSYS}|obs-{uid}"}) == 0
