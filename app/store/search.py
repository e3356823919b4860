"""Parsed search -> SQL. Every clause becomes `resource.pk IN (SELECT res_pk FROM idx_... WHERE ...)`
(or a set-difference for :not / :missing), so the database plans the whole query at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, literal, not_, or_, select
from sqlalchemy.orm import aliased

from app.errors import InvalidSearch, NotSupported

from . import ucum
from .confine import Confinement, TypeAccess
from .indexer import INDEXER
from .models import (
    INDEX_TABLES,
    Compartment,
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    Resource,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from .query import (
    Clause,
    DateValue,
    NumberValue,
    QuantityValue,
    SearchQuery,
    normalize,
    parse_date,
    parse_number,
    parse_quantity,
    parse_reference,
    parse_token,
    range_us,
    split_unescaped,
    unescape,
)
from .registry import ParamDef

UCUM = "http://unitsofmeasure.org"
US_PER_S = 1_000_000

# (type, param) -> the parameters whose rows stand for it (the indexer writes none of its own).
_DERIVED = INDEXER.derived


def stored_names(p: ParamDef, suffix: str = "") -> tuple[str, ...]:
    """The `param` values of the index rows that hold parameter p (with a row-name suffix such as
    `$0` or `:of-type`): its own code, or those of the parameters it is derived from."""
    sources = _DERIVED.get((p.base, p.code))
    return (p.code + suffix,) if sources is None else tuple(q + suffix for q in sources)


def _param_is(table: Any, names: tuple[str, ...]) -> ColumnElement[bool]:
    return table.param == names[0] if len(names) == 1 else table.param.in_(names)


def unindexed(col: Any) -> Any:
    """The column as an expression no index serves (`col || ''`): a condition on it is checked on
    the rows another condition found, never used to find them."""
    return col.concat("")


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


Expander = Callable[[str], dict[str, list[str]] | None]


class SqlBuilder:
    def __init__(self, base_url: str | None = None, expand: Expander | None = None) -> None:
        self.base_url = base_url
        # ValueSet URL -> {system: [codes]} for token :in / :not-in (None: unknown value set)
        self.expand = expand

    # ---------------------------------------------------------------- entry points

    def where(self, q: SearchQuery, r: Any = Resource) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [r.deleted == false()]
        conf = q.confine
        if conf is not None and conf.nothing:
            return [false()]
        patient = conf.patient if conf is not None else None
        if patient is not None:
            # Confined to one patient's compartment: those few rows drive the query, and every
            # clause is a probe per candidate (index rows of other types share parameter names,
            # so the type is checked too, as an expression no index serves, which keeps planners
            # from walking every resource of the type instead).
            if q.rtype is not None:
                conds.append(unindexed(r.rtype) == q.rtype)
            conds.append(self.compartment_rows(patient, r))
            driving = None
        else:
            # An index-row clause already restricts the type; leaving resource.rtype out lets SQLite
            # drive the query from the index rows instead of scanning every resource of the type.
            if q.rtype is not None and not any(self._selective(c) for c in q.clauses):
                conds.append(r.rtype == q.rtype)
            elif q.rtype is None and q.types:
                conds.append(r.rtype.in_(q.types))
            # The most selective-looking clause drives (IN: the database walks its index rows); the
            # other index clauses are correlated EXISTS probes per candidate, so a common code does
            # not get materialised in full for every query.
            driving = min((c for c in q.clauses if self._selective(c)), key=self._rank, default=None)
        for c in q.clauses:
            correlated = patient is not None or (driving is not None and c is not driving)
            conds.append(self.clause(q.rtype, c, r, correlated=correlated, access=q.chained))
        if conf is not None:
            conds.extend(self.confinement(q.rtype, conf, r, compartment=patient is None))
        return conds

    def confinement(self, rtype: str | None, conf: Confinement, r: Any = Resource, *,
                    compartment: bool = True) -> list[ColumnElement[bool]]:
        """Conditions that hold for the rows of `r` inside `conf`, all of them probes of the row
        (cheap where the row is already pinned: a read, a page of includes). `compartment=False`
        leaves out the compartment, when the caller already made the common one drive."""
        if conf.nothing:
            return [false()]
        ors: list[ColumnElement[bool]] = []
        for a in conf.alternatives:
            parts = [self.clause(rtype, c, r, correlated=True) for c in a.clauses]
            if compartment and a.patient is not None:
                parts.insert(0, self.in_compartment(a.patient, r))
            if not parts:
                return []  # this alternative admits every row the others might not
            ors.append(and_(*parts) if len(parts) > 1 else parts[0])
        return [ors[0] if len(ors) == 1 else or_(*ors)]

    def confined(self, rtype: str | None, conf: Confinement, r: Any = Resource) -> list[ColumnElement[bool]]:
        """Conditions for scanning `r` inside `conf` (history): the common compartment, when there
        is one, as a set the database can start from."""
        patient = conf.patient
        if patient is None:
            return self.confinement(rtype, conf, r)
        return [self.compartment_rows(patient, r), *self.confinement(rtype, conf, r, compartment=False)]

    @staticmethod
    def compartment_rows(patient: str, r: Any = Resource) -> ColumnElement[bool]:
        """The rows of `r` in the patient's compartment, as a set to drive a query from."""
        return r.pk.in_(select(Compartment.res_pk).where(Compartment.patient_id == patient))

    @staticmethod
    def in_compartment(patient: str, r: Any = Resource) -> ColumnElement[bool]:
        # The (res_pk, patient_id) primary key answers this in one probe.
        return select(Compartment.res_pk).where(Compartment.res_pk == r.pk, Compartment.patient_id == patient).exists()

    @staticmethod
    def _rank(c: Clause) -> int:
        if c.chain is not None:
            return 2
        assert c.param is not None
        return {"reference": 0, "token": 1, "string": 3, "uri": 3}.get(c.param.type, 4)

    @staticmethod
    def _selective(c: Clause) -> bool:
        return (
            c.has_type is None
            and c.param is not None
            and c.param.code not in ("_id", "_lastUpdated")
            and c.modifier not in ("not", "missing", "not-in")
        )

    def select_pks(self, q: SearchQuery) -> Select[Any]:
        return select(Resource.pk).where(*self.where(q))

    def order_by(self, q: SearchQuery) -> list[Any]:
        out: list[Any] = []
        for key in q.sort:
            p = key.param
            if p.code == "_id":
                col: Any = Resource.rid
            elif p.code == "_lastUpdated":
                col = Resource.lu
            else:
                table = INDEX_TABLES[p.type]
                vcol = {
                    "token": "code",
                    "string": "norm",
                    "date": "low" if not key.descending else "high",
                    "number": "value",
                    "quantity": "value",
                    "reference": "target_id",
                    "uri": "value",
                }[p.type]
                agg = func.max if key.descending else func.min
                col = (
                    select(agg(getattr(table, vcol)))
                    .where(table.res_pk == Resource.pk, _param_is(table, stored_names(p)))
                    .correlate(Resource)
                    .scalar_subquery()
                )
            # Resources without the value sort last in both directions, never dropped.
            out.append(col.is_(None))
            out.append(col.desc() if key.descending else col.asc())
        out.append(Resource.pk.asc())
        return out

    # ---------------------------------------------------------------- clauses

    def clause(self, rtype: str | None, c: Clause, r: Any = Resource, correlated: bool = False,
               access: TypeAccess | None = None) -> ColumnElement[bool]:
        """`access`: what chains and _has may reach of the types they look into (None: all)."""
        if c.has_type is not None:
            return self._has(rtype, c, r, access)
        p = c.param
        assert p is not None
        if c.chain is not None:
            return self._chain(rtype, c, r, access)
        if p.code == "_id":
            return self._id(c, r)
        if p.code == "_lastUpdated":
            return self._last_updated(c, r)
        if c.modifier == "missing":
            table = INDEX_TABLES.get(p.type)
            if table is None:
                raise NotSupported(f":missing is not supported on '{p.code}'", expression=c.name)
            names = stored_names(p, "$0" if p.type == "composite" else "")
            has = r.pk.in_(select(table.res_pk).where(table.rtype == r.rtype, _param_is(table, names)))
            return not_(has) if c.values[0] == "true" else has
        if p.type == "token" and c.modifier in ("in", "not-in"):
            inside = r.pk.in_(self._value_set_subquery(rtype, p, c))
            return not_(inside) if c.modifier == "not-in" else inside
        if p.type == "token" and c.modifier == "not":
            return not_(r.pk.in_(self._token_subquery(rtype, p, c.values, None, r)))
        if correlated:
            # No type condition in a probe: res_pk pins the resource, and leaving the leading
            # column of the value indexes unconstrained steers planners to the (res_pk, param) index.
            sub = self._values_subquery(None, p, c, r)
            return sub.where(sub.selected_columns[0] == r.pk).exists()
        return r.pk.in_(self._values_subquery(rtype, p, c, r))

    def _values_subquery(self, rtype: str | None, p: ParamDef, c: Clause, r: Any) -> Select[Any]:
        t = p.type
        if t == "token":
            return self._token_subquery(rtype, p, c.values, c.modifier, r)
        if t == "string":
            return self._simple(StringIndex, rtype, stored_names(p), [self._string_cond(v, c.modifier) for v in c.values], r)
        if t == "date":
            return self._simple(DateIndex, rtype, stored_names(p), [self._date_cond(DateIndex, parse_date(c.name, v)) for v in c.values], r)
        if t == "number":
            return self._simple(NumberIndex, rtype, stored_names(p), [self._number_cond(NumberIndex, parse_number(c.name, v)) for v in c.values], r)
        if t == "quantity":
            return self._simple(QuantityIndex, rtype, stored_names(p), [self._quantity_cond(QuantityIndex, parse_quantity(c.name, v)) for v in c.values], r)
        if t == "uri":
            return self._simple(UriIndex, rtype, stored_names(p), [self._uri_cond(UriIndex, v, c.modifier) for v in c.values], r)
        if t == "reference":
            if c.modifier == "identifier":
                return self._token_subquery(rtype, p, c.values, None, r, param=f"{p.code}:identifier")
            return self._simple(ReferenceIndex, rtype, stored_names(p), [self._reference_cond(ReferenceIndex, v, c.target_type, p) for v in c.values], r)
        if t == "composite":
            return self._composite(rtype, p, c, r)
        raise NotSupported(f"Search parameter '{p.code}' of type {t} is not supported", expression=c.name)

    def _simple(self, table: Any, rtype: str | None, names: tuple[str, ...], conds: list[ColumnElement[bool]],
                r: Any) -> Select[Any]:
        where = [_param_is(table, names), or_(*conds) if len(conds) > 1 else conds[0]]
        if rtype is not None:
            where.insert(0, table.rtype == rtype)
        return select(table.res_pk).where(*where)

    # token
    def _token_cond(self, table: Any, raw: str, modifier: str | None) -> ColumnElement[bool]:
        if modifier == "text":
            return table.text.like(f"{_like_escape(normalize(unescape(raw)))}%", escape="\\")
        if modifier == "of-type":
            parts = split_unescaped(raw, "|")
            if len(parts) != 3:
                raise InvalidSearch(f":of-type takes system|code|value, got '{raw}'")
            system, code, value = (unescape(x) for x in parts)
            return and_(table.system == system, table.code == f"{code}|{value}")
        tv = parse_token(raw)
        conds: list[ColumnElement[bool]] = []
        if tv.code is not None:
            conds.append(table.code == tv.code)
        if tv.system is not None:
            conds.append(table.system.is_(None) if tv.system == "" else table.system == tv.system)
        if not conds:
            raise InvalidSearch(f"Empty token value '{raw}'")
        return and_(*conds) if len(conds) > 1 else conds[0]

    def _token_subquery(
        self, rtype: str | None, p: ParamDef, values: list[str], modifier: str | None, r: Any, param: str | None = None
    ) -> Select[Any]:
        names = (param,) if param else stored_names(p, ":of-type" if modifier == "of-type" else "")
        # Plain codes without system go into one IN list: one index range scan instead of ORs.
        plain = [parse_token(v).code for v in values if modifier is None and "|" not in v]
        conds: list[ColumnElement[bool]] = []
        if len(plain) > 1:
            conds.append(TokenIndex.code.in_(plain))
            values = [v for v in values if "|" in v]
        conds += [self._token_cond(TokenIndex, v, modifier) for v in values]
        return self._simple(TokenIndex, rtype, names, conds, r)

    def _value_set_subquery(self, rtype: str | None, p: ParamDef, c: Clause) -> Select[Any]:
        conds: list[ColumnElement[bool]] = []
        for raw in c.values:
            url = unescape(raw).split("|", 1)[0]
            codes = self.expand(url) if self.expand else None
            if codes is None:
                raise InvalidSearch(f"ValueSet '{url}' in '{c.name}' is not known to this server or cannot be expanded",
                                    expression=c.name)
            for system, listed in codes.items():
                conds.append(and_(TokenIndex.system == system, TokenIndex.code.in_(listed)))
        return self._simple(TokenIndex, rtype, stored_names(p), conds or [false()], None)

    # string
    def _string_cond(self, raw: str, modifier: str | None) -> ColumnElement[bool]:
        value = unescape(raw)
        if modifier == "exact":
            return StringIndex.exact == value
        norm = _like_escape(normalize(value))
        if modifier == "contains":
            return StringIndex.norm.like(f"%{norm}%", escape="\\")
        return StringIndex.norm.like(f"{norm}%", escape="\\")

    # date: the row's range [low, high) against the value's range, by prefix (R4 search 3.1.1.4.1)
    @staticmethod
    def _date_cond(t: Any, v: DateValue) -> ColumnElement[bool]:
        lo, hi = v.low, v.high
        p = v.prefix
        if p == "eq":
            return and_(t.low >= lo, t.high <= hi)
        if p == "ne":
            return or_(t.low < lo, t.high > hi)
        if p == "gt":
            return t.high > hi
        if p == "lt":
            return t.low < lo
        if p == "ge":
            return t.high > lo
        if p == "le":
            return t.low < hi
        if p == "sa":
            return t.low >= hi
        if p == "eb":
            return t.high <= lo
        # ap: overlap with the value's range widened by 10% of its distance from now (at least a day)
        gap = max(abs(time.time() - lo) * 0.1, 86400.0)
        return and_(t.low < hi + gap, t.high > lo - gap)

    @staticmethod
    def _number_cond(t: Any, v: NumberValue | QuantityValue, col: str = "value") -> ColumnElement[bool]:
        value = getattr(t, col)
        p = v.prefix
        if p == "eq":
            return and_(value >= v.low, value < v.high)
        if p == "ne":
            return or_(value < v.low, value >= v.high)
        if p in ("gt", "sa"):
            return value > v.value
        if p in ("lt", "eb"):
            return value < v.value
        if p == "ge":
            return value >= v.value
        if p == "le":
            return value <= v.value
        span = abs(v.value) * 0.1
        return and_(value >= v.value - span, value <= v.value + span)

    def _quantity_cond(self, t: Any, v: QuantityValue) -> ColumnElement[bool]:
        if v.system == UCUM and v.code:
            canon = ucum.canonical(v.value, v.code)
            if canon is not None:
                factor = canon[0] / v.value if v.value else None
                if factor:
                    scaled = QuantityValue(v.prefix, canon[0], v.low * factor, v.high * factor, v.system, canon[1])
                    return and_(t.ccode == canon[1], self._number_cond(t, scaled, "cvalue"))
        conds = [self._number_cond(t, v)]
        if v.system is not None:
            conds.append(t.system == v.system)
        if v.code is not None:
            conds.append(t.code == v.code)
        return and_(*conds)

    @staticmethod
    def _uri_cond(t: Any, raw: str, modifier: str | None) -> ColumnElement[bool]:
        value = unescape(raw)
        if modifier == "below":
            return t.value.like(f"{_like_escape(value)}%", escape="\\")
        if modifier == "above":
            return literal(value).like(func.replace(t.value, "%", "\\%") + "%", escape="\\")
        return t.value == value

    def _reference_cond(self, t: Any, raw: str, target_type: str | None, p: ParamDef) -> ColumnElement[bool]:
        rv = parse_reference(raw, self.base_url)
        if rv.target_id is not None:
            conds: list[ColumnElement[bool]] = [t.target_id == rv.target_id]
            typ = rv.target_type or target_type
            if rv.target_type and target_type and rv.target_type != target_type:
                return false()
            if typ is not None:
                conds.append(t.target_type == typ)
            if rv.url is not None:
                return or_(and_(*conds), t.url == rv.url)
            return and_(*conds)
        assert rv.url is not None
        return or_(t.url == rv.url, t.url.like(f"{_like_escape(rv.url)}|%", escape="\\"))

    # composite: the components must come from the same element (same grp)
    def _composite(self, rtype: str | None, p: ParamDef, c: Clause, r: Any) -> Select[Any]:
        ors: list[Select[Any]] = []
        for raw in c.values:
            parts = split_unescaped(raw, "$")
            aliases = []
            conds: list[ColumnElement[bool]] = []
            for i, (comp, part) in enumerate(zip(p.components, parts, strict=True)):
                table = aliased(INDEX_TABLES[comp.type])
                aliases.append(table)
                conds.append(_param_is(table, stored_names(p, f"${i}")))
                if rtype is not None:
                    conds.append(table.rtype == rtype)
                conds.append(self._component_cond(table, comp.type, c.name, part))
                if i:
                    conds += [table.res_pk == aliases[0].res_pk, table.grp == aliases[0].grp]
            ors.append(select(aliases[0].res_pk).where(*conds))
        if len(ors) == 1:
            return ors[0]
        from sqlalchemy import union

        return select(union(*ors).subquery().c[0])

    def _component_cond(self, t: Any, typ: str, name: str, raw: str) -> ColumnElement[bool]:
        if typ == "token":
            return self._token_cond(t, raw, None)
        if typ == "quantity":
            return self._quantity_cond(t, parse_quantity(name, raw))
        if typ == "date":
            return self._date_cond(t, parse_date(name, raw))
        if typ == "number":
            return self._number_cond(t, parse_number(name, raw))
        if typ == "string":
            value = unescape(raw)
            return t.norm.like(f"{_like_escape(normalize(value))}%", escape="\\")
        if typ == "uri":
            return self._uri_cond(t, raw, None)
        if typ == "reference":
            rv = parse_reference(raw, self.base_url)
            return t.target_id == rv.target_id if rv.target_id else t.url == rv.url
        raise NotSupported(f"Composite component type {typ} is not supported", expression=name)

    # special parameters on the resource row
    def _id(self, c: Clause, r: Any) -> ColumnElement[bool]:
        if c.modifier == "not":
            return not_(r.rid.in_([unescape(v) for v in c.values]))
        return r.rid.in_([unescape(v) for v in c.values])

    def _last_updated(self, c: Clause, r: Any) -> ColumnElement[bool]:
        ors = []
        for v in c.values:
            d = parse_date(c.name, v)
            p = d.prefix
            exact = range_us(v[2:] if v[:2] == p else v)
            assert exact is not None  # parse_date accepted it
            lo, hi = exact
            cond = {
                "eq": and_(r.lu >= lo, r.lu < hi),
                "ne": or_(r.lu < lo, r.lu >= hi),
                "gt": r.lu >= hi,
                "sa": r.lu >= hi,
                "lt": r.lu < lo,
                "eb": r.lu < lo,
                "ge": r.lu >= lo,
                "le": r.lu < hi,
                "ap": and_(r.lu >= lo - 86400 * US_PER_S, r.lu < hi + 86400 * US_PER_S),
            }[p]
            ors.append(cond)
        return or_(*ors) if len(ors) > 1 else ors[0]

    # chains and reverse chains
    def _reach(self, rtype: str, r: Any, access: TypeAccess | None) -> list[ColumnElement[bool]]:
        conf = access(rtype) if access is not None else None
        return [] if conf is None else self.confinement(rtype, conf, r)

    def _chain(self, rtype: str | None, c: Clause, r: Any, access: TypeAccess | None = None) -> ColumnElement[bool]:
        p = c.param
        assert p is not None and c.chain is not None
        targets = [c.target_type] if c.target_type else list(p.targets)
        ors = []
        for target in targets:
            t2 = aliased(Resource)
            try:
                inner = self.clause(target, c.chain, t2, access=access)
            except InvalidSearch:
                if len(targets) > 1:
                    continue
                raise
            target_ids = select(t2.rid).where(t2.rtype == target, t2.deleted == false(), inner,
                                              *self._reach(target, t2, access))
            conds = [ReferenceIndex.param == p.code, ReferenceIndex.target_type == target, ReferenceIndex.target_id.in_(target_ids)]
            if rtype is not None:
                conds.insert(0, ReferenceIndex.rtype == rtype)
            ors.append(r.pk.in_(select(ReferenceIndex.res_pk).where(*conds)))
        if not ors:
            return false()
        return or_(*ors) if len(ors) > 1 else ors[0]

    def _has(self, rtype: str | None, c: Clause, r: Any, access: TypeAccess | None = None) -> ColumnElement[bool]:
        assert c.has_type and c.has_param and c.has_clause
        src = aliased(Resource)
        inner = self.clause(c.has_type, c.has_clause, src, access=access)
        sources = select(src.pk).where(src.rtype == c.has_type, src.deleted == false(), inner,
                                       *self._reach(c.has_type, src, access))
        ref = aliased(ReferenceIndex)
        ids = select(ref.target_id).where(
            ref.rtype == c.has_type, ref.param == c.has_param.code, ref.target_type == rtype, ref.res_pk.in_(sources)
        )
        return r.rid.in_(ids)
