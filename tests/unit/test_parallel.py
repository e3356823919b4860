"""app.fhir.parallel: a large list of resources is checked half by a helper process, with the
same verdicts as checking them one by one, and survives a helper that dies."""

from __future__ import annotations

import copy
import os

import orjson
import pytest
from conftest import synthea_files

from app.fhir import interactions as ix
from app.fhir import parallel


def _jobs() -> list[parallel.Job]:
    for path in synthea_files():
        resources = [e["resource"] for e in orjson.loads(path.read_bytes())["entry"]]
        if len(resources) >= 200:
            break
    resources = copy.deepcopy(resources[:200])
    # Spoil some in each half, in different ways.
    resources[3]["language"] = 5
    resources[len(resources) // 2 + 5]["notAnElement"] = True
    resources[-1]["id"] = "white space"
    return [(r["resourceType"], r, None) for r in resources]


def _serial(jobs: list[parallel.Job]) -> list[int]:
    bad = []
    for i, (rtype, res, url_id) in enumerate(jobs):
        try:
            ix.check_body(rtype, res, url_id)
        except Exception:
            bad.append(i)
    return bad


def test_the_helper_gives_the_serial_verdicts():
    jobs = _jobs()
    want = _serial(jobs)
    assert len(want) >= 3 and want[-1] == len(jobs) - 1
    assert parallel.failing(jobs, ix.check_body) == want
    assert parallel._HELPER.proc is not None and parallel._HELPER.proc.is_alive()


def test_a_dead_helper_is_replaced_and_nothing_is_lost():
    jobs = _jobs()
    want = _serial(jobs)
    parallel.failing(jobs, ix.check_body)
    old = parallel._HELPER.proc
    old.kill()
    old.join(5)
    assert parallel.failing(jobs, ix.check_body) == want
    assert parallel._HELPER.proc is not old and parallel._HELPER.proc.is_alive()


def test_small_lists_and_the_switch_stay_in_process(monkeypatch: pytest.MonkeyPatch):
    jobs = _jobs()
    want = _serial(jobs)
    parallel._HELPER.close()
    monkeypatch.setenv("FHIRTWIN_VALIDATION_HELPER", "0")
    assert parallel.failing(jobs, ix.check_body) == want
    assert parallel._HELPER.proc is None
    monkeypatch.delenv("FHIRTWIN_VALIDATION_HELPER")
    few = jobs[: parallel.MIN_ENTRIES - 1]
    assert parallel.failing(few, ix.check_body) == _serial(few)
    assert parallel._HELPER.proc is None


def test_the_helper_ends_with_its_parent_end():
    jobs = _jobs()
    parallel.failing(jobs, ix.check_body)
    proc = parallel._HELPER.proc
    parallel._HELPER.close()  # the pipe's last end in this process closes: the helper sees EOF
    proc.join(10)
    assert not proc.is_alive()
    assert os.getpid() != proc.pid
