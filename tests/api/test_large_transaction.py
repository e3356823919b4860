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


# Bundles of 64 entries or more are validated on two cores: the second half by a helper process
# (app.fhir.parallel). The verdicts and the outcome must be those of a serial check.


def test_an_invalid_entry_in_the_second_half_names_that_entry(fhir, uid):
    r = fhir.post("", json=_bundle(uid, 300, bad=250))
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[250]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[250].resource.gender"]
    assert fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()["total"] == 0


def test_with_invalid_entries_in_both_halves_the_first_in_order_is_named(fhir, uid):
    b = _bundle(uid, 200, bad=180)
    b["entry"][40]["resource"]["birthDate"] = "1970-02-30"
    r = fhir.post("", json=b)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[40]" in issue["diagnostics"], issue
    assert issue["expression"] == ["Bundle.entry[40].resource.birthDate"]


def test_with_many_invalid_entries_spread_over_the_bundle_the_first_is_named(fhir, uid):
    # Both processes get entries from all over the bundle; whichever finds the first one, that
    # one is named (and only that one).
    b = _bundle(uid, 400)
    for i in range(33, 400, 3):
        b["entry"][i]["resource"]["birthDate"] = f"19{i % 100:02d}-13-01"
    r = fhir.post("", json=b)
    assert r.status_code == 400, r.text
    issues = r.json()["issue"]
    assert "Bundle.entry[33]" in issues[0]["diagnostics"], issues[0]
    assert [x["expression"] for x in issues] == [["Bundle.entry[33].resource.birthDate"]]
    assert fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()["total"] == 0


def test_a_type_mismatch_late_in_a_large_transaction_is_named(fhir, uid):
    b = _bundle(uid, 120)
    b["entry"][119]["request"]["url"] = "Observation"
    r = fhir.post("", json=b)
    assert r.status_code == 400, r.text
    assert "Bundle.entry[119]" in r.json()["issue"][0]["diagnostics"]


def test_a_large_batch_answers_each_invalid_entry_and_creates_the_rest(fhir, uid):
    b = _bundle(uid, 150)
    b["type"] = "batch"
    b["entry"][10]["resource"]["gender"] = "bogus"
    b["entry"][140]["resource"]["unknownThing"] = 1
    b["entry"][141]["resource"]["resourceType"] = "Observation"  # the body no longer matches the URL
    r = fhir.post("", json=b)
    assert r.status_code == 200, r.text
    got = r.json()["entry"]
    statuses = [e["response"]["status"] for e in got]
    assert [i for i, s in enumerate(statuses) if not s.startswith("201")] == [10, 140, 141]
    assert all(statuses[i].startswith("400") for i in (10, 140, 141))
    assert "gender" in str(got[10]["response"]["outcome"])
    assert "unknownThing" in str(got[140]["response"]["outcome"])
    assert fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()["total"] == 147


def test_a_malformed_body_late_in_a_large_transaction_is_a_400_not_a_crash(fhir, uid):
    # Shapes the indexer would trip over, checked by the helper while the creates are prepared.
    b = _bundle(uid, 200)
    b["entry"][150]["resource"]["name"] = "just a string"
    b["entry"][151]["resource"]["managingOrganization"] = ["Organization/x"]
    b["entry"][199]["resource"]["identifier"] = [{"system": 5, "value": {"x": 1}}]
    r = fhir.post("", json=b)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert "Bundle.entry[150]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[150].resource.name"]
    assert fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()["total"] == 0


def test_an_invalid_body_is_reported_before_an_unresolvable_reference(fhir, uid):
    b = _bundle(uid, 200, bad=190)
    b["entry"][2]["resource"]["generalPractitioner"] = [{"reference": f"Practitioner?identifier={IDSYS}|none-{uid}"}]
    r = fhir.post("", json=b)
    assert r.status_code == 400, r.text
    assert "Bundle.entry[190]" in r.json()["issue"][0]["diagnostics"]
    b = _bundle(uid, 200)
    b["entry"][2]["resource"]["generalPractitioner"] = [{"reference": f"Practitioner?identifier={IDSYS}|none-{uid}"}]
    r = fhir.post("", json=b)
    assert r.status_code == 412, r.text
    assert "Conditional reference" in r.json()["issue"][0]["diagnostics"]


def test_an_invalid_body_is_reported_before_a_failed_version_check_and_nothing_stays(fhir, uid):
    # The entries are written while the helper still checks its part; an invalid body it finds
    # still wins over a later entry's failure, and the writes already made are rolled back.
    existing = fhir.post("Patient", json=patient(uid, ident=f"{uid}-existing", family=f"Old{uid}"))
    assert existing.status_code == 201, existing.text
    pid = existing.json()["id"]
    for bad, want_status, want_text in ((177, 400, "Bundle.entry[177]"), (None, 412, "Bundle.entry[200]")):
        b = _bundle(uid, 200, bad=bad)
        changed = patient(uid, ident=f"{uid}-existing", family=f"New{uid}")
        changed["id"] = pid
        b["entry"].append({"resource": changed, "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'}})
        r = fhir.post("", json=b)
        assert r.status_code == want_status, r.text
        assert want_text in r.json()["issue"][0]["diagnostics"]
        assert fhir.get("Patient", params={"family:exact": f"Big{uid}", "_summary": "count"}).json()["total"] == 0
        assert fhir.get(f"Patient/{pid}").json()["name"][0]["family"] == f"Old{uid}"
