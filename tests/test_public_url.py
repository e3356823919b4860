"""FHIRTWIN_PUBLIC_URL: behind a proxy, every URL the server writes uses the public base."""

from __future__ import annotations

from pathlib import Path

from conftest import inproc_client, make_app


def test_public_url_is_used_in_location_fullurl_and_links(tmp_path: Path) -> None:
    app = make_app(tmp_path, "public")
    app.config["PUBLIC_URL"] = "https://fhir.example.org/r4/"
    fhir = inproc_client(app)
    r = fhir.post("Patient", json={"resourceType": "Patient", "name": [{"family": "Proxy"}]})
    assert r.status_code == 201
    assert r.headers["Location"].startswith("https://fhir.example.org/r4/Patient/")
    bundle = fhir.get("Patient", params={"family": "Proxy"}).json()
    assert bundle["entry"][0]["fullUrl"].startswith("https://fhir.example.org/r4/Patient/")
    assert all(link["url"].startswith("https://fhir.example.org/r4/Patient?") for link in bundle["link"])
    # A search by the public absolute reference finds the resource too.
    pid = r.json()["id"]
    fhir.post("Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                   "subject": {"reference": f"Patient/{pid}"}})
    found = fhir.get("Observation", params={"subject": f"https://fhir.example.org/r4/Patient/{pid}"}).json()
    assert len(found["entry"]) == 1
    app.extensions["fhirtwin"].db.dispose()
