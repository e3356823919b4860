"""The OAuth grants on Authlib: authorization code with PKCE (S256 only) for SMART app launches,
refresh tokens (rotated, bound to their client, a public client may omit client_id) and
client_credentials for Backend Services.

Authlib runs the protocol (parameter checks, client authentication, error responses); these
classes add the SMART rules and issue our signed JWT access tokens and id_tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import g

from app.store.auth_store import CodeRow, LaunchRow, UserRow

from . import scopes as sc
from . import tokens
from .hashing import token_hash
from .server import Client, Token, current_config, current_store

BACKEND_MAX_LIFETIME_S = 300
CODE_LIFETIME_S = 60
CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
PUBLIC_REFRESH = "refresh_token_only"  # a public client identified by its refresh token alone


@dataclass(frozen=True, slots=True)
class Approval:
    """What the user approved at the authorize endpoint: it becomes the authorization code."""

    user: UserRow
    scope: str
    patient: str | None
    encounter: str | None
    need_patient_banner: bool
    launch: LaunchRow | None
    auth_time: int  # seconds


@dataclass(frozen=True, slots=True)
class CodeGrantRequest:
    """An authorization request Authlib has validated, plus the SMART context we found for it."""

    client: Client
    scope: str
    launch: LaunchRow | None


def _check_body_client(request: Any) -> None:
    """A client_id in the body must name the client that authenticated (fhirclient-py sends both)."""
    named = request.payload.data.get("client_id")
    if named is not None and named != request.client.client_id:
        raise InvalidClientError(description="client_id differs from the authenticated client", status_code=401)


def _refresh_lifetime(scope: str) -> int | None:
    cfg = current_config()
    words = set(scope.split())
    if "offline_access" in words:
        return cfg.offline_lifetime_s
    if "online_access" in words:
        return cfg.online_lifetime_s
    return None


class SmartCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE as SMART App Launch 2 requires it: a challenge on every request, S256 only."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("code_challenge is required (PKCE with code_challenge_method=S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


def _same_url(a: str, b: str) -> bool:
    """URLs equal up to the letter case of scheme and host and a trailing slash."""
    def norm(u: str) -> str:
        scheme, sep, rest = u.strip().partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}".rstrip("/")
    return norm(a) == norm(b)


class SmartAuthorizeChecks:
    """Authlib extension: the SMART checks of an authorization request, run after Authlib's own
    (so that a failure redirects to the client with `error` and `state`)."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        aud = data.get("aud") or data.get("resource")
        cfg = current_config()
        if not aud:
            raise InvalidRequestError("aud is required: the FHIR base URL the app wants to access")
        if not _same_url(aud, cfg.issuer):
            raise InvalidRequestError(f"aud {aud!r} is not this server's FHIR base URL")
        launch: LaunchRow | None = None
        if data.get("launch"):
            launch = current_store().launch(token_hash(data["launch"]))
            if (launch is None or launch.used or launch.expires_us <= tokens.now_us()
                    or launch.client_id != grant.request.client.client_id):
                raise InvalidRequestError("launch is unknown, expired, used, or was issued to another client")
        if not (data.get("scope") or "").strip():
            raise InvalidScopeError("scope is required")
        grant.request.smart = CodeGrantRequest(grant.request.client, data["scope"], launch)


class SmartAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*CONFIDENTIAL_METHODS, "none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        a: Approval = request.user
        store = current_store()
        if a.launch is not None and not store.use_launch(a.launch.launch_hash):
            raise InvalidRequestError("launch was used by another authorization")
        now = tokens.now_us()
        data = request.payload.data
        store.add_code(CodeRow(
            code_hash=token_hash(code), client_id=request.client.client_id, redirect_uri=request.payload.redirect_uri or "",
            scope=a.scope, username=a.user.username, patient=a.patient, encounter=a.encounter,
            code_challenge=data["code_challenge"], nonce=data.get("nonce"), need_patient_banner=a.need_patient_banner,
            auth_time=a.auth_time, expires_us=now + CODE_LIFETIME_S * 1_000_000,
        ), now)

    def query_authorization_code(self, code: str, client: Client) -> _Code | None:
        store = current_store()
        row = store.code(token_hash(code))
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_by is not None:
            # A second use: refuse it and revoke what the first use was given (RFC 6749 4.1.2).
            store.revoke_family(row.used_by)
            return None
        if row.expires_us <= tokens.now_us():
            return None
        return _Code(row)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_body_client(self.request)

    def authenticate_user(self, authorization_code: _Code) -> UserRow | None:
        return current_store().user(authorization_code.row.username)

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        pass  # marked used in create_token_response, kept until it expires

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client: Client = self.request.client
        code: CodeRow = self.request.authorization_code.row
        user = self.authenticate_user(self.request.authorization_code)
        if user is None:
            raise InvalidGrantError("The user who approved this code no longer exists")
        cfg = current_config()
        refresh_s = _refresh_lifetime(code.scope) if client.check_grant_type("refresh_token") else None
        issued = tokens.issue(current_store(), g.auth_keys, issuer=cfg.issuer, audience=cfg.issuer,
                              client_id=client.client_id, scope=code.scope, lifetime_s=cfg.access_lifetime_s,
                              username=user.username, patient=code.patient, encounter=code.encounter,
                              fhir_user=user.fhir_user, refresh_lifetime_s=refresh_s)
        if not current_store().use_code(code.code_hash, issued.jti):
            raise InvalidGrantError("The authorization code was used already")
        out = issued.body
        words = set(code.scope.split())
        if "openid" in words and words & {"fhirUser", "profile"}:
            out["id_token"] = tokens.id_token(g.auth_keys, issuer=cfg.issuer, client_id=client.client_id, user=user,
                                              fhir_base=cfg.issuer, nonce=code.nonce, auth_time=code.auth_time,
                                              lifetime_s=cfg.access_lifetime_s)
        if code.patient or "launch" in words or "launch/patient" in words:
            out["need_patient_banner"] = code.need_patient_banner
        out["smart_style_url"] = cfg.style_url
        return 200, out, self.TOKEN_RESPONSE_HEADER


class _Code:
    """The Authlib view of a stored code."""

    def __init__(self, row: CodeRow) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = "S256"

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class SmartRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*CONFIDENTIAL_METHODS, "none", PUBLIC_REFRESH]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        store = current_store()
        row = store.token_by_refresh(token_hash(refresh_token))
        if row is None or row.revoked:
            return None
        if row.refresh_used:
            store.revoke_family(row.family)  # a rotated-out refresh token came back: assume it leaked
            return None
        if (row.refresh_expires_us or 0) <= tokens.now_us():
            return None
        return Token(row, "refresh_token")

    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_body_client(self.request)

    def _validate_token_scope(self, token: Token) -> None:
        scope = self.request.payload.scope
        if scope and not sc.narrower(scope, token.get_scope()):
            raise InvalidScopeError("A refresh may only narrow the scope granted before")

    def authenticate_user(self, refresh_token: Token) -> Any:
        return refresh_token.row

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        old: Token = self.request.refresh_token
        row = old.row
        store = current_store()
        if not store.use_refresh(row.jti):
            raise InvalidGrantError("The refresh token was used already")
        if row.username is not None and store.user(row.username) is None:
            raise InvalidGrantError("The user of this refresh token no longer exists")
        cfg = current_config()
        scope = " ".join(sc.split(self.request.payload.scope)) if self.request.payload.scope else row.scope
        out = tokens.issue(store, g.auth_keys, issuer=cfg.issuer, audience=cfg.issuer, client_id=row.client_id,
                           scope=scope, lifetime_s=cfg.access_lifetime_s, username=row.username, patient=row.patient,
                           encounter=row.encounter, fhir_user=row.fhir_user,
                           refresh_lifetime_s=_refresh_lifetime(scope) or cfg.online_lifetime_s, family=row.family)
        return 200, out.body, self.TOKEN_RESPONSE_HEADER


def authenticate_by_refresh_token(query_client: Any, request: Any) -> Client | None:
    """A public client refreshing without client_id (client-js does by default): the refresh token
    names its client, which must be public (confidential clients must authenticate)."""
    form = request.form
    if form.get("grant_type") != "refresh_token" or form.get("client_id") or "client_assertion" in form:
        return None
    if request.headers.get("Authorization"):
        return None
    value = form.get("refresh_token")
    row = current_store().token_by_refresh(token_hash(value)) if value else None
    client = query_client(row.client_id) if row is not None else None
    if client is None:
        raise InvalidGrantError("The refresh token is not valid")
    if client.row.auth_method != "none":
        raise InvalidClientError(description="this client must authenticate", status_code=401)
    return client  # type: ignore[no-any-return]


class BackendServicesGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """client_credentials for SMART Backend Services: private_key_jwt only, system/ scopes only,
    at most 5 minutes, no refresh token."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def validate_token_request(self) -> None:
        scope = self.request.payload.scope
        if not scope or not scope.strip():
            raise InvalidRequestError("scope is required")
        super().validate_token_request()
        cfg = current_config()
        granted = sc.grant(scope, allowed_contexts=frozenset({"system"}), ceiling=self.request.client.row.scope,
                           known_types=cfg.known_types, non_resource=frozenset())
        granted = [s for s in granted if not (p := sc.parse_scope(s)) or not p.filters]
        if not granted:
            raise InvalidScopeError("None of the requested scopes can be granted to this client")
        self.granted = " ".join(granted)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        cfg = current_config()
        client = self.request.client
        token = tokens.issue(current_store(), g.auth_keys, issuer=cfg.issuer, audience=cfg.issuer,
                             client_id=client.client_id, scope=self.granted,
                             lifetime_s=min(cfg.backend_lifetime_s, BACKEND_MAX_LIFETIME_S))
        return 200, token.body, self.TOKEN_RESPONSE_HEADER
