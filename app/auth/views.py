"""HTTP endpoints of the authorization server and the SMART discovery documents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request

from app.store.auth_store import AuthStore

from . import discovery, tokens
from . import scopes as sc
from .server import AuthConfig

bp = Blueprint("auth", __name__)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def fhir_base() -> str:
    public = current_app.config.get("PUBLIC_URL")
    return str(public).rstrip("/") if public else f"{request.scheme}://{request.host}/fhir"


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status=status, headers=headers or {}, content_type="application/json")


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    return _json({"error": error, "error_description": description}, status, _NO_STORE)


@contextmanager
def auth_context() -> Iterator[AuthStore]:
    """One committed connection for an authorization-server request, and what the grants need
    from it (flask.g): the store, keys and this request's settings and URLs."""
    auth = current_app.extensions["fhirtwin_auth"]
    base = fhir_base()
    with auth.db.session(write=True) as conn:
        g.auth_store = store = AuthStore(conn)
        g.auth_keys = auth.keys
        g.auth_jwks_cache = auth.jwks_cache
        ep = discovery.endpoints(base)
        g.auth_config = AuthConfig(issuer=base, token_url=ep["token"], style_url=ep["style"],
                                   known_types=auth.known_types, assertion_algs=auth.assertion_algs,
                                   backend_lifetime_s=auth.backend_lifetime_s,
                                   access_lifetime_s=auth.access_lifetime_s, offline_lifetime_s=auth.offline_lifetime_s,
                                   online_lifetime_s=auth.online_lifetime_s)
        yield store
        conn.commit()


def _endpoint(run: Any) -> Response:
    """An OAuth endpoint: form-encoded bodies only (anything else is invalid_request), then the
    Authlib server on one committed connection."""
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return oauth_error("invalid_request", "The request body must be application/x-www-form-urlencoded")
    server = current_app.extensions["fhirtwin_auth"].server
    with auth_context():
        resp: Response = run(server)
    return resp


@bp.post("/auth/token")
def token() -> Response:
    return _endpoint(lambda server: server.create_token_response())


@bp.post("/auth/introspect")
def introspect() -> Response:
    return _endpoint(lambda server: server.create_endpoint_response("introspection"))


@bp.post("/auth/revoke")
def revoke() -> Response:
    return _endpoint(lambda server: server.create_endpoint_response("revocation"))


def admin_bearer(store: AuthStore, what: str) -> Response | None:
    """None when the request carries a live token with system/*.cruds (an administrator's), else
    the OAuth error response to send."""
    auth = current_app.extensions["fhirtwin_auth"]
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return oauth_error("invalid_token", f"{what} needs an administrator's bearer token", 401)
    base = fhir_base()
    try:
        ctx = tokens.verify(store, auth.keys, header[7:].strip(), issuer=base, audience=base)
    except tokens.InvalidToken as e:
        return oauth_error("invalid_token", str(e), 401)
    if not any(s.context == "system" and s.rtype == "*" and s.perms == frozenset(sc.PERMS) and not s.filters
               for s in ctx.scopes):
        return oauth_error("insufficient_scope", f"{what} needs a token with system/*.cruds", 403)
    return None


@bp.post("/auth/register")
def register() -> Response:
    """RFC 7591 dynamic client registration: open, or for administrators only (FHIRTWIN_REGISTRATION)."""
    from .clients import InvalidRedirectUri, register_dynamic

    if (request.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
        return oauth_error("invalid_client_metadata", "The registration request must be application/json")
    if current_app.config.get("REGISTRATION", "admin") != "open":
        with auth_context() as store:
            refused = admin_bearer(store, "Client registration")
        if refused is not None:
            return refused
    try:
        metadata = orjson.loads(request.get_data())
    except orjson.JSONDecodeError:
        return oauth_error("invalid_client_metadata", "The body is not JSON")
    try:
        out = register_dynamic(current_app, metadata)
    except InvalidRedirectUri as e:
        return oauth_error("invalid_redirect_uri", str(e))
    except ValueError as e:
        return oauth_error("invalid_client_metadata", str(e))
    return _json(out, 201, _NO_STORE)


@bp.get("/auth/jwks")
def jwks() -> Response:
    keys = current_app.extensions["fhirtwin_auth"].keys
    keys.refresh()
    return _json(keys.public_jwks, headers={"Cache-Control": "public, max-age=300"})


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    return _json(discovery.smart_configuration(fhir_base(), current_app.extensions["fhirtwin_auth"].scopes_supported))


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID discovery under the id_token issuer (the FHIR base)."""
    return _json(discovery.openid_configuration(fhir_base(), current_app.extensions["fhirtwin_auth"].scopes_supported))
