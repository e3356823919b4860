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
    access_lifetime_s: int
    offline_lifetime_s: int
    online_lifetime_s: int
    scopes_supported: list[str]


SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access",
    "patient/*.cruds", "patient/*.rs", "patient/*.read", "patient/*.write", "patient/*.*",
    "user/*.cruds", "user/*.rs", "user/*.read", "user/*.write", "user/*.*",
    "system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*",
]


def init_app(app: Any, db: Any, known_types: frozenset[str]) -> Auth:
    from . import authorize, cors, views
    from .assertion import JwksCache
    from .keys import SigningKeys, session_secret
    from .server import make_server

    cfg = app.config
    mode = str(cfg.get("AUTH_MODE", "smart")).lower()
    if mode not in ("smart", "open"):
        raise ValueError(f"FHIRTWIN_AUTH must be 'smart' or 'open', not {mode!r}")
    if mode == "open":
        log.warning("FHIRTWIN_AUTH=open: every request is served WITHOUT authorization (system/*.cruds). "
                    "For local experiments only.")
    key_dir = Path(cfg["INSTANCE_DIR"]) / "keys"
    key_path = Path(cfg.get("SIGNING_KEYS") or key_dir / "signing-jwks.json")
    auth = Auth(
        db=db, keys=SigningKeys(key_path), server=make_server(app), jwks_cache=JwksCache(),
        open=mode == "open", known_types=known_types,
        assertion_algs=frozenset(str(cfg.get("ASSERTION_ALGS", "RS384 ES384")).split()),
        backend_lifetime_s=int(cfg.get("BACKEND_TOKEN_LIFETIME_S", 300)),
        access_lifetime_s=int(cfg.get("ACCESS_TOKEN_LIFETIME_S", 3600)),
        offline_lifetime_s=int(cfg.get("OFFLINE_REFRESH_LIFETIME_S", 90 * 86_400)),
        online_lifetime_s=int(cfg.get("ONLINE_REFRESH_LIFETIME_S", 8 * 3600)),
        scopes_supported=SCOPES_SUPPORTED,
    )
    app.extensions["fhirtwin_auth"] = auth
    app.register_blueprint(views.bp)
    authorize.init_app(app, cfg.get("SECRET_KEY") or session_secret(key_dir / "session-secret"))
    cors.init_app(app)
    return auth


def internal_token(app: Any, fhir_base: str, *, scope: str = "system/*.cruds", lifetime_s: int = 86_400,
                   client_id: str = "fhirtwin-cli", patient: str | None = None) -> str:
    """A real access token (signed, recorded) for the server's own local tools: `fhirtwin load`,
    the test suite, the benchmarks. Whoever can call this can read the keys and the database."""
    from app.store.auth_store import AuthStore

    from . import tokens

    auth: Auth = app.extensions["fhirtwin_auth"]
    base = str(app.config.get("PUBLIC_URL") or fhir_base).rstrip("/")
    with auth.db.session(write=True) as conn:
        tok = tokens.issue(AuthStore(conn), auth.keys, issuer=base, audience=base, client_id=client_id, scope=scope,
                           lifetime_s=lifetime_s, patient=patient)
        conn.commit()
    return str(tok.body["access_token"])
