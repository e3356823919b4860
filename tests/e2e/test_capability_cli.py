"""The CapabilityStatement through PyPI fhirclient's strict models, and the fhirtwin command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import ROOT, database_url, synthea_files

pytestmark = pytest.mark.e2e


def test_capability_statement_parses_with_fhirclient_strict_models(live_server) -> None:
    from fhirclient.models.capabilitystatement import CapabilityStatement

    doc = requests.get(f"{live_server.base}/metadata", headers={"Accept": "application/fhir+json"}, timeout=30).json()
    cs = CapabilityStatement(doc, strict=True)
    assert cs.fhirVersion == "4.0.1"
    rest = cs.rest[0]
    types = {r.type: r for r in rest.resource}
    assert len(types) >= 145
    obs = types["Observation"]
    assert {i.code for i in obs.interaction} >= {"read", "vread", "create", "update", "patch", "delete", "search-type"}
    params = {p.name: p.type for p in obs.searchParam}
    assert params["code"] == "token" and params["component-code-value-quantity"] == "composite"
    assert {i.code for i in rest.interaction} >= {"transaction", "batch"}


def test_fhirclient_searches_the_live_server(live_server) -> None:
    from fhirclient import client
    from fhirclient.models.patient import Patient

    family = "Fhirclient" + os.urandom(4).hex()
    r = live_server.session().post(f"{live_server.base}/Patient", json={"resourceType": "Patient", "name": [{"family": family}]},
                                   headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code == 201
    smart = client.FHIRClient(settings={"app_id": "fhirtwin-test", "api_base": live_server.base + "/"})
    smart.server.session.headers.update(live_server.headers())
    found = Patient.where(struct={"family:exact": family}).perform_resources(smart.server)
    assert [p.name[0].family for p in found] == [family]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_cli_db_init_and_load(tmp_path: Path) -> None:
    env = dict(os.environ, FHIRTWIN_INSTANCE=str(tmp_path), DATABASE_URL=database_url(tmp_path, "cli"))
    r = _cli(env, "db", "init")
    assert r.returncode == 0, r.stderr
    small = [f for f in synthea_files() if f.name.startswith("0-")]
    r = _cli(env, "load", *map(str, small))
    assert r.returncode == 0, r.stderr
    assert "resources/s" in r.stdout and f"from {len(small)}/{len(small)} files" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}}]}))
    r = _cli(env, "load", str(bad))
    assert r.returncode == 1
    assert "bad.json" in r.stderr and "Bundle.entry[0]" in r.stderr


def test_cli_parallel_load_matches_the_files(tmp_path: Path) -> None:
    """--jobs 2: batch Bundles first, transactions in two processes; every resource arrives once."""
    env = dict(os.environ, FHIRTWIN_INSTANCE=str(tmp_path), DATABASE_URL=database_url(tmp_path, "clij"))
    assert _cli(env, "db", "init").returncode == 0
    blaze = [f for f in synthea_files() if f.parent.name == "blaze-synthea-2.7"]
    patients = [f for f in blaze if not f.name.startswith("0-")][:4]
    # Patient bundles listed first: the loader must still run the batch Bundles they refer to first.
    chosen = patients + [f for f in blaze if f.name.startswith("0-")]
    r = _cli(env, "load", "--jobs", "2", *map(str, chosen))
    assert r.returncode == 0, r.stderr
    expected = sum(len(json.loads(f.read_text())["entry"]) for f in chosen)
    assert f"loaded {expected} resources from {len(chosen)}/{len(chosen)} files" in r.stdout
    want_obs = sum(1 for f in patients for e in json.loads(f.read_text())["entry"]
                   if e["resource"]["resourceType"] == "Observation")
    eng = sa.create_engine(env["DATABASE_URL"])
    with eng.connect() as c:
        got = c.execute(sa.text("SELECT count(*) FROM resource WHERE rtype = 'Observation' AND NOT deleted")).scalar()
    eng.dispose()
    assert got == want_obs


def test_cli_users_clients_and_demo_credentials_work_at_the_authorize_page(tmp_path: Path) -> None:
    from app import create_app
    from config.settings import TestConfig
    from tests.api.smart_flow import REDIRECT, Browser, exchange, log_in_and_approve
    from tests.conftest import Smart, inproc_client

    env = dict(os.environ, FHIRTWIN_INSTANCE=str(tmp_path), DATABASE_URL=database_url(tmp_path, "cliauth"))
    assert _cli(env, "db", "init").returncode == 0
    r = _cli(env, "users", "add", "--username", "nurse", "--password", "short", "--fhir-user", "Practitioner/p1")
    assert r.returncode == 2 and "8 characters" in r.stderr
    r = _cli(env, "users", "add", "--username", "nurse", "--password", "nurse-password", "--fhir-user", "Nurse/p1")
    assert r.returncode == 2 and "Type/id" in r.stderr
    r = _cli(env, "users", "add", "--username", "nurse", "--password", "nurse-password", "--fhir-user",
             "Practitioner/p1", "--name", "Nora Nurse")
    assert r.returncode == 0, r.stderr
    assert "nurse\tPractitioner/p1" in _cli(env, "users", "list").stdout
    r = _cli(env, "clients", "add", "--id", "cli-app", "--kind", "confidential-symmetric", "--redirect-uri", REDIRECT)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.split("client secret (shown once): ")[1].split()[0]
    r = _cli(env, "clients", "add", "--id", "cli-bad", "--kind", "public")
    assert r.returncode == 2 and "redirect URI" in r.stderr
    r = _cli(env, "demo")
    assert r.returncode == 0 and "demo-app" in r.stderr and "demo-clinician / fhirtwin-demo" in r.stderr

    class Cfg(TestConfig):
        INSTANCE_DIR = tmp_path
        DATABASE_URL = env["DATABASE_URL"]

    app = create_app(Cfg())
    try:
        smart = Smart(app, inproc_client(app, scope=None), inproc_client(app))
        flow = log_in_and_approve(smart, Browser(smart), "cli-app", "openid fhirUser user/*.rs", username="nurse",
                                  password="nurse-password")
        t = exchange(smart, flow, "cli-app", secret=secret)
        assert t.status_code == 200 and t.json()["scope"] == "openid fhirUser user/*.rs"
        fresh = Smart(app, inproc_client(app, scope=None), smart.admin)  # another browser: nobody logged in
        flow = log_in_and_approve(fresh, Browser(fresh), "demo-app", "openid fhirUser user/*.rs",
                                  username="demo-clinician", password="fhirtwin-demo",
                                  redirect_uri="http://127.0.0.1:9000/callback")
        assert exchange(fresh, flow, "demo-app", redirect_uri="http://127.0.0.1:9000/callback").status_code == 200
    finally:
        app.extensions["fhirtwin"].db.dispose()


def test_cli_twin_refresh_recomputes_facts_that_differ_from_the_code_lists(tmp_path: Path) -> None:
    """Facts computed under other code lists (emulated: one variable's rows dropped, another's
    values changed) are recomputed from the stored versions; only those resources are rewritten,
    and a second run finds nothing to do."""
    env = dict(os.environ, FHIRTWIN_INSTANCE=str(tmp_path), DATABASE_URL=database_url(tmp_path, "clitwin"))
    assert _cli(env, "db", "init").returncode == 0
    blaze = [f for f in synthea_files() if f.parent.name == "blaze-synthea-2.7"]
    chosen = [f for f in blaze if f.name.startswith("0-")] + [f for f in blaze if not f.name.startswith("0-")][:2]
    r = _cli(env, "load", *map(str, chosen))
    assert r.returncode == 0, r.stderr
    eng = sa.create_engine(env["DATABASE_URL"])
    facts = sa.text("SELECT res_pk, patient_id, variable, value, unit, t, t_end, version, flags FROM twin_fact")
    with eng.begin() as c:
        original = sorted(c.execute(facts).all())
        weights = c.execute(sa.text("SELECT count(DISTINCT res_pk) FROM twin_fact WHERE variable = 'weight'")).scalar()
        heights = c.execute(sa.text("SELECT count(DISTINCT res_pk) FROM twin_fact WHERE variable = 'height'")).scalar()
        assert weights and heights
        c.execute(sa.text("DELETE FROM twin_fact WHERE variable = 'weight'"))
        c.execute(sa.text("UPDATE twin_fact SET value = value + 1 WHERE variable = 'height'"))
    r = _cli(env, "twin", "refresh")
    assert r.returncode == 0, r.stderr
    assert "Observation: " in r.stdout and f"{weights + heights} with changed facts" in r.stdout, r.stdout
    assert "Patient: " in r.stdout and "Condition: " in r.stdout
    with eng.connect() as c:
        restored = sorted(c.execute(facts).all())
    eng.dispose()
    assert restored == original
    again = _cli(env, "twin", "refresh")
    assert again.returncode == 0 and "with changed facts" in again.stdout
    assert all(line.endswith(" 0 with changed facts") for line in again.stdout.splitlines() if "changed" in line)
