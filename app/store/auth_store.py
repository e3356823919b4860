"""The authorization server's rows: clients, users, authorization codes, EHR launches, issued
tokens, seen client-assertion ids.

Like ResourceStore it works on the caller's connection and never commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .db import Prepared
from .models import OAuthAssertion, OAuthClient, OAuthCode, OAuthLaunch, OAuthToken, OAuthUser

_CLIENT: Table = OAuthClient.__table__  # type: ignore[assignment]
_TOKEN: Table = OAuthToken.__table__  # type: ignore[assignment]
_ASSERTION: Table = OAuthAssertion.__table__  # type: ignore[assignment]
_USER: Table = OAuthUser.__table__  # type: ignore[assignment]
_CODE: Table = OAuthCode.__table__  # type: ignore[assignment]
_LAUNCH: Table = OAuthLaunch.__table__  # type: ignore[assignment]


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
    refresh_used: bool = False


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    password_hash: str
    fhir_user: str  # Type/id
    name: str
    admin: bool

    @property
    def kind(self) -> str:
        return self.fhir_user.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class CodeRow:
    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    username: str
    patient: str | None
    encounter: str | None
    code_challenge: str
    nonce: str | None
    need_patient_banner: bool
    auth_time: int
    expires_us: int
    used_by: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchRow:
    launch_hash: str
    client_id: str
    patient: str | None
    encounter: str | None
    username: str | None
    expires_us: int
    used: bool = False


# Built once: every FHIR request looks its token up, so it pays no statement construction.
_TOKEN_SELECT = select(*(_TOKEN.c[c] for c in TokenRow.__slots__))
_TOKEN_BOOLS = frozenset(i for i, c in enumerate(TokenRow.__slots__) if c in ("revoked", "refresh_used"))
_TOKEN_BY_JTI = Prepared(_TOKEN_SELECT.where(_TOKEN.c.jti == bindparam("j")))


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

    # ---------------------------------------------------------------- users

    def user(self, username: str) -> UserRow | None:
        row = self.conn.execute(select(*(_USER.c[c] for c in UserRow.__slots__)).where(
            _USER.c.username == username)).first()
        return UserRow(*row) if row is not None else None

    def add_user(self, u: UserRow, created_us: int) -> None:
        """Insert, or replace the user of the same name (a new password or link)."""
        self.conn.execute(delete(_USER).where(_USER.c.username == u.username))
        self.conn.execute(insert(_USER).values(**{c: getattr(u, c) for c in UserRow.__slots__}, created_us=created_us))

    def users(self) -> list[UserRow]:
        cols = (_USER.c[c] for c in UserRow.__slots__)
        return [UserRow(*r) for r in self.conn.execute(select(*cols).order_by(_USER.c.username))]

    # ---------------------------------------------------------------- authorization codes

    def add_code(self, c: CodeRow, now_us: int) -> None:
        """Record a new code; rows of codes expired a while ago go first (a used code is kept until
        then, so that its second use is recognised)."""
        self.conn.execute(delete(_CODE).where(_CODE.c.expires_us < now_us - 600_000_000))
        self.conn.execute(insert(_CODE).values(**{c_: getattr(c, c_) for c_ in CodeRow.__slots__}))

    def code(self, code_hash: str) -> CodeRow | None:
        cols = (_CODE.c[c] for c in CodeRow.__slots__)
        row = self.conn.execute(select(*cols).where(_CODE.c.code_hash == code_hash)).first()
        return CodeRow(*row) if row is not None else None

    def use_code(self, code_hash: str, family: str) -> bool:
        """Mark a code used by the token family it was exchanged for; False when it already was
        (two concurrent exchanges: exactly one wins)."""
        done = self.conn.execute(update(_CODE).where(_CODE.c.code_hash == code_hash, _CODE.c.used_by.is_(None))
                                 .values(used_by=family))
        return bool(done.rowcount == 1)

    # ---------------------------------------------------------------- EHR launches

    def add_launch(self, launch: LaunchRow, now_us: int) -> None:
        self.conn.execute(delete(_LAUNCH).where(_LAUNCH.c.expires_us < now_us))
        self.conn.execute(insert(_LAUNCH).values(**{c: getattr(launch, c) for c in LaunchRow.__slots__}))

    def launch(self, launch_hash: str) -> LaunchRow | None:
        cols = (_LAUNCH.c[c] for c in LaunchRow.__slots__)
        row = self.conn.execute(select(*cols).where(_LAUNCH.c.launch_hash == launch_hash)).first()
        return LaunchRow(*row) if row is not None else None

    def use_launch(self, launch_hash: str) -> bool:
        done = self.conn.execute(update(_LAUNCH).where(_LAUNCH.c.launch_hash == launch_hash, _LAUNCH.c.used.is_(False))
                                 .values(used=True))
        return bool(done.rowcount == 1)

    # ---------------------------------------------------------------- tokens

    def add_token(self, t: TokenRow) -> None:
        self.conn.execute(insert(_TOKEN).values(**{c: getattr(t, c) for c in TokenRow.__slots__}))

    def token(self, jti: str) -> TokenRow | None:
        row = _TOKEN_BY_JTI.first(self.conn, {"j": jti})
        if row is None:
            return None
        # The driver's own row: SQLite answers booleans as 0/1.
        values: list[Any] = [bool(v) if i in _TOKEN_BOOLS else v for i, v in enumerate(row)]
        return TokenRow(*values)

    def token_by_refresh(self, refresh_hash: str) -> TokenRow | None:
        row = self.conn.execute(_TOKEN_SELECT.where(_TOKEN.c.refresh_hash == refresh_hash)).first()
        return _token(row) if row is not None else None

    def use_refresh(self, jti: str) -> bool:
        """Mark a refresh token rotated; False when it already was (a concurrent or replayed use)."""
        done = self.conn.execute(update(_TOKEN).where(_TOKEN.c.jti == jti, _TOKEN.c.refresh_used.is_(False))
                                 .values(refresh_used=True))
        return bool(done.rowcount == 1)

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
