"""Scale benchmark: clone the shared Synthea patients (the server gives every POSTed resource a
fresh id) until the store holds about --resources resources, and measure the patient search
`Observation?patient=..&code=http://loinc.org|4548-4` and `Patient/{id}` reads at checkpoints.

    .venv/bin/python bench/scale.py --resources 1000000            # full Synthea clones
    .venv/bin/python bench/scale.py --light --patients 64000       # Patient + 5 Observations each

Loading goes through POST /fhir in process (the same code path as HTTP); latencies are measured
in process too (Flask test client, 200 random patients per checkpoint), so they exclude the
HTTP server's own cost (see bench/rest.py for that).
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


def measure_existing(path: Path) -> None:
    from app import create_app
    from config.settings import TestConfig

    class Cfg(TestConfig):
        INSTANCE_DIR = path.parent
        DATABASE_URL = f"sqlite:///{path}"

    app = create_app(Cfg())
    with app.extensions["fhirtwin"].db.session() as conn:
        from sqlalchemy import text

        patients = [r[0] for r in conn.execute(text("SELECT rid FROM resource WHERE rtype = 'Patient'"))]
        total = conn.execute(text("SELECT count(*) FROM resource")).scalar_one()
    client = app.test_client()
    measure(client, patients, 50)  # warm the page cache
    p50, p95, rp50 = measure(client, patients)
    print(f"{len(patients):9d} {total:10d} {'-':>10} {p50:9.2f}ms {p95:5.2f}ms {rp50:7.2f}ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--patients", type=int, default=64_000)
    ap.add_argument("--db", default="")
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--existing", default="", help="measure only, on a SQLite file an earlier run left")
    args = ap.parse_args()
    random.seed(7)
    if args.existing:
        measure_existing(Path(args.existing))
        return
    tmp = Path(tempfile.mkdtemp())
    if args.db:
        import conftest

        conftest.PG_URL = args.db
    app = make_app(tmp, "scale")
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
