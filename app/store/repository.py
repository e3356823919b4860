"""ResourceStore: every read and write of resources and index rows. Takes a session, never commits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)

from .confine import Confinement, TypeAccess
from .db import Prepared
from .models import (
    INDEX_TABLES,
    Compartment,
    ReferenceIndex,
    Resource,
    ResourceVersion,
    TokenIndex,
    TwinAssessment,
    TwinFact,
    UriIndex,
)
from .query import Include, SearchQuery, TokenValue, parse_token
from .registry import profile_json
from .rows import IndexResult
from .search import SqlBuilder, stored_names, unindexed

_T_RESOURCE: Table = Resource.__table__  # type: ignore[assignment]
_T_VERSION: Table = ResourceVersion.__table__  # type: ignore[assignment]
_T_COMPARTMENT: Table = Compartment.__table__  # type: ignore[assignment]
_T_TWIN: Table = TwinFact.__table__  # type: ignore[assignment]
_T_ASSESS: Table = TwinAssessment.__table__  # type: ignore[assignment]
# Marks a RiskAssessment stored by $simulate whose inputs have changed since (recompute it).
OUTDATED_TAG = {"system": "https://fhirtwin.org/fhir/CodeSystem/twin-tag", "code": "basis-outdated",
                "display": "The twin data behind this assessment changed after it was made"}
_TWIN_COLS = ("res_pk", "patient_id", "variable", "value", "unit", "t", "t_end", "flags", "version")
_T_INDEX: dict[str, Table] = {k: v.__table__ for k, v in INDEX_TABLES.items()}

_VERSION_COLS = ("res_pk", "rtype", "version", "lu", "method", "deleted", "body")
# Column order of each index table's rows: res_pk, rtype, then the row dataclass's fields.
_INDEX_COLS: dict[str, tuple[str, ...]] = {}

_ROW_LISTS = (
    ("token", "tokens"),
    ("string", "strings"),
    ("date", "dates"),
    ("number", "numbers"),
    ("quantity", "quantities"),
    ("reference", "references"),
    ("uri", "uris"),
)


@dataclass(slots=True)
class Stored:
    """One stored version as it is served."""

    pk: int
    rtype: str
    rid: str
    version: int
    lu: int  # microseconds since epoch
    deleted: bool
    body: bytes | None
    method: str = "PUT"
    vpk: int = 0  # the version row's key (history paging)


@dataclass(slots=True)
class PendingWrite:
    rtype: str
    rid: str
    version: int
    lu: int
    method: str
    body: bytes | None  # None: delete
    index: IndexResult | None
    existing_pk: int | None
    # Twin facts of this version: (patient_id, variable, value, unit, t, t_end, flags) each.
    twin: list[tuple[Any, ...]] | None = None


def codec_decode(body: bytes | None) -> bytes | None:
    """The one place stored bytes are read; per-patient encryption will plug in here."""
    return body


def codec_encode(body: bytes | None) -> bytes | None:
    return body


def _current_select() -> Any:
    return (
        select(Resource.pk, Resource.rtype, Resource.rid, Resource.version, Resource.lu, Resource.deleted, ResourceVersion.body)
        .select_from(Resource)
        .join(ResourceVersion, and_(ResourceVersion.res_pk == Resource.pk, ResourceVersion.version == Resource.version))
    )


# Built once: the hot read path pays neither statement construction nor cache-key generation.
_CURRENT = _current_select()
_READ = _CURRENT.where(Resource.rtype == bindparam("t"), Resource.rid == bindparam("i"))
_HEAD = select(Resource.pk, Resource.version, Resource.deleted).where(Resource.rtype == bindparam("t"), Resource.rid == bindparam("i"))
# The same inside one patient's compartment (a patient/ token without granular filters).
_IN_COMPARTMENT = (select(Compartment.res_pk)
                   .where(Compartment.res_pk == Resource.pk, Compartment.patient_id == bindparam("p")).exists())
_READ_IN = _READ.where(_IN_COMPARTMENT)
_FAST_READ = Prepared(_READ)
_FAST_READ_IN = Prepared(_READ_IN)
_HEAD_IN = _HEAD.where(_IN_COMPARTMENT)

# Live resources of one type whose token parameter has one of these codes (match_many).
_TOKEN_MATCH = (
    select(TokenIndex.system, TokenIndex.code, Resource.pk, Resource.rid, Resource.version)
    .join(Resource, Resource.pk == TokenIndex.res_pk)
    .where(TokenIndex.rtype == bindparam("rt"), TokenIndex.param == bindparam("p"),
           TokenIndex.code.in_(bindparam("codes", expanding=True)), Resource.deleted == false())
)


def _plain_token(q: SearchQuery) -> tuple[str, str, TokenValue] | None:
    """(type, parameter, value) of a query that is one plain token clause with one code
    (`param=[system|]code` on a type, no modifier, chain or confinement), else None."""
    if q.rtype is None or q.confine is not None or len(q.clauses) != 1:
        return None
    c = q.clauses[0]
    p = c.param
    if p is None or p.type != "token" or c.modifier is not None or c.chain is not None or c.has_type is not None \
            or p.code in ("_id", "_lastUpdated") or len(c.values) != 1 or stored_names(p) != (p.code,):
        return None
    tv = parse_token(c.values[0])
    return (q.rtype, p.code, tv) if tv.code is not None else None


def _compartment_only(conf: Confinement) -> str | None:
    """The patient when `conf` is exactly one patient's compartment (prebuilt statements serve it)."""
    alts = conf.alternatives
    return alts[0].patient if len(alts) == 1 and not alts[0].clauses else None


def _index_cols() -> None:
    from . import rows as r

    for kind, cls in (("token", r.TokenRow), ("string", r.StringRow), ("date", r.DateRow), ("number", r.NumberRow),
                      ("quantity", r.QuantityRow), ("reference", r.ReferenceRow), ("uri", r.UriRow)):
        _INDEX_COLS[kind] = ("res_pk", "rtype", *cls._fields)


_index_cols()


class ResourceStore:
    def __init__(self, session: Connection, *, is_sqlite: bool, base_url: str | None = None) -> None:
        self.session = session
        self.is_sqlite = is_sqlite
        self.sql = SqlBuilder(base_url, self.expand_value_set)

    # ---------------------------------------------------------------- locking

    def lock(self, key: str) -> None:
        """Serialise writers on `key` until the transaction ends. SQLite writers already hold the
        database write lock (BEGIN IMMEDIATE); PostgreSQL takes a transaction advisory lock."""
        if self.is_sqlite:
            return
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
        self.session.execute(text("SELECT pg_advisory_xact_lock(:h)"), {"h": h})

    # ---------------------------------------------------------------- reads

    def _current(self) -> Any:
        return _CURRENT  # statements are immutable: built once, extended per query

    @staticmethod
    def _stored(row: Any) -> Stored:
        return Stored(row[0], row[1], row[2], row[3], row[4], bool(row[5]), codec_decode(row[6]))

    def read(self, rtype: str, rid: str, confine: Confinement | None = None) -> Stored | None:
        """The current version; with `confine`, only if the resource is inside it (a deleted
        resource never is: it has no index rows)."""
        if confine is None:
            row = _FAST_READ.first(self.session, {"t": rtype, "i": rid})
        elif (patient := _compartment_only(confine)) is not None:
            row = _FAST_READ_IN.first(self.session, {"t": rtype, "i": rid, "p": patient})
        else:
            stmt = _CURRENT.where(Resource.rtype == rtype, Resource.rid == rid,
                                  *self.sql.confinement(rtype, confine))
            row = self.session.execute(stmt).first()
        return self._stored(row) if row else None

    def head(self, rtype: str, rid: str, for_update: bool = False,
             confine: Confinement | None = None) -> tuple[int, int, bool] | None:
        args = {"t": rtype, "i": rid}
        if confine is None:
            stmt = _HEAD
        elif (patient := _compartment_only(confine)) is not None:
            stmt, args["p"] = _HEAD_IN, patient
        else:
            stmt = _HEAD.where(*self.sql.confinement(rtype, confine))
        if for_update and not self.is_sqlite:
            stmt = stmt.with_for_update()
        row = self.session.execute(stmt, args).first()
        return (row[0], row[1], row[2]) if row else None

    def visible(self, rtype: str, pk: int, confine: Confinement) -> bool:
        """Whether the live resource `pk` is inside `confine` (writes check the stored version)."""
        stmt = select(Resource.pk).where(Resource.pk == pk, Resource.deleted == false(),
                                         *self.sql.confinement(rtype, confine))
        return self.session.execute(stmt).first() is not None

    def vread(self, rtype: str, rid: str, version: int, confine: Confinement | None = None) -> Stored | None:
        stmt = (
            select(Resource.pk, Resource.rtype, Resource.rid, ResourceVersion.version, ResourceVersion.lu,
                   ResourceVersion.deleted, ResourceVersion.body, ResourceVersion.method)
            .join(ResourceVersion, ResourceVersion.res_pk == Resource.pk)
            .where(Resource.rtype == rtype, Resource.rid == rid, ResourceVersion.version == version)
        )
        if confine is not None:
            # By the resource's current version: a confined caller sees all versions of what it sees.
            stmt = stmt.where(Resource.deleted == false(), *self.sql.confinement(rtype, confine))
        row = self.session.execute(stmt).first()
        if not row:
            return None
        return Stored(row[0], row[1], row[2], row[3], row[4], row[5], codec_decode(row[6]), row[7])

    def _reach(self, rtype: str, access: TypeAccess | None) -> list[ColumnElement[bool]] | None:
        """Conditions for reading resources of `rtype` within `access` (None: out of reach)."""
        conf = access(rtype) if access is not None else None
        if conf is None:
            return []
        return None if conf.nothing else self.sql.confinement(rtype, conf)

    def read_many(self, keys: Iterable[tuple[str, str]], access: TypeAccess | None = None) -> list[Stored]:
        by_type: dict[str, set[str]] = {}
        for t, i in keys:
            by_type.setdefault(t, set()).add(i)
        out: list[Stored] = []
        for t, ids in by_type.items():
            reach = self._reach(t, access)
            if reach is None:
                continue
            idl = sorted(ids)
            for start in range(0, len(idl), 500):
                rows = self.session.execute(
                    self._current().where(Resource.rtype == t, Resource.rid.in_(idl[start : start + 500]), Resource.deleted == false(),
                                          *reach)
                )
                out.extend(self._stored(r) for r in rows)
        return out

    def read_pks(self, pks: Sequence[int], rtype: str | None = None, access: TypeAccess | None = None) -> list[Stored]:
        """Live resources by key (all of type `rtype` when `access` is given)."""
        reach: list[ColumnElement[bool]] = []
        if access is not None:
            assert rtype is not None
            got = self._reach(rtype, access)
            if got is None:
                return []
            reach = got
        out: list[Stored] = []
        pl = list(pks)
        for start in range(0, len(pl), 500):
            rows = self.session.execute(self._current().where(Resource.pk.in_(pl[start : start + 500]), Resource.deleted == false(),
                                                              *reach))
            out.extend(self._stored(r) for r in rows)
        return out

    # ---------------------------------------------------------------- writes

    def write(self, writes: Sequence[PendingWrite]) -> list[int]:
        """Apply writes set-based; returns the resource pk of each write, in order."""
        if not writes:
            return []
        # Core statements on the session's connection: executemany without the ORM's per-row work.
        s = self.session
        changed: list[tuple[str, str]] = []  # (patient, twin variable) whose facts change
        pks: list[int | None] = [w.existing_pk for w in writes]
        new_idx = [i for i, w in enumerate(writes) if w.existing_pk is None]
        if new_idx:
            rows = [
                {"rtype": writes[i].rtype, "rid": writes[i].rid, "version": writes[i].version,
                 "lu": writes[i].lu, "deleted": writes[i].body is None}
                for i in new_idx
            ]
            result = s.execute(insert(_T_RESOURCE).returning(_T_RESOURCE.c.pk, sort_by_parameter_order=True), rows)
            for i, newpk in zip(new_idx, result.scalars().all(), strict=True):
                pks[i] = newpk
        old = [i for i, w in enumerate(writes) if w.existing_pk is not None]
        if old:
            t = _T_RESOURCE
            s.execute(
                update(t).where(t.c.pk == bindparam("b_pk")).values(
                    version=bindparam("b_version"), lu=bindparam("b_lu"), deleted=bindparam("b_deleted")),
                [{"b_pk": writes[i].existing_pk, "b_version": writes[i].version, "b_lu": writes[i].lu,
                  "b_deleted": writes[i].body is None} for i in old],
            )
            old_pks = [writes[i].existing_pk for i in old]
            before: dict[int, set[tuple[Any, ...]]] = {}
            for start in range(0, len(old_pks), 500):
                chunk = old_pks[start : start + 500]
                # The facts the replaced versions gave, to compare with what the new versions give.
                f = _T_TWIN.c
                for pk, *fact in s.execute(select(f.res_pk, f.patient_id, f.variable, f.value, f.unit, f.t,
                                                  f.t_end, f.flags).where(f.res_pk.in_(chunk))):
                    before.setdefault(pk, set()).add(tuple(fact))
                for table in (*_T_INDEX.values(), _T_COMPARTMENT, _T_TWIN):
                    s.execute(delete(table).where(table.c.res_pk.in_(chunk)))
                # A stored assessment that is replaced or deleted is no longer the server's to mark.
                s.execute(delete(_T_ASSESS).where(_T_ASSESS.c.ra_pk.in_(chunk)))
            # A variable changes where the facts differ (a correction, a delete, an edited birth date),
            # not where a new version says the same thing (an edited name or note).
            for i in old:
                w = writes[i]
                was = before.get(w.existing_pk or 0, set())
                now = {tuple(fact) for fact in (w.twin or ()) if w.body is not None}
                changed.extend((fact[0], fact[1]) for fact in was ^ now)
        self._bulk(
            "resource_version", _VERSION_COLS,
            [(pks[i], w.rtype, w.version, w.lu, w.method, w.body is None, codec_encode(w.body)) for i, w in enumerate(writes)],
        )
        per_table: dict[str, list[tuple[Any, ...]]] = {k: [] for k in INDEX_TABLES}
        comp_rows: list[tuple[Any, ...]] = []
        twin_rows: list[tuple[Any, ...]] = []
        new_rows_of: list[bool] = []  # per twin row: from a new resource (replaced ones compared above)
        for i, w in enumerate(writes):
            if w.index is None or w.body is None:
                continue
            if w.twin:
                twin_rows.extend((pks[i], *fact, w.version) for fact in w.twin)
                new_rows_of.extend([w.existing_pk is None] * len(w.twin))
            pk = pks[i]
            rt = w.rtype
            for kind, attr in _ROW_LISTS:
                target = per_table[kind]
                # Rows are named tuples in column order: splatting is the whole conversion.
                target.extend([(pk, rt, *row) for row in getattr(w.index, attr)])
            comp_rows.extend((pk, p) for p in w.index.compartments)
        for kind, table_rows in per_table.items():
            if table_rows:
                self._bulk(_T_INDEX[kind].name, _INDEX_COLS[kind], table_rows)
        if comp_rows:
            self._bulk("res_compartment", ("res_pk", "patient_id"), comp_rows)
        if twin_rows:
            self._bulk("twin_fact", _TWIN_COLS, twin_rows)
            changed.extend((r[1], r[2]) for i, r in zip(new_rows_of, twin_rows, strict=True) if i)
        if changed:
            self._outdate(changed)
        return [int(p) for p in pks if p is not None]

    def refresh_twin(self, rtype: str, after: int,
                     compute: Callable[[str, dict[str, Any], int, list[str]], list[tuple[Any, ...]] | None],
                     batch: int = 500) -> tuple[int | None, int, int]:
        """Recompute the twin facts of the next `batch` live resources of `rtype` (pk > after) from
        their stored current versions with `compute` (after the code lists changed); rewrite only
        the resources whose facts differ and mark the assessments built on them. Returns (the
        last pk done, or None when there are no more; resources read; resources rewritten).
        The caller commits."""
        f = _T_TWIN.c
        rows = self.session.execute(self._current().where(
            Resource.rtype == rtype, Resource.deleted == false(), Resource.pk > after)
            .order_by(Resource.pk).limit(batch)).all()
        if not rows:
            return None, 0, 0
        page = [self._stored(r) for r in rows]
        pks = [st.pk for st in page]
        comps: dict[int, list[str]] = {}
        c = _T_COMPARTMENT.c
        for pk, patient in self.session.execute(select(c.res_pk, c.patient_id).where(c.res_pk.in_(pks))):
            comps.setdefault(pk, []).append(patient)
        before: dict[int, set[tuple[Any, ...]]] = {}
        for pk, *fact in self.session.execute(select(f.res_pk, f.patient_id, f.variable, f.value, f.unit, f.t,
                                                     f.t_end, f.flags).where(f.res_pk.in_(pks))):
            before.setdefault(pk, set()).add(tuple(fact))
        changed: list[tuple[str, str]] = []
        stale: list[int] = []
        fresh: list[tuple[Any, ...]] = []
        for st in page:
            assert st.body is not None
            now = compute(rtype, orjson.loads(st.body), st.version, comps.get(st.pk, [])) or []
            diff = before.get(st.pk, set()) ^ {tuple(x) for x in now}
            if diff:
                stale.append(st.pk)
                fresh.extend((st.pk, *x, st.version) for x in now)
                changed.extend((x[0], x[1]) for x in diff)
        if stale:
            self.session.execute(delete(_T_TWIN).where(f.res_pk.in_(stale)))
            if fresh:
                self._bulk("twin_fact", _TWIN_COLS, fresh)
            self._outdate(changed)
        return pks[-1], len(page), len(stale)

    # ---------------------------------------------------------------- stored assessments

    def track_assessment(self, ra_pk: int, patient: str, variables: Iterable[str]) -> None:
        """Remember a RiskAssessment stored by $simulate and the twin variables behind it."""
        self.session.execute(insert(_T_ASSESS).values(ra_pk=ra_pk, patient_id=patient,
                                                      variables=" ".join(sorted(set(variables))), outdated=False))

    def _outdate(self, changed: list[tuple[str, str]]) -> None:
        """Tag the tracked assessments whose variables just changed (OUTDATED_TAG). Like $meta-add,
        the tag goes into the current version's meta without a new version; its _tag index row
        is written with it, so `RiskAssessment?_tag=...|basis-outdated` finds it."""
        by_patient: dict[str, set[str]] = {}
        for patient, variable in changed:
            by_patient.setdefault(patient, set()).add(variable)
        a = _T_ASSESS.c
        hits: list[int] = []
        patients = sorted(by_patient)
        for start in range(0, len(patients), 500):
            rows = self.session.execute(select(a.ra_pk, a.patient_id, a.variables).where(
                a.patient_id.in_(patients[start : start + 500]), a.outdated == false())).all()
            hits.extend(pk for pk, patient, names in rows if by_patient[patient].intersection(names.split()))
        if not hits:
            return
        from .indexer import index_resource

        for stored in self.read_pks(hits):
            assert stored.body is not None
            doc = orjson.loads(stored.body)
            meta = doc.setdefault("meta", {})
            meta["tag"] = [*meta.get("tag", []), OUTDATED_TAG]
            body = orjson.dumps(doc)
            v = _T_VERSION.c
            self.session.execute(update(_T_VERSION).where(v.res_pk == stored.pk, v.version == stored.version)
                                 .values(body=codec_encode(body)))
            for table in _T_INDEX.values():
                self.session.execute(delete(table).where(table.c.res_pk == stored.pk))
            index = index_resource(doc)
            for kind, attr in _ROW_LISTS:
                index_rows: list[tuple[Any, ...]] = [(stored.pk, stored.rtype, *row) for row in getattr(index, attr)]
                if index_rows:
                    self._bulk(_T_INDEX[kind].name, _INDEX_COLS[kind], index_rows)
        self.session.execute(update(_T_ASSESS).where(a.ra_pk.in_(hits)).values(outdated=True))

    def _bulk(self, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Many rows straight through the driver: executemany on SQLite, COPY on PostgreSQL.
        Same connection, same transaction as everything else in the request."""
        raw = self.session.connection.driver_connection
        assert raw is not None
        if self.is_sqlite:
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            raw.executemany(sql, rows)
            return
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    # ---------------------------------------------------------------- twin

    def twin_facts(self, patients: Sequence[str], source_types: Iterable[str],
                   access: TypeAccess | None = None, variables: Iterable[str] | None = None) -> list[tuple[Any, ...]]:
        """The twin facts of these patients from live resources the caller may read: rows of
        (patient_id, variable, value, unit, t, t_end, flags, rtype, rid, version), only of
        `variables` when given. A source type out of the caller's reach contributes nothing."""
        f = _T_TWIN.c
        out: list[tuple[Any, ...]] = []
        pl = list(patients)
        only = [] if variables is None else [f.variable.in_(sorted(set(variables)))]
        for rtype in source_types:
            reach = self._reach(rtype, access)
            if reach is None:
                continue
            for start in range(0, len(pl), 5000):
                chunk = pl[start : start + 5000]
                who = f.patient_id == chunk[0] if len(chunk) == 1 else f.patient_id.in_(chunk)
                stmt = (
                    select(f.patient_id, f.variable, f.value, f.unit, f.t, f.t_end, f.flags,
                           Resource.rtype, Resource.rid, f.version)
                    .join(Resource, Resource.pk == f.res_pk)
                    .where(who, Resource.rtype == rtype, *only, *reach)
                )
                out.extend(self.session.execute(stmt).all())
        return out

    # ---------------------------------------------------------------- terminology

    def _by_url(self, rtype: str, url: str) -> dict[str, Any] | None:
        stmt = (
            _CURRENT
            .where(Resource.rtype == rtype, Resource.deleted == false())
            .where(Resource.pk.in_(select(UriIndex.res_pk).where(UriIndex.rtype == rtype, UriIndex.param == "url",
                                                                 UriIndex.value == url)))
            .order_by(Resource.pk.desc())
            .limit(1)
        )
        row = self.session.execute(stmt).first()
        if row is None:
            return None
        body = codec_decode(row[6])
        return orjson.loads(body) if body else None

    def expand_value_set(self, url: str) -> dict[str, list[str]] | None:
        """{system: [codes]} of a ValueSet: a stored one (its expansion, or its compose made of
        concept lists and whole stored CodeSystems), else one of the R4 value sets shipped in
        fhir_profiles/. None when it is unknown or needs a terminology service (filters)."""
        vs = self._by_url("ValueSet", url)
        if vs is None:
            shipped = profile_json("valuesets.json").get(url)
            return {k: list(v) for k, v in shipped["codes"].items()} if isinstance(shipped, dict) else None
        out: dict[str, set[str]] = {}
        if vs.get("expansion", {}).get("contains"):
            stack = list(vs["expansion"]["contains"])
            while stack:
                c = stack.pop()
                if c.get("system") and c.get("code"):
                    out.setdefault(c["system"], set()).add(c["code"])
                stack.extend(c.get("contains", ()))
            return {k: sorted(v) for k, v in out.items()}
        compose = vs.get("compose") or {}
        for inc in compose.get("include", ()):
            system = inc.get("system")
            if not system or inc.get("filter") or inc.get("valueSet"):
                return None
            if inc.get("concept"):
                out.setdefault(system, set()).update(c["code"] for c in inc["concept"] if c.get("code"))
                continue
            cs = self._by_url("CodeSystem", system)
            if cs is None:
                return None
            stack = list(cs.get("concept", ()))
            while stack:
                c = stack.pop()
                if c.get("code"):
                    out.setdefault(system, set()).add(c["code"])
                stack.extend(c.get("concept", ()))
        for exc in compose.get("exclude", ()):
            for c in exc.get("concept", ()):
                out.get(exc.get("system", ""), set()).discard(c.get("code"))
        return {k: sorted(v) for k, v in out.items()}

    # ---------------------------------------------------------------- search

    def search(self, q: SearchQuery) -> tuple[list[Stored], bool]:
        """One page of matches (and whether there is a next page)."""
        stmt = self._current().where(*self.sql.where(q))
        if not q.sort and (q.after is not None or q.before is not None):
            # Keyset paging in the default (pk) order: pages stay put when resources come and go.
            if q.before is not None:
                stmt = stmt.where(Resource.pk < q.before).order_by(Resource.pk.desc()).limit(q.count + 1)
                rows = [self._stored(r) for r in self.session.execute(stmt)]
                more = len(rows) > q.count
                return list(reversed(rows[: q.count])), more
            stmt = stmt.where(Resource.pk > q.after)
        else:
            stmt = stmt.offset(q.offset)
        stmt = stmt.order_by(*self.sql.order_by(q)).limit(q.count + 1)
        rows = [self._stored(r) for r in self.session.execute(stmt)]
        more = len(rows) > q.count
        return rows[: q.count], more

    def count(self, q: SearchQuery) -> int:
        stmt = select(func.count()).select_from(Resource).where(*self.sql.where(q))
        return int(self.session.execute(stmt).scalar_one())

    def match_ids(self, q: SearchQuery, limit: int) -> list[tuple[int, str, int]]:
        """(pk, id, version) of up to `limit` matches, for conditional interactions."""
        stmt = select(Resource.pk, Resource.rid, Resource.version).where(*self.sql.where(q)).limit(limit)
        return [(r[0], r[1], r[2]) for r in self.session.execute(stmt)]

    def match_many(self, queries: Sequence[SearchQuery], limit: int) -> list[list[tuple[int, str, int]]]:
        """match_ids of each query. The common criteria of a Bundle (one plain token, such as
        `identifier=system|value`, with no confinement) are matched together, one statement per
        type and parameter instead of one per query; the others one by one."""
        out: list[list[tuple[int, str, int]]] = [[] for _ in queries]
        groups: dict[tuple[str, str], list[tuple[int, TokenValue]]] = {}
        for k, q in enumerate(queries):
            plain = _plain_token(q)
            if plain is None:
                out[k] = self.match_ids(q, limit)
            else:
                groups.setdefault(plain[:2], []).append((k, plain[2]))
        for (rtype, param), items in groups.items():
            codes = sorted({tv.code for _, tv in items if tv.code is not None})
            hits: dict[str, list[tuple[str | None, int, str, int]]] = {}
            for start in range(0, len(codes), 500):
                for system, code, pk, rid, version in self.session.execute(
                        _TOKEN_MATCH, {"rt": rtype, "p": param, "codes": codes[start : start + 500]}):
                    hits.setdefault(code or "", []).append((system, pk, rid, version))
            for k, tv in items:
                found: list[tuple[int, str, int]] = []
                for system, pk, rid, version in hits.get(tv.code or "", ()):
                    # The system as the token search compares it: any, none ("|code"), or this one.
                    if tv.system is not None and system != (tv.system or None):
                        continue
                    if all(pk != f[0] for f in found):
                        found.append((pk, rid, version))
                        if len(found) == limit:
                            break
                out[k] = found
        return out

    def includes(self, page: list[Stored], includes: list[Include], limit: int, max_depth: int = 4,
                 access: TypeAccess | None = None) -> tuple[list[Stored], bool]:
        """Resources named by _include/_revinclude for a page; (resources, truncated). Only what
        `access` lets the caller read is fetched (and followed by :iterate, and counted)."""
        seen = {(s.rtype, s.rid) for s in page}
        out: list[Stored] = []
        frontier = page
        depth = 0
        while frontier and depth < max_depth:
            found: list[Stored] = []
            for inc in includes:
                if depth > 0 and not inc.iterate:
                    continue
                found.extend(self._include_once(frontier, inc, access))
            new = []
            for s in found:
                if (s.rtype, s.rid) not in seen:
                    seen.add((s.rtype, s.rid))
                    new.append(s)
            if len(out) + len(new) > limit:
                out.extend(new[: limit - len(out)])
                return out, True
            out.extend(new)
            frontier = new
            depth += 1
        return out, False

    def _include_once(self, frontier: list[Stored], inc: Include, access: TypeAccess | None) -> list[Stored]:
        s = self.session
        if not inc.reverse:
            sources = [f.pk for f in frontier if inc.source_type in ("*", f.rtype)]
            if not sources:
                return []
            conds: list[ColumnElement[bool]] = [ReferenceIndex.res_pk.in_(sources), ReferenceIndex.target_id.is_not(None)]
            if inc.param != "*":
                conds.append(ReferenceIndex.param == inc.param)
            if inc.target_type:
                conds.append(ReferenceIndex.target_type == inc.target_type)
            keys = {(t, i) for t, i in s.execute(select(ReferenceIndex.target_type, ReferenceIndex.target_id).where(*conds)) if t and i}
            return self.read_many(keys, access)
        targets = [(f.rtype, f.rid) for f in frontier]
        conds2: list[ColumnElement[bool]] = [tuple_(ReferenceIndex.target_type, ReferenceIndex.target_id).in_(targets)]
        if inc.source_type != "*":
            conds2.append(ReferenceIndex.rtype == inc.source_type)
        if inc.param != "*":
            conds2.append(ReferenceIndex.param == inc.param)
        if access is None:
            pks = sorted({r[0] for r in s.execute(select(ReferenceIndex.res_pk).where(*conds2))})
            return self.read_pks(pks)
        by_type: dict[str, set[int]] = {}
        for pk, rt in s.execute(select(ReferenceIndex.res_pk, ReferenceIndex.rtype).where(*conds2)):
            by_type.setdefault(rt, set()).add(pk)
        out: list[Stored] = []
        for rt in sorted(by_type):
            out.extend(self.read_pks(sorted(by_type[rt]), rt, access))
        return out

    # ---------------------------------------------------------------- history

    def history(
        self, rtype: str | None, rid: str | None, *, since: int | None, at: int | None, count: int, offset: int,
        cursor: tuple[int, int] | None = None, newer: bool = False, confine: Confinement | None = None,
    ) -> tuple[list[Stored], bool]:
        """Versions newest first; `cursor` (lastUpdated, version key) continues after a page's last
        row, or with `newer` gives the page before a page's first row (more: there are newer still).
        `confine` (with `rtype`): only versions of the resources whose current version is inside it."""
        stmt = select(
            Resource.pk, Resource.rtype, Resource.rid, ResourceVersion.version, ResourceVersion.lu,
            ResourceVersion.deleted, ResourceVersion.body, ResourceVersion.method, ResourceVersion.pk,
        ).join(Resource, Resource.pk == ResourceVersion.res_pk)
        if cursor is not None and newer:
            stmt = stmt.where(or_(ResourceVersion.lu > cursor[0],
                                  and_(ResourceVersion.lu == cursor[0], ResourceVersion.pk > cursor[1])))
        elif cursor is not None:
            stmt = stmt.where(or_(ResourceVersion.lu < cursor[0],
                                  and_(ResourceVersion.lu == cursor[0], ResourceVersion.pk < cursor[1])))
        if confine is not None and confine.patient is not None:
            # One patient's versions: found from the compartment and sorted, rather than by walking
            # the type's versions newest first until enough of them belong to the patient.
            stmt = stmt.where(unindexed(ResourceVersion.rtype) == rtype)
        elif rtype is not None:
            stmt = stmt.where(ResourceVersion.rtype == rtype)
        if rid is not None:
            stmt = stmt.where(Resource.rid == rid)
        if confine is not None:
            stmt = stmt.where(Resource.deleted == false(), *self.sql.confined(rtype, confine))
        if since is not None:
            stmt = stmt.where(ResourceVersion.lu >= since)
        if at is not None:
            later = select(func.max(ResourceVersion.version)).where(ResourceVersion.res_pk == Resource.pk, ResourceVersion.lu <= at)
            stmt = stmt.where(ResourceVersion.version == later.correlate(Resource).scalar_subquery())
        if newer:
            stmt = stmt.order_by(ResourceVersion.lu.asc(), ResourceVersion.pk.asc()).limit(count + 1)
        else:
            stmt = stmt.order_by(ResourceVersion.lu.desc(), ResourceVersion.pk.desc()).limit(count + 1).offset(offset)
        rows = [
            Stored(r[0], r[1], r[2], r[3], r[4], r[5], codec_decode(r[6]), r[7], r[8]) for r in self.session.execute(stmt)
        ]
        if newer:
            return list(reversed(rows[:count])), len(rows) > count
        return rows[:count], len(rows) > count

    def history_count(self, rtype: str | None, rid: str | None, since: int | None,
                      confine: Confinement | None = None) -> int:
        stmt = select(func.count()).select_from(ResourceVersion).join(Resource, Resource.pk == ResourceVersion.res_pk)
        if rtype is not None:
            stmt = stmt.where(ResourceVersion.rtype == rtype)
        if rid is not None:
            stmt = stmt.where(Resource.rid == rid)
        if confine is not None:
            stmt = stmt.where(Resource.deleted == false(), *self.sql.confined(rtype, confine))
        if since is not None:
            stmt = stmt.where(ResourceVersion.lu >= since)
        return int(self.session.execute(stmt).scalar_one())
