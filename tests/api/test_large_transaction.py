"""A large transaction: one invalid entry among hundreds fails it whole, naming the entry;
a valid one is stored whole."""

from __future__ import annotations

from .support import IDSYS, patient


def _bundle(uid: str, n: int, bad: int | None = None) -> dict:
    entries = []
    for i in range(n):
        p = patient(uid, ident=f"{uid}-{i}", family=f"Big{uid}")
        if i == bad:
            p["gender"] = "bogus"
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": p,
                        "request": {"method": "POST", "url": "Patient"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_one_invalid_entry_among_hundreds_fails_the_whole_transaction(fhir, uid):
    r = fhir.post("", json=_bundle(uid, 300, bad=7))
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[7]" in issue["diagnostics"]
    assert "urn:uuid:00000000-0000-4000-8000-000000000007" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[7].resource.gender"]
    found = fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()
    assert found["total"] == 0


def test_a_large_valid_transaction_is_stored_whole(fhir, uid):
    r = fhir.post("", json=_bundle(uid, 300))
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created"] * 300
    found = fhir.get("Patient", params={"identifier": f"{IDSYS}|{uid}-299", "_summary": "count"}).json()
    assert found["total"] == 1
    found = fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()
    assert found["total"] == 300
