"""Races over real HTTP against a real multi-worker server process."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.e2e


def _patient(system: str, value: str) -> dict[str, object]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], "name": [{"family": value}]}


def test_concurrent_conditional_creates_make_one_resource(live_server) -> None:
    system, value = "urn:test:race", uuid.uuid4().hex
    headers = {"Content-Type": "application/fhir+json", "If-None-Exist": f"identifier={system}|{value}"}

    def create(_: int) -> int:
        r = live_server.session().post(f"{live_server.base}/Patient", json=_patient(system, value), headers=headers, timeout=60)
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert statuses.count(201) == 1, statuses
    assert statuses.count(200) == 7, statuses
    found = live_server.session().get(f"{live_server.base}/Patient", params={"identifier": f"{system}|{value}", "_total": "accurate"}, timeout=30).json()
    assert found["total"] == 1


def test_concurrent_updates_never_lose_a_version(live_server) -> None:
    pid = "race-" + uuid.uuid4().hex[:16]
    body = {"resourceType": "Patient", "id": pid, "active": True}
    r = live_server.session().put(f"{live_server.base}/Patient/{pid}", json=body, headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code == 201

    def update(i: int) -> str:
        b = dict(body, birthDate=f"19{10 + i}-01-01")
        resp = live_server.session().put(f"{live_server.base}/Patient/{pid}", json=b, headers={"Content-Type": "application/fhir+json"}, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.headers["ETag"]

    with ThreadPoolExecutor(8) as pool:
        etags = list(pool.map(update, range(16)))
    assert sorted(etags) == sorted({f'W/"{v}"' for v in range(2, 18)})
    hist = live_server.session().get(f"{live_server.base}/Patient/{pid}/_history", params={"_count": 100}, timeout=30).json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == [str(v) for v in range(17, 0, -1)]


def test_concurrent_conditional_transactions_make_one_resource(live_server) -> None:
    system, value = "urn:test:txrace", uuid.uuid4().hex

    def tx(_: int) -> int:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": _patient(system, value),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|{value}"},
        }]}
        return live_server.session().post(live_server.base, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60).status_code

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(tx, range(6))) == {200}
    found = live_server.session().get(f"{live_server.base}/Patient", params={"identifier": f"{system}|{value}", "_total": "accurate"}, timeout=30).json()
    assert found["total"] == 1


def test_concurrent_transactions_on_the_same_resources_in_opposite_order(live_server) -> None:
    ids = [f"lock-{uuid.uuid4().hex[:12]}" for _ in range(2)]

    def tx(i: int) -> int:
        order = ids if i % 2 else list(reversed(ids))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": pid, "birthDate": f"19{50 + i % 40}-01-01"},
             "request": {"method": "PUT", "url": f"Patient/{pid}"}} for pid in order]}
        return live_server.session().post(live_server.base, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(tx, range(24)))
    assert statuses == [200] * 24
    for pid in ids:
        r = live_server.session().get(f"{live_server.base}/Patient/{pid}", timeout=30)
        assert r.json()["meta"]["versionId"] == "24"
