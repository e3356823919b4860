"""Micro-benchmarks of the pure write-path parts, over all 32 Synthea bundles:
FHIRPath evaluation, the indexer, the validator's walker and fhir.resources.

    .venv/bin/python bench/micro.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import synthea_files  # noqa: E402


def main() -> None:
    from app.fhir.resources import validate, walk
    from app.store.fhirpath import Node, compile_path
    from app.store.indexer import index_resource
    from app.store.registry import PROFILES

    resources = [e["resource"] for f in synthea_files() for e in orjson.loads(f.read_bytes()).get("entry", [])]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    table = orjson.loads((PROFILES / "search_parameters.json").read_bytes())["params"]["Observation"]
    fns = [compile_path(p["expression"], "Observation").fn for p in table.values() if p.get("expression")]

    def per(label: str, n: int, t: float) -> None:
        print(f"{label:48s} {t / n * 1e6:8.1f} us   ({n / t:9.0f} /s)")

    t = time.perf_counter()
    for o in observations:
        focus = [Node(o, "Observation")]
        for fn in fns:
            fn(focus, o)
    per(f"FHIRPath, per expression per Observation ({len(fns)})", len(fns) * len(observations), time.perf_counter() - t)
    for r in resources[:500]:
        index_resource(r)
    t = time.perf_counter()
    for r in resources:
        index_resource(r)
    per("index_resource, per resource", len(resources), time.perf_counter() - t)
    t = time.perf_counter()
    for r in resources:
        walk(r)
    per("validator walker (R4 definitions), per resource", len(resources), time.perf_counter() - t)
    for r in resources[:2000]:
        validate(r)
    t = time.perf_counter()
    for r in resources:
        validate(r)
    per("validate (walker + fhir.resources R4B), per resource", len(resources), time.perf_counter() - t)


if __name__ == "__main__":
    main()
