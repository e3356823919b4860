"""Edge cases across interactions: index follows the current version, deleted resources vanish from
chains/_has/_include, vread of a deletion, odd-but-valid transaction forms, size limits."""

from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime

from .support import (
    IDSYS,
    LOINC,
    UCUM,
    assert_oo,
    count,
    create,
    entries,
    link,
    location_id,
    observation,
    patient,
    post_entry,
    put_entry,
    refs,
    search,
    search_ids,
    status_of,
    tx,
)


def test_search_index_follows_current_version(fhir, uid):
    p = create(fhir, patient(uid, family=f"Old{uid}"))
    p["name"][0]["family"] = f"New{uid}"
    assert fhir.put(f"Patient/{p['id']}", json=p).status_code == 200
    assert search_ids(fhir, "Patient", {"family": f"Old{uid}"}) == []
    assert search_ids(fhir, "Patient", {"family": f"New{uid}"}) == [p["id"]]


def test_patch_reindexes(fhir, uid):
    import orjson

    p = create(fhir, patient(uid, gender="female"))
    ops = orjson.dumps([{"op": "replace", "path": "/gender", "value": "male"}])
    r = fhir.patch(f"Patient/{p['id']}", data=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200
    fam = {"family": f"Fam{uid}"}
    assert search_ids(fhir, "Patient", {**fam, "gender": "male"}) == [p["id"]]
    assert search_ids(fhir, "Patient", {**fam, "gender": "female"}) == []


def test_deleted_resources_leave_chains_has_and_includes(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    gone = create(fhir, observation(uid, f"Patient/{p['id']}", ident=f"gone-{uid}", code="4548-4"))
    assert fhir.delete(f"Observation/{gone['id']}").status_code in (200, 204)
    b = search(fhir, "Patient", {"_id": p["id"], "_revinclude": "Observation:subject"})
    assert refs(b, "include") == [f"Observation/{o['id']}"]
    assert search_ids(fhir, "Patient", {"_id": p["id"], "_has:Observation:subject:code": f"{LOINC}|4548-4"}) == []
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    assert search_ids(fhir, "Observation", {"patient.family": f"Fam{uid}"}) == []
    b = search(fhir, "Observation", {"_id": o["id"], "_include": "Observation:subject"})
    assert refs(b) == [f"Observation/{o['id']}"] and refs(b, "include") == []


def test_vread_of_the_deletion_version_is_410(fhir, uid):
    # http.html vread: a version that is a deletion is answered 410 Gone
    p = create(fhir, patient(uid))
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    assert_oo(fhir.get(f"Patient/{p['id']}/_history/2"), 410)


def test_last_modified_matches_meta_last_updated(fhir, uid):
    from datetime import datetime

    p = create(fhir, patient(uid))
    r = fhir.get(f"Patient/{p['id']}")
    lm = parsedate_to_datetime(r.headers["Last-Modified"])
    lu = datetime.fromisoformat(p["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert abs((lm - lu).total_seconds()) < 1.0


def test_history_since_in_future_is_empty(fhir, uid):
    p = create(fhir, patient(uid))
    r = fhir.get(f"Patient/{p['id']}/_history", params={"_since": "2999-01-01T00:00:00Z"})
    assert r.status_code == 200
    assert not r.json().get("entry")


def test_invalid_id_characters_are_400(fhir, uid):
    rid = f"bad_id!{uid}"
    assert_oo(fhir.put(f"Patient/{rid}", json=patient(uid, id=rid)), 400)
    assert count(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == 0


def test_token_code_without_system_and_system_only(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Observation", {**base, "code": "2339-0"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "code": f"{LOINC}|"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {**base, "code": "http://snomed.info/sct|"}) == []
    assert search_ids(fhir, "Observation", {**base, "code:not": f"{LOINC}|2339-0"}) == []


def test_reference_missing_modifier(fhir, uid):
    p = create(fhir, patient(uid))
    with_enc = observation(uid, f"Patient/{p['id']}", encounter={"reference": f"Encounter/e-{uid}"})
    a = create(fhir, with_enc)
    b = create(fhir, observation(uid, f"Patient/{p['id']}"))
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Observation", {**base, "encounter:missing": "true"}) == [b["id"]]
    assert search_ids(fhir, "Observation", {**base, "encounter:missing": "false"}) == [a["id"]]


def test_chain_with_modifier_on_last_link(fhir, uid):
    p = create(fhir, patient(uid, family=f"Chain{uid}son"))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    assert search_ids(fhir, "Observation", {"subject:Patient.family:exact": f"Chain{uid}son"}) == [o["id"]]
    assert search_ids(fhir, "Observation", {"subject:Patient.family:exact": f"Chain{uid}"}) == []


def test_quantity_ne_prefix(fhir, uid):
    p = create(fhir, patient(uid))
    a = create(fhir, observation(uid, f"Patient/{p['id']}", value={"value": 5.4, "unit": "mg/dL", "system": UCUM,
                                                                 "code": "mg/dL"}))
    b = create(fhir, observation(uid, f"Patient/{p['id']}", value={"value": 9.1, "unit": "mg/dL", "system": UCUM,
                                                                 "code": "mg/dL"}))
    base = {"subject": f"Patient/{p['id']}"}
    assert search_ids(fhir, "Observation", {**base, "value-quantity": f"ne5.4|{UCUM}|mg/dL"}) == [b["id"]]
    assert search_ids(fhir, "Observation", {**base, "value-quantity": f"le5.4|{UCUM}|mg/dL"}) == [a["id"]]


def test_unsupported_modifier_is_refused_not_ignored(fhir, uid):
    r = fhir.get("Observation", params={"code:in": "http://example.org/fhir/ValueSet/x", "_id": uid})
    assert_oo(r, 400)


def test_total_accurate_does_not_count_includes(fhir, uid):
    p = create(fhir, patient(uid))
    create(fhir, observation(uid, f"Patient/{p['id']}"))
    create(fhir, observation(uid, f"Patient/{p['id']}"))
    b = search(fhir, "Patient", {"_id": p["id"], "_revinclude": "Observation:subject", "_total": "accurate"})
    assert b["total"] == 1
    assert len(entries(b, "include")) == 2


def test_transaction_with_absolute_request_urls(fhir, uid):
    pu = f"urn:uuid:{uuid.uuid4()}"
    bundle = tx([post_entry(patient(uid), pu) | {"request": {"method": "POST", "url": f"{fhir.base}/Patient"}}])
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, r.text
    assert status_of(r.json()["entry"][0]) == 201


def test_transaction_put_with_id_differing_from_url_is_400(fhir, uid):
    bundle = tx([put_entry(patient(uid, id=f"a-{uid}"), f"Patient/b-{uid}")])
    assert_oo(fhir.post("", json=bundle), 400)
    assert fhir.get(f"Patient/a-{uid}").status_code == 404
    assert fhir.get(f"Patient/b-{uid}").status_code == 404


def test_transaction_conditional_delete_with_several_matches(fhir, uid):
    a = create(fhir, patient(uid))
    b = create(fhir, patient(uid))
    bundle = tx([{"request": {"method": "DELETE", "url": f"Patient?identifier={IDSYS}|{uid}"}}])
    r = fhir.post("", json=bundle)
    if r.status_code == 200:
        assert fhir.get(f"Patient/{a['id']}").status_code == 410
        assert fhir.get(f"Patient/{b['id']}").status_code == 410
    else:
        assert_oo(r, 412)
        assert fhir.get(f"Patient/{a['id']}").status_code == 200


def test_transaction_response_entries_carry_last_modified(fhir, uid):
    bundle = tx([post_entry(patient(uid), f"urn:uuid:{uuid.uuid4()}")])
    r = fhir.post("", json=bundle)
    assert r.status_code == 200
    resp = r.json()["entry"][0]["response"]
    assert resp.get("lastModified")
    location_id(resp["location"], "Patient")


def test_too_many_bundle_entries_is_413(fhir, uid):
    entry = {"request": {"method": "GET", "url": f"Patient/nope-{uid}"}}
    bundle = tx([entry] * 20001, "batch")
    r = fhir.post("", json=bundle)
    assert_oo(r, 413)


def test_empty_transaction_is_fine(fhir):
    r = fhir.post("", json=tx([]))
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "transaction-response" and not b.get("entry")


def test_summary_text_keeps_mandatory_elements(fhir, uid):
    p = create(fhir, patient(uid))
    o = observation(uid, f"Patient/{p['id']}")
    o["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Glucose {uid}</div>'}
    o = create(fhir, o)
    (res,) = [e["resource"] for e in entries(search(fhir, "Observation", {"_id": o["id"], "_summary": "text"}))]
    assert res["status"] == "final" and res["code"]["coding"][0]["code"] == "2339-0"  # top-level mandatory
    assert res["text"]["div"]
    assert "valueQuantity" not in res and "subject" not in res


def test_narrative_img_src_and_urn_oid_full_urls(fhir, uid):
    bu = "urn:oid:1.2.3.4." + str(int(uid[:8], 16))
    binary = {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="}
    p = patient(uid, text={"status": "generated",
                           "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><img src="{bu}"/></div>'})
    r = fhir.post("", json=tx([post_entry(binary, bu), post_entry(p, f"urn:uuid:{uuid.uuid4()}")]))
    assert r.status_code == 200, r.text
    bid = location_id(r.json()["entry"][0]["response"]["location"], "Binary")[0]
    pid = location_id(r.json()["entry"][1]["response"]["location"], "Patient")[0]
    div = fhir.get(f"Patient/{pid}").json()["text"]["div"]
    assert bu not in div and f"Binary/{bid}" in div


def test_next_link_keeps_include_and_sort(fhir, uid):
    p = create(fhir, patient(uid))
    made = [create(fhir, observation(uid, f"Patient/{p['id']}", effective=f"2021-0{i}-01"))["id"] for i in (1, 2, 3)]
    first = search(fhir, "Observation", {"subject": f"Patient/{p['id']}", "_sort": "date", "_count": "2",
                                         "_include": "Observation:subject"})
    assert [e["resource"]["id"] for e in entries(first)] == made[:2]
    second = search(fhir, link(first, "next"))
    assert [e["resource"]["id"] for e in entries(second)] == made[2:]
    assert refs(second, "include") == [f"Patient/{p['id']}"]


def test_number_in_exponential_form(fhir, uid):
    p = create(fhir, patient(uid))
    ra = create(fhir, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": f"Patient/{p['id']}"},
                       "prediction": [{"probabilityDecimal": 0.25}]})
    assert search_ids(fhir, "RiskAssessment", {"subject": f"Patient/{p['id']}", "probability": "2.5e-1"}) == [ra["id"]]


def test_date_gt_with_time_inside_the_day_matches_that_day(fhir, uid):
    # gt: the range above the search value intersects the target's range (the whole day 1980-05-17)
    day = create(fhir, patient(uid, birthDate="1980-05-17"))
    create(fhir, patient(uid, birthDate="1980-05-16"))
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "birthdate": "gt1980-05-17T12:00:00Z"})
    assert got == [day["id"]]
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "birthdate": "lt1980-05-17T12:00:00Z"})
    assert len(got) == 2
