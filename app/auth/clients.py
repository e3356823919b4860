"""Client and user registration (the CLI now; RFC 7591 dynamic registration builds on the same checks)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from app.store.auth_store import AuthStore, ClientRow, UserRow

from . import scopes as sc
from .hashing import hash_secret, random_token
from .tokens import now_us


def _check_jwks(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("the JWKS is not JSON") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError("the JWKS needs a non-empty 'keys' array")
    for k in keys:
        if not isinstance(k, dict) or not k.get("kid"):
            raise ValueError("every key of the JWKS needs a kid")
        if "d" in k:
            raise ValueError(f"key {k['kid']} holds private key material; register the public key only")
        try:
            if k.get("kty") == "RSA":
                RSAKey.import_key(k)
            elif k.get("kty") == "EC":
                ECKey.import_key(k)
            else:
                raise ValueError
        except (JoseError, ValueError, TypeError):
            raise ValueError(f"key {k.get('kid')} is not an RSA or EC public key") from None
    return json.dumps({"keys": keys})


APP_KINDS = ("public", "confidential-symmetric", "confidential-asymmetric")
KINDS = (*APP_KINDS, "backend")
APP_SCOPE = ("openid fhirUser profile launch launch/patient launch/encounter offline_access online_access "
             "patient/*.cruds user/*.cruds")
_METHOD = {"public": "none", "confidential-symmetric": "client_secret_basic",
           "confidential-asymmetric": "private_key_jwt", "backend": "private_key_jwt"}


class InvalidRedirectUri(ValueError):
    """A redirect or launch URI that cannot be registered (RFC 7591 invalid_redirect_uri)."""


def _check_uri(uri: Any, what: str) -> str:
    if not isinstance(uri, str):
        raise InvalidRedirectUri(f"the {what} must be a string")
    parts = urlsplit(uri)
    if not parts.scheme or not (parts.netloc or parts.scheme not in ("http", "https")) or parts.fragment:
        raise InvalidRedirectUri(f"the {what} {uri!r} must be an absolute URI without a fragment")
    if parts.scheme in ("javascript", "data", "file"):
        raise InvalidRedirectUri(f"the {what} {uri!r} uses a scheme that cannot be a redirect target")
    return uri


def register_client(app: Any, *, client_id: str, kind: str, name: str, scope: str | None = None,
                    jwks: str | None = None, jwks_uri: str | None = None, redirect_uris: Sequence[str] = (),
                    launch_uri: str | None = None, secret: str | None = None) -> tuple[ClientRow, str | None]:
    """Check and store a client; returns it with its new secret (confidential-symmetric clients,
    the only time the secret is shown; only its hash is stored)."""
    if not client_id or len(client_id) > 128 or not all(c.isalnum() or c in "-._~" for c in client_id):
        raise ValueError("a client id of 1 to 128 letters, digits or -._~ is required")
    if kind not in KINDS:
        raise ValueError(f"client kind must be one of {', '.join(KINDS)}")
    asymmetric = kind in ("backend", "confidential-asymmetric")
    if asymmetric and bool(jwks) == bool(jwks_uri):
        raise ValueError(f"a {kind} client needs exactly one of a JWKS or a JWKS URL")
    if not asymmetric and (jwks or jwks_uri):
        raise ValueError(f"a {kind} client has no keys (a JWKS is only for private_key_jwt clients)")
    if jwks_uri and not jwks_uri.startswith(("https://", "http://")):
        raise ValueError("the JWKS URL must be http(s)")
    if kind == "backend":
        if redirect_uris or launch_uri:
            raise ValueError("a backend client has no redirect or launch URIs")
    elif not redirect_uris:
        raise InvalidRedirectUri(f"a {kind} client needs at least one redirect URI")
    uris = tuple(_check_uri(u, "redirect URI") for u in redirect_uris)
    if launch_uri:
        _check_uri(launch_uri, "launch URI")
    if kind == "confidential-symmetric":
        secret = secret or random_token(32)
        if len(secret) < 16:
            raise ValueError("a client secret needs at least 16 characters")
    elif secret:
        raise ValueError(f"a {kind} client has no secret")
    auth = app.extensions["fhirtwin_auth"]
    if kind == "backend":
        ceiling = sc.grant(scope or "system/*.rs", allowed_contexts=frozenset({"system"}),
                           known_types=auth.known_types, non_resource=frozenset())
    else:
        ceiling = sc.grant(scope or APP_SCOPE, allowed_contexts=frozenset({"patient", "user"}),
                           known_types=auth.known_types)
    if not any(sc.parse_scope(s) for s in ceiling):
        raise ValueError(f"scope {scope!r} holds no resource scope this server can grant a {kind} client")
    row = ClientRow(client_id=client_id, name=name or client_id, kind=kind, auth_method=_METHOD[kind],
                    secret_hash=hash_secret(secret) if secret else None, redirect_uris=uris,
                    launch_uri=launch_uri or None,
                    grant_types=("client_credentials",) if kind == "backend" else ("authorization_code", "refresh_token"),
                    scope=" ".join(ceiling), jwks=_check_jwks(jwks) if jwks else None, jwks_uri=jwks_uri)
    with auth.db.session(write=True) as conn:
        AuthStore(conn).add_client(row, now_us())
        conn.commit()
    return row, secret


_KIND_BY_METHOD = {"none": "public", "client_secret_basic": "confidential-symmetric",
                   "client_secret_post": "confidential-symmetric", "private_key_jwt": "confidential-asymmetric"}


def register_dynamic(app: Any, metadata: Any) -> dict[str, Any]:
    """RFC 7591 client registration from JSON metadata: client_name, redirect_uris, launch_uri,
    grant_types, token_endpoint_auth_method, jwks or jwks_uri, scope (the client's ceiling).
    Unknown members are ignored; bad ones raise ValueError (InvalidRedirectUri for URIs)."""
    if not isinstance(metadata, dict):
        raise ValueError("the registration request must be a JSON object")
    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in _KIND_BY_METHOD:
        raise ValueError(f"token_endpoint_auth_method must be one of {', '.join(_KIND_BY_METHOD)}")
    backend = method == "private_key_jwt" and not metadata.get("redirect_uris")
    grants = metadata.get("grant_types", ["client_credentials"] if backend else ["authorization_code", "refresh_token"])
    if not isinstance(grants, list) or not grants or not all(isinstance(x, str) for x in grants):
        raise ValueError("grant_types must be a non-empty array of strings")
    if "client_credentials" in grants:
        if set(grants) != {"client_credentials"} or method != "private_key_jwt":
            raise ValueError("a client_credentials (backend) client uses private_key_jwt and no other grant")
        kind = "backend"
    else:
        if not set(grants) <= {"authorization_code", "refresh_token"} or "authorization_code" not in grants:
            raise ValueError("grant_types may hold authorization_code and refresh_token (or client_credentials alone)")
        kind = _KIND_BY_METHOD[method]
    uris = metadata.get("redirect_uris", [])
    if not isinstance(uris, list):
        raise InvalidRedirectUri("redirect_uris must be an array of URIs")
    for key in ("client_name", "launch_uri", "jwks_uri", "scope"):
        if key in metadata and not isinstance(metadata[key], str):
            raise ValueError(f"{key} must be a string")
    jwks = metadata.get("jwks")
    if jwks is not None and not isinstance(jwks, dict):
        raise ValueError("jwks must be a JWK Set object")
    client_id = random_token(16)
    row, secret = register_client(
        app, client_id=client_id, kind=kind, name=metadata.get("client_name") or "", scope=metadata.get("scope"),
        jwks=json.dumps(jwks) if jwks is not None else None, jwks_uri=metadata.get("jwks_uri"), redirect_uris=uris,
        launch_uri=metadata.get("launch_uri"))
    out: dict[str, Any] = {
        "client_id": row.client_id, "client_id_issued_at": now_us() // 1_000_000, "client_name": row.name,
        "grant_types": list(row.grant_types), "token_endpoint_auth_method": method, "scope": row.scope,
        "redirect_uris": list(row.redirect_uris),
    }
    if row.launch_uri:
        out["launch_uri"] = row.launch_uri
    if row.jwks_uri:
        out["jwks_uri"] = row.jwks_uri
    if row.jwks:
        out["jwks"] = json.loads(row.jwks)
    if secret:
        out["client_secret"], out["client_secret_expires_at"] = secret, 0
    return out


FHIR_USER_TYPES = ("Practitioner", "Patient", "RelatedPerson", "Person")


def add_user(app: Any, *, username: str, password: str, fhir_user: str, name: str = "", admin: bool = False) -> UserRow:
    """Create or replace a user who logs in at the authorization server, linked to their FHIR resource."""
    if not username or len(username) > 200 or any(c.isspace() for c in username):
        raise ValueError("a user name of 1 to 200 characters without spaces is required")
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    rtype, _, rid = fhir_user.partition("/")
    if rtype not in FHIR_USER_TYPES or not rid or "/" in rid:
        raise ValueError(f"--fhir-user must be Type/id with Type one of {', '.join(FHIR_USER_TYPES)}")
    row = UserRow(username=username, password_hash=hash_secret(password), fhir_user=fhir_user, name=name, admin=admin)
    auth = app.extensions["fhirtwin_auth"]
    with auth.db.session(write=True) as conn:
        AuthStore(conn).add_user(row, now_us())
        conn.commit()
    return row
