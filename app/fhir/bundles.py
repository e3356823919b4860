"""Batch and transaction processing (R4 http.html#transaction), and the searchset/history builders.

Bundles are built as dicts whose entry resources are orjson.Fragment(stored bytes): the stored
JSON is spliced into the response, never parsed and re-serialised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from app.errors import (
    BadRequest,
    FhirError,
    InvalidResource,
    Issue,
    MultipleMatches,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from app.store.query import SearchQuery
from app.store.repository import PendingWrite, Stored

from . import interactions as ix
from . import parallel
from .resources import RESOURCE_TYPES
from .summary import apply_elements, apply_summary


def _entry_for(ctx: ix.Context, s: Stored, mode: str | None, q: SearchQuery | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{ctx.base_url}/{s.rtype}/{s.rid}"}
    assert s.body is not None
    if q is not None and (q.summary in ("true", "text", "data") or q.elements):
        doc = orjson.loads(s.body)
        doc = apply_summary(doc, q.summary) if q.summary else apply_elements(doc, q.elements or [])
        entry["resource"] = doc
    else:
        entry["resource"] = orjson.Fragment(s.body)
    if mode:
        entry["search"] = {"mode": mode}
    return entry


def _link(ctx: ix.Context, path: str, params: list[tuple[str, str]]) -> str:
    qs = urlencode(params, safe=":,|$*/")
    return f"{ctx.base_url}/{path}" + (f"?{qs}" if qs else "")


def searchset(ctx: ix.Context, q: SearchQuery, path: str) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    used = [(k, v) for k, v in q.used if k not in ("_offset", "_page")]
    if q.summary == "count":
        bundle["total"] = ctx.store.count(q)
        bundle["link"] = [{"relation": "self", "url": _link(ctx, path, used)}]
        return bundle
    rows, more = ctx.store.search(q) if q.count > 0 else ([], ctx.store.count(q) > 0)
    first_page = q.offset == 0 and q.after is None and q.before is None
    if q.total in ("accurate", "estimate"):
        bundle["total"] = ctx.store.count(q)
    elif not more and first_page:
        # The whole result is on this page, so the total costs nothing.
        bundle["total"] = len(rows)
    links = [{"relation": "self", "url": _link(ctx, path, q.used)}, {"relation": "first", "url": _link(ctx, path, used)}]
    if q.sort:
        if q.offset > 0:
            prev = max(q.offset - q.count, 0)
            links.append({"relation": "previous", "url": _link(ctx, path, used + ([("_offset", str(prev))] if prev else []))})
        if more:
            links.append({"relation": "next", "url": _link(ctx, path, [*used, ("_offset", str(q.offset + q.count))])})
    elif rows:
        # Default order: keyset cursors on the resource key.
        has_prev = more if q.before is not None else not first_page
        has_next = True if q.before is not None else more
        if has_prev:
            links.append({"relation": "previous", "url": _link(ctx, path, [*used, ("_page", f"b{rows[0].pk}")])})
        if has_next:
            links.append({"relation": "next", "url": _link(ctx, path, [*used, ("_page", f"a{rows[-1].pk}")])})
    bundle["link"] = links
    entries = [_entry_for(ctx, s, "match", q) for s in rows]
    issues: list[dict[str, Any]] = []
    if q.includes and rows:
        # Included resources the token may not read (their type, or outside its confinement for
        # that type) are never fetched: left out silently, not counted, not followed by :iterate.
        reach = ctx.guard.reach("read") if ctx.guard is not None else None
        included, truncated = ctx.store.includes(rows, q.includes, ctx.max_includes, access=reach)
        entries.extend(_entry_for(ctx, s, "include") for s in included)
        if truncated:
            issues.append({
                "severity": "warning", "code": "too-costly",
                "diagnostics": f"_include/_revinclude results were truncated at {ctx.max_includes} resources for this page; "
                               "use a smaller _count to get them all",
            })
    if issues:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": issues}, "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    return bundle


def history_bundle(ctx: ix.Context, rows: list[Stored], more: bool, path: str, used: list[tuple[str, str]],
                   count: int, offset: int, page: str | None = None, newer: bool = False) -> dict[str, Any]:
    entries = []
    for s in rows:
        entry: dict[str, Any] = {"fullUrl": f"{ctx.base_url}/{s.rtype}/{s.rid}"}
        if s.body is not None:
            entry["resource"] = orjson.Fragment(s.body)
        method = "POST" if s.method == "POST" else ("DELETE" if s.deleted else "PUT")
        url = s.rtype if method == "POST" else f"{s.rtype}/{s.rid}"
        entry["request"] = {"method": method, "url": url}
        status = "201 Created" if method == "POST" else ("204 No Content" if s.deleted else "200 OK")
        entry["response"] = {"status": status, "etag": f'W/"{s.version}"', "lastModified": ix.instant(s.lu)}
        entries.append(entry)
    here = used + ([("_offset", str(offset))] if offset else []) + ([("_page", page)] if page else [])
    links = [{"relation": "self", "url": _link(ctx, path, here)}, {"relation": "first", "url": _link(ctx, path, used)}]
    if rows:
        # Keyset cursors on (lastUpdated, version key): versions arriving at the top do not shift
        # the pages a client is walking.
        first, last = rows[0], rows[-1]
        has_next = True if newer else more
        has_prev = more if newer else (page is not None or offset > 0)
        if has_prev:
            links.append({"relation": "previous", "url": _link(ctx, path, [*used, ("_page", f"b{first.lu}.{first.vpk}")])})
        if has_next:
            links.append({"relation": "next", "url": _link(ctx, path, [*used, ("_page", f"a{last.lu}.{last.vpk}")])})
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}
    if not more and offset == 0 and page is None:
        out["total"] = len(entries)
    return out


# ---------------------------------------------------------------- batch / transaction

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class Entry:
    index: int
    full_url: str | None
    method: str
    url: str
    rtype: str | None
    rid: str | None
    vid: str | None
    query: str | None
    resource: Any
    request: dict[str, Any]
    target: str | None = None  # "Type/id" this entry writes
    result: ix.Result | None = None
    skip_create: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _entry_error(e: FhirError, entry: Entry) -> FhirError:
    """The same error, naming the entry (index and fullUrl) and the element inside it."""
    where = f"Bundle.entry[{entry.index}]"
    label = f"{where}" + (f" (fullUrl {entry.full_url})" if entry.full_url else "")
    issues = []
    for i in e.issues:
        exprs = []
        for x in i.expression or ():
            if entry.rtype and (x == entry.rtype or x.startswith(entry.rtype + ".")):
                exprs.append(f"{where}.resource" + x[len(entry.rtype):])
            else:
                exprs.append(f"{where}.{x}" if not x.startswith("Bundle") else x)
        issues.append(Issue(f"{label}: {i.diagnostics}", tuple(exprs) or (where,), i.code, i.severity))
    err = type(e)(issues=issues, headers=e.headers)
    return err


def _parse_entry(ctx: ix.Context, i: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{i}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", expression=where)
    req = raw.get("request")
    if not isinstance(req, dict):
        raise BadRequest(f"{where}.request is required in a batch or transaction", expression=f"{where}.request")
    method = req.get("method")
    url = req.get("url")
    if method not in _METHODS:
        raise BadRequest(f"{where}.request.method must be one of {', '.join(_METHODS)}", expression=f"{where}.request.method")
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.request.url is required", expression=f"{where}.request.url")
    if url.startswith(ctx.base_url + "/"):
        url = url[len(ctx.base_url) + 1:]
    url = url.lstrip("/")
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    rtype = parts[0] if parts else None
    if rtype is not None and rtype not in RESOURCE_TYPES and not rtype.startswith(("$", "_")):
        raise BadRequest(f"{where}.request.url names an unknown resource type '{rtype}'", expression=f"{where}.request.url")
    rid = parts[1] if len(parts) > 1 and not parts[1].startswith(("_", "$")) else None
    vid = parts[3] if len(parts) == 4 and parts[2] == "_history" else None
    full_url = raw.get("fullUrl")
    e = Entry(i, full_url, method, url, rtype, rid, vid, query or None, raw.get("resource"), req)
    if method in ("POST", "PUT") and not isinstance(e.resource, dict):
        raise BadRequest(f"{where}.resource is required for {method}", expression=f"{where}.resource")
    if method in ("POST", "PUT", "DELETE", "PATCH") and rtype is None:
        raise BadRequest(f"{where}.request.url must name a resource type", expression=f"{where}.request.url")
    if method == "POST" and len(parts) != 1:
        raise BadRequest(f"{where}: POST url must be a resource type, got '{url}'", expression=f"{where}.request.url")
    if method in ("PUT", "PATCH", "DELETE") and rid is None and not query:
        raise BadRequest(f"{where}: {method} needs Type/id or Type?criteria, got '{url}'", expression=f"{where}.request.url")
    return e


def process(ctx: ix.Context, bundle: Any, max_entries: int) -> dict[str, Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidResource("POST to the base URL takes a Bundle", expression="resourceType")
    btype = bundle.get("type")
    if btype not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be batch or transaction, got '{btype}'", expression="Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", expression="Bundle.entry")
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; at most {max_entries} are accepted")
    if btype == "transaction":
        return transaction(ctx, raw_entries)
    return batch(ctx, raw_entries)


def _response_entry(ctx: ix.Context, r: ix.Result, write: bool) -> dict[str, Any]:
    status = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}.get(r.status, str(r.status))
    resp: dict[str, Any] = {"status": status}
    if "Location" in r.headers:
        resp["location"] = r.headers["Location"].removeprefix(ctx.base_url + "/")
    if "ETag" in r.headers:
        resp["etag"] = r.headers["ETag"]
    if r.stored is not None:
        resp["lastModified"] = ix.instant(r.stored.lu)
    out: dict[str, Any] = {}
    if r.stored is not None:
        out["fullUrl"] = f"{ctx.base_url}/{r.stored.rtype}/{r.stored.rid}"
    # Written resources come back only when asked for (Prefer: return=representation); reads always.
    if r.body is not None and (not write or ctx.ret == "representation"):
        out["resource"] = orjson.Fragment(r.body)
    elif r.resource is not None:
        out["resource"] = r.resource
    elif write and ctx.ret == "OperationOutcome":
        resp["outcome"] = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational", "diagnostics": f"{status}"}]}
    out["response"] = resp
    return out


def _run_read(ctx: ix.Context, e: Entry) -> ix.Result:
    if e.rtype is None:
        if e.url.startswith("_history"):
            return ix.history(ctx, None, None, parse_qsl(e.query or ""), "_history")
        return ix.search(ctx, None, parse_qsl(e.query or "", keep_blank_values=True), strict=ctx.strict, path="")
    if e.rid is None:
        if e.url.split("?")[0].endswith("_history"):
            return ix.history(ctx, e.rtype, None, parse_qsl(e.query or ""), f"{e.rtype}/_history")
        return ix.search(ctx, e.rtype, parse_qsl(e.query or "", keep_blank_values=True), strict=ctx.strict, path=e.rtype)
    if e.vid is not None:
        return ix.vread(ctx, e.rtype, e.rid, e.vid)
    if e.url.split("?")[0].endswith("_history"):
        return ix.history(ctx, e.rtype, e.rid, parse_qsl(e.query or ""), f"{e.rtype}/{e.rid}/_history")
    return ix.read(ctx, e.rtype, e.rid)


def _interaction(e: Entry) -> str:
    """The interaction an entry asks for, by the names scopes are checked against."""
    if e.method in ("GET", "HEAD"):
        history = e.url.split("?")[0].endswith("_history") or e.vid is not None
        if e.rtype is None:
            return "history-system" if history else "search-system"
        if e.rid is None:
            return "history-type" if history else "search-type"
        if e.vid is not None:
            return "vread"
        return "history-instance" if history else "read"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[e.method]


def _permit(ctx: ix.Context, e: Entry) -> None:
    if ctx.guard is not None:
        ctx.guard.require(_interaction(e), e.rtype)


def _run_one(ctx: ix.Context, e: Entry) -> ix.Result:
    """One entry as if it were its own request (batch semantics)."""
    req = e.request
    assert e.rtype is not None or e.method in ("GET", "HEAD")
    if e.method in ("GET", "HEAD"):
        return _run_read(ctx, e)
    assert e.rtype is not None
    if e.method == "POST":
        return ix.create(ctx, e.rtype, e.resource, if_none_exist=req.get("ifNoneExist"))
    if e.method == "PUT":
        if e.rid is None:
            return ix.conditional_update(ctx, e.rtype, e.query or "", e.resource, if_match=req.get("ifMatch"))
        return ix.update(ctx, e.rtype, e.rid, e.resource, if_match=req.get("ifMatch"))
    if e.method == "PATCH":
        body, ctype = _patch_body(e)
        rid = e.rid
        if rid is None:
            matches = ix.conditional_matches(ctx, e.rtype, e.query or "", "Conditional patch", "patch")
            if len(matches) != 1:
                raise (MultipleMatches if matches else NotFound)(f"Conditional patch matched {len(matches)} resources")
            rid = matches[0][1]
        return ix.patch(ctx, e.rtype, rid, body, ctype, if_match=req.get("ifMatch"))
    if e.rid is None:
        return ix.conditional_delete(ctx, e.rtype, e.query or "")
    return ix.delete(ctx, e.rtype, e.rid)


def _patch_body(e: Entry) -> tuple[Any, str]:
    res = e.resource
    if isinstance(res, dict) and res.get("resourceType") == "Binary":
        import base64

        try:
            return orjson.loads(base64.b64decode(res.get("data", ""))), "application/json-patch+json"
        except (ValueError, orjson.JSONDecodeError):
            raise BadRequest("The Binary of a PATCH entry must hold a base64 JSON Patch document") from None
    if isinstance(res, dict) and res.get("resourceType") == "Parameters":
        return res, "application/fhir+json"
    raise BadRequest("A PATCH entry needs a Binary (JSON Patch) or a Parameters (FHIRPath Patch) resource")


def batch(ctx: ix.Context, raw_entries: list[Any]) -> dict[str, Any]:
    """Each entry on its own: a failing entry is answered with its OperationOutcome and rolls back
    only itself. Consecutive creates are validated and matched one by one but written together
    (one set-based write instead of one per entry); an entry that could see them (any non-create,
    or a create with the same If-None-Exist) first has them written."""
    out: list[dict[str, Any] | None] = [None] * len(raw_entries)
    pending: list[tuple[int, PendingWrite]] = []
    pending_criteria: set[str] = set()
    session = ctx.store.session

    # One pass over the entries finds the creates, whose bodies are checked up front (a large
    # batch on two cores, app.fhir.parallel: this process checks its part and runs those entries
    # while the helper checks the rest, awaited at the first entry of the helper's part; an entry
    # that fails is checked again in its turn, which answers it with its own outcome), and their
    # If-None-Exist criteria, matched together against the store as the batch found it (an
    # answer is used only while that is still the store: nothing written yet).
    creates: dict[int, Any] = {}
    criteria_of: dict[int, ix.Criteria] = {}
    for i, raw in enumerate(raw_entries):
        res = raw.get("resource") if isinstance(raw, dict) else None
        req = raw.get("request") if isinstance(raw, dict) else None
        if isinstance(res, dict) and isinstance(rt := res.get("resourceType"), str) and isinstance(req, dict) \
                and req.get("method") == "POST":
            creates[i] = res
            if isinstance(ine := req.get("ifNoneExist"), str) and ine and rt in RESOURCE_TYPES:
                criteria_of[i] = (rt, ine.split("?", 1)[-1], "If-None-Exist", "create")
    prematched = dict(zip(criteria_of, ix.conditional_matches_many(ctx, list(criteria_of.values())), strict=True)) \
        if len(criteria_of) > 1 else {}
    written = False

    def flush() -> None:
        nonlocal written
        if pending:
            written = True
            pks = ctx.store.write([w for _, w in pending])
            for (i, w), pk in zip(pending, pks, strict=True):
                out[i] = _response_entry(ctx, ix.created(ctx, w, pk), True)
            pending.clear()
            pending_criteria.clear()

    positions = list(creates)
    jobs = [(creates[i]["resourceType"], creates[i], None) for i in positions]
    with parallel.Split(jobs, ix.check_body, here=_BATCH_SHARE) as split:
        invalid = {positions[j] for j in split.here()}
        awaited_from = positions[split.first_there] if split.theirs else len(raw_entries)
        for i, raw in enumerate(raw_entries):
            if i == awaited_from:
                invalid.update(positions[j] for j in split.there())
            sp = None
            try:
                e = _parse_entry(ctx, i, raw)
                _permit(ctx, e)
                if e.method == "POST":
                    criteria = e.request.get("ifNoneExist")
                    if criteria and criteria in pending_criteria:
                        flush()
                    ahead = prematched.get(i) if not written and criteria_of.get(i, ("",))[0] == e.rtype else None
                    found = ix.prepare_create(ctx, e.rtype or "", e.resource, if_none_exist=criteria,
                                              validated=i in creates and i not in invalid and e.resource is creates[i],
                                              matched=ahead)
                    if isinstance(found, ix.Result):
                        out[i] = _response_entry(ctx, found, True)
                    elif (check := ix.admit(ctx, "create", found)) is not None:
                        # Only the written index rows can tell (granular scopes): written on its own.
                        flush()
                        written = True
                        sp = session.begin_nested()
                        pk = ctx.store.write([found])[0]
                        ix.verify(ctx, "create", found.rtype, pk, check)
                        sp.commit()
                        out[i] = _response_entry(ctx, ix.created(ctx, found, pk), True)
                    else:
                        pending.append((i, found))
                        if criteria:
                            pending_criteria.add(criteria)
                    continue
                flush()
                written = written or e.method not in ("GET", "HEAD")
                sp = session.begin_nested()
                r = _run_one(ctx, e)
                sp.commit()
                out[i] = _response_entry(ctx, r, e.method not in ("GET", "HEAD"))
            except FhirError as err:
                if sp is not None:
                    sp.rollback()
                out[i] = {"response": {"status": f"{err.status}", "outcome": err.outcome()}}
        flush()
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


# ---------------------------------------------------------------- transaction


_NARRATIVE_LINK = re.compile(r'((?:href|src)=")(urn:(?:uuid|oid):[^"]+)(")')


Spot = tuple[Any, Any, str]  # (container, key or index, string found there)


def _scan(node: Any, identities: dict[str, int], spots: list[Spot], cond_refs: set[str]) -> None:
    """One walk over a resource: every string that may need rewriting (an entry identity, a
    conditional reference, narrative linking to urn: identities), so rewriting touches only those."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str):
                if v in identities or (v.startswith("urn:") and len(v) > 8):
                    spots.append((node, k, v))
                elif k == "reference" and "?" in v and not v.startswith(("http:", "https:", "urn:")):
                    spots.append((node, k, v))
                    cond_refs.add(v)
                elif k == "div" and "urn:" in v:
                    spots.append((node, k, v))
            elif isinstance(v, (dict, list)):
                _scan(v, identities, spots, cond_refs)
    elif isinstance(node, list):
        for j, v in enumerate(node):
            if isinstance(v, str):
                if v in identities or v.startswith("urn:"):
                    spots.append((node, j, v))
            elif isinstance(v, (dict, list)):
                _scan(v, identities, spots, cond_refs)


def _rewrite(spots: list[Spot], idmap: dict[str, str]) -> None:
    """Replace mapped identities (references, uri/url elements) and narrative links to them."""
    for container, key, value in spots:
        if value in idmap:
            container[key] = idmap[value]
        elif key == "div":
            container[key] = _NARRATIVE_LINK.sub(lambda m: m.group(1) + idmap.get(m.group(2), m.group(2)) + m.group(3), value)


def _resolve(ctx: ix.Context, entries: list[Entry], full_urls: dict[str, int],
             prepared: dict[int, PendingWrite]) -> None:
    """Identities (new ids, matches of conditional creates/updates/deletes, conditional
    references, all against the store as it was before the transaction), references rewritten,
    and each create's version prepared (stamped, serialised, indexed): everything but writes."""
    idmap: dict[str, str] = {}
    targets: dict[str, int] = {}

    def claim(e: Entry, target: str) -> None:
        if target in targets:
            raise BadRequest(
                f"Bundle.entry[{e.index}] and Bundle.entry[{targets[target]}] both change {target}; "
                "a transaction may change a resource only once",
                expression=f"Bundle.entry[{e.index}]",
            )
        targets[target] = e.index
        e.target = target

    # Identities first: new ids for creates, matches for conditional creates/updates/deletes,
    # all against the store as it was before the transaction (so all matched together).
    ordered = sorted(entries, key=lambda x: _ORDER[x.method])
    wanted: list[tuple[Entry, ix.Criteria]] = []
    for e in ordered:
        if e.method == "POST" and (ine := e.request.get("ifNoneExist")):
            wanted.append((e, (e.rtype or "", ine.split("?", 1)[-1], "ifNoneExist", "create")))
        elif e.method in ("PUT", "PATCH", "DELETE") and e.rid is None:
            wanted.append((e, (e.rtype or "", e.query or "", f"Conditional {e.method}", _interaction(e))))
    for (e, _), got in zip(wanted, ix.conditional_matches_many(ctx, [c for _, c in wanted]), strict=True):
        e.extra["matches"] = got

    def matches_of(e: Entry) -> list[tuple[int, str, int]]:
        got = e.extra["matches"]
        if isinstance(got, FhirError):
            raise got
        return list(got)

    for e in ordered:
        try:
            assert e.rtype is not None or e.method in ("GET", "HEAD")
            if e.method == "POST":
                ine = e.request.get("ifNoneExist")
                if ine:
                    matches = matches_of(e)
                    if len(matches) > 1:
                        raise MultipleMatches(f"ifNoneExist '{ine}' matches {len(matches)} resources")
                    if matches:
                        e.skip_create = True
                        e.extra["match"] = matches[0][1]
                        target = f"{e.rtype}/{matches[0][1]}"
                        if e.full_url:
                            idmap[e.full_url] = target
                        continue
                rid = ix.new_id()
                e.rid = rid
                target = f"{e.rtype}/{rid}"
                claim(e, target)
                if e.full_url:
                    idmap[e.full_url] = target
            elif e.method in ("PUT", "PATCH", "DELETE"):
                if e.rid is None:
                    matches = matches_of(e)
                    if len(matches) > 1:
                        raise MultipleMatches(f"{e.method} criteria '{e.query}' match {len(matches)} resources")
                    if matches:
                        e.rid = matches[0][1]
                    elif e.method == "PUT":
                        body_id = e.resource.get("id")
                        e.rid = body_id if isinstance(body_id, str) and ix.valid_id(body_id) else ix.new_id()
                    if e.method == "PUT":
                        if e.resource.get("id") not in (None, e.rid):
                            raise BadRequest(f"id '{e.resource.get('id')}' in the body differs from the matched {e.rtype}/{e.rid}",
                                             expression=f"{e.rtype}.id")
                        e.resource["id"] = e.rid
                    elif e.method == "PATCH":
                        raise NotFound(f"Conditional PATCH criteria '{e.query}' match nothing")
                    else:
                        e.extra["noop"] = True
                        continue
                    e.extra["conditional"] = True
                claim(e, f"{e.rtype}/{e.rid}")
                if e.full_url and e.method != "DELETE":
                    idmap[e.full_url] = f"{e.rtype}/{e.rid}"
        except FhirError as err:
            raise _entry_error(err, e) from None

    # Conditional references, resolved once each (all together); a failing one is reported for
    # the first entry that holds it, the first such entry in the Bundle's order.
    cond_refs: set[str] = set()
    owner: dict[str, Entry] = {}
    spots: dict[int, list[Spot]] = {}
    for e in entries:
        if e.method in ("POST", "PUT") and not e.skip_create:
            _scan(e.resource, full_urls, spots.setdefault(e.index, []), cond_refs)
            if len(owner) < len(cond_refs):
                owner.update((r, e) for r in cond_refs if r not in owner)
    refs = sorted(cond_refs, key=lambda r: (owner[r].index, r))
    found = iter(ix.conditional_matches_many(ctx, [
        (ref.partition("?")[0], ref.partition("?")[2], f"Conditional reference '{ref}'", "search-type")
        for ref in refs if ref.partition("?")[0] in RESOURCE_TYPES]))
    for ref in refs:
        rtype = ref.partition("?")[0]
        try:
            if rtype not in RESOURCE_TYPES:
                raise BadRequest(f"Conditional reference '{ref}' names an unknown resource type")
            hits = next(found)
            if isinstance(hits, FhirError):
                raise hits
            if len(hits) != 1:
                err_cls = MultipleMatches if hits else PreconditionFailed
                raise err_cls(f"Conditional reference '{ref}' matches {len(hits)} resources; exactly one is required")
        except FhirError as err:
            raise _entry_error(err, owner[ref]) from None
        idmap[ref] = f"{rtype}/{hits[0][1]}"

    # Rewrite every resource before anything is written.
    to_write = [e for e in entries if e.method in ("POST", "PUT") and not e.skip_create]
    if idmap:
        for e in to_write:
            _rewrite(spots.get(e.index, []), idmap)

    for e in to_write:
        if e.method == "POST":
            prepared[e.index] = ix.prepare(e.rtype or "", e.rid or "", 1, e.resource, "POST", None)


def _raise_invalid(job: parallel.Job, e: Entry) -> None:
    try:
        ix.check_body(*job)
    except FhirError as err:
        raise _entry_error(err, e) from None


# This process's part of a large Bundle's validation, learnt per kind of Bundle: the helper
# checks the rest meanwhile (see transaction and batch).
_TRANSACTION_SHARE = parallel.Balance(0.3)
_BATCH_SHARE = parallel.Balance(0.4)


def _execute(ctx: ix.Context, entries: list[Entry], prepared: dict[int, PendingWrite]) -> dict[int, ix.Result]:
    """Run a resolved transaction's entries; the caller's database transaction holds the writes."""
    # In the R4 order: DELETE, POST, PUT/PATCH, GET.
    results: dict[int, ix.Result] = {}
    # Per-resource locks are taken in one global order (by target) so concurrent transactions
    # touching the same resources cannot deadlock.
    for e in sorted((x for x in entries if x.method == "DELETE"), key=lambda x: x.target or ""):
        try:
            results[e.index] = ix.Result(204) if e.extra.get("noop") else ix.delete(ctx, e.rtype or "", e.rid or "")
        except FhirError as err:
            raise _entry_error(err, e) from None
    creates = [x for x in entries if x.method == "POST"]
    writes = []
    checks: dict[int, Any] = {}
    for e in creates:
        if e.skip_create:
            existing = ctx.store.read(e.rtype or "", e.extra["match"])
            assert existing is not None
            r = ix.Result(200, existing.body, ix.version_headers(ctx, existing), existing)
            results[e.index] = r
            continue
        w = prepared[e.index]
        try:
            # With its references rewritten, the new version's compartments are final.
            checks[e.index] = ix.admit(ctx, "create", w)
        except FhirError as err:
            raise _entry_error(err, e) from None
        writes.append((e, w))
    pks = ctx.store.write([w for _, w in writes])
    for (e, w), pk in zip(writes, pks, strict=True):
        try:
            ix.verify(ctx, "create", w.rtype, pk, checks[e.index])
        except FhirError as err:
            raise _entry_error(err, e) from None
        s = ix.stored_from(w, pk)
        results[e.index] = ix.Result(201, s.body, ix.version_headers(ctx, s), s)
    for e in sorted((x for x in entries if x.method in ("PUT", "PATCH")), key=lambda x: x.target or ""):
        try:
            if e.method == "PUT":
                # Validated by transaction() (the helper's verdict may be pending; nothing commits before it).
                results[e.index] = ix.update(ctx, e.rtype or "", e.rid or "", e.resource,
                                             if_match=e.request.get("ifMatch"), validated=True)
            else:
                body, ctype = _patch_body(e)
                results[e.index] = ix.patch(ctx, e.rtype or "", e.rid or "", body, ctype, if_match=e.request.get("ifMatch"))
        except FhirError as err:
            raise _entry_error(err, e) from None
    for e in (x for x in entries if x.method in ("GET", "HEAD")):
        try:
            results[e.index] = _run_read(ctx, e)
        except FhirError as err:
            raise _entry_error(err, e) from None
    return results


def transaction(ctx: ix.Context, raw_entries: list[Any]) -> dict[str, Any]:
    entries: list[Entry] = []
    full_urls: dict[str, int] = {}
    for i, raw in enumerate(raw_entries):
        e = _parse_entry(ctx, i, raw)
        if e.full_url:
            if e.full_url in full_urls and e.method != "GET":
                raise BadRequest(
                    f"Bundle.entry[{i}] repeats fullUrl {e.full_url} of entry {full_urls[e.full_url]}",
                    expression=f"Bundle.entry[{i}].fullUrl",
                )
            full_urls[e.full_url] = i
        entries.append(e)

    # Every entry must be allowed by the token before anything runs.
    for e in entries:
        try:
            _permit(ctx, e)
        except FhirError as err:
            raise _entry_error(err, e) from None

    # Every body is validated; a large transaction on two cores (app.fhir.parallel): this process
    # checks its share (spread over the entries, so both sides get the same mix), then resolves
    # identities, prepares and executes the entries while the helper checks the rest. Nothing is committed before the helper's verdict, and an invalid
    # body is reported before anything the resolving or executing found, as a serial check
    # would (a failing transaction is rolled back whole). Rewriting references changes only
    # reference strings, which validation accepts either way.
    checked = [e for e in entries if e.method in ("POST", "PUT")]
    jobs = [(e.rtype or "", e.resource, e.rid if e.method == "PUT" else None) for e in checked]
    deferred: FhirError | None = None
    results: dict[int, ix.Result] = {}
    with parallel.Split(jobs, ix.check_body, here=_TRANSACTION_SHARE, spread=True) as split:
        if bad := split.here():  # the first invalid entry is named, whichever side found it
            first = min(bad + split.there())
            _raise_invalid(split.job(first), checked[first])
        try:
            prepared: dict[int, PendingWrite] = {}
            _resolve(ctx, entries, full_urls, prepared)
            results = _execute(ctx, entries, prepared)
        except FhirError as err:
            deferred = err
        except Exception:
            # A body the helper has yet to reject may trip the resolving; its verdict comes first.
            for i in split.there():
                _raise_invalid(split.job(i), checked[i])
            raise
        for i in split.there():
            _raise_invalid(split.job(i), checked[i])
    if deferred is not None:
        raise deferred
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(ctx, results[e.index], e.method not in ("GET", "HEAD")) for e in entries],
    }
