"""Access tokens: RS256 JWTs bound to the FHIR base (`aud`), each with a row in oauth_token so
that revocation is seen at once by every worker process. Refresh tokens are random values
stored as hashes, rotated on use, bound to their client."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from joserfc import jwt
from joserfc.errors import JoseError

from app.store.auth_store import AuthStore, TokenRow, UserRow

from . import scopes as sc
from .hashing import random_token, token_hash
from .keys import ALG, SigningKeys


class InvalidToken(Exception):
    """The bearer token cannot be used; the message says why (sent as error_description)."""


@dataclass(frozen=True, slots=True)
class AccessContext:
    """Who is calling and what the token allows (what the pipeline checks every interaction against)."""

    client_id: str
    scope: str
    scopes: tuple[sc.ResourceScope, ...]
    jti: str
    username: str | None = None
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None


class Issued(NamedTuple):
    body: dict[str, Any]  # the token response fields
    jti: str


def now_us() -> int:
    return time.time_ns() // 1000


def issue(store: AuthStore, keys: SigningKeys, *, issuer: str, audience: str, client_id: str, scope: str,
          lifetime_s: int, username: str | None = None, patient: str | None = None, encounter: str | None = None,
          fhir_user: str | None = None, refresh_lifetime_s: int | None = None, family: str | None = None) -> Issued:
    """Sign an access token (and make a refresh token when `refresh_lifetime_s` is given), record
    both, and return the token response fields with the new token's id."""
    now = now_us()
    jti = random_token(18)
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": username or client_id, "client_id": client_id, "scope": scope,
        "iat": now // 1_000_000, "exp": now // 1_000_000 + lifetime_s, "jti": jti,
    }
    if patient:
        claims["patient"] = patient
    if fhir_user:
        claims["fhirUser"] = fhir_user
    access = jwt.encode({"alg": ALG, "kid": keys.signing_kid, "typ": "at+jwt"}, claims, keys.private)
    refresh = random_token(32) if refresh_lifetime_s else None
    store.add_token(TokenRow(
        jti=jti, client_id=client_id, username=username, scope=scope, patient=patient, encounter=encounter,
        fhir_user=fhir_user, issued_us=now, expires_us=now + lifetime_s * 1_000_000,
        refresh_hash=token_hash(refresh) if refresh else None,
        refresh_expires_us=now + refresh_lifetime_s * 1_000_000 if refresh and refresh_lifetime_s else None,
        family=family or jti, revoked=False,
    ))
    out: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": lifetime_s, "scope": scope}
    if refresh:
        out["refresh_token"] = refresh
    if patient:
        out["patient"] = patient
    if encounter:
        out["encounter"] = encounter
    return Issued(out, jti)


def id_token(keys: SigningKeys, *, issuer: str, client_id: str, user: UserRow, fhir_base: str, nonce: str | None,
             auth_time: int, lifetime_s: int) -> str:
    """The OpenID Connect id_token (RS256) of a user, with `fhirUser` as an absolute URL."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer, "sub": user.username, "aud": client_id, "iat": now, "exp": now + lifetime_s,
        "auth_time": auth_time, "fhirUser": f"{fhir_base}/{user.fhir_user}",
    }
    if user.name:
        claims["name"] = user.name
    if nonce:
        claims["nonce"] = nonce
    return str(jwt.encode({"alg": ALG, "kid": keys.signing_kid, "typ": "JWT"}, claims, keys.private))


_VERIFIED: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()  # (token, audience) -> claims
_VERIFIED_MAX = 2048
_verified_lock = threading.Lock()


def decode(keys: SigningKeys, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of one of our own access tokens, signature and audience checked; InvalidToken
    otherwise. A token's signature is verified once per process (an RSA verification is most of
    the cost of a plain read); expiry is checked on every call, revocation by the caller."""
    key = (token, audience)
    with _verified_lock:
        hit = _VERIFIED.get(key)
        if hit is not None:
            _VERIFIED.move_to_end(key)
    if hit is not None and hit["iss"] == issuer:
        if hit["exp"] <= time.time():
            raise InvalidToken("The access token has expired")
        return hit
    claims = _decode(keys, token, issuer=issuer, audience=audience)
    with _verified_lock:
        _VERIFIED[key] = claims
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return claims


def _decode(keys: SigningKeys, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
    try:
        tok = jwt.decode(token, keys.private, algorithms=[ALG])
    except (JoseError, ValueError, TypeError):
        keys.refresh()  # perhaps signed with a key rotated in by another process
        try:
            tok = jwt.decode(token, keys.private, algorithms=[ALG])
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("The access token is malformed or its signature does not verify") from None
    claims = dict(tok.claims)
    if tok.header.get("typ") != "at+jwt":
        raise InvalidToken("The token is not an access token")
    if claims.get("iss") != issuer or claims.get("aud") != audience:
        raise InvalidToken("The access token was issued for another server")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= time.time():
        raise InvalidToken("The access token has expired")
    if not isinstance(claims.get("jti"), str):
        raise InvalidToken("The access token has no id")
    return claims


def verify(store: AuthStore, keys: SigningKeys, token: str, *, issuer: str, audience: str) -> AccessContext:
    return check_row(store, decode(keys, token, issuer=issuer, audience=audience))


def check_row(store: AuthStore, claims: dict[str, Any]) -> AccessContext:
    """Decoded claims -> the token's context, if its row says it is still live."""
    row = store.token(claims["jti"])
    if row is None or row.revoked:
        raise InvalidToken("The access token has been revoked")
    if row.expires_us <= now_us():
        raise InvalidToken("The access token has expired")
    return context_of(row)


@functools.lru_cache(maxsize=1024)
def _parsed(scope: str) -> tuple[sc.ResourceScope, ...]:
    # Tokens of one client carry the same scope string request after request.
    return tuple(s for s in (sc.parse_scope(t) for t in sc.split(scope)) if s is not None)


def context_of(row: TokenRow) -> AccessContext:
    parsed = _parsed(row.scope)
    return AccessContext(client_id=row.client_id, scope=row.scope, scopes=parsed, jti=row.jti, username=row.username,
                         patient=row.patient, encounter=row.encounter, fhir_user=row.fhir_user)
