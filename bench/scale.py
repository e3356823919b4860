"""Scale benchmark: clone the shared Synthea patients (the server gives every POSTed resource a
fresh id) until the store holds about --resources resources, and measure the patient search
`Observation?patient=..&code=http://loinc.org|4548-4` and `Patient/{id}` reads at checkpoints.

    .venv/bin/python bench/scale.py --resources 1000000            # full Synthea clones
    .venv/bin/python bench/scale.py --light --patients 64000       # Patient + 5 Observations each

Loading goes through POST /fhir in process (the same code path as HTTP); latencies are measured
in process too (Flask test client, 200 random patients per checkpoint), so they exclude the
HTTP server's own cost. To measure the search over HTTP on the database a run left:

    .venv/bin/python bench/scale.py --existing /tmp/.../scale.sqlite --http 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_app, synthea_files  # noqa: E402

HDR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def light_bundle(n: int) -> bytes:
    entries: list[dict[str, Any]] = []
    for _ in range(n):
        pu = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": pu, "resource": {"resourceType": "Patient", "gender": random.choice(["male", "female"]),
                        "birthDate": f"19{random.randint(30, 99)}-0{random.randint(1, 9)}-1{random.randint(0, 9)}",
                        "name": [{"family": f"Fam{random.randint(0, 99999)}"}]},
                        "request": {"method": "POST", "url": "Patient"}})
        for code, value in (("4548-4", 5.0), ("2093-3", 180.0), ("39156-5", 25.0), ("8302-2", 170.0), ("29463-7", 70.0)):
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": pu},
                "effectiveDateTime": "2020-01-01", "valueQuantity": {"value": value + random.random(),
                                                                     "system": "http://unitsofmeasure.org", "code": "1"}},
                "request": {"method": "POST", "url": "Observation"}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def authorize(app: Any) -> None:
    """The in-process requests carry a system token, as an integration engine's would."""
    from app.auth import internal_token

    HDR["Authorization"] = f"Bearer {internal_token(app, 'http://localhost/fhir', lifetime_s=86_400)}"


def measure(client: Any, patient_ids: list[str], n: int = 200) -> tuple[float, float, float]:
    sample = random.sample(patient_ids, min(n, len(patient_ids)))
    search, read = [], []
    for pid in sample:
        t = time.perf_counter()
        r = client.get(f"/fhir/Observation?patient={pid}&code=http://loinc.org|4548-4", headers=HDR)
        search.append(time.perf_counter() - t)
        assert r.status_code == 200
        t = time.perf_counter()
        assert client.get(f"/fhir/Patient/{pid}", headers=HDR).status_code == 200
        read.append(time.perf_counter() - t)
    search.sort()
    return statistics.median(search) * 1e3, search[int(len(search) * 0.95) - 1] * 1e3, statistics.median(read) * 1e3


HTTP_LUA = """
wrk.headers["Authorization"] = "%s"
local ids = {%s}
local n = 0
request = function()
  n = n + 1
  local pid = ids[(n %% #ids) + 1]
  return wrk.format("GET", "/fhir/Observation?patient=" .. pid .. "&code=http://loinc.org%%7C4548-4")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%f %%f %%f %%d %%d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, summary.errors.status, summary.requests))
end
"""


def measure_http(path: Path, patients: list[str], seconds: int) -> None:
    """The patient search over HTTP: gunicorn (one sync worker) on core 0, wrk on core 1, each
    request for another of 500 random patients."""
    import shutil
    import subprocess

    from conftest import Server
    from rest import wrk

    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    srv = Server(path.parent, "scale_http", workers=1, extra_env={"DATABASE_URL": f"sqlite:///{path}"})
    try:
        for pid in [srv.proc.pid, *map(int, subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True,
                                                            text=True).stdout.split())]:
            subprocess.run(["taskset", "-acp", "0", str(pid)], check=True, capture_output=True)
        script = path.parent / "scale.lua"
        sample = random.sample(patients, min(500, len(patients)))
        script.write_text(HTTP_LUA % (srv.headers()["Authorization"], ", ".join(f'"{p}"' for p in sample)))
        url = srv.base.removesuffix("/fhir")
        wrk(url, 1, 3, script)  # warm the page cache and the worker
        rps16, _, _, err16 = wrk(url, 16, seconds, script)
        _, p50, p95, err1 = wrk(url, 1, seconds, script)
        print(f"HTTP Observation?patient&code (500 random patients): {rps16:.0f} req/s (c=16), "
              f"p50 {p50:.2f} ms, p95 {p95:.2f} ms (c=1), errors {err16 + err1}")
    finally:
        srv.stop()


def measure_existing(path: Path, http_seconds: int = 0) -> None:
    from app import create_app
    from config.settings import TestConfig

    class Cfg(TestConfig):
        INSTANCE_DIR = path.parent
        DATABASE_URL = f"sqlite:///{path}"

    app = create_app(Cfg())
    app.extensions["fhirtwin"].db.create_all()
    authorize(app)
    with app.extensions["fhirtwin"].db.session() as conn:
        from sqlalchemy import text

        patients = [r[0] for r in conn.execute(text("SELECT rid FROM resource WHERE rtype = 'Patient'"))]
        total = conn.execute(text("SELECT count(*) FROM resource")).scalar_one()
    client = app.test_client()
    measure(client, patients, 50)  # warm the page cache
    p50, p95, rp50 = measure(client, patients)
    print(f"{len(patients):9d} {total:10d} {'-':>10} {p50:9.2f}ms {p95:5.2f}ms {rp50:7.2f}ms")
    if http_seconds:
        # The file was made with create_all (no migration history; newer tables were added above):
        # record the schema as current, so the server's start-up migration leaves it alone.
        from alembic import command

        from app.store.migrate import alembic_config

        command.stamp(alembic_config(f"sqlite:///{path}"), "head")
        app.extensions["fhirtwin"].db.engine.dispose()
        measure_http(path, patients, http_seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--patients", type=int, default=64_000)
    ap.add_argument("--db", default="")
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--existing", default="", help="measure only, on a SQLite file an earlier run left")
    ap.add_argument("--http", type=int, default=0, metavar="SECONDS",
                    help="with --existing: also measure the search over HTTP (gunicorn + wrk) for this long")
    args = ap.parse_args()
    random.seed(7)
    if args.existing:
        measure_existing(Path(args.existing), args.http)
        return
    tmp = Path(tempfile.mkdtemp())
    if args.db:
        import conftest

        conftest.PG_URL = args.db
    app = make_app(tmp, "scale")
    authorize(app)
    client = app.test_client()
    start = time.perf_counter()
    total, patients = 0, []
    files = synthea_files()
    infra = [f.read_bytes() for f in files if f.name.startswith("0-")]
    # Only the self-contained 2019 bundles are cloned: cloning their Organizations makes the
    # 2021 bundles' conditional references ambiguous (412), as it should.
    bundles = [f.read_bytes() for f in files if "smart-generated" in str(f)]
    for b in infra:
        total += len(client.post("/fhir", data=b, headers=HDR).get_json()["entry"])
    if args.light:
        checkpoints = [c for c in (1000, 4000, 16000, 64000) if c <= args.patients]
    else:
        checkpoints = [c for c in (10_000, 100_000, 300_000, 1_000_000) if c <= args.resources] or [args.resources]
    print(f"{'patients':>9} {'resources':>10} {'load res/s':>10} {'search p50':>11} {'p95':>7} {'read p50':>9}")
    i = 0
    t_load = 0.0
    while checkpoints and time.perf_counter() - start < args.max_seconds:
        body = light_bundle(250) if args.light else bundles[i % len(bundles)]
        i += 1
        t = time.perf_counter()
        r = client.post("/fhir", data=body, headers=HDR)
        t_load += time.perf_counter() - t
        assert r.status_code == 200, r.get_data()[:300]
        for e in r.get_json()["entry"]:
            loc = e["response"]["location"]
            if loc.startswith("Patient/"):
                patients.append(loc.split("/")[1])
            total += 1
        reached = len(patients) >= checkpoints[0] if args.light else total >= checkpoints[0]
        if reached:
            checkpoints.pop(0)
            p50, p95, rp50 = measure(client, patients)
            print(f"{len(patients):9d} {total:10d} {total / t_load:10.0f} {p50:9.2f}ms {p95:5.2f}ms {rp50:7.2f}ms", flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s; database in {tmp}")


if __name__ == "__main__":
    main()
