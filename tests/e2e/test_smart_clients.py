"""SMART App Launch with the two real client libraries, against a real server process.

- PyPI `fhirclient` 4.4.0 (the Python SMART client): it discovers the endpoints from /metadata,
  builds the authorize URL (PKCE S256), and after the server's sign-in pages (driven here with
  requests, the way a browser submits the forms) exchanges the code, reads through its strict
  models and refreshes.
- npm `fhirclient` 2.6.3 (the SMART JS client) in headless Chromium, driven by playwright-core
  (tests/e2e/js/drive.js): a small static app on another port (tests/e2e/js/launch.html and
  index.html), so discovery, the token requests and the FHIR reads are real cross-origin
  fetches (CORS). EHR launch (a launch bound to a patient: no picker) and standalone launch
  (the patient picker).

The browser tests need node/npm, Chromium at /usr/bin/chromium and the npm packages of
tests/e2e/js (installed here with `npm ci` when node_modules is missing); they are skipped, with
the reason, when one of these cannot be had. FHIRTWIN_INSTALL_BROWSER=1 lets the set-up install
Debian's chromium with apt-get when it is missing (.ci/run does that before the suite).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from conftest import Server, free_port

from app.auth.clients import add_user, register_client
from tests.api.smart_flow import Form, forms

pytestmark = pytest.mark.e2e

JS = Path(__file__).resolve().parent / "js"
CHROMIUM = os.environ.get("FHIRTWIN_CHROMIUM", "/usr/bin/chromium")  # Debian's package
PASSWORD = "correct-horse-battery-staple"
PY_REDIRECT = "https://py-app.example.org/callback"
HTTP_TIMEOUT = 30  # seconds, every request the tests make themselves
BROWSER_TIMEOUT_MS = 30_000  # drive.js: the whole launch in the browser
BROWSER_RUN_TIMEOUT = 90  # seconds, the node process (Chromium start included)


# ----------------------------------------------------------------------------- the server and its data

@dataclass
class World:
    """A server of this module's own, with two patients (the one the tests pick sorts last, so a
    picker that ignored the choice would be caught), a practitioner user, an encounter and an
    observation of the picked patient."""

    srv: Server
    patient: str = ""
    other: str = ""
    practitioner: str = ""
    encounter: str = ""
    observation: str = ""
    doctor: str = ""
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def root(self) -> str:
        return self.srv.base.removesuffix("/fhir")

    def create(self, body: dict[str, Any]) -> str:
        r = requests.post(f"{self.srv.base}/{body['resourceType']}", json=body, timeout=HTTP_TIMEOUT,
                          headers={**self.srv.headers(), "Content-Type": "application/fhir+json"})
        assert r.status_code == 201, f"creating a {body['resourceType']}: {r.status_code} {r.text[:1000]}"
        return str(r.json()["id"])

    def log_tail(self, n: int = 4000) -> str:
        self.srv.log.flush()
        path = Path(self.srv.env["FHIRTWIN_INSTANCE"]) / "smartclients-server.log"
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError as e:
            return f"(no server log: {e})"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = Server(tmp_path_factory.mktemp("smartclients"), "smartclients")
    try:
        w = World(srv)
        w.other = w.create({"resourceType": "Patient", "name": [{"family": "Aaberg", "given": ["Alma"]}],
                            "birthDate": "1950-05-05"})
        w.patient = w.create({"resourceType": "Patient", "name": [{"family": "Zylstra", "given": ["Zoe"]}],
                              "gender": "female", "birthDate": "1984-03-07"})
        w.practitioner = w.create({"resourceType": "Practitioner", "name": [{"family": "Quinn", "given": ["Pat"]}]})
        w.encounter = w.create({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{w.patient}"}})
        w.observation = w.create({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{w.patient}"},
            "encounter": {"reference": f"Encounter/{w.encounter}"},
            "effectiveDateTime": "2024-01-02T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
        w.doctor = f"dr-{w.tag}"
        add_user(srv.app(), username=w.doctor, password=PASSWORD, fhir_user=f"Practitioner/{w.practitioner}",
                 name="Dr Pat Quinn")
        yield w
    finally:
        srv.stop()


def register(w: World, kind: str, redirect_uri: str, launch_uri: str | None = None,
             cid: str | None = None) -> tuple[str, str | None]:
    cid = cid or f"{kind.split('-')[0]}-{uuid.uuid4().hex[:10]}"
    _, secret = register_client(w.srv.app(), client_id=cid, kind=kind, name=f"Test app {cid}",
                                redirect_uris=[redirect_uri], launch_uri=launch_uri)
    return cid, secret


# ----------------------------------------------------------------------------- PyPI fhirclient 4.4.0

class FormDriver:
    """A person at a browser on the server's sign-in pages: submits each page's form with its own
    hidden fields (request, csrf, step) and the values a person would enter, follows the server's
    own redirects, and stops at the redirect to the app."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.session = requests.Session()
        self.pages: list[str] = []

    def run(self, url: str, *, redirect_uri: str, patient: str | None = None) -> str:
        r = self.session.get(url, headers={"Accept": "text/html"}, allow_redirects=False, timeout=HTTP_TIMEOUT)
        for _ in range(8):
            if r.status_code in (301, 302, 303, 307):
                location = urljoin(r.url, r.headers["Location"])
                if location.startswith(redirect_uri):
                    return location
                r = self.session.get(location, headers={"Accept": "text/html"}, allow_redirects=False,
                                     timeout=HTTP_TIMEOUT)
                continue
            assert r.status_code == 200, self._explain(f"page answered {r.status_code}", r)
            page = {n: f for f in forms(r.text) for n in f.names}
            if "password" in page:
                kind, form, values, button = "login", page["password"], {
                    "username": self.w.doctor, "password": PASSWORD}, "login"
            elif "choose" in page:
                assert patient is not None, self._explain("the patient picker was shown", r)
                kind, form, values, button = "picker", page["choose"], {"patient": patient}, "choose"
            elif "approve" in page:
                kind, form, values, button = "approve", page["approve"], {}, "approve"
            else:
                raise AssertionError(self._explain("a page without a known form", r))
            self.pages.append(kind)
            r = self._submit(r.url, form, values, button)
        raise AssertionError(f"no redirect to the app after the pages {self.pages}")

    def _submit(self, page_url: str, form: Form, values: dict[str, str], button: str) -> requests.Response:
        assert form.method == "POST", form
        data = [(k, v) for k, v in form.fields if k not in values] + list(values.items()) + [(button, "1")]
        return self.session.post(urljoin(page_url, form.action), data=data, allow_redirects=False,
                                 headers={"Accept": "text/html"}, timeout=HTTP_TIMEOUT)

    def _explain(self, what: str, r: requests.Response) -> str:
        return (f"{what} after the pages {self.pages}: {r.request.method} {r.url} -> {r.status_code}\n"
                f"{r.text[:2000]}\n--- server log ---\n{self.w.log_tail()}")


def _py_client(w: World, client_id: str, scope: str, secret: str | None = None,
               launch: str | None = None) -> Any:
    from fhirclient.client import FHIRClient

    settings: dict[str, Any] = {"app_id": client_id, "api_base": w.srv.base + "/", "redirect_uri": PY_REDIRECT,
                                "scope": scope}
    if secret:
        settings["app_secret"] = secret
    if launch:
        settings["launch_token"] = launch
    return FHIRClient(settings=settings)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _py_launch(w: World, smart: Any, patient: str | None) -> FormDriver:
    """authorize_url -> the server's pages -> handle_callback, with the server log on failure."""
    url = smart.authorize_url  # fetches /metadata and parses it with the library's strict models
    driver = FormDriver(w)
    callback = driver.run(url, redirect_uri=PY_REDIRECT, patient=patient)
    assert "error" not in _query(callback), f"{callback}\n--- server log ---\n{w.log_tail()}"
    try:
        smart.handle_callback(callback)
    except Exception as e:
        raise AssertionError(f"handle_callback({callback}) failed: {e!r}\n"
                             f"{getattr(getattr(e, 'response', None), 'text', '')[:2000]}\n"
                             f"--- server log ---\n{w.log_tail()}") from e
    return driver


def _read_patient(w: World, smart: Any, pid: str) -> Any:
    from fhirclient.models.patient import Patient

    try:
        return Patient.read(pid, smart.server)
    except Exception as e:
        resp = getattr(e, "response", None)
        detail = f"{resp.status_code} {resp.text[:2000]}" if resp is not None else ""
        raise AssertionError(f"Patient.read({pid}) through fhirclient failed: {e!r} {detail}\n"
                             f"--- server log ---\n{w.log_tail()}") from e


def _refresh_and_read(w: World, smart: Any, pid: str) -> None:
    first_access, first_refresh = smart.server.auth.access_token, smart.server.auth.refresh_token
    assert first_refresh, f"no refresh token although offline_access was asked: {smart.launch_context}"
    try:
        ok = smart.reauthorize()  # grant_type=refresh_token, client_id (and Basic when app_secret is set)
    except Exception as e:
        resp = getattr(e, "response", None)
        raise AssertionError(f"refresh failed: {e!r} {resp.text[:2000] if resp is not None else ''}\n"
                             f"--- server log ---\n{w.log_tail()}") from e
    assert ok and smart.ready
    assert smart.server.auth.access_token != first_access
    assert smart.server.auth.refresh_token != first_refresh  # rotated
    assert "offline_access" in smart.launch_context["scope"].split()
    assert _read_patient(w, smart, pid).id == pid


def test_fhirclient_py_standalone_launch_public_client(world: World) -> None:
    from fhirclient.models.observation import Observation

    cid, _ = register(world, "public", PY_REDIRECT)
    smart = _py_client(world, cid, "openid fhirUser offline_access patient/*.rs")
    q = _query(smart.authorize_url)
    # The library adds launch/patient (no patient yet) and PKCE S256; aud is api_base as configured.
    assert q["scope"].split() == ["launch/patient", "openid", "fhirUser", "offline_access", "patient/*.rs"]
    assert q["code_challenge_method"] == "S256" and q["client_id"] == cid and q["aud"] == world.srv.base + "/"

    driver = _py_launch(world, smart, world.patient)
    assert driver.pages == ["login", "picker", "approve"]
    assert smart.ready and smart.patient_id == world.patient
    ctx = smart.launch_context
    assert ctx["scope"].split() == ["launch/patient", "openid", "fhirUser", "offline_access", "patient/*.rs"]
    assert ctx["patient"] == world.patient and ctx["token_type"] == "Bearer" and ctx["need_patient_banner"] is True

    p = _read_patient(world, smart, world.patient)
    assert p.id == world.patient and p.name[0].family == "Zylstra" and p.birthDate.isostring == "1984-03-07"
    assert smart.patient is not None and smart.patient.id == world.patient  # the library's own read
    found = Observation.where({"patient": world.patient}).perform_resources(smart.server)
    assert [o.id for o in found] == [world.observation]
    assert found[0].valueQuantity.value == 72

    _refresh_and_read(world, smart, world.patient)


def test_fhirclient_py_confidential_client_basic_and_client_id(world: World) -> None:
    cid, secret = register(world, "confidential-symmetric", PY_REDIRECT)
    assert secret
    # fhirclient sends HTTP Basic and client_id in the body, on the code exchange and on refresh.
    smart = _py_client(world, cid, "openid fhirUser offline_access patient/*.rs", secret=secret)
    driver = _py_launch(world, smart, world.patient)
    assert driver.pages == ["login", "picker", "approve"]
    assert smart.ready and smart.patient_id == world.patient
    assert _read_patient(world, smart, world.patient).id == world.patient
    _refresh_and_read(world, smart, world.patient)
    # Basic with a wrong secret is refused (so the Basic header is what authenticated the client).
    bad = requests.post(f"{world.root}/auth/token", auth=(cid, "not-the-secret-at-all"), timeout=HTTP_TIMEOUT,
                        data={"grant_type": "refresh_token", "client_id": cid,
                              "refresh_token": smart.server.auth.refresh_token})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client", bad.text


def test_fhirclient_py_ehr_launch(world: World) -> None:
    cid, _ = register(world, "public", PY_REDIRECT, launch_uri="https://py-app.example.org/launch")
    r = requests.get(f"{world.root}/auth/ehr-launch", params={"client_id": cid, "patient": world.patient},
                     headers=world.srv.headers(), allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 302, r.text
    launch = _query(r.headers["Location"])
    assert launch["iss"] == world.srv.base
    smart = _py_client(world, cid, "openid fhirUser patient/*.rs", launch=launch["launch"])
    assert _query(smart.authorize_url)["launch"] == launch["launch"]
    driver = _py_launch(world, smart, None)
    assert driver.pages == ["login", "approve"]  # the launch carries the patient: no picker
    assert smart.patient_id == world.patient and smart.launch_context["need_patient_banner"] is False
    assert _read_patient(world, smart, world.patient).id == world.patient


# ----------------------------------------------------------------------------- npm fhirclient 2.6.3 in Chromium

def _lock_path() -> Path:
    return Path(tempfile.gettempdir()) / f"fhirtwin-e2e-js-{hashlib.sha1(str(JS).encode()).hexdigest()[:10]}.lock"


def _installed() -> bool:
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        meta = JS / "node_modules" / name / "package.json"
        if not meta.exists() or json.loads(meta.read_text()).get("version") != version:
            return False
    return (JS / "node_modules" / "fhirclient" / "build" / "fhir-client.js").exists()


def _ensure_chromium() -> str | None:
    """None when Chromium is there, else why the browser tests cannot run."""
    if Path(CHROMIUM).exists():
        return None
    if os.environ.get("FHIRTWIN_INSTALL_BROWSER") == "1" and shutil.which("apt-get"):
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if done.returncode != 0:
                return f"{' '.join(cmd)} failed: {done.stderr[-1000:]}"
        if Path(CHROMIUM).exists():
            return None
    return (f"{CHROMIUM} is missing (apt-get install chromium, or set FHIRTWIN_INSTALL_BROWSER=1 to let the "
            "tests install it)")


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the SMART JS client tests")
    with open(_lock_path(), "w") as lock:  # xdist workers: one installs, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        why = _ensure_chromium()
        if why:
            pytest.skip(why)
        if not _installed():
            done = subprocess.run([npm, "ci", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"],
                                  cwd=JS, capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not _installed():
                pytest.skip(f"npm ci in {JS} failed (no registry?): {(done.stderr or done.stdout)[-1500:]}")
    return node


class _Quiet(SimpleHTTPRequestHandler):
    log: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.log.append(format % args)


@dataclass
class StaticApp:
    origin: str
    log: list[str]


@pytest.fixture(scope="module")
def static_app(node: str) -> Iterator[StaticApp]:
    """tests/e2e/js served on a port of its own: the app's origin differs from the server's."""
    log: list[str] = []
    handler = type("Handler", (_Quiet,), {"log": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(handler, directory=str(JS)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="static-app", daemon=True)
    thread.start()
    try:
        yield StaticApp(f"http://127.0.0.1:{httpd.server_address[1]}", log)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _drive(w: World, node: str, app: StaticApp, url: str, patient: str | None = None) -> dict[str, Any]:
    cfg = {"url": url, "username": w.doctor, "password": PASSWORD, "patient": patient,
           "serverOrigin": w.root, "timeoutMs": BROWSER_TIMEOUT_MS, "executablePath": CHROMIUM}
    try:
        done = subprocess.run([node, str(JS / "drive.js"), json.dumps(cfg)], cwd=JS, capture_output=True,
                              text=True, timeout=BROWSER_RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the browser run did not end in {BROWSER_RUN_TIMEOUT}s: {e.stdout!r} {e.stderr!r}\n"
                    f"--- server log ---\n{w.log_tail()}")
    lines = done.stdout.strip().splitlines()
    try:
        out: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        out = {"error": f"drive.js printed no JSON (exit {done.returncode}): {done.stdout[-2000:]}"}
    result = out.get("result") or {}
    if out.get("error") or not result.get("ok"):
        pytest.fail("the SMART JS client did not finish its launch:\n"
                    f"error: {out.get('error') or result.get('error')}\n{result.get('stack', '')}\n"
                    f"pages: {out.get('pages')}\nfinal URL: {out.get('finalUrl')}\n"
                    f"browser console:\n  " + "\n  ".join(out.get("console", [])) + "\n"
                    f"requests to the server: {json.dumps(out.get('requests', []), indent=1)}\n"
                    f"page text: {out.get('text', '')}\nnode stderr: {done.stderr[-2000:]}\n"
                    f"static app log: {app.log[-20:]}\n--- server log ---\n{w.log_tail()}")
    return out


def _js_client(w: World, app: StaticApp, scope: str) -> str:
    """A public client whose launch URL (EHR launch) carries the app's own settings."""
    cid = f"js-{uuid.uuid4().hex[:10]}"
    launch_uri = f"{app.origin}/launch.html?" + urlencode({"app_client": cid, "app_scope": scope})
    register(w, "public", f"{app.origin}/index.html", launch_uri, cid=cid)
    return cid


def _endpoint(url: str) -> str:
    """'smart-configuration', 'token', 'Patient', ...: what a request to the server was for."""
    path = urlsplit(url).path
    return path.rsplit("/", 1)[-1] if path.startswith("/auth/") or "/.well-known/" in path else \
        path.removeprefix("/fhir/").split("/")[0]


def _check_cors(out: dict[str, Any], app: StaticApp) -> None:
    """The app's fetches went to the server's origin (the app is on another port) and were answered
    with CORS headers; the browser hands a cross-origin answer to the app only when they are right,
    and the reads with a Bearer token needed a preflight (OPTIONS) the server answered."""
    assert urlsplit(out["requests"][0]["url"]).port != urlsplit(app.origin).port
    fetches = [r for r in out["requests"] if r["type"] in ("fetch", "xhr")]
    for method, endpoint in (("GET", "smart-configuration"), ("POST", "token"), ("GET", "Patient"),
                             ("GET", "Observation")):
        seen = [r for r in fetches if r["method"] == method and _endpoint(r["url"]) == endpoint]
        assert seen, f"no {method} {endpoint} fetch among {fetches}"
        for r in seen:
            assert r["status"] == 200 and r["allowOrigin"] in ("*", app.origin), r
            assert r["origin"] in (None, app.origin), r  # None: Chromium did not report the raw headers


def _check_js_result(w: World, out: dict[str, Any], *, patient: str) -> dict[str, Any]:
    res: dict[str, Any] = out["result"]
    assert res["patientId"] == patient and res["patientRead"] == {"resourceType": "Patient", "id": patient}
    assert res["observationCount"] == (1 if patient == w.patient else 0)
    assert res["tokenType"] == "Bearer" and isinstance(res["expiresIn"], int) and res["expiresIn"] > 0
    assert res["idTokenFhirUser"] == f"{w.srv.base}/Practitioner/{w.practitioner}"
    assert res["clientFhirUser"] == f"Practitioner/{w.practitioner}"
    # client.refresh(): a public client refreshing without client_id, from another origin.
    assert res["hasRefreshToken"] and res["refresh"] == {
        "newAccessToken": True, "scope": res["scope"], "patientReadAgain": patient}, res
    return res


def test_fhirclient_js_ehr_launch_in_chromium(node: str, static_app: StaticApp, world: World) -> None:
    cid = _js_client(world, static_app, "launch openid fhirUser offline_access patient/*.rs user/Practitioner.rs")
    r = requests.get(f"{world.root}/auth/ehr-launch", headers=world.srv.headers(), allow_redirects=False,
                     params={"client_id": cid, "patient": world.patient, "encounter": world.encounter},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    q = _query(location)
    assert location.startswith(f"{static_app.origin}/launch.html?") and q["iss"] == world.srv.base and q["launch"]

    out = _drive(world, node, static_app, location)
    assert out["pages"] == ["login", "approve", "result"]  # the launch carries the patient: no picker
    res = _check_js_result(world, out, patient=world.patient)
    assert res["scope"].split() == ["launch", "openid", "fhirUser", "offline_access", "patient/*.rs",
                                    "user/Practitioner.rs"]
    assert res["needPatientBanner"] is False and res["encounter"] == world.encounter
    assert res["userRead"] == {"resourceType": "Practitioner", "id": world.practitioner}  # client.user.read()
    _check_cors(out, static_app)


def test_fhirclient_js_standalone_launch_with_picker_in_chromium(node: str, static_app: StaticApp,
                                                                 world: World) -> None:
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    cid = _js_client(world, static_app, scope)
    url = f"{static_app.origin}/launch.html?" + urlencode({"app_client": cid, "app_scope": scope,
                                                           "iss": world.srv.base})
    out = _drive(world, node, static_app, url, patient=world.patient)
    assert out["pages"] == ["login", "picker", "approve", "result"]
    res = _check_js_result(world, out, patient=world.patient)
    assert res["scope"].split() == scope.split() and res["needPatientBanner"] is True
    assert res["encounter"] is None and res["userRead"] is None
    _check_cors(out, static_app)
    # The authorize request the library made: PKCE S256 (discovered from .well-known), aud = iss.
    authorize = next(r for r in out["requests"] if urlsplit(r["url"]).path == "/auth/authorize")
    aq = _query(authorize["url"])
    assert aq["code_challenge_method"] == "S256" and len(aq["code_challenge"]) == 43 and aq["aud"] == world.srv.base
    assert aq["client_id"] == cid and aq["redirect_uri"] == f"{static_app.origin}/index.html"
