"""What a searchset holds: paging links, _count, _total, _sort, _include/_revinclude, _summary, _elements
(R4 search.html 3.1.1.5 - 3.1.1.6, http.html 3.1.0.8)."""

from __future__ import annotations

from .support import (
    IDSYS,
    SUBSETTED,
    TAGSYS,
    create,
    entries,
    ids,
    link,
    link_params,
    observation,
    organization,
    patient,
    post_entry,
    refs,
    search,
    search_ids,
    tx,
)


def many_patients(fhir, uid, n, **kw):
    """n Patients of family Fam{uid}, created in one transaction; returns their ids in order."""
    bundle = tx([post_entry(patient(uid, given=f"G{i:03d}", **kw)) for i in range(n)])
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, r.text
    return [e["response"]["location"].split("/_history")[0].rsplit("/", 1)[-1] for e in r.json()["entry"]]


def all_pages(fhir, first):
    got, pages, nxt = [], 0, link(first, "next")
    got.extend(ids(first))
    while nxt:
        pages += 1
        assert pages < 50
        b = search(fhir, nxt)
        got.extend(ids(b))
        nxt = link(b, "next")
    return got, pages + 1


# ---------------------------------------------------------------- paging


def test_paging_links_and_pages_cover_all_matches_once(fhir, uid):
    made = many_patients(fhir, uid, 5)
    first = search(fhir, "Patient", {"family": f"Fam{uid}", "_count": "2"})
    assert len(ids(first)) == 2
    assert link(first, "self") and link(first, "first") and link(first, "next")
    assert link(first, "previous") is None and link(first, "prev") is None
    assert "total" not in first  # no total by default when results span several pages
    self_params = dict(link_params(link(first, "self")))
    assert self_params.get("family") == f"Fam{uid}" and self_params.get("_count") == "2"
    got, pages = all_pages(fhir, first)
    assert pages == 3
    assert sorted(got) == sorted(made)
    assert len(set(got)) == 5


def test_second_page_has_previous_link(fhir, uid):
    many_patients(fhir, uid, 3)
    first = search(fhir, "Patient", {"family": f"Fam{uid}", "_count": "2"})
    second = search(fhir, link(first, "next"))
    assert len(ids(second)) == 1
    prev = link(second, "previous") or link(second, "prev")
    assert prev
    assert sorted(ids(search(fhir, prev))) == sorted(ids(first))
    assert link(second, "next") is None


def test_total_accurate(fhir, uid):
    many_patients(fhir, uid, 5)
    b = search(fhir, "Patient", {"family": f"Fam{uid}", "_count": "2", "_total": "accurate"})
    assert b["total"] == 5
    assert len(ids(b)) == 2


def test_total_on_single_page_if_given_is_right(fhir, uid):
    many_patients(fhir, uid, 3)
    b = search(fhir, "Patient", {"family": f"Fam{uid}"})
    assert len(ids(b)) == 3
    assert b.get("total", 3) == 3


def test_default_page_size_is_20(fhir, uid):
    many_patients(fhir, uid, 21)
    b = search(fhir, "Patient", {"family": f"Fam{uid}"})
    assert len(ids(b)) == 20
    assert link(b, "next")
    assert len(ids(search(fhir, link(b, "next")))) == 1


def test_count_above_max_is_clamped_not_refused(fhir, uid):
    many_patients(fhir, uid, 2)
    b = search(fhir, "Patient", {"family": f"Fam{uid}", "_count": "5000"})
    assert len(ids(b)) == 2


def test_summary_count(fhir, uid):
    many_patients(fhir, uid, 4)
    b = search(fhir, "Patient", {"family": f"Fam{uid}", "_summary": "count"})
    assert b["total"] == 4
    assert not entries(b, None)


def test_empty_result(fhir, uid):
    b = search(fhir, "Patient", {"family": f"Nobody{uid}"})
    assert entries(b, None) == []
    assert b.get("total", 0) == 0


def test_entries_have_full_url_and_search_mode(fhir, uid):
    p = create(fhir, patient(uid))
    b = search(fhir, "Patient", {"_id": p["id"]})
    (e,) = b["entry"]
    assert e["fullUrl"].endswith(f"/Patient/{p['id']}")
    assert e["fullUrl"].startswith("http")
    assert e["search"]["mode"] == "match"


# ---------------------------------------------------------------- sort


def sort_world(fhir, uid):
    rows = [("G1", "female", "1990-01-01"), ("G2", "male", "1970-01-01"), ("G3", "female", "1980-01-01"),
            ("G4", "male", None)]
    return {g: create(fhir, patient(uid, given=g, gender=s, birthDate=d))["id"] for g, s, d in rows}


def test_sort_ascending_missing_last(fhir, uid):
    w = sort_world(fhir, uid)
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "birthdate"})
    assert got == [w["G2"], w["G3"], w["G1"], w["G4"]]


def test_sort_descending(fhir, uid):
    w = sort_world(fhir, uid)
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "-birthdate", "birthdate:missing": "false"})
    assert got == [w["G1"], w["G3"], w["G2"]]


def test_sort_on_several_keys(fhir, uid):
    w = sort_world(fhir, uid)
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "gender,-birthdate"})
    assert got == [w["G1"], w["G3"], w["G2"], w["G4"]]


def test_sort_by_string(fhir, uid):
    w = sort_world(fhir, uid)
    got = search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "-given"})
    assert got == [w["G4"], w["G3"], w["G2"], w["G1"]]


def test_sort_by_last_updated(fhir, uid):
    w = sort_world(fhir, uid)
    order = [w["G1"], w["G2"], w["G3"], w["G4"]]
    assert search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "_lastUpdated"}) == order
    assert search_ids(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "-_lastUpdated"}) == order[::-1]


def test_sort_is_kept_across_pages(fhir, uid):
    w = sort_world(fhir, uid)
    first = search(fhir, "Patient", {"family": f"Fam{uid}", "_sort": "birthdate", "_count": "3"})
    got, _ = all_pages(fhir, first)
    assert got == [w["G2"], w["G3"], w["G1"], w["G4"]]


def test_sort_on_unknown_parameter_is_400(fhir, uid):
    r = fhir.get("Patient", params={"family": f"Fam{uid}", "_sort": "nosuchparam"})
    assert r.status_code == 400, r.text


# ---------------------------------------------------------------- include / revinclude


def include_world(fhir, uid):
    org = create(fhir, organization(uid))
    p = create(fhir, patient(uid, managingOrganization={"reference": f"Organization/{org['id']}"}))
    o1 = create(fhir, observation(uid, f"Patient/{p['id']}"))
    o2 = create(fhir, observation(uid, f"Patient/{p['id']}", code="4548-4", display="Hemoglobin A1c"))
    return org, p, o1, o2


def test_include(fhir, uid):
    _, p, o1, _ = include_world(fhir, uid)
    b = search(fhir, "Observation", {"_id": o1["id"], "_include": "Observation:subject"})
    assert refs(b) == [f"Observation/{o1['id']}"]
    assert refs(b, "include") == [f"Patient/{p['id']}"]
    assert b.get("total", 1) == 1  # included resources are not counted


def test_include_with_target_type(fhir, uid):
    _, p, o1, _ = include_world(fhir, uid)
    b = search(fhir, "Observation", {"_id": o1["id"], "_include": "Observation:subject:Patient"})
    assert refs(b, "include") == [f"Patient/{p['id']}"]
    b = search(fhir, "Observation", {"_id": o1["id"], "_include": "Observation:subject:Group"})
    assert refs(b, "include") == []


def test_include_of_shared_target_appears_once(fhir, uid):
    _, p, o1, o2 = include_world(fhir, uid)
    b = search(fhir, "Observation", {"subject": f"Patient/{p['id']}", "_include": "Observation:patient"})
    assert sorted(refs(b)) == sorted([f"Observation/{o1['id']}", f"Observation/{o2['id']}"])
    assert refs(b, "include") == [f"Patient/{p['id']}"]


def test_revinclude(fhir, uid):
    _, p, o1, o2 = include_world(fhir, uid)
    b = search(fhir, "Patient", {"_id": p["id"], "_revinclude": "Observation:subject"})
    assert refs(b) == [f"Patient/{p['id']}"]
    assert sorted(refs(b, "include")) == sorted([f"Observation/{o1['id']}", f"Observation/{o2['id']}"])


def test_include_iterate(fhir, uid):
    org, p, o1, _ = include_world(fhir, uid)
    b = search(fhir, "Observation", [("_id", o1["id"]), ("_include", "Observation:patient"),
                                     ("_include:iterate", "Patient:organization")])
    assert sorted(refs(b, "include")) == sorted([f"Patient/{p['id']}", f"Organization/{org['id']}"])
    # without :iterate the Organization is not reached
    b = search(fhir, "Observation", [("_id", o1["id"]), ("_include", "Observation:patient"),
                                     ("_include", "Patient:organization")])
    assert refs(b, "include") == [f"Patient/{p['id']}"]


def test_revinclude_iterate(fhir, uid):
    org, p, o1, o2 = include_world(fhir, uid)
    b = search(fhir, "Organization", [("_id", org["id"]), ("_revinclude", "Patient:organization"),
                                      ("_revinclude:iterate", "Observation:patient")])
    assert sorted(refs(b, "include")) == sorted(
        [f"Patient/{p['id']}", f"Observation/{o1['id']}", f"Observation/{o2['id']}"])


def test_include_unknown_parameter_is_400(fhir, uid):
    r = fhir.get("Observation", params={"_id": uid, "_include": "Observation:nosuchparam"})
    assert r.status_code == 400, r.text


# ---------------------------------------------------------------- _summary / _elements


def rich_patient(uid):
    return patient(uid, maritalStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                                   "code": "M"}]},
                   text={"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann {uid}</div>"},
                   meta={"tag": [{"system": TAGSYS, "code": f"t{uid}"}]})


def has_subsetted(res):
    return any(t.get("code") == SUBSETTED for t in (res.get("meta") or {}).get("tag") or [])


def test_summary_true(fhir, uid):
    p = create(fhir, rich_patient(uid))
    (res,) = [e["resource"] for e in entries(search(fhir, "Patient", {"_id": p["id"], "_summary": "true"}))]
    assert res["id"] == p["id"]
    assert res["name"][0]["family"] == f"Fam{uid}"
    assert res["identifier"][0]["value"] == uid
    assert "maritalStatus" not in res and "text" not in res
    assert has_subsetted(res)
    # the stored resource is untouched
    full = fhir.get(f"Patient/{p['id']}").json()
    assert "maritalStatus" in full and not has_subsetted(full)


def test_summary_text(fhir, uid):
    p = create(fhir, rich_patient(uid))
    (res,) = [e["resource"] for e in entries(search(fhir, "Patient", {"_id": p["id"], "_summary": "text"}))]
    assert res["text"]["div"].find(uid) > 0
    assert "name" not in res and "maritalStatus" not in res
    assert has_subsetted(res)


def test_summary_data(fhir, uid):
    p = create(fhir, rich_patient(uid))
    (res,) = [e["resource"] for e in entries(search(fhir, "Patient", {"_id": p["id"], "_summary": "data"}))]
    assert "text" not in res
    assert res["maritalStatus"]["coding"][0]["code"] == "M"
    assert has_subsetted(res)


def test_summary_false(fhir, uid):
    p = create(fhir, rich_patient(uid))
    (res,) = [e["resource"] for e in entries(search(fhir, "Patient", {"_id": p["id"], "_summary": "false"}))]
    assert "text" in res and "maritalStatus" in res
    assert not has_subsetted(res)


def test_summary_on_read(fhir, uid):
    p = create(fhir, rich_patient(uid))
    r = fhir.get(f"Patient/{p['id']}", params={"_summary": "true"})
    assert r.status_code == 200
    res = r.json()
    assert "maritalStatus" not in res and res["name"] and has_subsetted(res)


def test_elements(fhir, uid):
    p = create(fhir, rich_patient(uid))
    (res,) = [e["resource"] for e in entries(search(fhir, "Patient", {"_id": p["id"], "_elements": "name,birthDate"}))]
    assert res["resourceType"] == "Patient" and res["id"] == p["id"]
    assert res["name"][0]["family"] == f"Fam{uid}" and res["birthDate"] == "1980-05-17"
    assert "gender" not in res and "identifier" not in res and "maritalStatus" not in res
    assert has_subsetted(res)
    # the user's own tag survives beside SUBSETTED
    assert any(t.get("code") == f"t{uid}" for t in res["meta"]["tag"])


def test_elements_on_read(fhir, uid):
    p = create(fhir, rich_patient(uid))
    r = fhir.get(f"Patient/{p['id']}", params={"_elements": "gender"})
    assert r.status_code == 200
    res = r.json()
    assert res["gender"] == "female" and "name" not in res and has_subsetted(res)


def test_identifier_search_on_stored_values(fhir, uid):
    # sanity: what the summary tests rely on
    p = create(fhir, rich_patient(uid))
    assert search_ids(fhir, "Patient", {"identifier": f"{IDSYS}|{uid}"}) == [p["id"]]
