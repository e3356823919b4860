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
