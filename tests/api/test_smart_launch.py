"""SMART App Launch over HTTP: discovery, the authorize endpoint with its login, patient-picker
and approval pages, authorization code + PKCE, EHR launch, id_token, refresh, and the negative
checks of research/smart.md section 4 (N-1..N-16). Runs in process and against gunicorn."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from app.auth.clients import add_user, register_client
from tests.api.smart_flow import (
    LAUNCH_URI,
    REDIRECT,
    Browser,
    Page,
    authorize_url,
    exchange,
    forms,
    log_in_and_approve,
    pkce,
    redirect_params,
)

PASSWORD = "correct-horse-battery"


class World:
    """Two patients, a practitioner and a patient user, a public and a confidential app."""

    def __init__(self, smart: Any) -> None:
        self.smart = smart
        tag = uuid.uuid4().hex[:8]
        admin = smart.admin
        self.patient = admin.post("Patient", json={"resourceType": "Patient", "name": [
            {"family": f"Picker{tag}", "given": ["Ann"]}], "birthDate": "1970-01-02"}).json()["id"]
        self.other = admin.post("Patient", json={"resourceType": "Patient", "name": [
            {"family": f"Other{tag}"}]}).json()["id"]
        self.practitioner = admin.post("Practitioner", json={"resourceType": "Practitioner", "name": [
            {"family": "House"}]}).json()["id"]
        self.encounter = admin.post("Encounter", json={
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{self.patient}"}}).json()["id"]
        self.doc = f"doc-{tag}"
        add_user(smart.app, username=self.doc, password=PASSWORD, fhir_user=f"Practitioner/{self.practitioner}",
                 name="Dr House")
        self.pat_user = f"pat-{tag}"
        add_user(smart.app, username=self.pat_user, password=PASSWORD, fhir_user=f"Patient/{self.patient}")
        self.public = f"public-{tag}"
        register_client(smart.app, client_id=self.public, kind="public", name="Public app",
                        redirect_uris=[REDIRECT], launch_uri=LAUNCH_URI)
        self.confidential = f"conf-{tag}"
        _, secret = register_client(smart.app, client_id=self.confidential, kind="confidential-symmetric",
                                    name="Confidential app", redirect_uris=[REDIRECT], launch_uri=LAUNCH_URI)
        assert secret
        self.secret = secret
        self.browser = Browser(smart)

    def login(self, scope: str, *, client: str | None = None, user: str | None = None, **kw: Any) -> Any:
        return log_in_and_approve(self.smart, self.browser, client or self.public, scope, username=user or self.doc,
                                  password=PASSWORD, **kw)

    def token(self, scope: str, *, client: str | None = None, **kw: Any) -> dict[str, Any]:
        flow = self.login(scope, client=client, **kw)
        secret = self.secret if client == self.confidential else None
        r = exchange(self.smart, flow, client or self.public, secret=secret)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def read(self, token: str, path: str) -> Any:
        return self.smart.fhir.get(path, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def world(smart: Any) -> World:
    return World(smart)


def _fields(page: Page) -> set[str]:
    return {n for f in forms(page.html) for n in f.names}


def _fresh_browser(world: World) -> Browser:
    """Log out first: the smart fixture's client keeps the session cookie across requests."""
    world.smart.fhir.get(f"{world.smart.root}/auth/logout")
    return world.browser


# ----------------------------------------------------------------------------- discovery

CAPABILITIES = {"launch-standalone", "launch-ehr", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "sso-openid-connect", "context-standalone-patient",
                "context-ehr-patient", "context-ehr-encounter", "context-banner", "context-style",
                "permission-offline", "permission-patient", "permission-user", "permission-v1", "permission-v2",
                "authorize-post"}


def test_discovery_documents_agree(smart: Any) -> None:
    conf = smart.fhir.get(".well-known/smart-configuration", headers={"Accept": "application/json"})
    assert conf.status_code == 200 and conf.headers["Content-Type"].startswith("application/json")
    c = conf.json()
    assert set(c["capabilities"]) >= CAPABILITIES
    assert all(isinstance(x, str) for x in c["capabilities"])
    assert "authorization_code" in c["grant_types_supported"] and "client_credentials" in c["grant_types_supported"]
    assert c["code_challenge_methods_supported"] == ["S256"]
    assert c["authorization_endpoint"] == f"{smart.root}/auth/authorize"
    assert c["issuer"] == smart.base and isinstance(c["jwks_uri"], str)
    assert c["response_types_supported"] == ["code"]
    meta = smart.fhir.get("metadata").json()
    ext = {e["url"]: e["valueUri"] for e in meta["rest"][0]["security"]["extension"][0]["extension"]}
    assert ext["authorize"] == c["authorization_endpoint"] and ext["token"] == c["token_endpoint"]
    oidc = smart.fhir.get(".well-known/openid-configuration", headers={"Accept": "application/json"}).json()
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                "subject_types_supported", "id_token_signing_alg_values_supported"):
        assert oidc[key], key
    assert oidc["issuer"] == c["issuer"] and "RS256" in oidc["id_token_signing_alg_values_supported"]
    assert oidc["authorization_endpoint"] == c["authorization_endpoint"]


# ----------------------------------------------------------------------------- standalone launch

def test_standalone_launch_with_picker_gives_a_complete_token_response(world: World) -> None:
    smart = world.smart
    _fresh_browser(world)
    flow = world.login("launch/patient openid fhirUser offline_access user/*.rs", patient=world.patient)
    assert [_fields(p) & {"password", "choose", "approve"} for p in flow.pages[:3]] == [
        {"password"}, {"choose"}, {"approve"}]
    assert "Patient/" in flow.pages[1].html  # the picker lists patients
    assert flow.params["state"] == flow.state and "code" in flow.params and "error" not in flow.params
    assert all(c.isalnum() or c in "-_" for c in flow.params["code"])
    r = exchange(smart, flow, world.public)
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["Cache-Control"] and "no-cache" in r.headers["Pragma"]
    t = r.json()
    assert t["token_type"] == "Bearer" and isinstance(t["expires_in"], int) and 0 < t["expires_in"] <= 3600
    assert t["scope"].split() == ["launch/patient", "openid", "fhirUser", "offline_access", "user/*.rs"]
    assert t["patient"] == world.patient and t["need_patient_banner"] is True
    assert isinstance(t["refresh_token"], str) and t["refresh_token"]
    style = smart.fhir.get(t["smart_style_url"])
    assert style.status_code == 200 and "color_background" in style.json()
    # The id_token: RS256 by a key of the published JWKS, for this client, fhirUser absolute and readable.
    jwks = smart.fhir.get(f"{smart.root}/auth/jwks").json()
    idt = jwt.decode(t["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert idt.header["alg"] == "RS256" and idt.header["kid"] in {k["kid"] for k in jwks["keys"]}
    c = idt.claims
    assert c["iss"] == smart.base and c["aud"] == world.public and c["sub"] == world.doc
    assert c["exp"] > time.time() and c["iat"] <= time.time() + 5
    assert c["fhirUser"] == f"{smart.base}/Practitioner/{world.practitioner}"
    me = world.read(t["access_token"], c["fhirUser"])
    assert me.status_code == 200 and me.json()["resourceType"] == "Practitioner"
    assert world.read(t["access_token"], f"Patient/{world.patient}").status_code == 200
    # Introspection reports the same context (caller: a system/*.rs bearer).
    intro = smart.form("/auth/introspect", {"token": t["access_token"]},
                       {"Authorization": f"Bearer {smart.admin.token}"}).json()
    assert intro["active"] is True and intro["patient"] == world.patient and intro["sub"] == c["sub"]
    assert intro["fhirUser"] == f"Practitioner/{world.practitioner}"
    assert set(intro["scope"].split()) == set(t["scope"].split())


def test_the_picker_finds_patients_by_name(world: World) -> None:
    browser = _fresh_browser(world)
    _, challenge = pkce()
    page = browser.get(authorize_url(world.smart, world.public, "launch/patient user/*.rs", challenge))
    page = browser.submit(page.form_with("password"), {"username": world.doc, "password": PASSWORD})
    family = world.smart.admin.get(f"Patient/{world.patient}").json()["name"][0]["family"]
    found = browser.submit(page.form_with("find"), {"q": family}, button="find")
    choose = found.form_with("choose")
    assert ("patient", world.patient) in choose.fields and f"Ann {family}" in found.html
    assert world.other not in found.html
    unknown = browser.submit(choose, {"patient": "no-such-patient"}, button="choose")
    assert unknown.status == 200 and "No patient with that id" in unknown.html and unknown.location is None


def test_authorize_by_form_post_and_a_confidential_client(world: World) -> None:
    flow = world.login("openid fhirUser user/Patient.rs", client=world.confidential, post=True)
    assert "code" in flow.params
    # fhirclient-py sends client_id in the body and Basic credentials; they agree.
    r = exchange(world.smart, flow, world.confidential, secret=world.secret, extra={"client_id": world.confidential,
                                                                                       "state": "ignored"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "openid fhirUser user/Patient.rs" and "patient" not in r.json()


def test_client_secret_post_is_accepted(world: World) -> None:
    flow = world.login("user/Patient.rs", client=world.confidential)
    r = exchange(world.smart, flow, world.confidential,
                 extra={"client_secret": world.secret})
    assert r.status_code == 200, r.text


def test_unchecked_scopes_are_not_granted(world: World) -> None:
    t = world.token("user/Patient.rs user/Observation.rs offline_access", scopes=["user/Patient.rs"])
    assert t["scope"] == "user/Patient.rs"
    assert "refresh_token" not in t
    assert world.read(t["access_token"], "Patient").status_code == 200
    denied = world.read(t["access_token"], "Observation")
    assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"


def test_v1_syntax_is_echoed_and_unknown_scopes_are_dropped(world: World) -> None:
    t = world.token("user/Patient.read user/Nonsense.read bogus/scope system/*.read")
    assert t["scope"] == "user/Patient.read"


def test_a_patient_user_gets_their_own_record_without_a_picker(world: World) -> None:
    _fresh_browser(world)
    flow = world.login("launch/patient openid fhirUser patient/*.rs user/*.rs", user=world.pat_user)
    assert not any("choose" in _fields(p) for p in flow.pages)
    t = exchange(world.smart, flow, world.public).json()
    assert t["patient"] == world.patient
    assert t["scope"] == "launch/patient openid fhirUser patient/*.rs"  # user/ dropped for a patient (S8)


def test_patient_scopes_without_a_patient_context_are_not_granted(world: World) -> None:
    _fresh_browser(world)
    t = world.token("openid fhirUser patient/*.rs user/Patient.rs")
    assert t["scope"] == "openid fhirUser user/Patient.rs" and "patient" not in t


def test_wrong_password_shows_the_login_again(world: World) -> None:
    browser = _fresh_browser(world)
    _, challenge = pkce()
    page = browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge))
    again = browser.submit(page.form_with("password"), {"username": world.doc, "password": "wrong-password"})
    assert again.status == 401 and again.location is None and "password" in _fields(again)
    nobody = browser.submit(page.form_with("password"), {"username": "nobody", "password": "wrong-password"})
    assert nobody.status == 401 and nobody.html.count("Unknown user name or wrong password") == 1


def test_deny_redirects_with_access_denied_and_state(world: World) -> None:
    browser = _fresh_browser(world)
    _, challenge = pkce()
    page = browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge, state="s-123"))
    page = browser.submit(page.form_with("password"), {"username": world.doc, "password": PASSWORD})
    denied = browser.submit(page.form_with("approve"), button="deny")
    p = redirect_params(denied.location)
    assert denied.status == 302 and denied.location.startswith(REDIRECT)
    assert p == {"error": "access_denied", "error_description": p["error_description"], "state": "s-123"}


def test_a_forged_approval_is_refused(world: World) -> None:
    browser = world.browser
    world.login("user/*.rs")  # logged in now
    _, challenge = pkce()
    page = browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge))
    form = page.form_with("approve")
    forged = browser.submit(form, {"csrf": "not-the-session-value"}, button="approve")
    assert forged.status == 400 and forged.location is None
    tampered = browser.submit(form, {"request": form.fields[0][1][:-3] + "xyz"}, button="approve")
    assert tampered.status == 400 and tampered.location is None


def test_a_logged_in_user_skips_the_login_page(world: World) -> None:
    world.login("user/*.rs")
    flow = world.login("user/*.rs")
    assert _fields(flow.pages[0]) & {"password", "approve"} == {"approve"}


# ----------------------------------------------------------------------------- EHR launch

def _ehr_launch(world: World, patient: str | None, encounter: str | None = None, client: str | None = None,
                token: str | None = None) -> Any:
    q = f"client_id={client or world.public}" + (f"&patient={patient}" if patient else "")
    q += f"&encounter={encounter}" if encounter else ""
    return world.smart.fhir.get(f"{world.smart.root}/auth/ehr-launch?{q}",
                                headers={"Authorization": f"Bearer {token or world.smart.admin.token}"})


def test_ehr_launch_by_admin_token_binds_patient_and_encounter(world: World) -> None:
    r = _ehr_launch(world, world.patient, world.encounter)
    assert r.status_code == 302
    p = redirect_params(r.headers["Location"])
    assert r.headers["Location"].startswith(LAUNCH_URI) and p["iss"] == world.smart.base and p["launch"]
    _fresh_browser(world)
    flow = world.login("launch openid fhirUser user/*.rs", launch=p["launch"])
    assert not any("choose" in _fields(pg) for pg in flow.pages)
    t = exchange(world.smart, flow, world.public).json()
    assert t["patient"] == world.patient and t["encounter"] == world.encounter
    assert t["need_patient_banner"] is False and t["smart_style_url"]
    assert world.read(t["access_token"], f"Encounter/{world.encounter}").status_code == 200
    # Single use: the same launch cannot authorize again.
    _, challenge = pkce()
    again = world.browser.get(authorize_url(world.smart, world.public, "launch user/*.rs", challenge,
                                            launch=p["launch"], state="st"))
    q = redirect_params(again.location)
    assert again.status == 302 and q["error"] == "invalid_request" and q["state"] == "st" and "code" not in q


def test_ehr_launch_by_a_logged_in_practitioner(world: World) -> None:
    world.login("user/*.rs")  # logs the practitioner in (the EHR session)
    r = world.smart.fhir.get(f"{world.smart.root}/auth/ehr-launch?client_id={world.public}&patient={world.patient}")
    assert r.status_code == 302 and "launch=" in r.headers["Location"]


def test_ehr_launch_refusals(world: World) -> None:
    _fresh_browser(world)
    anonymous = world.smart.fhir.get(f"{world.smart.root}/auth/ehr-launch?client_id={world.public}")
    assert anonymous.status_code == 401 and "Location" not in anonymous.headers
    assert _ehr_launch(world, "no-such-patient").status_code == 404
    assert _ehr_launch(world, world.patient, client="no-such-client").status_code == 400
    weak = world.smart.app
    from app.auth import internal_token

    reader = internal_token(weak, world.smart.base, scope="system/*.rs", lifetime_s=600)
    assert _ehr_launch(world, world.patient, token=reader).status_code == 403


def test_n5_launch_of_another_client_is_refused(world: World) -> None:
    p = redirect_params(_ehr_launch(world, world.patient, client=world.confidential).headers["Location"])
    _, challenge = pkce()
    r = world.browser.get(authorize_url(world.smart, world.public, "launch user/*.rs", challenge, launch=p["launch"]))
    assert r.status == 302 and redirect_params(r.location)["error"] == "invalid_request"
    r = world.browser.get(authorize_url(world.smart, world.public, "launch user/*.rs", challenge, launch="made-up"))
    assert r.status == 302 and redirect_params(r.location)["error"] == "invalid_request"


# ----------------------------------------------------------------------------- authorize negatives

def test_n1_foreign_aud_gets_no_code(world: World) -> None:
    _, challenge = pkce()
    for aud in ("https://inferno.healthit.gov/invalid_aud", world.smart.base + "x", ""):
        r = world.browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge, state="st-1", aud=aud)
                              if aud else authorize_url(world.smart, world.public, "user/*.rs", challenge,
                                                        state="st-1").replace("&aud=", "&x="))
        p = redirect_params(r.location)
        assert r.status == 302 and p["error"] == "invalid_request" and p["state"] == "st-1" and "code" not in p
    # A trailing slash and upper-case host are the same base.
    ok = world.browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge,
                                         aud=world.smart.base.replace("http://", "HTTP://") + "/"))
    assert ok.location is None or "error" not in redirect_params(ok.location)


def test_n2_n3_unknown_client_or_redirect_uri_is_not_redirected(world: World) -> None:
    _, challenge = pkce()
    for url in (authorize_url(world.smart, "no-such-client", "user/*.rs", challenge),
                authorize_url(world.smart, world.public, "user/*.rs", challenge, redirect_uri="https://evil.example/cb"),
                authorize_url(world.smart, world.public, "user/*.rs", challenge, redirect_uri=REDIRECT + "/x")):
        r = world.browser.get(url)
        assert r.status == 400 and r.location is None


def test_n4_pkce_is_required_and_plain_refused(world: World) -> None:
    base = authorize_url(world.smart, world.public, "user/*.rs", None, state="st-4")
    for extra in ("", "&code_challenge=" + "a" * 43 + "&code_challenge_method=plain",
                  "&code_challenge=" + "a" * 43, "&code_challenge_method=S256"):
        r = world.browser.get(base + extra)
        p = redirect_params(r.location)
        assert r.status == 302 and p["error"] == "invalid_request" and p["state"] == "st-4" and "code" not in p


def test_n6_response_type_must_be_code(world: World) -> None:
    _, challenge = pkce()
    url = authorize_url(world.smart, world.public, "user/*.rs", challenge, state="st-6")
    r = world.browser.get(url.replace("response_type=code", "response_type=token"))
    assert r.status == 302 and redirect_params(r.location)["error"] == "unsupported_response_type"
    assert redirect_params(r.location)["state"] == "st-6"
    r = world.browser.get(url.replace("response_type=code&", ""))
    assert r.status == 302 and redirect_params(r.location)["error"] == "invalid_request"


def test_repeated_parameters_are_refused(world: World) -> None:
    _, challenge = pkce()
    r = world.browser.get(authorize_url(world.smart, world.public, "user/*.rs", challenge) + "&scope=user/*.cruds")
    assert r.status == 400 and r.location is None


def test_nothing_grantable_is_invalid_scope(world: World) -> None:
    world.login("user/*.rs")
    _, challenge = pkce()
    r = world.browser.get(authorize_url(world.smart, world.public, "system/*.rs bogus", challenge, state="st-s"))
    p = redirect_params(r.location)
    assert r.status == 302 and p["error"] == "invalid_scope" and p["state"] == "st-s"


# ----------------------------------------------------------------------------- token endpoint negatives

def test_n7_bad_code(world: World) -> None:
    flow = world.login("user/*.rs")
    flow.params["code"] = "BAD_CODE"
    r = exchange(world.smart, flow, world.public)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "no-store" in r.headers["Cache-Control"]


def test_n8_wrong_client(world: World) -> None:
    flow = world.login("user/*.rs", client=world.confidential)
    r = exchange(world.smart, flow, "BAD_CLIENT_ID")
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    r = exchange(world.smart, flow, "BAD_CLIENT_ID", secret=world.secret)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = exchange(world.smart, flow, world.confidential, secret=world.secret, extra={"client_id": world.public})
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    # The code was issued to the confidential client: the public one cannot redeem it.
    r = exchange(world.smart, flow, world.public)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert exchange(world.smart, flow, world.confidential, secret=world.secret).status_code == 200


@pytest.mark.parametrize("verifier", [None, "", "wrong", "challenge"])
def test_n9_bad_code_verifier(world: World, verifier: str | None) -> None:
    flow = world.login("user/*.rs")
    if verifier == "wrong":  # 73 characters, as Inferno sends: two joined UUIDs
        verifier = f"{uuid.uuid4()}-{uuid.uuid4()}"
    elif verifier == "challenge":
        verifier = base64.urlsafe_b64encode(hashlib.sha256(flow.verifier.encode()).digest()).rstrip(b"=").decode()
    data = {"grant_type": "authorization_code", "code": flow.params["code"], "redirect_uri": REDIRECT,
            "client_id": world.public}
    if verifier is not None:
        data["code_verifier"] = verifier
    r = world.smart.form("/auth/token", data)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request")
    # The code is still good for its rightful owner (a failed attempt does not use it up).
    assert exchange(world.smart, flow, world.public).status_code == 200


def test_n10_redirect_uri_must_match_at_the_token_endpoint(world: World) -> None:
    flow = world.login("user/*.rs")
    r = exchange(world.smart, flow, world.public, redirect_uri=REDIRECT + "?x=1")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_n11_code_reuse_is_refused_and_revokes_the_first_tokens(world: World) -> None:
    flow = world.login("user/*.rs offline_access")
    first = exchange(world.smart, flow, world.public).json()
    assert world.read(first["access_token"], "Patient").status_code == 200
    again = exchange(world.smart, flow, world.public)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert world.read(first["access_token"], "Patient").status_code == 401
    r = world.smart.form("/auth/token", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert r.status_code == 400


def test_n11_expired_code(world: World) -> None:
    flow = world.login("user/*.rs")
    db = world.smart.app.extensions["fhirtwin"].db
    with db.session(write=True) as conn:
        conn.execute(sa.text("UPDATE oauth_code SET expires_us = 0"))
        conn.commit()
    r = exchange(world.smart, flow, world.public)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_n12_confidential_client_must_authenticate(world: World) -> None:
    flow = world.login("user/*.rs", client=world.confidential)
    r = exchange(world.smart, flow, world.confidential, secret="wrong-secret-value")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = exchange(world.smart, flow, world.confidential)  # client_id only, no secret
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert exchange(world.smart, flow, world.confidential, secret=world.secret).status_code == 200


# ----------------------------------------------------------------------------- refresh

def _refresh(world: World, refresh_token: str, **extra: str) -> Any:
    return world.smart.form("/auth/token", {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})


def test_public_refresh_without_client_id_rotates(world: World) -> None:
    t = world.token("launch/patient user/*.rs offline_access", patient=world.patient)
    r = _refresh(world, t["refresh_token"])
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["Cache-Control"] and "no-cache" in r.headers["Pragma"]
    n = r.json()
    assert n["scope"] == t["scope"] and n["patient"] == world.patient and isinstance(n["expires_in"], int)
    assert n["refresh_token"] != t["refresh_token"] and n["access_token"] != t["access_token"]
    assert world.read(n["access_token"], f"Patient/{world.patient}").status_code == 200
    # Narrowing is allowed (F2), widening is not (N-16).
    narrow = _refresh(world, n["refresh_token"], scope="user/Patient.rs")
    assert narrow.status_code == 200 and narrow.json()["scope"] == "user/Patient.rs"
    wide = _refresh(world, narrow.json()["refresh_token"], scope="user/*.cruds")
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"
    # The first refresh token was rotated out: presenting it again revokes the whole chain.
    replay = _refresh(world, t["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert world.read(n["access_token"], "Patient").status_code == 401
    assert _refresh(world, narrow.json()["refresh_token"]).status_code == 400


def test_n14_n15_n16_refresh_refusals(world: World) -> None:
    r = _refresh(world, "random-" + uuid.uuid4().hex)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    t = world.token("user/*.rs offline_access", client=world.confidential)
    # A confidential client's refresh token needs its secret...
    r = _refresh(world, t["refresh_token"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # ...and is bound to it (N-16: another client presenting it).
    r = _refresh(world, t["refresh_token"], client_id=world.public)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    basic = "Basic " + base64.b64encode(f"{world.confidential}:{world.secret}".encode()).decode()
    ok = world.smart.form("/auth/token", {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]},
                          {"Authorization": basic})
    assert ok.status_code == 200, ok.text
    # N-15: revoking the refresh token revokes it and the access tokens issued along its chain.
    new = ok.json()
    rv = world.smart.form("/auth/revoke", {"token": new["refresh_token"], "token_type_hint": "refresh_token"},
                          {"Authorization": basic})
    assert rv.status_code == 200
    again = world.smart.form("/auth/token", {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
                             {"Authorization": basic})
    assert again.status_code == 400
    assert world.read(new["access_token"], "Patient").status_code == 401
    assert world.read(t["access_token"], "Patient").status_code == 401


def test_online_access_gets_a_refresh_token(world: World) -> None:
    t = world.token("user/Patient.rs online_access")
    assert t["refresh_token"] and _refresh(world, t["refresh_token"]).status_code == 200


# ----------------------------------------------------------------------------- RFC 7591 registration

def _register(smart: Any, metadata: Any, token: str | None = None) -> Any:
    import orjson

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = metadata if isinstance(metadata, bytes) else orjson.dumps(metadata)
    return smart.fhir.request("POST", f"{smart.root}/auth/register", data=body, headers=headers)


def test_dynamic_registration_of_a_public_app_that_then_launches(world: World) -> None:
    smart = world.smart
    conf = smart.fhir.get(".well-known/smart-configuration").json()
    assert conf["registration_endpoint"] == f"{smart.root}/auth/register"
    r = _register(smart, {"client_name": "Registered app", "redirect_uris": [REDIRECT], "launch_uri": LAUNCH_URI,
                          "token_endpoint_auth_method": "none", "scope": "openid fhirUser user/Patient.rs",
                          "software_statement_extra": {"ignored": True}})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["client_id"] and "client_secret" not in c and c["redirect_uris"] == [REDIRECT]
    assert c["grant_types"] == ["authorization_code", "refresh_token"] and c["scope"] == "openid fhirUser user/Patient.rs"
    # The registered scope is the ceiling: more is not granted.
    t = world.token("openid fhirUser user/*.rs", client=c["client_id"])
    assert t["scope"] == "openid fhirUser user/Patient.rs"


def test_dynamic_registration_of_a_confidential_app(world: World) -> None:
    r = _register(world.smart, {"client_name": "Secret app", "redirect_uris": [REDIRECT]})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["token_endpoint_auth_method"] == "client_secret_basic" and len(c["client_secret"]) >= 32
    assert c["client_secret_expires_at"] == 0
    flow = world.login("user/Patient.rs", client=c["client_id"])
    assert exchange(world.smart, flow, c["client_id"], secret=c["client_secret"]).status_code == 200


def test_dynamic_registration_of_a_backend_client(smart: Any) -> None:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-384", parameters={"kid": "k1"}, private=True)
    r = _register(smart, {"client_name": "Engine", "token_endpoint_auth_method": "private_key_jwt",
                          "jwks": {"keys": [key.as_dict(private=False)]}, "scope": "system/*.rs"})
    assert r.status_code == 201, r.text
    assert r.json()["grant_types"] == ["client_credentials"] and r.json()["jwks"]["keys"][0]["kid"] == "k1"


@pytest.mark.parametrize(("metadata", "error"), [
    ({"redirect_uris": ["https://app.example.org/cb#frag"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["not a uri"]}, "invalid_redirect_uri"),
    ({"redirect_uris": "https://app.example.org/cb"}, "invalid_redirect_uri"),
    ({"token_endpoint_auth_method": "none"}, "invalid_redirect_uri"),
    ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "magic"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "grant_types": ["implicit"]}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "scope": "system/*.rs"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "client_name": 7}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "kid": "x", "k": "AA"}]}},
     "invalid_client_metadata"),
    ([1, 2], "invalid_client_metadata"),
    (b"{not json", "invalid_client_metadata"),
])
def test_bad_registration_metadata(smart: Any, metadata: Any, error: str) -> None:
    r = _register(smart, metadata)
    assert r.status_code == 400 and r.json()["error"] == error and r.json()["error_description"]


def test_registration_for_administrators_only(tmp_path: Any) -> None:
    from app import create_app
    from app.auth import internal_token
    from config.settings import TestConfig
    from tests.conftest import Smart, database_url, inproc_client

    class Cfg(TestConfig):
        INSTANCE_DIR = tmp_path
        DATABASE_URL = database_url(tmp_path, "reg_admin")
        REGISTRATION = "admin"

    app = create_app(Cfg())
    app.extensions["fhirtwin"].db.create_all()
    try:
        smart = Smart(app, inproc_client(app, scope=None), inproc_client(app))
        meta = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
        assert _register(smart, meta).status_code == 401
        reader = internal_token(app, smart.base, scope="system/*.rs", lifetime_s=600)
        assert _register(smart, meta, reader).status_code == 403
        assert _register(smart, meta, smart.admin.token).status_code == 201
    finally:
        app.extensions["fhirtwin"].db.dispose()


def test_patient_scoped_token_reads_its_own_fhir_user_and_nothing_else_outside(world: World) -> None:
    """SMART (and Inferno's id_token test) read fhirUser with the token; patient/ scopes alone do
    not reach a Practitioner, so the user's own resource is readable by the token that names it."""
    other = world.smart.admin.post("Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    _fresh_browser(world)
    t = world.token("launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs", patient=world.patient)
    assert world.read(t["access_token"], f"Practitioner/{world.practitioner}").status_code == 200
    assert world.read(t["access_token"], f"Practitioner/{other}").status_code == 403
    assert world.read(t["access_token"], f"Patient/{world.patient}").status_code == 200
    assert world.read(t["access_token"], f"Patient/{world.other}").status_code == 404
    # Without the fhirUser scope the exception does not apply.
    _fresh_browser(world)
    t = world.token("launch/patient patient/Patient.rs", patient=world.patient)
    assert world.read(t["access_token"], f"Practitioner/{world.practitioner}").status_code == 403
