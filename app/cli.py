"""The `fhirtwin` command: serve, db init, load."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from app import create_app, tune_gc

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "gthread" if args.threads > 1 else "sync")
            self.cfg.set("accesslog", "-" if args.access_log else None)
            self.cfg.set("timeout", 300)
            self.cfg.set("keepalive", 5)
            # Long search URLs are normal in FHIR; gunicorn's ceiling, not its 4 KiB default.
            self.cfg.set("limit_request_line", 8190)
            # One shared control socket path per user would make concurrent servers collide.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            app = create_app()
            tune_gc()
            return app

    _init_db(quiet=True)
    print(f"fhirtwin serving http://{args.host}:{args.port}/fhir", file=sys.stderr, flush=True)
    Server().run()
    return 0


def _init_db(quiet: bool = False) -> None:
    from app.store.migrate import upgrade
    from config.settings import from_env

    cfg = from_env()
    cfg.INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    upgrade(cfg.database_url())
    if not quiet:
        print(f"database ready: {_redact(cfg.database_url())}")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _bundle_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(x for x in path.rglob("*.json") if x.is_file()))
        else:
            out.append(path)
    return out


_CLIENT: Any = None
_HEADERS: dict[str, str] = {}
_LOCAL_BASE = "http://localhost/fhir"  # the base URL the in-process client's requests see


def _worker_init(token: str) -> None:
    global _CLIENT
    from app import create_app, tune_gc

    _CLIENT = create_app().test_client()
    _HEADERS["Authorization"] = f"Bearer {token}"
    tune_gc()


def _post_file(f: Path, client: Any = None) -> tuple[str, int, str | None, float, int]:
    """POST one Bundle file: (path, entries answered, error or None, seconds, HTTP status)."""
    client = client or _CLIENT
    t0 = time.perf_counter()
    try:
        data = f.read_bytes()
    except OSError as e:
        return str(f), 0, f"cannot read: {e}", 0.0, 0
    resp = client.post("/fhir", data=data, headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal",
                                                    **_HEADERS})
    body = resp.get_json(silent=True) or {}
    seconds = time.perf_counter() - t0
    if resp.status_code != 200:
        diag = "; ".join(i.get("diagnostics", "") for i in body.get("issue", []))[:2000]
        return str(f), 0, f"HTTP {resp.status_code}: {diag}", seconds, resp.status_code
    entries = body.get("entry", [])
    bad = [e for e in entries if not str(e.get("response", {}).get("status", "")).startswith(("200", "201", "204"))]
    err = f"{len(bad)} batch entries failed: {bad[0].get('response')}" if bad else None
    return str(f), len(entries), err, seconds, 200


def _is_transaction(f: Path) -> bool:
    try:
        return bool(orjson.loads(f.read_bytes()).get("type") == "transaction")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return False


def _load(args: argparse.Namespace) -> int:
    """Loads each Bundle through POST /fhir, the same path a client takes.

    With --jobs N, batch Bundles (shared Organizations, Practitioners: what the others refer to)
    go first, one by one, then transaction Bundles in N processes. A transaction that fails there
    with 404/409/412 (it may refer to what another Bundle creates) is atomic, so it is retried
    alone after the rest."""
    from app import create_app, tune_gc
    from app.auth import internal_token

    _init_db(quiet=True)
    files = _bundle_files(args.paths)
    if not files:
        print("no bundle files found", file=sys.stderr)
        return 2
    app = create_app()
    client = app.test_client()
    # The loader is a local administrator (it can read the keys and the database): it mints
    # its own token and goes through the same authorization as any client.
    token = internal_token(app, _LOCAL_BASE, scope="system/*.cruds", lifetime_s=86_400)
    _HEADERS["Authorization"] = f"Bearer {token}"
    tune_gc()
    jobs = max(1, args.jobs)
    if jobs > 1:
        is_tx = [_is_transaction(f) for f in files]
        parallel = [f for f, tx in zip(files, is_tx, strict=True) if tx]
        first = [f for f, tx in zip(files, is_tx, strict=True) if not tx]
    else:
        first, parallel = files, []
    failed: list[tuple[str, str]] = []
    total = 0
    done = 0
    start = time.perf_counter()

    def report(res: tuple[str, int, str | None, float, int]) -> None:
        nonlocal total, done
        name, n, err, seconds, _ = res
        done += 1
        total += n
        if err:
            failed.append((name, err))
            print(f"\n{name}: {err}", file=sys.stderr)
        bar = int(30 * done / len(files))
        rate = n / max(seconds, 1e-9)
        print(f"\r[{'#' * bar}{'.' * (30 - bar)}] {done}/{len(files)} {Path(name).name[:40]:40s} {rate:7.0f} res/s",
              end="", file=sys.stderr, flush=True)

    for f in first:
        report(_post_file(f, client))
    retry: list[Path] = []
    if parallel:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs, initializer=_worker_init, initargs=(token,)) as pool:
            for res in pool.imap_unordered(_post_file, parallel):
                if res[2] and res[4] in (404, 409, 412):
                    retry.append(Path(res[0]))
                    continue
                report(res)
    for f in retry:
        report(_post_file(f, client))
    elapsed = time.perf_counter() - start
    print(file=sys.stderr)
    print(f"loaded {total} resources from {len(files) - len(failed)}/{len(files)} files in {elapsed:.1f} s "
          f"({total / max(elapsed, 1e-9):.0f} resources/s)")
    return 1 if failed else 0


def _twin_refresh() -> int:
    """Recompute every stored twin fact from the stored versions, batch by batch (each batch its
    own transaction: the server keeps serving), and mark the assessments whose inputs changed."""
    from app import create_app
    from app.fhir.operations.facts import refresh
    from app.store.repository import ResourceStore

    _init_db(quiet=True)
    app = create_app()
    fhir = app.extensions["fhirtwin"]
    t = time.perf_counter()
    with fhir.db.session(write=True) as conn:
        store = ResourceStore(conn, is_sqlite=fhir.db.is_sqlite)
        result = refresh(store, conn.commit)
    for rtype, (seen, rewritten) in result.items():
        print(f"{rtype}: {seen} resources read, {rewritten} with changed facts")
    print(f"twin facts refreshed in {time.perf_counter() - t:.1f} s")
    return 0


def _clients(args: argparse.Namespace) -> int:
    from app import create_app
    from app.auth.clients import register_client

    _init_db(quiet=True)
    app = create_app()
    if args.action == "list":
        from app.store.auth_store import AuthStore

        with app.extensions["fhirtwin"].db.session() as conn:
            for c in AuthStore(conn).clients():
                print(f"{c.client_id}\t{c.kind}\t{c.auth_method}\t{c.scope}")
        return 0
    jwks = Path(args.jwks).read_text() if args.jwks else None
    try:
        c, secret = register_client(app, client_id=args.id or "", kind=args.kind, name=args.name or args.id,
                                    scope=args.scope, jwks=jwks, jwks_uri=args.jwks_uri,
                                    redirect_uris=args.redirect_uri or (), launch_uri=args.launch_uri,
                                    secret=args.secret)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"registered {c.kind} client {c.client_id} (scope ceiling: {c.scope})")
    if secret and not args.secret:
        print(f"client secret (shown once): {secret}")
    return 0


def _users(args: argparse.Namespace) -> int:
    from app import create_app
    from app.auth.clients import add_user
    from app.store.auth_store import AuthStore

    _init_db(quiet=True)
    app = create_app()
    if args.action == "list":
        with app.extensions["fhirtwin"].db.session() as conn:
            for u in AuthStore(conn).users():
                print(f"{u.username}\t{u.fhir_user}\t{'admin' if u.admin else ''}\t{u.name}")
        return 0
    if not (args.username and args.password and args.fhir_user):
        print("error: users add needs --username, --password and --fhir-user", file=sys.stderr)
        return 2
    try:
        u = add_user(app, username=args.username, password=args.password, fhir_user=args.fhir_user,
                     name=args.name, admin=args.admin)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {u.username} is {u.fhir_user}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from app import create_app

    app = create_app()
    kid = app.extensions["fhirtwin_auth"].keys.rotate()
    print(f"new signing key {kid}; the JWKS keeps the previous keys so issued tokens stay valid")
    return 0


def _token(args: argparse.Namespace) -> int:
    from app import create_app
    from app.auth import internal_token

    _init_db(quiet=True)
    app = create_app()
    base = args.base or f"http://127.0.0.1:{args.port}/fhir"
    print(internal_token(app, base, scope=args.scope, lifetime_s=int(args.hours * 3600), client_id="fhirtwin-admin"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Demo credentials for `make run`: a backend client with a key pair in the instance folder,
    and an administrator token with a ready-to-paste request."""
    from joserfc.jwk import RSAKey

    from app import create_app
    from app.auth import internal_token
    from app.auth.clients import register_client
    from config.settings import from_env

    _init_db(quiet=True)
    app = create_app()
    folder = from_env().INSTANCE_DIR / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "backend-private-jwk.json"
    if not key_file.exists():
        key = RSAKey.generate_key(2048, parameters={"kid": "demo-backend"}, private=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(orjson.dumps(key.as_dict(private=True)).decode())
    key = RSAKey.import_key(orjson.loads(key_file.read_bytes()))
    register_client(app, client_id="demo-backend", kind="backend", name="Demo integration engine",
                    scope="system/*.cruds", jwks=orjson.dumps({"keys": [key.as_dict(private=False)]}).decode())
    base = f"http://{args.host}:{args.port}/fhir"
    token = internal_token(app, base, scope="system/*.cruds", lifetime_s=8 * 3600, client_id="fhirtwin-admin")
    clinician, patient = _demo_people(app, base, token)
    root = base.removesuffix("/fhir")
    app_redirect = f"http://{args.host}:9000/callback"
    register_client(app, client_id="demo-app", kind="public", name="Demo SMART app",
                    redirect_uris=[app_redirect, "http://localhost:9000/callback"],
                    launch_uri=f"http://{args.host}:9000/launch")
    people = f"demo-clinician / {DEMO_PASSWORD}  ({clinician})"
    if patient:
        people += f"\n                       demo-patient / {DEMO_PASSWORD}  ({patient})"
    print(f"""
fhirtwin demo credentials
  SMART app client id: demo-app   (public, PKCE; redirect {app_redirect}, launch http://{args.host}:9000/launch)
  users (log in at the authorize page):
                       {people}
  backend client id:   demo-backend   (private_key_jwt, RS384; private key: {key_file})
  discovery:           {base}/.well-known/smart-configuration
  register an app:     curl -X POST -H 'Content-Type: application/json' {root}/auth/register \\
                         -d '{{"client_name":"My app","redirect_uris":["http://localhost:9000/cb"],"token_endpoint_auth_method":"none"}}'
  admin token (8 h):   curl -H "Authorization: Bearer {token}" '{base}/Patient?_count=1'
""", file=sys.stderr)
    return 0


DEMO_PASSWORD = "fhirtwin-demo"


def _demo_people(app: Any, base: str, token: str) -> tuple[str, str | None]:
    """Demo users: a clinician linked to a Practitioner (created when the data has none) and a
    patient linked to the first Patient, if any. Goes through the FHIR API like any client."""
    from app.auth.clients import add_user

    tc = app.test_client()
    host = base.split("://", 1)[1].split("/", 1)[0]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json", "Host": host}

    def first(rtype: str) -> str | None:
        r = tc.get(f"/fhir/{rtype}?_count=1&_sort=_id", headers=headers)
        entries = (r.get_json() or {}).get("entry") or []
        return f"{rtype}/{entries[0]['resource']['id']}" if entries else None

    clinician = first("Practitioner")
    if clinician is None:
        body = {"resourceType": "Practitioner", "id": "demo-clinician", "name": [{"family": "Demo", "given": ["Clinician"]}]}
        tc.put("/fhir/Practitioner/demo-clinician", json=body, headers={**headers, "Content-Type": "application/fhir+json"})
        clinician = "Practitioner/demo-clinician"
    add_user(app, username="demo-clinician", password=DEMO_PASSWORD, fhir_user=clinician, name="Demo Clinician")
    patient = first("Patient")
    if patient:
        add_user(app, username="demo-patient", password=DEMO_PASSWORD, fhir_user=patient, name="Demo Patient")
    return clinician, patient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhirtwin", description="fhirtwin FHIR R4 server")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve /fhir with gunicorn")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--workers", type=int, default=int(os.environ.get("FHIRTWIN_WORKERS", "2")))
    s.add_argument("--threads", type=int, default=int(os.environ.get("FHIRTWIN_THREADS", "1")),
                   help="threads per worker (gthread, keep-alive connections); 1 = gunicorn's sync worker")
    s.add_argument("--access-log", action="store_true")
    d = sub.add_parser("db", help="database commands")
    d.add_argument("action", choices=["init"])
    ld = sub.add_parser("load", help="load Bundle files or folders of them")
    ld.add_argument("paths", nargs="+")
    ld.add_argument("--jobs", "-j", type=int, default=1,
                    help="load transaction Bundles in this many processes (after the batch Bundles)")
    c = sub.add_parser("clients", help="register SMART clients")
    c.add_argument("action", choices=["add", "list"])
    c.add_argument("--id")
    c.add_argument("--kind", choices=["public", "confidential-symmetric", "confidential-asymmetric", "backend"],
                   default="backend")
    c.add_argument("--name", default="")
    c.add_argument("--scope", help="the most this client may be granted (default: system/*.rs for backend "
                                   "clients, patient/ user/ and launch scopes for apps)")
    c.add_argument("--jwks", help="file with the client's public JWKS")
    c.add_argument("--jwks-uri", help="URL of the client's public JWKS")
    c.add_argument("--redirect-uri", action="append", help="an app's redirect URI (repeat for several)")
    c.add_argument("--launch-uri", help="the app's launch URL (EHR launch)")
    c.add_argument("--secret", help="confidential-symmetric: the secret (default: a random one, printed once)")
    u = sub.add_parser("users", help="people who log in to authorize apps")
    u.add_argument("action", choices=["add", "list"])
    u.add_argument("--username")
    u.add_argument("--password")
    u.add_argument("--fhir-user", help="their FHIR resource, e.g. Practitioner/123 or Patient/abc")
    u.add_argument("--name", default="")
    u.add_argument("--admin", action="store_true", help="may launch apps for any patient")
    k = sub.add_parser("keys", help="signing keys")
    k.add_argument("action", choices=["rotate"])
    t = sub.add_parser("token", help="print an access token for local administration")
    t.add_argument("--scope", default="system/*.cruds")
    t.add_argument("--hours", type=float, default=8)
    t.add_argument("--port", type=int, default=8080)
    t.add_argument("--base", default="", help="the FHIR base URL the token is for (default http://127.0.0.1:PORT/fhir)")
    tw = sub.add_parser("twin", help="digital twin maintenance")
    tw.add_argument("action", choices=["refresh"],
                    help="refresh: recompute stored twin facts after the code lists in fhir_profiles/twin changed")
    dm = sub.add_parser("demo", help="register demo credentials and print an example request")
    dm.add_argument("--host", default="127.0.0.1")
    dm.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        return _demo(args)
    if args.cmd == "clients":
        return _clients(args)
    if args.cmd == "users":
        return _users(args)
    if args.cmd == "keys":
        return _keys(args)
    if args.cmd == "token":
        return _token(args)
    if args.cmd == "serve":
        return _serve(args)
    if args.cmd == "db":
        _init_db()
        return 0
    if args.cmd == "twin":
        return _twin_refresh()
    return _load(args)


if __name__ == "__main__":
    sys.exit(main())
