"""Simulation benchmark (figures printed, nothing asserted). Targets from issue 4: pce-ascvd-10y over
10,000 patients in under 2 s, and one patient's cvd-microsim with 10,000 samples in under 100 ms.

    .venv/bin/python bench/simulate.py [--patients 10000] [--db URL]

1. The models alone: pce-ascvd-10y on 10,000 patients' inputs (one vectorised call), and cvd-microsim
   with 10,000 samples (baseline alone, and with three interventions plus their combination).
2. End to end, in process (Flask test client, SQLite by default): --patients light patients (Patient,
   total, HDL and LDL cholesterol, a blood-pressure panel, smoking status) in a Group; then
   `POST Group/{id}/$simulate` (pce-ascvd-10y, no persist) and `POST Patient/{id}/$simulate`
   (cvd-microsim, 10,000 samples, three interventions). Medians of several runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_app  # noqa: E402

from app.twin.models import get  # noqa: E402
from app.twin.simulate import microsim, parse_intervention  # noqa: E402

LOINC, UCUM, SNOMED = "http://loinc.org", "http://unitsofmeasure.org", "http://snomed.info/sct"
AS_OF = "2025-06-01T00:00:00Z"
WHAT_IFS = (("statin-high", None), ("bp-target", 130.0), ("smoking-cessation", None))


def median_ms(fn: Any, runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), times


def models_alone(n: int) -> None:
    pce = get("pce-ascvd-10y")
    assert pce is not None
    rng = np.random.default_rng(1)
    x = {"age": rng.uniform(40, 79, n), "female": rng.integers(0, 2, n).astype(float),
         "black": rng.integers(0, 2, n).astype(float), "tc": rng.uniform(130, 320, n), "hdl": rng.uniform(20, 100, n),
         "sbp": rng.uniform(90, 200, n), "bp_treated": rng.integers(0, 2, n).astype(float),
         "smoker": rng.integers(0, 2, n).astype(float), "diabetes": rng.integers(0, 2, n).astype(float),
         "ascvd": np.zeros(n)}
    ms, _ = median_ms(lambda: pce.risk(x), 20)
    print(f"pce-ascvd-10y alone, {n} patients in one call: median {ms:.2f} ms (20 runs)")
    one = {"age": 55.0, "female": 0.0, "black": 0.0, "tc": 213.0, "hdl": 50.0, "sbp": 150.0, "bp_treated": 0.0,
           "smoker": 1.0, "diabetes": 0.0, "ldl": 130.0}
    trends = {"sbp": 1.0, "tc": 2.0, "hdl": -0.5, "ldl": 2.0}
    ivs = [parse_intervention(c, t) for c, t in WHAT_IFS]
    for label, chosen in (("baseline only", []), ("3 interventions + combined", ivs)):
        ms, _ = median_ms(lambda chosen=chosen: microsim(pce, one, trends=trends, interventions=chosen,
                                                         samples=10_000, seed=1), 20)
        print(f"cvd-microsim alone, 10,000 samples, {label}: median {ms:.1f} ms (20 runs)")


def light_patient(i: int) -> list[dict[str, Any]]:
    pid = f"urn:uuid:{uuid.uuid4()}"
    rng = np.random.default_rng(i)
    when = "2025-05-01T09:00:00Z"

    def obs(code: str, **value: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": pid}, "effectiveDateTime": when, **value}

    def qty(v: float, unit: str) -> dict[str, Any]:
        return {"value": round(float(v), 1), "unit": unit, "system": UCUM, "code": unit}

    year = int(rng.integers(1946, 1985))
    resources = [
        {"resourceType": "Patient", "gender": "female" if i % 2 else "male", "birthDate": f"{year}-03-01"},
        obs("2093-3", valueQuantity=qty(rng.uniform(140, 300), "mg/dL")),
        obs("2085-9", valueQuantity=qty(rng.uniform(30, 90), "mg/dL")),
        obs("18262-6", valueQuantity=qty(rng.uniform(70, 190), "mg/dL")),
        obs("85354-9", component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": qty(rng.uniform(100, 180), "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": qty(rng.uniform(60, 100), "mm[Hg]")}]),
        obs("72166-2", valueCodeableConcept={"coding": [{"system": SNOMED, "code": "449868002" if i % 5 == 0 else "266919005"}]}),
    ]
    return [{"fullUrl": pid if r["resourceType"] == "Patient" else f"urn:uuid:{uuid.uuid4()}", "resource": r,
             "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]


def end_to_end(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    app = make_app(tmp, f"sim{time.monotonic_ns()}")
    client = app.test_client()
    from app.auth import internal_token

    h = {"Authorization": f"Bearer {internal_token(app, 'http://localhost/fhir')}",
         "Content-Type": "application/fhir+json"}
    members: list[str] = []
    t = time.perf_counter()
    for start in range(0, n, 500):
        entries = [e for i in range(start, min(n, start + 500)) for e in light_patient(i)]
        r = client.post("/fhir", data=orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
                        headers=h)
        assert r.status_code == 200, r.get_data()[:300]
        members += [e["response"]["location"].split("/_history")[0] for e in r.get_json()["entry"]
                    if e["response"]["location"].startswith("Patient/")]
    print(f"loaded {n} light patients ({6 * n} resources) in {time.perf_counter() - t:.1f} s")
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": m}} for m in members]}
    r = client.post("/fhir/Group", data=orjson.dumps(group), headers=h)
    gid = r.get_json()["id"]
    body = orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "model", "valueCode": "pce-ascvd-10y"}, {"name": "asOf", "valueDateTime": AS_OF}]})

    def group_run() -> None:
        r = client.post(f"/fhir/Group/{gid}/$simulate", data=body, headers=h)
        assert r.status_code == 200, r.get_data()[:300]

    ms, runs = median_ms(group_run, 3)
    out = client.post(f"/fhir/Group/{gid}/$simulate", data=body, headers=h).get_json()
    res = next(p for p in out["parameter"] if p["name"] == "result")
    evaluated = next(p["valueInteger"] for p in res["part"] if p["name"] == "evaluated")
    print(f"POST Group/$simulate pce-ascvd-10y, {n} members ({evaluated} evaluated): median {ms:.0f} ms "
          f"(runs: {', '.join(f'{x:.0f}' for x in runs)})")
    ivs = [{"name": "intervention", "valueCode": "statin-high"},
           {"name": "intervention", "part": [{"name": "target", "valueQuantity": {"value": 130, "unit": "mm[Hg]",
                                                                                  "system": UCUM, "code": "mm[Hg]"}}]},
           {"name": "intervention", "valueCode": "smoking-cessation"}]
    one = orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "model", "valueCode": "cvd-microsim"}, {"name": "asOf", "valueDateTime": AS_OF},
        {"name": "samples", "valueInteger": 10_000}, {"name": "seed", "valueInteger": 1}]})
    both = orjson.loads(one)
    both["parameter"] += ivs
    pid = members[0].split("/")[1]
    for label, payload in (("baseline only", one), ("3 interventions + combined", orjson.dumps(both))):
        def patient_run(payload: bytes = payload) -> None:
            r = client.post(f"/fhir/Patient/{pid}/$simulate", data=payload, headers=h)
            assert r.status_code == 200, r.get_data()[:300]

        ms, _ = median_ms(patient_run, 10)
        print(f"POST Patient/$simulate cvd-microsim, 10,000 samples, {label}: median {ms:.1f} ms (10 runs)")
    app.extensions["fhirtwin"].db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--db", default="")
    args = ap.parse_args()
    if args.db:
        import conftest

        conftest.PG_URL = args.db
    from app import tune_gc

    tune_gc()
    models_alone(args.patients)
    end_to_end(args.patients)


if __name__ == "__main__":
    main()
