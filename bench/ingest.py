"""Ingest benchmark: the 32 shared Synthea bundles through POST /fhir (in process), against the
floor of parsing and validating the same resources with fhir.resources alone.

    .venv/bin/python bench/ingest.py                       # SQLite in a temp folder
    .venv/bin/python bench/ingest.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test

The ratio is also given from CPU time, pair by pair (adjacent floor and ingest runs), which a
noisy shared machine disturbs less than wall time. Both run under the collector settings of the serving process (app.tune_gc). Each figure is the median of --repeat runs (default 3); the floor's first run also pays the lazy
imports of the model classes, so later runs compare warm against warm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_app, synthea_files  # noqa: E402


def floor(files: list[Path]) -> tuple[int, float, float]:
    from fhir.resources.R4B import get_fhir_model_class

    n = 0
    t, c = time.perf_counter(), time.process_time()
    for f in files:
        for e in orjson.loads(f.read_bytes()).get("entry", []):
            r = e["resource"]
            get_fhir_model_class(r["resourceType"]).model_validate(r)
            n += 1
    return n, time.perf_counter() - t, time.process_time() - c


def ingest(files: list[Path]) -> tuple[int, float, float]:
    tmp = Path(tempfile.mkdtemp())
    app = make_app(tmp, f"bench{time.monotonic_ns()}")
    client = app.test_client()
    from app.auth import internal_token

    auth = {"Authorization": f"Bearer {internal_token(app, 'http://localhost/fhir')}"}
    from app.fhir.parallel import helper_cpu_seconds

    total = 0
    # CPU time counts the validation helper process too (app.fhir.parallel).
    t, c = time.perf_counter(), time.process_time() + helper_cpu_seconds()
    for f in files:
        r = client.post("/fhir", data=f.read_bytes(), headers={"Content-Type": "application/fhir+json", **auth})
        assert r.status_code == 200, r.get_data()[:500]
        total += len(r.get_json()["entry"])
    return total, time.perf_counter() - t, time.process_time() + helper_cpu_seconds() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = synthea_files()
    if args.db:
        import os

        os.environ["FHIRTWIN_TEST_DATABASE_URL"] = args.db
        import conftest

        conftest.PG_URL = args.db
    # The serving and loading processes tune the garbage collector (app.tune_gc); the floor runs
    # under the same settings so the ratio compares like with like.
    from app import tune_gc

    tune_gc()
    floors, runs, ratios = [], [], []
    n = total = 0
    for _ in range(args.repeat):
        n, tf, cf = floor(files)
        total, ti, ci = ingest(files)
        floors.append(tf)
        runs.append(ti)
        ratios.append(ci / cf)  # CPU time of each adjacent pair: steadier than wall time on a shared machine
    tf, ti = statistics.median(floors), statistics.median(runs)
    print(f"floor (orjson + fhir.resources R4B model_validate): {n} resources, median {tf:.2f} s = {n / tf:.0f} res/s "
          f"(runs: {', '.join(f'{x:.2f}' for x in floors)})")
    kind = "PostgreSQL" if args.db else "SQLite"
    print(f"ingest {kind}: {total} resources, median {ti:.2f} s = {total / ti:.0f} res/s "
          f"(runs: {', '.join(f'{x:.2f}' for x in runs)})")
    print(f"ingest / floor: {ti / tf:.2f}x by median wall time, {statistics.median(ratios):.2f}x by CPU time "
          f"(median of pairs: {', '.join(f'{x:.2f}' for x in ratios)})")

if __name__ == "__main__":
    main()
