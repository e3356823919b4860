"""The resource server side: the bearer token of a FHIR request becomes an AccessContext, and a
Guard checks each interaction against its scopes (default deny, a reason for every refusal)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import current_app, g, request

from app.errors import FhirError, Forbidden, Unauthorized
from app.store.auth_store import AuthStore
from app.store.confine import NOTHING, Alternative, Confinement, TypeAccess
from app.store.query import Clause, QueryParser

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
    """What one request's token allows. Interactions ask it before they touch the store: an
    interaction the scopes do not allow at all is refused (403); one they allow in part gets the
    Confinement the store applies in its SQL (None: no constraint)."""

    def __init__(self, access: AccessContext, parser: QueryParser | None = None) -> None:
        self.access = access
        self.parser = parser  # compiles the search parameters of granular scopes
        self._confinements: dict[tuple[str, str], Confinement | None] = {}

    def require(self, interaction: str, rtype: str | None) -> sc.Decision:
        if rtype is None:
            # System-level search and history span every type: only a wildcard scope covers them.
            if sc.unrestricted(self.access.scopes, sc.INTERACTION_PERM[interaction]):
                return sc.Decision(True, "wildcard scope")
            raise Forbidden(f"The token's scopes do not allow {interaction} across all resource types")
        d = sc.allows(self.access.scopes, interaction, rtype)
        if not d.allowed:
            raise Forbidden(d.reason)
        conf = self._confine(interaction, rtype, d)
        if conf is not None and conf.nothing:
            if any(g.patient for g in d.grants) and self.access.patient is None:
                raise Forbidden(f"The token allows {interaction} of {rtype} only in a patient's compartment, "
                                "and it names no patient")
            raise Forbidden(f"The token's granular scopes for {interaction} of {rtype} name search parameters "
                            f"that {rtype} does not have")
        return d

    def own_user(self, rtype: str, rid: str) -> bool:
        """The token's own fhirUser resource (granted `fhirUser`): readable whatever the resource
        scopes say, as SMART expects an app to read the user it was given (id_token fhirUser)."""
        a = self.access
        return a.fhir_user == f"{rtype}/{rid}" and "fhirUser" in a.scope.split()

    def confinement(self, interaction: str, rtype: str) -> Confinement | None:
        """The part of `rtype` this interaction may reach (None: all of it); 403 when none."""
        key = (sc.INTERACTION_PERM[interaction], rtype)
        if key in self._confinements:
            conf = self._confinements[key]
            if conf is None or not conf.nothing:
                return conf
        self.require(interaction, rtype)
        return self._confinements[key]

    def reach(self, interaction: str) -> TypeAccess | None:
        """For resources of other types that a request reaches (_include targets, chains, _has):
        per type, what this interaction may see of it; a type it may not see at all is NOTHING
        (left out, never an error). None when every type is open without confinement."""
        if sc.unrestricted(self.access.scopes, sc.INTERACTION_PERM[interaction]):
            return None

        def access(rtype: str) -> Confinement | None:
            key = (sc.INTERACTION_PERM[interaction], rtype)
            if key not in self._confinements:
                d = sc.allows(self.access.scopes, interaction, rtype)
                if not d.allowed:
                    return NOTHING
                self._confine(interaction, rtype, d)
            return self._confinements[key]

        return access

    def _confine(self, interaction: str, rtype: str, d: sc.Decision) -> Confinement | None:
        key = (sc.INTERACTION_PERM[interaction], rtype)
        if key in self._confinements:
            return self._confinements[key]
        conf = None if not d.grants else confinement_of(d.grants, self.access.patient, rtype, self.parser)
        self._confinements[key] = conf
        return conf


def confinement_of(grants: Iterable[sc.Grant], patient: str | None, rtype: str,
                   parser: QueryParser | None) -> Confinement:
    """A decision's grants as the store's Confinement for one type. A patient/ grant without a
    patient, or a filter that cannot apply to the type (unknown parameter, bad value), reaches
    nothing; the filters are compiled by the same parser as any search, so every parameter type
    and modifier works."""
    alternatives: list[Alternative] = []
    for grant in grants:
        if grant.patient and patient is None:
            continue
        clauses: list[Clause] = []
        for key, value in grant.filters:
            clause = None
            if parser is not None:
                try:
                    clause = parser.clause(rtype, key, value)
                except FhirError:
                    clause = None
            if clause is None:
                break
            clauses.append(clause)
        else:
            alternatives.append(Alternative(patient if grant.patient else None, tuple(clauses)))
    return Confinement(tuple(alternatives))
