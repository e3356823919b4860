"""Client registration (CLI now; RFC 7591 dynamic registration builds on the same checks)."""

from __future__ import annotations

import json
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from app.store.auth_store import AuthStore, ClientRow

from . import scopes as sc
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


def register_client(app: Any, *, client_id: str, kind: str, name: str, scope: str, jwks: str | None = None,
                    jwks_uri: str | None = None) -> ClientRow:
    if not client_id or len(client_id) > 128:
        raise ValueError("a client id of 1 to 128 characters is required")
    if kind != "backend":
        raise ValueError(f"client kind {kind!r} cannot be registered yet")
    if bool(jwks) == bool(jwks_uri):
        raise ValueError("a backend client needs exactly one of a JWKS or a JWKS URL")
    if jwks_uri and not jwks_uri.startswith(("https://", "http://")):
        raise ValueError("the JWKS URL must be http(s)")
    auth = app.extensions["fhirtwin_auth"]
    ceiling = sc.grant(scope, allowed_contexts=frozenset({"system"}), known_types=auth.known_types,
                       non_resource=frozenset())
    if not ceiling:
        raise ValueError(f"scope {scope!r} holds no system/ scope this server can grant")
    row = ClientRow(client_id=client_id, name=name, kind=kind, auth_method="private_key_jwt", secret_hash=None,
                    redirect_uris=(), launch_uri=None, grant_types=("client_credentials",), scope=" ".join(ceiling),
                    jwks=_check_jwks(jwks) if jwks else None, jwks_uri=jwks_uri)
    with auth.db.session(write=True) as conn:
        AuthStore(conn).add_client(row, now_us())
        conn.commit()
    return row
