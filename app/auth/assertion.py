"""private_key_jwt client authentication (RFC 7523 as profiled by SMART Backend Services):
every check of the client-assertion JWT, each failing with its own reason."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KTY = {"RS": "RSA", "ES": "EC"}
MAX_LIFETIME_S = 300
CLOCK_SKEW_S = 60


class AssertionError_(Exception):
    """The assertion is refused; the message is safe to send as error_description."""


@dataclass(frozen=True, slots=True)
class Claims:
    client_id: str
    jti: str
    exp: int


def unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before the signature is checked (to find the client and its key)."""
    try:
        obj = jws.extract_compact(assertion.encode())
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, UnicodeDecodeError):
        raise AssertionError_("client_assertion is not a compact JWS") from None
    if not isinstance(claims, dict):
        raise AssertionError_("client_assertion claims are not a JSON object")
    return dict(obj.protected), claims


class JwksCache:
    """JWKS fetched from client jwks_uri values, kept as long as their Cache-Control allows (and
    no longer than an hour)."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, url: str) -> dict[str, Any]:
        with self._lock:
            hit = self._cache.get(url)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            r = requests.get(url, timeout=self.timeout_s, headers={"Accept": "application/json"})
            r.raise_for_status()
            data = r.json()
        except (requests.RequestException, ValueError):
            raise AssertionError_("the client's JWKS could not be fetched from its jwks_uri") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise AssertionError_("the client's jwks_uri did not return a JWKS")
        cc = r.headers.get("Cache-Control", "")
        m = re.search(r"max-age=(\d+)", cc)
        ttl = 0 if ("no-store" in cc or "no-cache" in cc) else min(int(m[1]), 3600) if m else 300
        if ttl:
            with self._lock:
                self._cache[url] = (time.monotonic() + ttl, data)
        return data


def check(assertion: str, *, client_id: str, jwks: dict[str, Any], token_url: str, algorithms: frozenset[str],
          header: dict[str, Any], claims: dict[str, Any], now: float | None = None) -> Claims:
    """Verify a client assertion (header and claims from unverified()) against the client's keys;
    the jti is for the caller to remember."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise AssertionError_(f"alg '{alg}' is not accepted; use one of {', '.join(sorted(algorithms))}")
    if header.get("typ") != "JWT":
        raise AssertionError_("the assertion header must have typ 'JWT'")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AssertionError_("the assertion header must name its key (kid)")
    kty = KTY[alg[:2]]
    candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == kty]
    if len(candidates) != 1:
        raise AssertionError_(f"no single {kty} key with kid '{kid}' is registered for the client")
    try:
        key = (RSAKey if kty == "RSA" else ECKey).import_key(candidates[0])
        jws.deserialize_compact(assertion, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError):
        raise AssertionError_("the assertion signature does not verify") from None
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionError_("iss and sub of the assertion must both be the client_id")
    aud = claims.get("aud")
    if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
        raise AssertionError_(f"aud of the assertion must be the token endpoint {token_url}")
    exp = claims.get("exp")
    t = time.time() if now is None else now
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionError_("the assertion needs a numeric exp")
    if exp <= t - CLOCK_SKEW_S:
        raise AssertionError_("the assertion has expired")
    if exp > t + MAX_LIFETIME_S + CLOCK_SKEW_S:
        raise AssertionError_(f"the assertion's exp is more than {MAX_LIFETIME_S} s ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 200:
        raise AssertionError_("the assertion needs a jti")
    return Claims(client_id, jti, int(exp))
