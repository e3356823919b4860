"""Validation of a large Bundle on two cores.

Validating every entry (fhir.resources and the R4 walker) is the costliest step of a big
transaction or batch, and it is pure: a verdict depends on the resource's JSON alone. A serving
or loading process therefore keeps one helper process, forked on first need so it inherits the
already imported model classes, and hands it the second half of a large Bundle's entries as JSON
bytes while it checks the first half itself. The helper answers only which of its entries failed;
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
        bad: list[int] = []
        for i, (rtype, resource, url_id) in enumerate(orjson.loads(msg)):
            try:
                ix.check_body(rtype, resource, url_id)
            except Exception:  # the parent re-checks it and reports whatever it is
                bad.append(i)
        conn.send_bytes(orjson.dumps(bad))


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


class Split:
    """Check the first part of `jobs` here while the helper checks the rest:

        with Split(jobs, check, here=0.5) as split:
            bad = split.here()     # failing positions in the first part, checked now
            ...                    # other work, while the helper goes on
            bad = split.there()    # failing positions in the rest (waits for the helper)

    Without a helper (a short list, switched off, busy, none can be forked) here() checks every
    job and there() finds nothing more. The helper checks a copy: job(pos) gives a job of the
    rest as it was sent, to re-run `check` on for the error itself even if the caller has since
    changed the resources."""

    def __init__(self, jobs: Sequence[Job], check: Check, here: float = 0.5) -> None:
        self.jobs, self.check, self.share = jobs, check, here
        self.cut = len(jobs)
        self.sent: bytes | None = None
        self._pending = self._locked = False

    def __enter__(self) -> Split:
        if len(self.jobs) >= MIN_ENTRIES and enabled() and _HELPER.lock.acquire(blocking=False):
            self._locked = True
            cut = max(1, min(len(self.jobs) - 1, int(len(self.jobs) * self.share)))
            self.sent = _send(self.jobs[cut:])
            if self.sent is not None:
                self.cut, self._pending = cut, True
        return self

    def here(self) -> list[int]:
        return _local(self.jobs[: self.cut], 0, self.check)

    def there(self) -> list[int]:
        if self.sent is None:
            return []
        got = _receive() if self._pending else None
        self._pending = False
        if got is None:  # the helper was lost: check the rest here, from the copy sent
            got = _local([self.job(self.cut + i) for i in range(len(self.jobs) - self.cut)], 0, self.check)
        return [self.cut + i for i in got]

    def job(self, pos: int) -> Job:
        if pos < self.cut or self.sent is None:
            return self.jobs[pos]
        rtype, resource, url_id = orjson.loads(self.sent)[pos - self.cut]
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
        return split.here() + split.there()


def _local(jobs: Sequence[Job], offset: int, check: Check) -> list[int]:
    from app.errors import FhirError

    bad: list[int] = []
    for i, (rtype, resource, url_id) in enumerate(jobs):
        try:
            check(rtype, resource, url_id)
        except FhirError:
            bad.append(offset + i)
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


def _receive() -> list[int] | None:
    conn = _HELPER.conn
    if conn is None:
        return None
    try:
        got = orjson.loads(conn.recv_bytes())
    except (EOFError, OSError, orjson.JSONDecodeError):
        _HELPER.close()
        return None
    return [int(i) for i in got]


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
