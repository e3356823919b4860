"""REST benchmark over HTTP: gunicorn (one sync worker) pinned to core 0, wrk pinned to core 1.

    .venv/bin/python bench/rest.py [--db URL] [--seconds 10] [--workers 1] [--threads 1]

Loads the shared Synthea bundles into a fresh database, then measures `GET Patient/{id}` and
`GET Observation?patient=..&code=..` at 16 connections (throughput) and 1 connection (latency).
Needs Debian's wrk and taskset.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Server, database_url, synthea_files  # noqa: E402

LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %d %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, summary.errors.status, summary.requests))
end
"""


def wrk(url: str, conns: int, seconds: int, script: Path, headers: dict[str, str] | None = None
        ) -> tuple[float, float, float, int]:
    extra = [x for k, v in (headers or {}).items() for x in ("-H", f"{k}: {v}")]
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(script),
           "-H", "Accept: application/fhir+json", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+)", out)
    assert m, out
    return float(m[1]), float(m[2]), float(m[3]), int(m[4])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="per worker; 1 = gunicorn's sync worker (no keep-alive)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp())
    if args.db:
        import conftest

        conftest.PG_URL = args.db
    url = database_url(tmp, "rest")
    env = dict(os.environ, FHIRTWIN_INSTANCE=str(tmp), DATABASE_URL=url)
    files = [str(f) for f in synthea_files()]
    subprocess.run([sys.executable, "-m", "app.cli", "load", *files], cwd=ROOT, env=env, check=True,
                   stderr=subprocess.DEVNULL)
    srv = Server(tmp, "rest_server", workers=args.workers,
                 extra_env={"DATABASE_URL": url, "FHIRTWIN_THREADS": str(args.threads)})
    try:
        subprocess.run(["taskset", "-acp", "0", str(srv.proc.pid)], check=True, capture_output=True)
        for child in subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split():
            subprocess.run(["taskset", "-acp", "0", child], check=True, capture_output=True)
        s = srv.session()
        obs = s.get(f"{srv.base}/Observation", params={"code": "http://loinc.org|4548-4", "_count": 1}).json()
        subject = obs["entry"][0]["resource"]["subject"]["reference"]
        pid = subject.split("/")[-1]
        script = tmp / "report.lua"
        script.write_text(LUA)
        targets = {
            "read Patient/{id}": f"{srv.base}/Patient/{pid}",
            "search Observation?patient&code": f"{srv.base}/Observation?patient={pid}&code=http://loinc.org|4548-4",
        }
        kind = "PostgreSQL" if args.db else "SQLite"
        print(f"{kind}, {args.workers} worker(s) x {args.threads} thread(s) on core 0, wrk on core 1, "
              f"{args.seconds} s each")
        for name, u in targets.items():
            assert s.get(u).status_code == 200
            rps, _, _, err16 = wrk(u, 16, args.seconds, script, srv.headers())
            _, p50, p95, err1 = wrk(u, 1, args.seconds, script, srv.headers())
            print(f"{name:34s} {rps:7.0f} req/s (c=16)   p50 {p50:5.2f} ms  p95 {p95:5.2f} ms (c=1)   errors {err16 + err1}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
