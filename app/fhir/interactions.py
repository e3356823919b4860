"""The FHIR interactions, by their spec names. They return data (Result), never Flask responses,
and never commit: the pipeline owns the transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import jsonpatch
import orjson

from app.auth.protect import Guard
from app.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    InvalidResource,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from app.store.confine import Confinement
from app.store.indexer import index_resource
from app.store.query import QueryParser, SearchQuery, range_us
from app.store.repository import PendingWrite, ResourceStore, Stored

from . import resources
from .operations.facts import fact_rows
from .summary import apply_elements, apply_summary

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(slots=True)
class Context:
    store: ResourceStore
    parser: QueryParser
    base_url: str  # .../fhir, no trailing slash
    max_includes: int = 1000
    strict: bool = True
    ret: str | None = None  # Prefer: return=...
    guard: Guard | None = None  # what the caller's token allows (None: internal use without a request)

    def confine(self, interaction: str, rtype: str) -> Confinement | None:
        """The part of `rtype` the caller may reach with this interaction (None: all of it)."""
        return None if self.guard is None else self.guard.confinement(interaction, rtype)


@dataclass(slots=True)
class Result:
    status: int
    body: bytes | None = None  # served as is
    headers: dict[str, str] = field(default_factory=dict)
    stored: Stored | None = None
    resource: dict[str, Any] | None = None  # when the body was built, not stored


def now_us() -> int:
    return time.time_ns() // 1000


_LAST_SECOND: tuple[int, str] = (-1, "")


def instant(us: int) -> str:
    # Integer arithmetic: the instant written must parse back to exactly the stored microsecond.
    # Writes come in bursts within one second, so the formatted second is kept for the next call.
    global _LAST_SECOND
    sec, frac = divmod(us, 1_000_000)
    last, prefix = _LAST_SECOND
    if sec != last:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _LAST_SECOND = (sec, prefix)
    return f"{prefix}.{frac:06d}Z"


def http_date(us: int) -> str:
    return format_datetime(datetime.fromtimestamp(us // 1_000_000, tz=UTC), usegmt=True)


def valid_id(rid: str) -> bool:
    return 0 < len(rid) <= 64 and all(c in ID_CHARS for c in rid)


def new_id() -> str:
    return str(uuid.uuid4())


def version_headers(ctx: Context, s: Stored) -> dict[str, str]:
    return {
        "ETag": f'W/"{s.version}"',
        "Last-Modified": http_date(s.lu),
        "Location": f"{ctx.base_url}/{s.rtype}/{s.rid}/_history/{s.version}",
    }


def parse_etag(value: str) -> int | None:
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    return int(v) if v.isdigit() else None


# ---------------------------------------------------------------- preparing a version


def prepare(rtype: str, rid: str, version: int, resource: dict[str, Any], method: str, existing_pk: int | None,
            lu: int | None = None) -> PendingWrite:
    """Stamp id/meta, serialise once, index once."""
    lu = lu or now_us()
    resource["id"] = rid
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(lu)
    # Keep meta first after resourceType/id, the way servers conventionally emit it.
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    ordered = {"resourceType": rtype, "id": rid, "meta": meta, **rest}
    resource.clear()
    resource.update(ordered)
    body = orjson.dumps(ordered)
    index = index_resource(ordered)
    twin = fact_rows(rtype, ordered, version, index.compartments)
    return PendingWrite(rtype, rid, version, lu, method, body, index, existing_pk, twin)


def tombstone(rtype: str, rid: str, version: int, existing_pk: int) -> PendingWrite:
    return PendingWrite(rtype, rid, version, now_us(), "DELETE", None, None, existing_pk)


def stored_from(w: PendingWrite, pk: int) -> Stored:
    return Stored(pk, w.rtype, w.rid, w.version, w.lu, w.body is None, w.body, w.method)


# ---------------------------------------------------------------- read


def read(ctx: Context, rtype: str, rid: str, *, summary: str | None = None, elements: list[str] | None = None) -> Result:
    # Outside the caller's confinement a resource is answered exactly as one that does not exist.
    own = ctx.guard is not None and ctx.guard.own_user(rtype, rid)
    s = ctx.store.read(rtype, rid, None if own else ctx.confine("read", rtype))
    if s is None:
        raise NotFound(f"{rtype}/{rid} is not known", expression=f"{rtype}.id")
    if s.deleted:
        raise Gone(f"{rtype}/{rid} was deleted", headers={"ETag": f'W/"{s.version}"'})
    return _served(ctx, s, summary, elements)


def _served(ctx: Context, s: Stored, summary: str | None, elements: list[str] | None) -> Result:
    headers = version_headers(ctx, s)
    del headers["Location"]
    if summary or elements:
        assert s.body is not None
        doc = orjson.loads(s.body)
        doc = apply_summary(doc, summary) if summary else apply_elements(doc, elements or [])
        return Result(200, orjson.dumps(doc), headers, s)
    return Result(200, s.body, headers, s)


def vread(ctx: Context, rtype: str, rid: str, vid: str) -> Result:
    if not vid.isdigit():
        raise NotFound(f"Version '{vid}' of {rtype}/{rid} is not known")
    s = ctx.store.vread(rtype, rid, int(vid), ctx.confine("vread", rtype))
    if s is None:
        raise NotFound(f"Version {vid} of {rtype}/{rid} is not known")
    if s.deleted:
        raise Gone(f"Version {vid} of {rtype}/{rid} is a deletion", headers={"ETag": f'W/"{s.version}"'})
    return _served(ctx, s, None, None)


# ---------------------------------------------------------------- create / update / patch / delete


def check_body(rtype: str, resource: Any, url_id: str | None = None, *, validated: bool = False) -> dict[str, Any]:
    if not isinstance(resource, dict):
        raise InvalidResource("The body must be a JSON object holding a FHIR resource")
    body_type = resource.get("resourceType")
    if body_type != rtype:
        raise InvalidResource(
            f"resourceType '{body_type}' in the body does not match '{rtype}' in the URL", expression="resourceType"
        )
    if url_id is not None:
        body_id = resource.get("id")
        if body_id is None:
            raise InvalidResource(f"The body of an update must carry id '{url_id}'", expression=f"{rtype}.id")
        if body_id != url_id:
            raise InvalidResource(f"id '{body_id}' in the body does not match '{url_id}' in the URL", expression=f"{rtype}.id")
    if not validated:
        resources.validate(resource, rtype)
    return resource


def conditional_matches(ctx: Context, rtype: str, query: str, what: str,
                        interaction: str = "search-type") -> list[tuple[int, str, int]]:
    """Resources matching a conditional URL's criteria (at most 2 are fetched), among those the
    caller may reach with `interaction` (the write it conditions; a conditional reference is a search)."""
    got = conditional_matches_many(ctx, [(rtype, query, what, interaction)])[0]
    if isinstance(got, FhirError):
        raise got
    return got


Criteria = tuple[str, str, str, str]  # (resource type, query, what it is for messages, interaction)


def conditional_matches_many(ctx: Context, items: Sequence[Criteria]) -> list[list[tuple[int, str, int]] | FhirError]:
    """conditional_matches of each item, matched together (store.match_many: one statement per
    type and parameter for plain token criteria); an item whose criteria do not parse, or that
    the token may not search, gets its error in its place, so the caller reports errors in its
    own order."""
    from urllib.parse import parse_qsl

    out: list[list[tuple[int, str, int]] | FhirError] = []
    queries: list[SearchQuery] = []
    at: list[int] = []
    for rtype, query, what, interaction in items:
        try:
            params = parse_qsl(query, keep_blank_values=True)
            if not params:
                raise BadRequest(f"{what} needs search criteria")
            q = ctx.parser.parse(rtype, params, strict=True)
            q.count = 2
            if ctx.guard is not None:
                q.confine = ctx.guard.confinement(interaction, rtype)
                q.chained = ctx.guard.reach("search-type")
        except FhirError as err:
            out.append(err)
            continue
        at.append(len(out))
        out.append([])
        queries.append(q)
    if queries:
        # One lock for all conditional criteria: matching and the write that follows are
        # serialised among conditional requests (as SQLite's single writer does), and taking one
        # lock, always before any per-resource lock, cannot deadlock with another conditional request.
        ctx.store.lock("conditional")
        for i, found in zip(at, ctx.store.match_many(queries, 2), strict=True):
            out[i] = found
    return out


def create(ctx: Context, rtype: str, resource: Any, *, if_none_exist: str | None = None) -> Result:
    found = prepare_create(ctx, rtype, resource, if_none_exist=if_none_exist)
    if isinstance(found, Result):
        return found
    pending = admit(ctx, "create", found)
    pk = ctx.store.write([found])[0]
    verify(ctx, "create", found.rtype, pk, pending)
    return created(ctx, found, pk)


# ---------------------------------------------------------------- what a confined caller may write


def outside(interaction: str, rtype: str) -> Forbidden:
    return Forbidden(f"The token's scopes allow {interaction} of {rtype} only for resources in its patient's "
                     "compartment or matching its granular scopes, and this one is not")


def admit(ctx: Context, interaction: str, w: PendingWrite) -> Confinement | None:
    """403 unless the version about to be written is inside what the caller may write, as far as
    its index rows (its compartments) tell; returns the confinement still to check in SQL once it
    is written (granular scopes), else None."""
    conf = ctx.confine(interaction, w.rtype)
    if conf is None:
        return None
    inside = conf.admits(w.index.compartments if w.index is not None else set())
    if inside is False:
        raise outside(interaction, w.rtype)
    return conf if inside is None else None


def verify(ctx: Context, interaction: str, rtype: str, pk: int, pending: Confinement | None) -> None:
    """After the write (same transaction, rolled back on failure): the granular check admit() left."""
    if pending is not None and not ctx.store.visible(rtype, pk, pending):
        raise outside(interaction, rtype)


def check_stored(ctx: Context, interaction: str, rtype: str, pk: int) -> None:
    """A change to a stored resource needs that resource to be inside what the caller may change:
    a write may not take over a resource from outside (a deleted one has no compartment left, so
    a confined caller cannot recreate it)."""
    conf = ctx.confine(interaction, rtype)
    if conf is not None and not ctx.store.visible(rtype, pk, conf):
        raise outside(interaction, rtype)


def created(ctx: Context, w: PendingWrite, pk: int) -> Result:
    s = stored_from(w, pk)
    return Result(201, s.body, version_headers(ctx, s), s)


def prepare_create(ctx: Context, rtype: str, resource: Any, *, if_none_exist: str | None = None,
                   validated: bool = False,
                   matched: list[tuple[int, str, int]] | FhirError | None = None) -> Result | PendingWrite:
    """Everything of a create but the write: the existing match (If-None-Exist), or the version
    to write. `matched` is conditional_matches_many's answer for if_none_exist, when the
    caller matched several criteria together."""
    resource = check_body(rtype, resource, validated=validated)
    if if_none_exist:
        if matched is None:
            matches = conditional_matches(ctx, rtype, if_none_exist.split("?", 1)[-1], "If-None-Exist", "create")
        elif isinstance(matched, FhirError):
            raise matched
        else:
            matches = matched
        if len(matches) > 1:
            raise MultipleMatches(f"If-None-Exist '{if_none_exist}' matches more than one {rtype}")
        if matches:
            existing = ctx.store.read(rtype, matches[0][1])
            assert existing is not None
            r = _served(ctx, existing, None, None)
            r.headers["Location"] = f"{ctx.base_url}/{rtype}/{existing.rid}/_history/{existing.version}"
            return r
    return prepare(rtype, new_id(), 1, resource, "POST", None)


def update(ctx: Context, rtype: str, rid: str, resource: Any, *, if_match: str | None = None,
           validated: bool = False) -> Result:
    if not valid_id(rid):
        raise BadRequest(f"'{rid}' is not a valid FHIR id", expression=f"{rtype}.id")
    resource = check_body(rtype, resource, rid, validated=validated)
    ctx.store.lock(f"{rtype}/{rid}")
    head = ctx.store.head(rtype, rid, for_update=True)
    if head is not None:
        check_stored(ctx, "update", rtype, head[0])
    if if_match is not None:
        want = parse_etag(if_match)
        if head is None or want is None or head[1] != want or head[2]:
            current = "none" if head is None else f'W/"{head[1]}"'
            raise PreconditionFailed(f"If-Match {if_match} does not match the current version ({current})")
    if head is None:
        w = prepare(rtype, rid, 1, resource, "PUT", None)
        status = 201
    else:
        w = prepare(rtype, rid, head[1] + 1, resource, "PUT", head[0])
        status = 201 if head[2] else 200
    pending = admit(ctx, "update", w)
    pk = ctx.store.write([w])[0]
    verify(ctx, "update", rtype, pk, pending)
    s = stored_from(w, pk)
    return Result(status, s.body, version_headers(ctx, s), s)


def conditional_update(ctx: Context, rtype: str, query: str, resource: Any, *, if_match: str | None = None) -> Result:
    matches = conditional_matches(ctx, rtype, query, "Conditional update", "update")
    if len(matches) > 1:
        raise MultipleMatches(f"Conditional update criteria '{query}' match more than one {rtype}")
    if not isinstance(resource, dict):
        raise InvalidResource("The body must be a JSON object holding a FHIR resource")
    if matches:
        rid = matches[0][1]
        if resource.get("id") not in (None, rid):
            raise BadRequest(f"id '{resource.get('id')}' in the body differs from the matched {rtype}/{rid}",
                             expression=f"{rtype}.id")
        resource["id"] = rid
        return update(ctx, rtype, rid, resource, if_match=if_match)
    rid = resource.get("id") or new_id()
    if not isinstance(rid, str) or not valid_id(rid):
        raise BadRequest("Invalid id in the body", expression=f"{rtype}.id")
    if ctx.store.head(rtype, rid) is not None:
        raise Conflict(f"{rtype}/{rid} exists but does not match the criteria")
    resource["id"] = rid
    return update(ctx, rtype, rid, resource)


def patch(ctx: Context, rtype: str, rid: str, body: Any, content_type: str, *, if_match: str | None = None) -> Result:
    ctx.store.lock(f"{rtype}/{rid}")
    s = ctx.store.read(rtype, rid)
    if s is None:
        raise NotFound(f"{rtype}/{rid} is not known")
    check_stored(ctx, "patch", rtype, s.pk)
    if s.deleted:
        raise Gone(f"{rtype}/{rid} was deleted")
    if if_match is not None and parse_etag(if_match) != s.version:
        raise PreconditionFailed(f"If-Match {if_match} does not match the current version W/\"{s.version}\"")
    assert s.body is not None
    current = orjson.loads(s.body)
    if "json-patch" in content_type or isinstance(body, list):
        if not isinstance(body, list):
            raise BadRequest("A JSON Patch body must be an array of operations")
        try:
            patched = jsonpatch.JsonPatch(body).apply(current)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise Unprocessable(f"The JSON Patch could not be applied: {e}") from None
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise BadRequest(f"The JSON Patch document is not valid: {e}") from None
    else:
        from .fhirpath_patch import apply_fhirpath_patch

        patched = apply_fhirpath_patch(current, body)
    if not isinstance(patched, dict) or patched.get("resourceType") != rtype or patched.get("id") != rid:
        raise Unprocessable("A patch may not change resourceType or id")
    try:
        resources.validate(patched, rtype)
    except InvalidResource as e:
        raise Unprocessable(issues=e.issues) from None
    w = prepare(rtype, rid, s.version + 1, patched, "PATCH", s.pk)
    pending = admit(ctx, "patch", w)
    ctx.store.write([w])
    verify(ctx, "patch", rtype, s.pk, pending)
    out = stored_from(w, s.pk)
    return Result(200, out.body, version_headers(ctx, out), out)


def delete(ctx: Context, rtype: str, rid: str) -> Result:
    ctx.store.lock(f"{rtype}/{rid}")
    head = ctx.store.head(rtype, rid, for_update=True)
    if head is None or head[2]:
        return Result(204)
    check_stored(ctx, "delete", rtype, head[0])
    w = tombstone(rtype, rid, head[1] + 1, head[0])
    ctx.store.write([w])
    return Result(204, headers={"ETag": f'W/"{w.version}"'})


def conditional_delete(ctx: Context, rtype: str, query: str) -> Result:
    matches = conditional_matches(ctx, rtype, query, "Conditional delete", "delete")
    if len(matches) > 1:
        raise MultipleMatches(f"Conditional delete criteria '{query}' match more than one {rtype}")
    if not matches:
        return Result(204)
    return delete(ctx, rtype, matches[0][1])


# ---------------------------------------------------------------- search and history


def search(ctx: Context, rtype: str | None, params: list[tuple[str, str]], *, strict: bool, path: str) -> Result:
    from .bundles import searchset

    q = ctx.parser.parse(rtype, params, strict=strict)
    if ctx.guard is not None and rtype is not None:
        q.confine = ctx.guard.confinement("search-type", rtype)
        q.chained = ctx.guard.reach("search-type")
    return Result(200, resource=searchset(ctx, q, path))


def parse_instant_param(name: str, raw: str) -> int:
    rng = range_us(raw)
    if rng is None:
        raise BadRequest(f"{name} must be a FHIR instant or date, got '{raw}'", expression=name)
    return rng[0]


def history(ctx: Context, rtype: str | None, rid: str | None, params: list[tuple[str, str]], path: str) -> Result:
    from .bundles import history_bundle

    since = at = None
    cursor: tuple[int, int] | None = None
    newer = False
    count, offset = 20, 0
    used: list[tuple[str, str]] = []
    for k, v in params:
        if k == "_since":
            since = parse_instant_param(k, v)
        elif k == "_at":
            at = parse_instant_param(k, v)
        elif k == "_count":
            if not v.isdigit():
                raise BadRequest("_count must be a non-negative integer", expression="_count")
            count = min(int(v), ctx.parser.max_count)
        elif k == "_offset":
            if not v.isdigit():
                raise BadRequest("_offset must be a non-negative integer", expression="_offset")
            offset = int(v)
            continue
        elif k == "_page":
            lu, _, vpk = v[1:].partition(".")
            if v[:1] not in ("a", "b") or not (lu.isdigit() and vpk.isdigit()):
                raise BadRequest(f"_page '{v}' is not a cursor this server issued", expression="_page")
            cursor, newer = (int(lu), int(vpk)), v[0] == "b"
            continue
        elif k in ("_format", "_pretty"):
            continue
        else:
            raise BadRequest(f"Unknown history parameter '{k}'", expression=k)
        used.append((k, v))
    confine = None
    if rid is not None and rtype is not None:
        # The instance's history is all of it, when the caller may see the resource at all.
        head = ctx.store.head(rtype, rid, confine=ctx.confine("history-instance", rtype))
        if head is None:
            raise NotFound(f"{rtype}/{rid} is not known")
    elif rtype is not None:
        confine = ctx.confine("history-type", rtype)
    rows, more = ctx.store.history(rtype, rid, since=since, at=at, count=count, offset=offset, cursor=cursor, newer=newer,
                                   confine=confine)
    page = f"{'b' if newer else 'a'}{cursor[0]}.{cursor[1]}" if cursor else None
    return Result(200, resource=history_bundle(ctx, rows, more, path, used, count, offset, page, newer))
