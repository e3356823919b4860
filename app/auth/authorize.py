"""The interactive side of the authorization server: the authorize endpoint (GET and form POST)
with its login, patient-picker and approval pages, the login session, and EHR launches.

The OAuth parameters of a pending authorization travel through the pages as one signed,
time-limited form field (`request`), and Authlib validates them again on every step; every form
carries a CSRF value bound to the browser's session cookie. The pages are plain HTML forms with
stable field names (username, password, patient, scope, approve, deny) so scripts can drive them."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import orjson
from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, Response, current_app, redirect, render_template, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.datastructures import MultiDict

from app.store.auth_store import AuthStore, LaunchRow, UserRow
from app.store.repository import ResourceStore

from . import discovery, tokens
from . import scopes as sc
from .grants import Approval, CodeGrantRequest
from .hashing import check_secret, random_token, token_hash
from .server import ParamsRequest
from .views import admin_bearer, auth_context, fhir_base

bp = Blueprint("auth_pages", __name__, template_folder="templates")

PENDING_MAX_AGE_S = 15 * 60
LAUNCH_LIFETIME_S = 5 * 60
PICKER_SIZE = 50
_PAGE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.secret_key), salt="fhirtwin.authorize")


def _page(template: str, status: int = 200, **values: Any) -> Response:
    html = render_template(template, csrf=_csrf(), **values)
    return Response(html, status=status, headers=_PAGE_HEADERS, content_type="text/html; charset=utf-8")


def _error_page(message: str, status: int = 400) -> Response:
    return _page("auth_error.html", status, message=message)


def _csrf() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def _csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and "csrf" in session and hmac.compare_digest(sent, str(session["csrf"]))


# ------------------------------------------------------------------------- login session

def _session_user(store: AuthStore) -> UserRow | None:
    name, since = session.get("user"), session.get("since", 0)
    if not name or time.time() - since > current_app.config.get("LOGIN_SESSION_S", 8 * 3600):
        return None
    return store.user(name)


def _log_in(store: AuthStore) -> UserRow | None:
    user = store.user(request.form.get("username", ""))
    # A wrong name costs as much as a wrong password (no user enumeration by timing).
    ok = check_secret(request.form.get("password", ""), user.password_hash if user else _DUMMY_HASH)
    if user is None or not ok:
        return None
    session.clear()
    session["user"], session["since"] = user.username, int(time.time())
    session["csrf"] = secrets.token_urlsafe(24)
    return user


_DUMMY_HASH = "scrypt$16384$8$1$00000000000000000000000000000000$" + "0" * 64


@bp.route("/auth/logout", methods=["GET", "POST"])
def logout() -> Response:
    session.clear()
    return _page("auth_error.html", 200, message="You are logged out.", title="Logged out")


# ------------------------------------------------------------------------- authorize

def _params() -> dict[str, str] | Response:
    """The authorization request: fresh from the query or form, or carried from an earlier page."""
    if request.method == "POST" and "request" in request.form:
        if not _csrf_ok():
            return _error_page("This form has expired or was not sent by this server's page; start the sign-in again.")
        try:
            data = _serializer().loads(request.form["request"], max_age=PENDING_MAX_AGE_S)
        except BadSignature:
            return _error_page("This sign-in took too long or its form was altered; start it again from the app.")
        return dict(data)
    values = request.values
    dupes = [k for k in values if len(values.getlist(k)) > 1]
    if dupes:
        return _error_page(f"Parameter {dupes[0]!r} is repeated in the authorization request.")
    return {k: values[k] for k in values}


def _redirect_error(redirect_uri: str, state: str | None, error: str, description: str) -> Response:
    params = [("error", error), ("error_description", description)] + ([("state", state)] if state else [])
    sep = "&" if "?" in redirect_uri else "?"
    return redirect(redirect_uri + sep + urlencode(params), 302)  # type: ignore[return-value]


def _oauth_failure(e: OAuth2Error, params: dict[str, str]) -> Response:
    if e.redirect_uri:
        return _redirect_error(e.redirect_uri, params.get("state"), e.error, e.get_error_description() or e.error)
    return _error_page(f"The app's authorization request cannot be served: {e.description or e.error}")


def _unsupported_response_type(server: Any, params: dict[str, str]) -> Response | None:
    """Authlib refuses an unknown response_type before it knows where to redirect; the client and
    redirect_uri are checked here so that a registered app gets the error at its redirect_uri."""
    if params.get("response_type") == "code":
        return None
    client = server.query_client(params.get("client_id", ""))
    uri = params.get("redirect_uri")
    if client is None or not uri or not client.check_redirect_uri(uri):
        return _error_page("The client_id is unknown or the redirect_uri is not registered for it.")
    if not params.get("response_type"):
        return _redirect_error(uri, params.get("state"), "invalid_request", "response_type is required")
    return _redirect_error(uri, params.get("state"), "unsupported_response_type", "Only response_type=code is supported")


def _context_types(user: UserRow) -> frozenset[str]:
    return frozenset({"patient", "user"}) if user.kind != "Patient" else frozenset({"patient"})


def _patient_exists(pid: str) -> bool:
    fhir = current_app.extensions["fhirtwin"]
    with fhir.db.session() as conn:
        s = ResourceStore(conn, is_sqlite=fhir.db.is_sqlite).read("Patient", pid)
    return s is not None and not s.deleted


def _patients(q: str) -> list[tuple[str, str, str]]:
    """(id, name, birth date) of up to PICKER_SIZE patients matching `q` (by name), for the picker."""
    fhir = current_app.extensions["fhirtwin"]
    params = [("_count", str(PICKER_SIZE)), ("_sort", "family,given")] + ([("name", q)] if q.strip() else [])
    with fhir.db.session() as conn:
        rows, _ = ResourceStore(conn, is_sqlite=fhir.db.is_sqlite).search(fhir.parser.parse("Patient", params,
                                                                                           strict=True))
    out = []
    for s in rows:
        doc = orjson.loads(s.body or b"{}")
        names = doc.get("name") or [{}]
        n = names[0]
        text = n.get("text") or " ".join([*n.get("given", []), n.get("family", "")]).strip() or s.rid
        out.append((s.rid, text, str(doc.get("birthDate", ""))))
    return out


def _offer(smart: CodeGrantRequest, user: UserRow, patient: str | None, encounter: str | None) -> list[str]:
    """The scopes that can be granted for this request, user and patient context."""
    auth = current_app.extensions["fhirtwin_auth"]
    contexts = set(_context_types(user))
    if patient is None:
        contexts.discard("patient")  # never a patient/ token without its patient (SMART S7)
    non_resource = {"openid", "fhirUser", "profile", "offline_access", "online_access"}
    if smart.launch is not None:
        non_resource.add("launch")
    if patient is not None:
        non_resource.add("launch/patient")
    if encounter is not None:
        non_resource.add("launch/encounter")
    offered = sc.grant(smart.scope, allowed_contexts=frozenset(contexts), ceiling=smart.client.row.scope,
                       known_types=auth.known_types, non_resource=frozenset(non_resource))
    words = set(offered)
    # OpenID claims come only with openid; a requested launch/patient is kept with its patient.
    return [s for s in offered if s not in ("fhirUser", "profile") or "openid" in words]


_ALWAYS = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter"})


def _describe(scope: str) -> str:
    p = sc.parse_scope(scope)
    if p is None:
        return {
            "offline_access": "Stay connected after you close the app (a long-lived refresh token)",
            "online_access": "Stay connected while you are signed in",
        }.get(scope, scope)
    what = "all kinds of data" if p.rtype == "*" else f"{p.rtype} records"
    verbs = [w for c, w in (("c", "create"), ("r", "read"), ("u", "update"), ("d", "delete"), ("s", "search"))
             if c in p.perms]
    whose = {"patient": "of the selected patient", "user": "that you can access", "system": "on this server"}[p.context]
    limit = f" (only those with {', '.join(f'{k}={v}' for k, v in p.filters)})" if p.filters else ""
    return f"{', '.join(verbs).capitalize()} {what} {whose}{limit}"


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    params = _params()
    if isinstance(params, Response):
        return params
    auth = current_app.extensions["fhirtwin_auth"]
    with auth_context() as store:
        return _authorize(auth.server, store, params)


def _authorize(server: Any, store: AuthStore, params: dict[str, str]) -> Response:
    oauth_request = ParamsRequest(params, request.url, request.headers)
    early = _unsupported_response_type(server, params)
    if early is not None:
        return early
    try:
        grant = server.get_consent_grant(request=oauth_request)
    except OAuth2Error as e:
        return _oauth_failure(e, params)
    smart: CodeGrantRequest = oauth_request.smart
    pending = _serializer().dumps(params)
    form: Any = request.form if request.method == "POST" and "request" in request.form else MultiDict()
    client_name = smart.client.row.name or smart.client.client_id

    def deny(error: str, description: str) -> Response:
        return _redirect_error(grant.redirect_uri, params.get("state"), error, description)

    if "deny" in form:
        return deny("access_denied", "The user denied the request")
    user = _session_user(store)
    if user is None:
        if form.get("step") == "login":
            user = _log_in(store)
            if user is None:
                return _page("login.html", 401, request_blob=pending, client_name=client_name,
                             error="Unknown user name or wrong password.", username=form.get("username", ""))
        else:
            return _page("login.html", request_blob=pending, client_name=client_name, error=None, username="")
    launch: LaunchRow | None = smart.launch
    if launch is not None and launch.username is not None and launch.username != user.username:
        return deny("access_denied", "The EHR launch was made for another user")
    patient = launch.patient if launch is not None else None
    encounter = launch.encounter if launch is not None else None
    if user.kind == "Patient":
        if patient is not None and patient != user.fhir_user.split("/", 1)[1]:
            return deny("access_denied", "A patient can only authorize access to their own record")
        patient = user.fhir_user.split("/", 1)[1]
    wants_patient = "launch/patient" in sc.split(smart.scope)
    if patient is None and wants_patient:
        # The picker has a list and a free-text id field, both named patient: the typed id wins.
        given = [v.strip() for v in form.getlist("patient") if v.strip()]
        chosen = given[-1] if given else ""
        if chosen and _patient_exists(chosen):
            patient = chosen
        else:
            q = form.get("q", "")
            return _page("patient_picker.html", request_blob=pending, client_name=client_name, user=user, q=q,
                         patients=_patients(q), error="No patient with that id." if chosen else None)
    offered = _offer(smart, user, patient, encounter)
    if not offered:
        return deny("invalid_scope", "None of the requested scopes can be granted to this user and client")
    if "approve" not in form:
        choices = [(s, _describe(s), s not in _ALWAYS) for s in offered]
        return _page("approve.html", request_blob=pending, client_name=client_name, user=user, patient=patient,
                     choices=choices)
    checked = set(form.getlist("scope"))
    granted = [s for s in offered if s in _ALWAYS or s in checked]
    approval = Approval(user=user, scope=" ".join(granted), patient=patient, encounter=encounter,
                        need_patient_banner=launch is None, launch=launch, auth_time=int(session.get("since", 0)))
    resp: Response = server.create_authorization_response(request=oauth_request, grant_user=approval, grant=grant)
    return resp


# ------------------------------------------------------------------------- EHR launch

@bp.get("/auth/ehr-launch")
def ehr_launch() -> Response:
    """What an EHR does when a clinician opens an app: a single-use `launch` bound to the client,
    patient and encounter, and a redirect to the app's launch URL with `iss` and `launch`.
    The caller is a logged-in practitioner (or admin), or presents an admin bearer token."""
    base = fhir_base()
    with auth_context() as store:
        launcher = _launcher(store)
        if isinstance(launcher, Response):
            return launcher
        client = store.client(request.args.get("client_id", ""))
        if client is None or not client.launch_uri:
            return _error_page("Unknown client_id, or the client has no registered launch URL.")
        patient, encounter = request.args.get("patient"), request.args.get("encounter")
        if patient and not _patient_exists(patient):
            return _error_page("No patient with that id.", 404)
        value = random_token(24)
        store.add_launch(LaunchRow(launch_hash=token_hash(value), client_id=client.client_id, patient=patient or None,
                                   encounter=encounter or None, username=launcher,
                                   expires_us=tokens.now_us() + LAUNCH_LIFETIME_S * 1_000_000), tokens.now_us())
    sep = "&" if "?" in client.launch_uri else "?"
    return redirect(client.launch_uri + sep + urlencode({"iss": base, "launch": value}), 302)  # type: ignore[return-value]


def _launcher(store: AuthStore) -> str | Response | None:
    """The practitioner launching (their user name), None for an admin token, or an error."""
    if request.headers.get("Authorization"):
        return admin_bearer(store, "An EHR launch")
    user = _session_user(store)
    if user is None or (user.kind != "Practitioner" and not user.admin):
        return _error_page("Log in as a practitioner to launch apps (or send an admin bearer token).", 401)
    return user.username


@bp.get("/auth/smart-style.json")
def smart_style() -> Response:
    return Response(orjson.dumps(discovery.STYLE), content_type="application/json",
                    headers={"Cache-Control": "public, max-age=3600"})


class AuthPagesSession(SecureCookieSessionInterface):
    """The login-session cookie exists for the authorization pages only: FHIR requests never open
    it (no signature check per API call, no cookie-borne authority on /fhir)."""

    def open_session(self, app: Any, request: Any) -> Any:
        if not request.path.startswith("/auth/"):
            return None  # Flask substitutes a null session, which is never saved
        return super().open_session(app, request)


def init_app(app: Any, secret: str) -> None:
    app.secret_key = secret
    app.session_interface = AuthPagesSession()
    app.config.setdefault("SESSION_COOKIE_NAME", "fhirtwin_session")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.register_blueprint(bp)
