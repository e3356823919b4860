"""Paging in the default order uses keyset cursors: next/previous links stay correct while
resources are created and deleted between page requests."""

from __future__ import annotations

from typing import Any

from .support import create, patient


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def _link(bundle: dict[str, Any], rel: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == rel), None)


def test_next_and_previous_survive_deletes_and_inserts(fhir, uid):
    family = f"Page{uid}"
    made = [create(fhir, patient(uid, family=family, ident=f"{uid}-{i}"))["id"] for i in range(7)]
    first = fhir.get("Patient", params={"family:exact": family, "_count": "3"}).json()
    assert _ids(first) == made[:3]
    assert _link(first, "previous") is None
    # Churn: delete something already seen and something not yet seen, add a new one.
    assert fhir.delete(f"Patient/{made[0]}").status_code in (200, 204)
    assert fhir.delete(f"Patient/{made[4]}").status_code in (200, 204)
    late = create(fhir, patient(uid, family=family, ident=f"{uid}-late"))["id"]
    second = fhir.get(_link(first, "next")).json()
    assert _ids(second) == [made[3], made[5], made[6]]
    third = fhir.get(_link(second, "next")).json()
    assert _ids(third) == [late]
    assert _link(third, "next") is None
    back = fhir.get(_link(second, "previous")).json()
    assert _ids(back) == made[1:3]
    assert _link(back, "previous") is None
    assert _link(back, "next") is not None


def test_a_forged_cursor_is_refused(fhir, uid):
    r = fhir.get("Patient", params={"family": f"x{uid}", "_page": "zz"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_page"]


def test_history_pages_do_not_shift_when_new_versions_arrive(fhir, uid):
    p = create(fhir, patient(uid))
    for year in range(1981, 1986):
        body = dict(p, birthDate=f"{year}-01-01")
        assert fhir.put(f"Patient/{p['id']}", json=body).status_code == 200
    path = f"Patient/{p['id']}/_history"
    first = fhir.get(path, params={"_count": "2"}).json()
    versions = [e["resource"]["meta"]["versionId"] for e in first["entry"]]
    assert versions == ["6", "5"]
    for year in (1990, 1991):  # versions 7 and 8 arrive while the client pages
        assert fhir.put(f"Patient/{p['id']}", json=dict(p, birthDate=f"{year}-01-01")).status_code == 200
    seen = []
    page = fhir.get(_link(first, "next")).json()
    second = page
    while True:
        seen += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
        nxt = _link(page, "next")
        if not nxt:
            break
        page = fhir.get(nxt).json()
    assert seen == ["4", "3", "2", "1"]
    back = fhir.get(_link(second, "previous")).json()
    assert [e["resource"]["meta"]["versionId"] for e in back["entry"]] == ["6", "5"]
