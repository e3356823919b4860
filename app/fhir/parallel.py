"""Validation of a large Bundle on two cores.

Validating every entry (fhir.resources and the R4 walker) is the costliest step of a big
transaction or batch, and it is pure: a verdict depends on the resource's JSON alone. A serving
or loading process therefore keeps one helper process, forked on first need so it inherits the
already imported model classes, and hands it part of a large Bundle's entries as JSON bytes
while it checks the rest itself and goes on with other work (a Balance learns how large a part
keeps both busy). The helper answers only which of its entries failed;
the process re-checks the first failing one itself, so the OperationOutcome is exactly the one a
serial check gives. Anything unusual (no helper can be forked, the helper died, the JSON will not
serialise) falls back to checking locally, so the helper changes speed, never verdicts.

`FHIRTWIN_VALIDATION_HELPER=0` turns it off (one core per request, as before).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson

# Below this many resources the round trip (serialise, wake the helper) is not worth it.
MIN_ENTRIES = 64

Job = tuple[str, Any, str | None]  # (resource type, resource JSON, id the URL names)
Check = Callable[[str, Any, str | None], object]


def _serve(conn: Connection, parent_end: Connection) -> None:
    """The helper's loop: a list of jobs in, the positions of the failing ones out."""
    parent_end.close()  # so that the parent's death reaches this process as end-of-file
    # The parent's signal handlers (a gunicorn worker's, say) were inherited with the fork: a
    # SIGTERM must end this process, and Ctrl-C is the parent's to handle.
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import interactions as ix

    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        start = time.perf_counter()
        bad: list[int] = []
        for i, (rtype, resource, url_id) in enumerate(orjson.loads(msg)):
            try:
                ix.check_body(rtype, resource, url_id)
            except Exception:  # the parent re-checks it and reports whatever it is
                bad.append(i)
        # How long it took goes back too, for the parent's Balance.
        conn.send_bytes(orjson.dumps([time.perf_counter() - start, bad]))


class _Helper:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Connection | None = None
        self.proc: Any = None
        self.pid = 0  # the process that forked it (a forked server worker needs its own)

    def channel(self) -> Connection | None:
        if self.conn is not None and self.pid == os.getpid() and self.proc.is_alive():
            return self.conn
        self.close()
        # fork() of a process with other threads running may deadlock the child; a pool's worker
        # (fhirtwin load --jobs N, which uses the cores already) may not have children.
        if threading.active_count() > 1 or multiprocessing.current_process().daemon:
            return None
        ctx = multiprocessing.get_context("fork")
        mine, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, args=(theirs, mine), name="fhirtwin-validate", daemon=True)
        try:
            proc.start()
        except (OSError, AssertionError, ValueError):
            return None
        theirs.close()
        self.conn, self.proc, self.pid = mine, proc, os.getpid()
        return mine

    def close(self) -> None:
        if self.conn is not None and self.pid == os.getpid():
            self.conn.close()
        self.conn = self.proc = None


_HELPER = _Helper()


def enabled() -> bool:
    return os.environ.get("FHIRTWIN_VALIDATION_HELPER", "1") != "0" and (os.cpu_count() or 1) > 1


class Balance:
    """The share of a split list this process checks itself, learnt from the splits so far.

    A caller overlaps the helper's part with other work of its own (a transaction resolves and
    writes; a batch runs the entries the process checked). Both sides should finish together:
    with m and k the seconds per entry here and in the helper, and o the caller's other work
    per entry, the share h balances when h*m + o = (1 - h)*k, that is h = (k - o) / (m + k).
    Each split measures m, k and o and moves the share halfway there, so the share follows
    the machine (a busy core, a slower helper) instead of a constant tuned on one machine."""

    LOW, HIGH = 0.05, 0.95

    def __init__(self, share: float) -> None:
        self.share = share

    def learn(self, n_here: int, here_s: float, n_there: int, there_s: float, other_s: float) -> None:
        if n_here <= 0 or n_there <= 0 or here_s <= 0 or there_s <= 0:
            return
        m, k = here_s / n_here, there_s / n_there
        o = max(0.0, other_s) / (n_here + n_there)
        target = min(self.HIGH, max(self.LOW, (k - o) / (m + k)))
        self.share = (self.share + target) / 2


class Split:
    """Check part of `jobs` here while the helper checks the rest:

        with Split(jobs, check, here=0.5) as split:
            bad = split.here()     # failing positions of this process's part, checked now
            ...                    # other work, while the helper goes on
            bad = split.there()    # failing positions of the helper's part (waits for it)

    The helper's part is the tail of the list (from position `first_there` on), or with
    `spread` every so many jobs across the list, so that both parts hold the same mix of
    resources and the time per job here and there compare. Without a helper (a short list,
    switched off, busy, none can be forked) here() checks every job and there() finds nothing
    more. The helper checks a copy: job(pos) gives a job of its part as it was sent, to re-run
    `check` on for the error itself even if the caller has since changed the resources. `here`
    is the share checked here, or a Balance that learns it from the time each side took and the
    caller's own work between here() and there()."""

    def __init__(self, jobs: Sequence[Job], check: Check, here: float | Balance = 0.5, *, spread: bool = False) -> None:
        self.jobs, self.check, self.spread = jobs, check, spread
        self.balance = here if isinstance(here, Balance) else None
        self.share = here.share if isinstance(here, Balance) else here
        self.mine: Sequence[int] = range(len(jobs))
        self.theirs: Sequence[int] = ()
        self.sent: bytes | None = None
        self._sent_at: dict[int, int] = {}
        self._pending = self._locked = False
        self._here_s = 0.0
        self._here_end: float | None = None
        self._verdict: list[int] | None = None

    @property
    def first_there(self) -> int:
        """The first position whose verdict is the helper's (len(jobs) if none is)."""
        return self.theirs[0] if self.theirs else len(self.jobs)

    def __enter__(self) -> Split:
        n = len(self.jobs)
        if n >= MIN_ENTRIES and enabled() and _HELPER.lock.acquire(blocking=False):
            self._locked = True
            keep = max(1, min(n - 1, round(n * self.share)))
            if self.spread:  # `keep` positions spread evenly over the list stay here
                mine = sorted({(i * n) // keep for i in range(keep)})
                taken = set(mine)
                theirs: Sequence[int] = [i for i in range(n) if i not in taken]
            else:
                mine, theirs = list(range(keep)), range(keep, n)
            self.sent = _send([self.jobs[i] for i in theirs])
            if self.sent is not None:
                self.mine, self.theirs, self._pending = mine, theirs, True
        return self

    def here(self) -> list[int]:
        start = time.perf_counter()
        bad = _local([self.jobs[i] for i in self.mine], self.check)
        self._here_end = time.perf_counter()
        self._here_s = self._here_end - start
        return [self.mine[i] for i in bad]

    def there(self) -> list[int]:
        if self.sent is None:
            return []
        if self._verdict is None:
            asked = time.perf_counter()
            got = _receive() if self._pending else None
            self._pending = False
            if got is None:  # the helper was lost: check its part here, from the copy sent
                copies = [(rtype, resource, url_id) for rtype, resource, url_id in orjson.loads(self.sent)]
                bad = _local(copies, self.check)
            else:
                took, bad = got
                if self.balance is not None and self._here_end is not None:
                    self.balance.learn(len(self.mine), self._here_s, len(self.theirs), took, asked - self._here_end)
            self._verdict = [self.theirs[i] for i in bad]
        return list(self._verdict)  # asked again, the same answer

    def job(self, pos: int) -> Job:
        if self.sent is None:
            return self.jobs[pos]
        if not self._sent_at:
            self._sent_at = {p: i for i, p in enumerate(self.theirs)}
        at = self._sent_at.get(pos)
        if at is None:
            return self.jobs[pos]
        rtype, resource, url_id = orjson.loads(self.sent)[at]
        return rtype, resource, url_id

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending:
                _receive()  # drained, so the next request starts clean
        finally:
            self._pending = False
            if self._locked:
                self._locked = False
                _HELPER.lock.release()


def failing(jobs: Sequence[Job], check: Check) -> list[int]:
    """The positions (ascending) of the jobs whose check raises a FhirError, half of a long list
    checked by the helper. Positions the helper reports are its verdict: re-run `check` on
    one to get the error itself."""
    with Split(jobs, check) as split:
        return sorted(split.here() + split.there())


def _local(jobs: Sequence[Job], check: Check) -> list[int]:
    from app.errors import FhirError

    bad: list[int] = []
    for i, (rtype, resource, url_id) in enumerate(jobs):
        try:
            check(rtype, resource, url_id)
        except FhirError:
            bad.append(i)
    return bad


def _send(jobs: Sequence[Job]) -> bytes | None:
    conn = _HELPER.channel()
    if conn is None:
        return None
    try:
        payload = orjson.dumps(list(jobs))
        conn.send_bytes(payload)
    except (TypeError, orjson.JSONEncodeError, OSError):
        _HELPER.close()
        return None
    return payload


def _receive() -> tuple[float, list[int]] | None:
    """(seconds the helper took, failing positions), or None if the helper was lost."""
    conn = _HELPER.conn
    if conn is None:
        return None
    try:
        took, bad = orjson.loads(conn.recv_bytes())
    except (EOFError, OSError, orjson.JSONDecodeError, ValueError, TypeError):
        _HELPER.close()
        return None
    return float(took), [int(i) for i in bad]


def helper_cpu_seconds() -> float:
    """CPU time the helper process has used so far (Linux; 0.0 elsewhere): benchmarks add it to
    their own process's CPU time."""
    proc = _HELPER.proc
    if proc is None:
        return 0.0
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
