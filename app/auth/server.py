"""The SMART authorization server on Authlib: the server object with its grants (grants.py),
client authentication (secrets, private_key_jwt), RFC 7662 introspection, RFC 7009 revocation.

Authlib drives the OAuth protocol (grant dispatch, client authentication, error responses);
this module supplies the storage hooks, the SMART checks and our JWT access tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request, TokenMixin
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import g

from app.store.auth_store import AuthStore, ClientRow, TokenRow

from . import assertion as ja
from . import tokens
from .hashing import check_secret, token_hash

SECRET_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass
class AuthConfig:
    """Per request: the settings and URLs the grants need (the URLs follow the request's host)."""

    issuer: str  # the FHIR base URL: token iss and aud, OpenID issuer
    token_url: str
    style_url: str
    known_types: frozenset[str]
    assertion_algs: frozenset[str] = frozenset({"RS384", "ES384"})
    backend_lifetime_s: int = 300
    access_lifetime_s: int = 3600
    offline_lifetime_s: int = 90 * 86_400
    online_lifetime_s: int = 8 * 3600


class Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, row: ClientRow) -> None:
        self.row = row
        self.client_id = row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.row.redirect_uris[0] if self.row.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris  # exact match, as SMART requires

    def check_client_secret(self, client_secret: str) -> bool:
        return check_secret(client_secret, self.row.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        from .grants import PUBLIC_REFRESH

        mine = self.row.auth_method
        if mine in SECRET_METHODS:  # a secret is accepted in the header or in the body
            return method in SECRET_METHODS
        if mine == "none" and method == PUBLIC_REFRESH:
            return True
        return method == mine

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


class Token(TokenMixin):  # type: ignore[misc]
    def __init__(self, row: TokenRow, kind: str) -> None:
        self.row = row
        self.kind = kind  # access_token | refresh_token

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.row.client_id)

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, (self.row.expires_us - tokens.now_us()) // 1_000_000)

    def is_expired(self) -> bool:
        if self.kind == "refresh_token":
            return (self.row.refresh_expires_us or 0) <= tokens.now_us()
        return self.row.expires_us <= tokens.now_us()

    def is_revoked(self) -> bool:
        return self.row.revoked


def current_store() -> AuthStore:
    store: AuthStore = g.auth_store
    return store


def current_config() -> AuthConfig:
    cfg: AuthConfig = g.auth_config
    return cfg


class ParamsRequest(OAuth2Request):  # type: ignore[misc]
    """An authorization request rebuilt from its parameters (carried, signed, through the login
    and approval pages), so that Authlib validates it again on every step."""

    def __init__(self, params: dict[str, str], uri: str, headers: Any) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = BasicOAuth2Payload(params)
        self._params = params

    @property
    def args(self) -> dict[str, str]:
        return self._params

    @property
    def form(self) -> dict[str, str]:
        return self._params


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return super().create_oauth2_request(request)


def authenticate_private_key_jwt(query_client: Any, request: Any) -> Client | None:
    form = request.form
    if "client_assertion" not in form and "client_assertion_type" not in form:
        return None
    if form.get("client_assertion_type") != ja.ASSERTION_TYPE:
        raise InvalidClientError(description=f"client_assertion_type must be {ja.ASSERTION_TYPE}", status_code=401)
    raw = form.get("client_assertion") or ""
    try:
        header, claims = ja.unverified(raw)
        iss = claims.get("iss")
        client_id = iss if isinstance(iss, str) else ""
        client = query_client(client_id) if client_id else None
        if client is None:
            raise ja.AssertionError_("the assertion's iss is not a registered client")
        if client.row.auth_method != "private_key_jwt":
            raise ja.AssertionError_("the client is not registered for private_key_jwt")
        if form.get("client_id") not in (None, client_id):
            raise ja.AssertionError_("client_id differs from the assertion's iss")
        jku = header.get("jku")
        if jku is not None and jku != client.row.jwks_uri:
            raise ja.AssertionError_("jku is not the JWKS URL registered for the client")
        if client.row.jwks:
            jwks = json.loads(client.row.jwks)
        elif client.row.jwks_uri:
            jwks = g.auth_jwks_cache.get(client.row.jwks_uri)
        else:
            raise ja.AssertionError_("the client has no registered keys")
        cfg = current_config()
        checked = ja.check(raw, client_id=client_id, jwks=jwks, token_url=cfg.token_url, algorithms=cfg.assertion_algs,
                           header=header, claims=claims)
        if not current_store().remember_assertion(client_id, checked.jti, checked.exp * 1_000_000, tokens.now_us()):
            raise ja.AssertionError_("the assertion's jti was used before")
    except ja.AssertionError_ as e:
        raise InvalidClientError(description=str(e), status_code=401) from None
    return client  # type: ignore[no-any-return]


def _lookup(token_string: str, hint: str | None) -> Token | None:
    cfg = current_config()
    if hint in (None, "access_token"):
        try:
            claims = tokens.decode(g.auth_keys, token_string, issuer=cfg.issuer, audience=cfg.issuer)
        except tokens.InvalidToken:
            claims = None
        if claims is not None:
            row = current_store().token(claims["jti"])
            if row is not None:
                return Token(row, "access_token")
    if hint in (None, "refresh_token"):
        row = current_store().token_by_refresh(token_hash(token_string))
        if row is not None:
            return Token(row, "refresh_token")
    return None


_ENDPOINT_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _ENDPOINT_AUTH

    def authenticate_endpoint_client(self, request: Any) -> Any:
        bearer = (request.headers.get("Authorization") or "")
        if bearer[:7].lower() == "bearer ":
            cfg = current_config()
            try:
                ctx = tokens.verify(current_store(), g.auth_keys, bearer[7:].strip(), issuer=cfg.issuer, audience=cfg.issuer)
            except tokens.InvalidToken as e:
                raise InvalidClientError(description=str(e), status_code=401) from None
            if not any(s.context == "system" and s.rtype == "*" and {"r", "s"} <= s.perms and not s.filters
                       for s in ctx.scopes):
                raise InvalidClientError(description="introspection needs a token with system/*.rs", status_code=401)
            request.client = _BearerCaller(ctx.client_id)
            return request.client
        return super().authenticate_endpoint_client(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return _lookup(token_string, token_type_hint)

    def check_permission(self, token: Token, client: Any, request: Any) -> bool:
        # A public client may only ask about its own tokens; a confidential caller about any.
        if isinstance(client, Client) and client.row.auth_method == "none":
            return token.check_client(client)
        return True

    def introspect_token(self, token: Token) -> dict[str, Any]:
        r = token.row
        cfg = current_config()
        out: dict[str, Any] = {
            "active": True, "client_id": r.client_id, "scope": r.scope, "token_type": "Bearer",
            "exp": (r.expires_us if token.kind == "access_token" else (r.refresh_expires_us or 0)) // 1_000_000,
            "iat": r.issued_us // 1_000_000, "iss": cfg.issuer, "aud": cfg.issuer, "sub": r.username or r.client_id,
        }
        for key, value in (("patient", r.patient), ("encounter", r.encounter), ("fhirUser", r.fhir_user),
                           ("username", r.username)):
            if value:
                out[key] = value
        return out


class _BearerCaller:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id

    def get_client_id(self) -> str:
        return self.client_id


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _ENDPOINT_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return _lookup(token_string, token_type_hint)

    def revoke_token(self, token: Token, request: Any) -> None:
        if token.kind == "refresh_token":
            current_store().revoke_family(token.row.family)  # and every access token issued along the chain
        else:
            current_store().revoke(token.row.jti)


def make_server(app: Any) -> SmartAuthorizationServer:
    from . import grants

    def query_client(client_id: str) -> Client | None:
        row = current_store().client(client_id)
        return Client(row) if row is not None else None

    server = SmartAuthorizationServer(app, query_client=query_client, save_token=lambda token, request: None)
    server.register_client_auth_method("private_key_jwt", authenticate_private_key_jwt)
    server.register_client_auth_method(grants.PUBLIC_REFRESH, grants.authenticate_by_refresh_token)
    server.register_grant(grants.SmartAuthorizationCodeGrant, [grants.SmartCodeChallenge(required=True),
                                                               grants.SmartAuthorizeChecks()])
    server.register_grant(grants.SmartRefreshTokenGrant)
    server.register_grant(grants.BackendServicesGrant)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    return server
