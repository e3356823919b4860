"""Schema: resources, their versions (stored bytes, served as is) and typed search index rows.

Index rows exist only for current, non-deleted versions. Every index row carries the resource
type and parameter code first, so composite B-tree indexes serve `type + param + value` lookups;
`res_pk` links back to the resource (and through `res_compartment` to its patients, which is
where consent filtering will join).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
PK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Resource(Base):
    __tablename__ = "resource"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    rtype: Mapped[str] = mapped_column(String(64))
    rid: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    lu: Mapped[int] = mapped_column(BigInteger)  # lastUpdated, microseconds since epoch (UTC)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("rtype", "rid", name="uq_resource_type_id"),
        Index("ix_resource_type_lu", "rtype", "lu"),
    )


class ResourceVersion(Base):
    __tablename__ = "resource_version"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    res_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"))
    rtype: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    lu: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(8))  # POST PUT PATCH DELETE
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None for a delete
    __table_args__ = (
        UniqueConstraint("res_pk", "version", name="uq_version"),
        Index("ix_version_lu", "lu"),
        Index("ix_version_type_lu", "rtype", "lu"),
    )


class Compartment(Base):
    """Which patients a resource belongs to (Patient CompartmentDefinition)."""

    __tablename__ = "res_compartment"
    res_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    __table_args__ = (Index("ix_compartment_patient", "patient_id", "res_pk"),)


class _IndexMixin:
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    # Indexed with the parameter (see __table_args__ of each table): serves deletes by resource
    # and the per-candidate EXISTS probes of multi-parameter searches.
    res_pk: Mapped[int] = mapped_column(BigInteger)
    rtype: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    grp: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TokenIndex(_IndexMixin, Base):
    __tablename__ = "idx_token"
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    code: Mapped[str | None] = mapped_column(String(255), nullable=True)
    text: Mapped[str | None] = mapped_column(String(512), nullable=True)
    __table_args__ = (Index("ix_token_value", "rtype", "param", "code", "system"), Index("ix_token_res", "res_pk", "param"))


class StringIndex(_IndexMixin, Base):
    __tablename__ = "idx_string"
    norm: Mapped[str] = mapped_column(String(512))
    exact: Mapped[str] = mapped_column(String(512))
    __table_args__ = (Index("ix_string_value", "rtype", "param", "norm"), Index("ix_string_res", "res_pk", "param"))


class DateIndex(_IndexMixin, Base):
    __tablename__ = "idx_date"
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_date_value", "rtype", "param", "low", "high"), Index("ix_date_res", "res_pk", "param"))


class NumberIndex(_IndexMixin, Base):
    __tablename__ = "idx_number"
    value: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_number_value", "rtype", "param", "value"), Index("ix_number_res", "res_pk", "param"))


class QuantityIndex(_IndexMixin, Base):
    __tablename__ = "idx_quantity"
    value: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    code: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cvalue: Mapped[float | None] = mapped_column(Float, nullable=True)
    ccode: Mapped[str | None] = mapped_column(String(255), nullable=True)
    __table_args__ = (Index("ix_quantity_value", "rtype", "param", "code", "value"), Index("ix_quantity_res", "res_pk", "param"))


class ReferenceIndex(_IndexMixin, Base):
    __tablename__ = "idx_reference"
    target_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    url: Mapped[str] = mapped_column(String(1024))
    __table_args__ = (
        Index("ix_reference_target", "rtype", "param", "target_id", "target_type"),
        Index("ix_reference_rev", "target_type", "target_id"),
        Index("ix_reference_res", "res_pk", "param"),
    )


class UriIndex(_IndexMixin, Base):
    __tablename__ = "idx_uri"
    value: Mapped[str] = mapped_column(String(1024))
    __table_args__ = (Index("ix_uri_value", "rtype", "param", "value"), Index("ix_uri_res", "res_pk", "param"))


INDEX_TABLES: dict[str, Any] = {
    "token": TokenIndex,
    "string": StringIndex,
    "date": DateIndex,
    "number": NumberIndex,
    "quantity": QuantityIndex,
    "reference": ReferenceIndex,
    "uri": UriIndex,
}


# ---------------------------------------------------------------------------------------------
# The authorization server's state (SMART on FHIR). Secrets are stored as hashes only: client
# secrets and passwords with scrypt, refresh tokens, codes and launches by their SHA-256.


class OAuthClient(Base):
    __tablename__ = "oauth_client"
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # public | confidential-symmetric | confidential-asymmetric | backend
    kind: Mapped[str] = mapped_column(String(32))
    auth_method: Mapped[str] = mapped_column(String(32))  # none client_secret_basic private_key_jwt
    secret_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    redirect_uris: Mapped[str] = mapped_column(String(4000), default="")  # space-separated
    launch_uri: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    grant_types: Mapped[str] = mapped_column(String(200))  # space-separated
    scope: Mapped[str] = mapped_column(String(4000))  # the client's ceiling
    jwks: Mapped[str | None] = mapped_column(String(20000), nullable=True)  # inline JWKS (JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_us: Mapped[int] = mapped_column(BigInteger)


class OAuthToken(Base):
    """Every access token issued (by its jti) and the refresh token issued with it, if any.
    A request with a token that has no row here, or a revoked one, is refused: revocation holds
    in every worker process at once."""

    __tablename__ = "oauth_token"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(200), nullable=True)
    scope: Mapped[str] = mapped_column(String(4000))
    patient: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fhir_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    issued_us: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    refresh_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    refresh_expires_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    family: Mapped[str] = mapped_column(String(64))  # the first jti of a refresh chain
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The refresh token was exchanged (rotated); presenting it again revokes the whole family.
    refresh_used: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_oauth_token_family", "family"),)


class OAuthUser(Base):
    """People who log in at the authorization server: practitioners and patients, each linked to
    their FHIR resource (`fhir_user`, e.g. Practitioner/123). Passwords are scrypt hashes."""

    __tablename__ = "oauth_user"
    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    fhir_user: Mapped[str] = mapped_column(String(200))  # Type/id, relative to the FHIR base
    name: Mapped[str] = mapped_column(String(200), default="")
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_us: Mapped[int] = mapped_column(BigInteger)


class OAuthCode(Base):
    """Authorization codes (stored by hash), single-use and short-lived. A used code keeps its row
    until it expires, so that a second use is refused and revokes what the first one issued."""

    __tablename__ = "oauth_code"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    scope: Mapped[str] = mapped_column(String(4000))
    username: Mapped[str] = mapped_column(String(200))
    patient: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_challenge: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str | None] = mapped_column(String(500), nullable=True)
    need_patient_banner: Mapped[bool] = mapped_column(Boolean, default=True)
    auth_time: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # family of the tokens issued
    __table_args__ = (Index("ix_oauth_code_exp", "expires_us"),)


class OAuthLaunch(Base):
    """EHR launch contexts: an opaque single-use `launch` value bound to a client, patient and encounter."""

    __tablename__ = "oauth_launch"
    launch_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    patient: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    username: Mapped[str | None] = mapped_column(String(200), nullable=True)  # who launched (None: admin token)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class OAuthAssertion(Base):
    """Client-assertion jti values seen, until their JWT expires: a replay hits the primary key
    in any worker process."""

    __tablename__ = "oauth_assertion"
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_oauth_assertion_exp", "expires_us"),)


class TwinFact(Base):
    """Twin facts derived from the current version of a resource (an Observation's value, a
    Condition's or MedicationRequest's span, a Patient's sex and birth date), in canonical units.
    Like index rows they exist only for current, non-deleted versions and are rewritten with
    them, in the same transaction; the twin state is folded from them at read time, filtered
    through `resource` by what the caller may see."""

    __tablename__ = "twin_fact"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    res_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"))
    patient_id: Mapped[str] = mapped_column(String(64))
    variable: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str] = mapped_column(String(32))
    t: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # microseconds since epoch
    t_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    version: Mapped[int] = mapped_column(Integer)  # the source resource's version
    flags: Mapped[str] = mapped_column(String(200), default="")  # comma-separated
    __table_args__ = (
        Index("ix_twin_fact_patient", "patient_id", "variable", "t"),
        Index("ix_twin_fact_res", "res_pk"),
    )


class TwinAssessment(Base):
    """A RiskAssessment stored by $simulate, with the patient and the twin variables it used: a
    later write that changes any of them marks it (tag basis-outdated) in the same transaction."""

    __tablename__ = "twin_assessment"
    ra_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    variables: Mapped[str] = mapped_column(String(1000))  # space-separated
    outdated: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_twin_assessment_patient", "patient_id", "outdated"),)
