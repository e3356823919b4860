"""All 32 shared Synthea bundles load over HTTP into a real server with zero errors, and search
answers match counts computed independently from the bundle files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from conftest import Server, synthea_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HDR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _codes(concept: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])}


class Expected:
    """What the files say, computed without the server."""

    def __init__(self, files: list[Path]) -> None:
        self.patients: dict[str, dict[str, Any]] = {}  # fullUrl/identifier key -> facts
        self.totals: Counter[str] = Counter()
        for f in files:
            bundle = orjson.loads(f.read_bytes())
            entries = bundle.get("entry", [])
            patient = next((e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient"), None)
            for e in entries:
                self.totals[e["resource"]["resourceType"]] += 1
            if patient is None:
                continue
            facts: Counter[str] = Counter()
            for e in entries:
                r = e["resource"]
                if r["resourceType"] == "Observation":
                    for s, c in _codes(r.get("code")):
                        facts[f"obs:{s}|{c}"] += 1
                    comp = {cc for comp in r.get("component", []) for cc in _codes(comp.get("code"))}
                    for s, c in comp:
                        facts[f"comp:{s}|{c}"] += 1
                    facts["obs"] += 1
                elif r["resourceType"] == "Condition":
                    for s, c in _codes(r.get("code")):
                        facts[f"cond:{s}|{c}"] += 1
            ident = next(i for i in patient["identifier"] if i.get("system") == "https://github.com/synthetichealth/synthea")
            self.patients[ident["value"]] = {"facts": facts, "family": patient["name"][0]["family"],
                                             "birthDate": patient["birthDate"], "gender": patient["gender"]}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("synthea")
    srv = Server(tmp, "synthea", workers=1)
    files = synthea_files()
    session = srv.session()
    errors = []
    for f in files:
        r = session.post(srv.base, data=f.read_bytes(), headers=HDR, timeout=600)
        if r.status_code != 200:
            errors.append((f.name, r.status_code, r.text[:500]))
            continue
        bad = [e["response"] for e in r.json()["entry"] if not e["response"]["status"].startswith(("200", "201"))]
        if bad:
            errors.append((f.name, bad[:2]))
    yield srv, Expected(files), errors, session
    srv.stop()


def _count(session: requests.Session, url: str, **params: str) -> int:
    params["_summary"] = "count"
    r = session.get(url, params=params, headers=HDR, timeout=60)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def _pid(session: requests.Session, base: str, ident: str) -> str:
    r = session.get(f"{base}/Patient", params={"identifier": f"https://github.com/synthetichealth/synthea|{ident}"}, headers=HDR, timeout=60)
    entries = r.json()["entry"]
    assert len(entries) == 1
    return str(entries[0]["resource"]["id"])


def test_every_bundle_loads_without_error(loaded: Any) -> None:
    _, expected, errors, _ = loaded
    assert errors == []
    assert len(expected.patients) == 30


def test_type_totals_match_the_files(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for rtype in ("Patient", "Observation", "Condition", "Encounter", "Claim", "Immunization"):
        assert _count(s, f"{srv.base}/{rtype}") == expected.totals[rtype], rtype


@pytest.mark.parametrize("code", ["http://loinc.org|4548-4", "http://loinc.org|2093-3", "http://loinc.org|39156-5"])
def test_observations_by_code_per_patient(loaded: Any, code: str) -> None:
    srv, expected, _, s = loaded
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        assert _count(s, f"{srv.base}/Observation", patient=pid, code=code) == p["facts"][f"obs:{code}"], ident


def test_conditions_by_snomed_per_patient(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        code = "http://snomed.info/sct|44054006"
        assert _count(s, f"{srv.base}/Condition", subject=f"Patient/{pid}", code=code) == p["facts"][f"cond:{code}"]


def test_blood_pressure_components_found_by_component_and_combo_code(loaded: Any) -> None:
    srv, expected, _, s = loaded
    total = 0
    for ident, p in expected.patients.items():
        pid = _pid(s, srv.base, ident)
        want = p["facts"]["comp:http://loinc.org|8480-6"]
        total += want
        assert _count(s, f"{srv.base}/Observation", patient=pid, **{"component-code": "http://loinc.org|8480-6"}) == want
        assert _count(s, f"{srv.base}/Observation", patient=pid, **{"combo-code": "8480-6"}) == want
        assert _count(s, f"{srv.base}/Observation", patient=pid, code="8480-6") == p["facts"]["obs:http://loinc.org|8480-6"]
    assert total > 100


def test_chained_search_by_patient_family_matches(loaded: Any) -> None:
    srv, expected, _, s = loaded
    for ident, p in list(expected.patients.items())[:8]:
        families = [q for q in expected.patients.values() if q["family"] == p["family"]]
        want = sum(q["facts"]["obs"] for q in families)
        got = _count(s, f"{srv.base}/Observation", **{"patient.family:exact": p["family"]})
        assert got == want, (ident, p["family"])


def test_birthdate_and_gender(loaded: Any) -> None:
    srv, expected, _, s = loaded
    want = sum(1 for p in expected.patients.values() if p["birthDate"] < "1960-01-01" and p["gender"] == "female")
    assert _count(s, f"{srv.base}/Patient", birthdate="lt1960-01-01", gender="female") == want
    want = sum(1 for p in expected.patients.values() if p["birthDate"].startswith("1990") or p["birthDate"] > "1990")
    assert _count(s, f"{srv.base}/Patient", birthdate="ge1990") == want


def test_loading_the_practitioner_batch_twice_creates_no_second_practitioner(loaded: Any) -> None:
    srv, _, _, s = loaded
    before = _count(s, f"{srv.base}/Practitioner")
    f = next(f for f in synthea_files() if f.name.startswith("0-practitioner"))
    bundle = orjson.loads(f.read_bytes())
    r = s.post(srv.base, data=f.read_bytes(), headers=HDR, timeout=600)
    assert r.status_code == 200
    conditional = [resp for e, resp in zip(bundle["entry"], r.json()["entry"], strict=True) if e["request"].get("ifNoneExist")]
    assert len(conditional) > 100
    assert {resp["response"]["status"] for resp in conditional} == {"200 OK"}
    assert _count(s, f"{srv.base}/Practitioner") == before
