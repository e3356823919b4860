"""The validation helper of a real gunicorn worker (app.fhir.parallel): a large transaction is
split with it, a killed helper is replaced without a wrong answer, and the server still stops
cleanly (the helper must not keep a worker alive)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import Server

pytestmark = pytest.mark.e2e


def _bundle(tag: str, n: int, bad: int | None = None) -> dict:
    entries = []
    for i in range(n):
        p = {"resourceType": "Patient", "identifier": [{"system": "urn:test:helper", "value": f"{tag}-{i}"}],
             "name": [{"family": tag}], "gender": "bogus" if i == bad else "female"}
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": p, "request": {"method": "POST", "url": "Patient"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _count(srv: Server, s: requests.Session, tag: str) -> int:
    r = s.get(f"{srv.base}/Patient", params={"family:exact": tag, "_summary": "count"}, timeout=30)
    return int(r.json()["total"])


@pytest.mark.skipif(not Path("/proc/self/task").exists() or (os.cpu_count() or 1) < 2, reason="Linux, 2+ cores")
def test_helper_in_a_gunicorn_worker(tmp_path: Path) -> None:
    srv = Server(tmp_path, "helper", workers=1)
    try:
        s = srv.session()
        headers = {"Content-Type": "application/fhir+json"}
        tag = "H" + uuid.uuid4().hex[:10]
        r = s.post(srv.base, json=_bundle(tag, 300), headers=headers, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert _count(srv, s, tag) == 300
        (worker,) = _children(srv.proc.pid)
        helpers = _children(worker)
        assert len(helpers) == 1, "the worker should have forked its validation helper"

        r = s.post(srv.base, json=_bundle(tag + "x", 300, bad=290), headers=headers, timeout=120)
        assert r.status_code == 400 and "Bundle.entry[290]" in r.text, r.text[:500]
        assert _count(srv, s, tag + "x") == 0

        # A helper that dies is replaced; the answers stay right.
        os.kill(helpers[0], signal.SIGKILL)
        time.sleep(0.2)
        r = s.post(srv.base, json=_bundle(tag + "y", 300, bad=280), headers=headers, timeout=120)
        assert r.status_code == 400 and "Bundle.entry[280]" in r.text, r.text[:500]
        r = s.post(srv.base, json=_bundle(tag + "z", 300), headers=headers, timeout=120)
        assert r.status_code == 200
        assert _count(srv, s, tag + "z") == 300
        (helper,) = _children(worker)
        assert helper != helpers[0]
    finally:
        srv.proc.terminate()
        srv.proc.wait(20)  # raises if the worker hangs on its helper
        srv.stop()
    assert srv.proc.returncode == 0
    deadline = time.time() + 10
    while _alive(helper) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(helper), "the helper outlived its server"
