"""SMART Backend Services, token checks on FHIR requests, introspection, revocation, discovery
and CORS: each negative row of the conformance checklist (research/smart.md section 4) that
applies to backend clients, over HTTP with freshly generated RS384 and ES384 keys."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from app.auth.clients import register_client

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Backend:
    """A registered backend client with its own private key."""

    def __init__(self, smart: Any, alg: str = "RS384", scope: str = "system/*.cruds", jwks_uri: str | None = None,
                 key: Any = None) -> None:
        self.smart = smart
        self.alg = alg
        self.client_id = f"backend-{uuid.uuid4().hex[:10]}"
        self.kid = uuid.uuid4().hex[:12]
        self.key = key or (RSAKey.generate_key(2048, parameters={"kid": self.kid}, private=True) if alg.startswith("RS")
                           else ECKey.generate_key("P-384", parameters={"kid": self.kid}, private=True))
        self.jwks = {"keys": [self.key.as_dict(private=False)]}
        register_client(smart.app, client_id=self.client_id, kind="backend", name="test engine", scope=scope,
                        jwks=None if jwks_uri else json.dumps(self.jwks), jwks_uri=jwks_uri)

    def assertion(self, *, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None,
                  drop: tuple[str, ...] = (), key: Any = None) -> str:
        h = {"alg": self.alg, "kid": self.kid, "typ": "JWT", **(header or {})}
        c = {"iss": self.client_id, "sub": self.client_id, "aud": self.smart.token_url,
             "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex, **(claims or {})}
        for k in drop:
            h.pop(k, None)
            c.pop(k, None)
        return jwt.encode(h, c, key or self.key, algorithms=[h["alg"]])

    def token_request(self, scope: str = "system/*.rs", assertion: str | None = None, **extra: str) -> Any:
        data = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion or self.assertion(), **extra}
        return self.smart.form("/auth/token", {k: v for k, v in data.items() if v is not None})

    def token(self, scope: str = "system/*.rs") -> str:
        r = self.token_request(scope)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- token endpoint


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_token_with_fresh_keys(smart, alg: str) -> None:
    b = Backend(smart, alg)
    r = b.token_request("system/Patient.rs system/Observation.read launch openid")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 300
    assert body["scope"].split() == ["system/Patient.rs", "system/Observation.read"]  # syntax echoed, others dropped
    assert "refresh_token" not in body
    assert "no-store" in r.headers["Cache-Control"] and "no-cache" in r.headers["Pragma"]
    # The token works on the FHIR API for what it grants...
    tok = body["access_token"]
    assert smart.fhir.get("Patient", headers=_bearer(tok)).status_code == 200
    assert smart.fhir.get("Observation", headers=_bearer(tok)).status_code == 200
    # ...and nothing else (N-20, N-23).
    r = smart.fhir.get("Condition", headers=_bearer(tok))
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    assert "search" in r.json()["issue"][0]["diagnostics"] and "Condition" in r.json()["issue"][0]["diagnostics"]
    r = smart.fhir.post("Patient", json={"resourceType": "Patient"}, headers=_bearer(tok))
    assert r.status_code == 403


def test_scope_is_capped_by_the_registered_ceiling(smart) -> None:
    b = Backend(smart, scope="system/Observation.rs")
    r = b.token_request("system/*.cruds")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Observation.rs"
    r = b.token_request("system/Patient.rs")  # N-31: nothing grantable
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = b.token_request("patient/*.rs user/*.rs")  # not system/ scopes
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def test_missing_scope_is_invalid_request(smart) -> None:
    b = Backend(smart)
    r = b.token_request(scope="")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_unknown_grant_type_is_400(smart) -> None:  # N-25
    b = Backend(smart)
    r = b.token_request(grant_type="not_a_grant_type")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_bad_assertion_type_is_invalid_client(smart) -> None:  # N-26
    b = Backend(smart)
    r = b.token_request(client_assertion_type="not_an_assertion_type")
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"


def test_token_request_must_be_form_encoded(smart) -> None:  # N-13
    r = smart.fhir.request("POST", smart.token_url, data=json.dumps({"grant_type": "client_credentials"}),
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def _bad_assertions(b: Backend) -> dict[str, str]:
    other = RSAKey.generate_key(2048, parameters={"kid": b.kid}, private=True)
    now = int(time.time())
    unsigned = ".".join(x for x in b.assertion().split(".")[:2]) + "."
    return {
        "bad signature": b.assertion(key=other),
        "unknown kid": b.assertion(header={"kid": "nope"}),
        "no kid": b.assertion(drop=("kid",)),
        "typ not JWT": b.assertion(header={"typ": "at+jwt"}),
        "alg none": unsigned,
        "iss differs from sub": b.assertion(claims={"sub": "someone-else"}),
        "unknown iss": b.assertion(claims={"iss": "no-such-client", "sub": "no-such-client"}),
        "aud not the token url": b.assertion(claims={"aud": b.smart.base}),
        "exp in the past": b.assertion(claims={"exp": now - 120}),
        "exp too far ahead": b.assertion(claims={"exp": now + 900}),
        "no exp": b.assertion(drop=("exp",)),
        "no jti": b.assertion(drop=("jti",)),
        "jku not registered": b.assertion(header={"jku": "https://attacker.example/jwks.json"}),
        "not a JWS": "not-a-jwt",
    }


BAD_CASES = ["bad signature", "unknown kid", "no kid", "typ not JWT", "alg none", "iss differs from sub",
             "unknown iss", "aud not the token url", "exp in the past", "exp too far ahead", "no exp", "no jti",
             "jku not registered", "not a JWS"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_client_assertions_are_invalid_client(smart, case: str) -> None:  # N-27, N-28, N-30
    b = Backend(smart)
    r = b.token_request(assertion=_bad_assertions(b)[case])
    assert r.status_code in (400, 401), (case, r.text)
    assert r.json()["error"] == "invalid_client", case
    assert r.json()["error_description"]


def test_es384_signature_checked(smart) -> None:
    b = Backend(smart, "ES384")
    other = ECKey.generate_key("P-384", parameters={"kid": b.kid}, private=True)
    r = b.token_request(assertion=b.assertion(key=other))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_alg_outside_the_allow_list_is_refused(smart) -> None:
    b = Backend(smart, "RS384")
    r = b.token_request(assertion=b.assertion(header={"alg": "RS256"}))
    assert r.status_code == 401 and "alg" in r.json()["error_description"]


def test_replayed_jti_is_refused(smart) -> None:  # N-29
    b = Backend(smart)
    a = b.assertion()
    assert b.token_request(assertion=a).status_code == 200
    r = b.token_request(assertion=a)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "jti" in r.json()["error_description"]


def test_jwks_uri_and_matching_jku(smart) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    key = RSAKey.generate_key(2048, parameters={"kid": "served"}, private=True)
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"keys": [key.as_dict(private=False)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "max-age=120")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/jwks.json"
        b = Backend(smart, jwks_uri=url, key=key)
        b.kid = "served"
        assert b.token_request(assertion=b.assertion(header={"jku": url})).status_code == 200
        assert b.token_request().status_code == 200
        assert hits  # fetched from the registered URL
    finally:
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------- FHIR requests with tokens


def test_no_token_is_401_with_a_challenge(smart) -> None:  # N-17
    r = smart.fhir.get("Patient/does-not-matter")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    # Before the body is looked at: a malformed body without a token is still 401.
    r = smart.fhir.request("POST", "Patient", data=b"{not json", headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 401


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
def test_garbage_tokens_are_invalid_token(smart, token: str) -> None:  # N-19
    r = smart.fhir.get("Patient", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    if token:
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_token_for_another_audience_is_refused(smart) -> None:  # N-19 other aud
    from app.auth import internal_token

    tok = internal_token(smart.app, "https://elsewhere.example/fhir")
    r = smart.fhir.get("Patient", headers=_bearer(tok))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_expired_token_is_refused(smart) -> None:
    from app.auth import internal_token

    tok = internal_token(smart.app, smart.base, lifetime_s=-10)
    r = smart.fhir.get("Patient", headers=_bearer(tok))
    assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]


def test_metadata_and_discovery_need_no_token(smart) -> None:
    meta = smart.fhir.get("metadata").json()
    sec = meta["rest"][0]["security"]
    assert sec["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in sec["extension"][0]["extension"]}
    conf = smart.fhir.get(".well-known/smart-configuration", headers={"Accept": "application/json"})
    assert conf.status_code == 200 and conf.headers["Content-Type"].startswith("application/json")
    c = conf.json()
    # The same URLs in both documents (C2).
    assert uris["token"] == c["token_endpoint"] and uris["introspect"] == c["introspection_endpoint"]
    assert uris["revoke"] == c["revocation_endpoint"]
    assert "client_credentials" in c["grant_types_supported"] and "plain" not in c["code_challenge_methods_supported"]
    assert all(isinstance(x, str) for x in c["capabilities"])
    jwks = smart.fhir.request("GET", c["jwks_uri"]).json()
    assert jwks["keys"] and all("d" not in k and k["kty"] == "RSA" for k in jwks["keys"])


def test_system_search_needs_a_wildcard_scope(smart) -> None:
    b = Backend(smart)
    tok = b.token("system/Patient.rs")
    r = smart.fhir.get("", params={"_type": "Patient"}, headers=_bearer(tok))
    assert r.status_code == 403
    r = smart.fhir.get("_history", headers=_bearer(tok))
    assert r.status_code == 403
    tok = b.token("system/*.rs")
    assert smart.fhir.get("_history", headers=_bearer(tok)).status_code == 200


def test_includes_of_types_not_granted_are_left_out(smart) -> None:
    admin = Backend(smart).token("system/*.cruds")
    org = smart.fhir.post("Organization", json={"resourceType": "Organization", "name": "Hidden"},
                          headers=_bearer(admin)).json()
    fam = "Inc" + uuid.uuid4().hex[:8]
    smart.fhir.post("Patient", json={"resourceType": "Patient", "name": [{"family": fam}],
                                     "managingOrganization": {"reference": f"Organization/{org['id']}"}},
                    headers=_bearer(admin))
    full = smart.fhir.get("Patient", params={"family": fam, "_include": "Patient:organization"},
                          headers=_bearer(admin)).json()
    assert {e["resource"]["resourceType"] for e in full["entry"]} == {"Patient", "Organization"}
    tok = Backend(smart).token("system/Patient.rs")
    part = smart.fhir.get("Patient", params={"family": fam, "_include": "Patient:organization"},
                          headers=_bearer(tok)).json()
    assert [e["resource"]["resourceType"] for e in part["entry"]] == ["Patient"]


def test_every_bundle_entry_is_checked(smart) -> None:  # S9
    b = Backend(smart, scope="system/Patient.cruds system/Observation.rs")
    tok = b.token("system/Patient.cruds system/Observation.rs")
    fam = "Tx" + uuid.uuid4().hex[:8]
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": fam}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                               "subject": {"reference": "urn:uuid:1"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    r = smart.fhir.post("", json=tx, headers=_bearer(tok))
    assert r.status_code == 403
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    # Atomic: the allowed Patient entry was not written either.
    found = smart.fhir.get("Patient", params={"family": fam}, headers=_bearer(tok)).json()
    assert found.get("entry", []) == []
    batch = dict(tx, type="batch")
    r = smart.fhir.post("", json=batch, headers=_bearer(tok))
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")


# ---------------------------------------------------------------- introspection and revocation


def test_introspection(smart) -> None:
    b = Backend(smart)
    tok = b.token("system/*.rs")
    caller = Backend(smart).token("system/*.rs")
    r = smart.form("/auth/introspect", {"token": tok}, _bearer(caller))
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["active"] is True and info["client_id"] == b.client_id
    assert set(info["scope"].split()) == {"system/*.rs"}
    assert isinstance(info["exp"], int) and info["exp"] > time.time()
    r = smart.form("/auth/introspect", {"token": "invalid_token_value"}, _bearer(caller))  # N-24
    assert r.status_code == 200 and r.json() == {"active": False}
    # The caller must authenticate: none, or a token without system/*.rs, is 401.
    assert smart.form("/auth/introspect", {"token": tok}).status_code == 401
    weak = Backend(smart).token("system/Patient.rs")
    assert smart.form("/auth/introspect", {"token": tok}, _bearer(weak)).status_code == 401
    # A backend client may also authenticate with its own client assertion.
    r = smart.form("/auth/introspect", {"token": tok, "client_assertion_type": ASSERTION_TYPE,
                                        "client_assertion": b.assertion()})
    assert r.status_code == 200 and r.json()["active"] is True


def test_revoked_token_is_refused_at_once(smart) -> None:  # N-18, V2
    b = Backend(smart)
    tok = b.token("system/*.rs")
    assert smart.fhir.get("Patient", headers=_bearer(tok)).status_code == 200
    r = smart.form("/auth/revoke", {"token": tok, "client_assertion_type": ASSERTION_TYPE,
                                    "client_assertion": b.assertion()})
    assert r.status_code == 200
    r = smart.fhir.get("Patient", headers=_bearer(tok))
    assert r.status_code == 401 and "revoked" in r.json()["issue"][0]["diagnostics"]
    caller = Backend(smart).token("system/*.rs")
    assert smart.form("/auth/introspect", {"token": tok}, _bearer(caller)).json() == {"active": False}
    # Revoking an unknown token is still 200 (RFC 7009).
    r = smart.form("/auth/revoke", {"token": "unknown", "client_assertion_type": ASSERTION_TYPE,
                                    "client_assertion": b.assertion()})
    assert r.status_code == 200


def test_a_client_cannot_revoke_another_clients_token(smart) -> None:
    a, other = Backend(smart), Backend(smart)
    tok = a.token()
    smart.form("/auth/revoke", {"token": tok, "client_assertion_type": ASSERTION_TYPE,
                                "client_assertion": other.assertion()})
    assert smart.fhir.get("Patient", headers=_bearer(tok)).status_code == 200


# ---------------------------------------------------------------- CORS


def test_cors_on_fhir_token_and_error_responses(smart) -> None:
    origin = {"Origin": "https://app.example"}
    assert smart.fhir.get("metadata", headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    r = smart.fhir.get("Patient", headers=origin)  # a 401 a browser app must be able to read
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "www-authenticate" in r.headers["Access-Control-Expose-Headers"]
    r = smart.form("/auth/token", {"grant_type": "client_credentials"}, origin)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    pre = smart.fhir.request("OPTIONS", f"{smart.root}/auth/token",
                             headers={**origin, "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in pre.headers
