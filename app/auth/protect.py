"""The resource server side: the bearer token of a FHIR request becomes an AccessContext, and a
Guard checks each interaction against its scopes (default deny, a reason for every refusal)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import current_app, g, request

from app.errors import Forbidden, Unauthorized
from app.store.auth_store import AuthStore

from . import scopes as sc
from . import tokens
from .tokens import AccessContext

OPEN_ACCESS = AccessContext(client_id="(open mode)", scope="system/*.cruds",
                            scopes=tuple(s for s in [sc.parse_scope("system/*.cruds")] if s is not None), jti="")


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="fhirtwin"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthorized("This server requires an access token (Authorization: Bearer ...)", headers=_challenge())
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("The Authorization header must carry a Bearer token",
                           headers=_challenge("invalid_request", "Bearer token expected"))
    return value.strip()


def precheck(fhir_base: str) -> None:
    """Before the request body is even read: a token must be there, signed by us, unexpired and for
    this server (no database needed). authenticate() then checks it has not been revoked."""
    auth = current_app.extensions["fhirtwin_auth"]
    if auth.open:
        return
    try:
        g.bearer_claims = tokens.decode(auth.keys, _bearer(), issuer=fhir_base, audience=fhir_base)
    except tokens.InvalidToken as e:
        raise Unauthorized(str(e), headers=_challenge("invalid_token", str(e))) from None


def authenticate(conn: Any, fhir_base: str) -> AccessContext:
    """The caller's access context: the token's row must exist and not be revoked, or 401."""
    auth = current_app.extensions["fhirtwin_auth"]
    if auth.open:
        return OPEN_ACCESS
    if "bearer_claims" not in g:
        precheck(fhir_base)
    try:
        return tokens.check_row(AuthStore(conn), g.bearer_claims)
    except tokens.InvalidToken as e:
        raise Unauthorized(str(e), headers=_challenge("invalid_token", str(e))) from None


class Guard:
    """What one request's token allows. Interactions ask it before they touch the store."""

    def __init__(self, access: AccessContext) -> None:
        self.access = access
        self._readable = sc.readable_types(access.scopes, "r")

    def require(self, interaction: str, rtype: str | None) -> sc.Decision:
        if rtype is None:
            # System-level search and history span every type: only a wildcard scope covers them.
            perm = sc.INTERACTION_PERM[interaction]
            if any(s.rtype == "*" and perm in s.perms and not s.filters and s.context != "patient"
                   for s in self.access.scopes):
                return sc.Decision(True, "wildcard scope", (), False)
            raise Forbidden(f"The token's scopes do not allow {interaction} across all resource types")
        d = sc.allows(self.access.scopes, interaction, rtype)
        if not d.allowed:
            raise Forbidden(d.reason)
        if d.filters or d.patient:
            # Granular and patient-confined grants are not issued yet (no token carries them).
            raise Forbidden(f"The token's scopes allow {interaction} of {rtype} only in part, which this server "
                            "does not enforce yet")
        return d

    def readable(self, rtypes: Iterable[str]) -> set[str]:
        """Of these types, those the token may read (for _include/_revinclude results)."""
        got = set(rtypes)
        return got if self._readable is None else got & self._readable
