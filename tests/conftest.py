"""Fixtures: app -> fhir (a client). The same API tests run in process (Flask test client) or,
with FHIRTWIN_TEST_MODE=http, against a real gunicorn server process over HTTP.

Databases: SQLite files in a temporary folder by default; FHIRTWIN_TEST_DATABASE_URL selects
PostgreSQL, where each xdist worker gets its own schema.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODE = os.environ.get("FHIRTWIN_TEST_MODE", "inproc")
PG_URL = os.environ.get("FHIRTWIN_TEST_DATABASE_URL", "")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


_SCHEMAS: list[str] = []


@atexit.register
def _drop_schemas() -> None:
    if not (PG_URL and _SCHEMAS):
        return
    import sqlalchemy as sa

    eng = sa.create_engine(PG_URL)
    # One transaction per schema: dropping them all at once can exhaust PostgreSQL's lock table.
    for schema in _SCHEMAS:
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def database_url(tmp: Path, name: str) -> str:
    """A fresh, empty database for `name`."""
    if not PG_URL:
        return f"sqlite:///{tmp / (name + '.sqlite')}"
    # The pid keeps concurrent runs (two checkouts, a benchmark) out of each other's schemas.
    schema = f"t{os.getpid()}_{_worker()}_{name}".lower().replace("-", "_")[:60]
    import sqlalchemy as sa

    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    _SCHEMAS.append(schema)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


class Resp:
    """The parts of an HTTP response tests look at, whichever client produced it."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = body

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Resp {self.status_code} {self.content[:300]!r}>"


class FhirClient:
    """client.get("Patient/1"), client.post("Patient", json=...), paths relative to /fhir."""

    JSON = "application/fhir+json"

    def __init__(self, base: str, send: Any, token: str | None = None) -> None:
        self.base = base  # http://host:port/fhir
        self._send = send
        self.token = token  # sent as a Bearer token unless a request names its own Authorization

    def request(self, method: str, path: str, *, json: Any = None, data: bytes | str | None = None,
                headers: dict[str, str] | None = None, params: Any = None) -> Resp:
        h = {"Accept": self.JSON}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if json is not None:
            data = orjson.dumps(json)
            h["Content-Type"] = self.JSON
        h.update(headers or {})
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}" if path else self.base
        return self._send(method, url, h, data, params)

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Resp:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Resp:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Resp:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Resp:
        return self.request("DELETE", path, **kw)

    def head(self, path: str, **kw: Any) -> Resp:
        return self.request("HEAD", path, **kw)


def make_app(tmp: Path, name: str) -> Any:
    from app import create_app
    from config.settings import TestConfig

    class Cfg(TestConfig):
        INSTANCE_DIR = tmp
        DATABASE_URL = database_url(tmp, name)

    app = create_app(Cfg())
    app.extensions["fhirtwin"].db.create_all()
    return app


def system_token(app: Any, base: str, scope: str = "system/*.cruds") -> str:
    """A real token (signed with the instance keys, recorded in its database) for tests that are
    not about authorization: the integration-engine view of the server."""
    from app.auth import internal_token

    return internal_token(app, base, scope=scope, lifetime_s=6 * 3600, client_id="test-suite")


def inproc_client(app: Any, scope: str | None = "system/*.cruds") -> FhirClient:
    tc = app.test_client()

    def send(method: str, url: str, headers: dict[str, str], data: Any, params: Any) -> Resp:
        path = url.removeprefix("http://localhost")
        r = tc.open(path, method=method, headers=headers, data=data, query_string=params)
        return Resp(r.status_code, r.headers, r.get_data())

    base = "http://localhost/fhir"
    return FhirClient(base, send, system_token(app, base, scope) if scope else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real `fhirtwin serve` process (gunicorn) on a free port."""

    def __init__(self, tmp: Path, name: str, workers: int = 2, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = dict(os.environ)
        env.update({"FHIRTWIN_INSTANCE": str(tmp), "DATABASE_URL": database_url(tmp, name), "FHIRTWIN_CONFIG": "test"})
        env.update(extra_env or {})
        self.env = env
        self._app: Any = None
        self._token: str | None = None
        self.log = open(tmp / f"{name}-server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or still starting (first request builds the metadata)
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {(tmp / f'{name}-server.log').read_text()[-3000:]}")

    def app(self) -> Any:
        """An app object on the server's instance folder and database (same keys, same rows)."""
        if self._app is None:
            from app import create_app
            from config.settings import TestConfig

            env = self.env

            class Cfg(TestConfig):
                INSTANCE_DIR = Path(env["FHIRTWIN_INSTANCE"])
                DATABASE_URL = env["DATABASE_URL"]

            self._app = create_app(Cfg())
        return self._app

    def headers(self) -> dict[str, str]:
        """Authorization for raw HTTP calls (a system/*.cruds token of the test suite)."""
        if self._token is None:
            self._token = system_token(self.app(), self.base)
        return {"Authorization": f"Bearer {self._token}"}

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers.update(self.headers())
        return s

    def client(self, scope: str | None = "system/*.cruds") -> FhirClient:
        session = requests.Session()

        def send(method: str, url: str, headers: dict[str, str], data: Any, params: Any) -> Resp:
            r = session.request(method, url, headers=headers, data=data, params=params, timeout=300,
                                allow_redirects=False)
            return Resp(r.status_code, r.headers, r.content)

        return FhirClient(self.base, send, system_token(self.app(), self.base, scope) if scope else None)

    def stop(self) -> None:
        if self._app is not None:
            self._app.extensions["fhirtwin"].db.dispose()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    a = make_app(tmp_path, "app_" + uuid.uuid4().hex[:8])
    yield a
    a.extensions["fhirtwin"].db.dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("live")
    from app.store.migrate import upgrade

    srv = Server(tmp, "live")
    yield srv
    srv.stop()
    del upgrade


@pytest.fixture
def fhir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FhirClient]:
    """A client on an empty server of its own (in process), or on the shared live server (http mode:
    tests must then not assume an empty database)."""
    if MODE == "http":
        srv: Server = request.getfixturevalue("live_server")
        yield srv.client()
        return
    a = make_app(tmp_path, "f_" + uuid.uuid4().hex[:8])
    yield inproc_client(a)
    a.extensions["fhirtwin"].db.dispose()


class Smart:
    """An authorization-server view of the server under test: its app (to register clients and
    read keys), a FhirClient without a token, and the URLs of the auth endpoints."""

    def __init__(self, app: Any, fhir: FhirClient, admin: FhirClient) -> None:
        self.app = app
        self.fhir = fhir  # no token; keeps cookies like a browser (login sessions)
        self.admin = admin  # a system/*.cruds token, for setting up data
        self.base = fhir.base
        self.root = fhir.base.removesuffix("/fhir")
        self.token_url = f"{self.root}/auth/token"

    def form(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Resp:
        from urllib.parse import urlencode

        h = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **(headers or {})}
        return self.fhir.request("POST", f"{self.root}{path}", data=urlencode(data), headers=h)


@pytest.fixture
def smart(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Smart]:
    if MODE == "http":
        srv: Server = request.getfixturevalue("live_server")
        yield Smart(srv.app(), srv.client(scope=None), srv.client())
        return
    a = make_app(tmp_path, "s_" + uuid.uuid4().hex[:8])
    yield Smart(a, inproc_client(a, scope=None), inproc_client(a))
    a.extensions["fhirtwin"].db.dispose()


def synthea_files() -> list[Path]:
    blaze = sorted((SYNTHEA / "blaze-synthea-2.7").glob("*.json"))
    smart = sorted((SYNTHEA / "smart-generated-sample-data-r4").glob("*.json"))
    return blaze + smart


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]
