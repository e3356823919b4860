"""The authorization server's rows: clients, issued tokens, seen client-assertion ids.

Like ResourceStore it works on the caller's connection and never commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .models import OAuthAssertion, OAuthClient, OAuthToken

_CLIENT: Table = OAuthClient.__table__  # type: ignore[assignment]
_TOKEN: Table = OAuthToken.__table__  # type: ignore[assignment]
_ASSERTION: Table = OAuthAssertion.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ClientRow:
    client_id: str
    name: str
    kind: str
    auth_method: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    launch_uri: str | None
    grant_types: tuple[str, ...]
    scope: str
    jwks: str | None
    jwks_uri: str | None


@dataclass(frozen=True, slots=True)
class TokenRow:
    jti: str
    client_id: str
    username: str | None
    scope: str
    patient: str | None
    encounter: str | None
    fhir_user: str | None
    issued_us: int
    expires_us: int
    refresh_hash: str | None
    refresh_expires_us: int | None
    family: str
    revoked: bool


# Built once: every FHIR request looks its token up, so it pays no statement construction.
_TOKEN_SELECT = select(*(_TOKEN.c[c] for c in TokenRow.__slots__))
_TOKEN_BY_JTI = _TOKEN_SELECT.where(_TOKEN.c.jti == bindparam("j"))


def _client(row: Any) -> ClientRow:
    return ClientRow(row.client_id, row.name, row.kind, row.auth_method, row.secret_hash,
                     tuple(row.redirect_uris.split()), row.launch_uri, tuple(row.grant_types.split()),
                     row.scope, row.jwks, row.jwks_uri)


def _token(row: Any) -> TokenRow:
    return TokenRow(*row)


class AuthStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ---------------------------------------------------------------- clients

    def client(self, client_id: str) -> ClientRow | None:
        row = self.conn.execute(select(_CLIENT).where(_CLIENT.c.client_id == client_id)).first()
        return _client(row) if row is not None else None

    def add_client(self, c: ClientRow, created_us: int) -> None:
        """Insert, or replace a client of the same id (re-registering from config or the CLI)."""
        values = {
            "client_id": c.client_id, "name": c.name, "kind": c.kind, "auth_method": c.auth_method,
            "secret_hash": c.secret_hash, "redirect_uris": " ".join(c.redirect_uris), "launch_uri": c.launch_uri,
            "grant_types": " ".join(c.grant_types), "scope": c.scope, "jwks": c.jwks, "jwks_uri": c.jwks_uri,
            "created_us": created_us,
        }
        self.conn.execute(delete(_CLIENT).where(_CLIENT.c.client_id == c.client_id))
        self.conn.execute(insert(_CLIENT).values(**values))

    def clients(self) -> list[ClientRow]:
        return [_client(r) for r in self.conn.execute(select(_CLIENT).order_by(_CLIENT.c.client_id))]

    # ---------------------------------------------------------------- tokens

    def add_token(self, t: TokenRow) -> None:
        self.conn.execute(insert(_TOKEN).values(**{c: getattr(t, c) for c in TokenRow.__slots__}))

    def token(self, jti: str) -> TokenRow | None:
        row = self.conn.execute(_TOKEN_BY_JTI, {"j": jti}).first()
        return _token(row) if row is not None else None

    def token_by_refresh(self, refresh_hash: str) -> TokenRow | None:
        row = self.conn.execute(_TOKEN_SELECT.where(_TOKEN.c.refresh_hash == refresh_hash)).first()
        return _token(row) if row is not None else None

    def revoke(self, jti: str) -> None:
        self.conn.execute(update(_TOKEN).where(_TOKEN.c.jti == jti).values(revoked=True))

    def revoke_family(self, family: str) -> None:
        """A refresh chain and every access token issued along it."""
        self.conn.execute(update(_TOKEN).where(_TOKEN.c.family == family).values(revoked=True))

    # ---------------------------------------------------------------- client assertions

    def remember_assertion(self, client_id: str, jti: str, expires_us: int, now_us: int) -> bool:
        """Record a client-assertion jti; False when it was seen before (a replay). Entries of
        expired assertions are dropped first: they can no longer be replayed anyway."""
        self.conn.execute(delete(_ASSERTION).where(_ASSERTION.c.expires_us < now_us))
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(_ASSERTION).values(client_id=client_id, jti=jti, expires_us=expires_us))
        except IntegrityError:
            return False
        return True
