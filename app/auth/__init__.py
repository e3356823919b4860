"""SMART-on-FHIR authorization server and resource protection."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fhirtwin")


@dataclass
class Auth:
    """What the app holds for authorization: keys, the Authlib server, and its settings."""

    db: Any
    keys: Any
    server: Any
    jwks_cache: Any
    open: bool
    known_types: frozenset[str]
    assertion_algs: frozenset[str]
    backend_lifetime_s: int
    scopes_supported: list[str]


def init_app(app: Any, db: Any, known_types: frozenset[str]) -> Auth:
    from . import cors, views
    from .assertion import JwksCache
    from .keys import SigningKeys
    from .server import make_server

    cfg = app.config
    mode = str(cfg.get("AUTH_MODE", "smart")).lower()
    if mode not in ("smart", "open"):
        raise ValueError(f"FHIRTWIN_AUTH must be 'smart' or 'open', not {mode!r}")
    if mode == "open":
        log.warning("FHIRTWIN_AUTH=open: every request is served WITHOUT authorization (system/*.cruds). "
                    "For local experiments only.")
    key_path = Path(cfg.get("SIGNING_KEYS") or Path(cfg["INSTANCE_DIR"]) / "keys" / "signing-jwks.json")
    auth = Auth(
        db=db, keys=SigningKeys(key_path), server=make_server(app), jwks_cache=JwksCache(),
        open=mode == "open", known_types=known_types,
        assertion_algs=frozenset(str(cfg.get("ASSERTION_ALGS", "RS384 ES384")).split()),
        backend_lifetime_s=int(cfg.get("BACKEND_TOKEN_LIFETIME_S", 300)),
        scopes_supported=["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*"],
    )
    app.extensions["fhirtwin_auth"] = auth
    app.register_blueprint(views.bp)
    cors.init_app(app)
    return auth


def internal_token(app: Any, fhir_base: str, *, scope: str = "system/*.cruds", lifetime_s: int = 86_400,
                   client_id: str = "fhirtwin-cli") -> str:
    """A real access token (signed, recorded) for the server's own local tools: `fhirtwin load`,
    the test suite, the benchmarks. Whoever can call this can read the keys and the database."""
    from app.store.auth_store import AuthStore

    from . import tokens

    auth: Auth = app.extensions["fhirtwin_auth"]
    base = str(app.config.get("PUBLIC_URL") or fhir_base).rstrip("/")
    with auth.db.session(write=True) as conn:
        tok = tokens.issue(AuthStore(conn), auth.keys, issuer=base, audience=base, client_id=client_id, scope=scope,
                           lifetime_s=lifetime_s)
        conn.commit()
    return str(tok["access_token"])
