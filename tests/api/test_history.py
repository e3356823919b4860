"""history at instance, type and system level (R4 http.html 3.1.0.9): order, entries, _since, _at, _count."""

from __future__ import annotations

from .support import assert_oo, create, link, observation, patient


def hist(fhir, path, params=None):
    r = fhir.get(path, params=params)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "history", b
    return b


def three_versions(fhir, uid):
    p = create(fhir, patient(uid, gender="female"))
    p["gender"] = "male"
    r = fhir.put(f"Patient/{p['id']}", json=p)
    assert r.status_code == 200
    v2 = r.json()
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    return p, v2


def test_instance_history_newest_first_with_requests_and_deletion(fhir, uid):
    p, _ = three_versions(fhir, uid)
    b = hist(fhir, f"Patient/{p['id']}/_history")
    es = b["entry"]
    assert len(es) == 3
    assert [e["request"]["method"] for e in es] == ["DELETE", "PUT", "POST"]
    assert "resource" not in es[0]
    assert es[0]["request"]["url"].endswith(f"Patient/{p['id']}")
    assert [e["resource"]["meta"]["versionId"] for e in es[1:]] == ["2", "1"]
    assert es[1]["resource"]["gender"] == "male" and es[2]["resource"]["gender"] == "female"
    for e in es:
        assert e["fullUrl"].endswith(f"Patient/{p['id']}")
        assert e["response"]["status"].split()[0] in ("200", "201", "204")
    assert b.get("total") in (None, 3)


def test_instance_history_of_unknown_resource_is_404(fhir, uid):
    assert_oo(fhir.get(f"Patient/nope-{uid}/_history"), 404)


def test_instance_history_paging(fhir, uid):
    p, _ = three_versions(fhir, uid)
    b = hist(fhir, f"Patient/{p['id']}/_history", {"_count": "1"})
    assert len(b["entry"]) == 1
    assert b["entry"][0]["request"]["method"] == "DELETE"
    seen = ["DELETE"]
    nxt = link(b, "next")
    while nxt:
        page = hist(fhir, nxt)
        assert len(page["entry"]) == 1
        seen.append(page["entry"][0]["request"]["method"])
        assert link(page, "previous") or link(page, "prev")
        nxt = link(page, "next")
        assert len(seen) <= 3
    assert seen == ["DELETE", "PUT", "POST"]


def test_history_since_is_inclusive_and_excludes_older(fhir, uid):
    p, v2 = three_versions(fhir, uid)
    b = hist(fhir, f"Patient/{p['id']}/_history", {"_since": v2["meta"]["lastUpdated"]})
    assert [e["request"]["method"] for e in b["entry"]] == ["DELETE", "PUT"]


def test_history_at_gives_version_current_then(fhir, uid):
    p, _ = three_versions(fhir, uid)
    b = hist(fhir, f"Patient/{p['id']}/_history", {"_at": p["meta"]["lastUpdated"]})
    vids = [e["resource"]["meta"]["versionId"] for e in b["entry"] if "resource" in e]
    assert vids == ["1"]


def test_history_bad_since_is_400(fhir, uid):
    p = create(fhir, patient(uid))
    assert_oo(fhir.get(f"Patient/{p['id']}/_history", params={"_since": "yesterday"}), 400)


def test_type_history_lists_versions_of_that_type_only(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    p["active"] = False
    assert fhir.put(f"Patient/{p['id']}", json=p).status_code == 200
    b = hist(fhir, "Patient/_history", {"_since": p["meta"]["lastUpdated"], "_count": "1000"})
    mine = [e for e in b["entry"] if e["fullUrl"].endswith(f"Patient/{p['id']}")]
    assert [e["resource"]["meta"]["versionId"] for e in mine] == ["2", "1"]
    assert all("/Patient/" in e["fullUrl"] for e in b["entry"])
    assert not any(e["fullUrl"].endswith(f"Observation/{o['id']}") for e in b["entry"])


def test_system_history_includes_all_types(fhir, uid):
    p = create(fhir, patient(uid))
    o = create(fhir, observation(uid, f"Patient/{p['id']}"))
    b = hist(fhir, "_history", {"_since": p["meta"]["lastUpdated"], "_count": "1000"})
    urls = [e["fullUrl"] for e in b["entry"]]
    assert any(u.endswith(f"Patient/{p['id']}") for u in urls)
    assert any(u.endswith(f"Observation/{o['id']}") for u in urls)
    # newest first: the Observation was written after the Patient
    io = next(i for i, u in enumerate(urls) if u.endswith(f"Observation/{o['id']}"))
    ip = next(i for i, u in enumerate(urls) if u.endswith(f"Patient/{p['id']}"))
    assert io < ip


def test_system_history_count_and_next(fhir, uid):
    first = create(fhir, patient(uid))
    for _ in range(2):
        create(fhir, patient(uid))
    b = hist(fhir, "_history", {"_since": first["meta"]["lastUpdated"], "_count": "2"})
    assert len(b["entry"]) == 2
    assert link(b, "next")
