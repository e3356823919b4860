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


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_a_spread_split_gives_the_serial_verdicts(share: float):
    jobs = _jobs()
    want = _serial(jobs)
    with parallel.Split(jobs, ix.check_body, here=share, spread=True) as split:
        mine, theirs = list(split.mine), list(split.theirs)
        got = sorted(split.here() + split.there())
    assert got == want
    # Both parts together are every position once; the helper's part is spread, not a tail.
    assert sorted(mine + theirs) == list(range(len(jobs))) and not set(mine) & set(theirs)
    assert abs(len(mine) - share * len(jobs)) <= 1
    assert theirs[0] < len(jobs) // 2 < theirs[-1] and mine[0] == 0 and mine[-1] > len(jobs) // 2


def test_the_copy_sent_is_what_job_gives_back():
    jobs = _jobs()
    with parallel.Split(jobs, ix.check_body, here=0.5, spread=True) as split:
        pos = split.theirs[3]
        sent = copy.deepcopy(jobs[pos])
        jobs[pos][1]["id"] = "changed-after-sending"
        assert split.job(pos) == sent
        assert split.job(split.mine[0]) is jobs[split.mine[0]]
        split.here(), split.there()


def test_balance_moves_halfway_to_where_both_sides_finish_together():
    b = parallel.Balance(0.5)
    # 100 entries here at 1 ms, 100 there at 1 ms, and 0.05 s of other work (0.25 ms per entry):
    # balanced when h*1 + 0.25 = (1 - h)*1, h = 0.375; halfway from 0.5 is 0.4375.
    b.learn(100, 0.1, 100, 0.1, 0.05)
    assert b.share == pytest.approx(0.4375)
    # A slow helper (3 ms per entry, no other work): h = 3/4.
    b = parallel.Balance(0.5)
    for _ in range(30):
        b.learn(50, 0.05, 50, 0.15, 0.0)
    assert b.share == pytest.approx(0.75, abs=1e-6)
    # Other work larger than the helper's whole part: everything but the floor share goes there.
    b.learn(10, 0.01, 10, 0.01, 10.0)
    assert b.share < 0.75
    for _ in range(30):
        b.learn(10, 0.01, 10, 0.01, 10.0)
    assert b.share == pytest.approx(parallel.Balance.LOW, abs=1e-6)
    # Nothing measured, nothing learnt.
    b.learn(0, 0.0, 10, 0.01, 0.0)
    assert b.share == pytest.approx(parallel.Balance.LOW, abs=1e-6)


def test_a_split_with_a_balance_learns_from_the_helper():
    jobs = _jobs()
    b = parallel.Balance(0.5)
    with parallel.Split(jobs, ix.check_body, here=b, spread=True) as split:
        split.here()
        split.there()
    assert b.share != 0.5 and parallel.Balance.LOW <= b.share <= parallel.Balance.HIGH


def test_asking_the_helper_twice_gives_the_same_answer_without_checking_again():
    jobs = _jobs()
    want = _serial(jobs)
    calls = []

    def check(rtype, resource, url_id):
        calls.append(1)
        return ix.check_body(rtype, resource, url_id)

    with parallel.Split(jobs, check, here=0.3, spread=True) as split:
        mine = split.here()
        first, again = split.there(), split.there()
        # only this process's part was checked here: the helper's verdict is kept, not redone
        assert len(calls) == len(split.mine) < len(jobs)
    assert first == again and sorted(mine + first) == want
