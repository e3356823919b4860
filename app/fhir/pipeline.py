"""THE request pipeline: every FHIR request passes through run(), which owns the transaction.

Order: negotiate -> authenticate (bearer token) -> scopes for the interaction -> (consent: issue 5
plugs in here) -> interaction -> commit or roll back -> render. Errors of any kind leave as an
OperationOutcome.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from flask import Response, current_app, g, request
from sqlalchemy.exc import OperationalError

from app.auth import protect
from app.auth.protect import Guard
from app.errors import BadRequest, FhirError, NotAcceptable, UnsupportedMediaType
from app.store.repository import ResourceStore

from . import interactions as ix

log = logging.getLogger("fhirtwin")
MAX_ATTEMPTS = 4
RETRYABLE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_FORMATS = {"json": FHIR_JSON, "application/json": "application/json", "application/fhir+json": FHIR_JSON,
            "application/json+fhir": FHIR_JSON}


def negotiate() -> str:
    """The response media type, or 406."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt not in _FORMATS:
            raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks JSON (json, application/fhir+json)",
                                expression="_format")
        return _FORMATS[fmt]
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return FHIR_JSON
    kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    for k in kinds:
        if k in ("application/fhir+json", "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if k == "application/json":
            return "application/json"
    raise NotAcceptable(f"Accept '{accept}' cannot be served; this server answers application/fhir+json or application/json")


class Body:
    """The parsed request body, fresh for each attempt: interactions change the documents they
    are given (ids, rewritten references), and a retried transaction must start from the original."""

    def __init__(self, raw: bytes, first: Any) -> None:
        self.raw = raw
        self.first: Any = first
        self.used = False

    def __call__(self) -> Any:
        if not self.used:
            self.used = True
            return self.first
        return orjson.loads(self.raw)


def parse_body(allow_patch: bool = False) -> Body:
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    allowed = JSON_TYPES + (("application/json-patch+json",) if allow_patch else ())
    if ctype not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{ctype or '(none)'}' is not supported; send {', '.join(allowed)}"
        )
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("The request body is empty")
    try:
        return Body(raw, orjson.loads(raw))
    except RecursionError:
        raise BadRequest("The body is nested too deeply") from None
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"The body is not valid JSON: {e}") from None


def prefer() -> dict[str, str]:
    out: dict[str, str] = {}
    for part in request.headers.get("Prefer", "").split(","):
        k, _, v = part.strip().partition("=")
        if k:
            out[k.strip().lower()] = v.strip().strip('"')
    return out


def base_url() -> str:
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return str(public).rstrip("/")
    return f"{request.scheme}://{request.host}/fhir"


def context(session: Any, strict: bool, ret: str | None = None) -> ix.Context:
    fhir = current_app.extensions["fhirtwin"]
    base = base_url()
    store = ResourceStore(session, is_sqlite=fhir.db.is_sqlite, base_url=base)
    return ix.Context(store=store, parser=fhir.parser, base_url=base,
                      max_includes=current_app.config["MAX_INCLUDES"], strict=strict, ret=ret)


def run(action: Callable[[ix.Context], ix.Result], *, write: bool, interaction: str | None = None,
        rtype: str | None = None, rid: str | None = None, public: bool = False) -> Response:
    """Run one interaction in one transaction and render its result: authenticate, check the
    token's scopes for (interaction, type), run, commit or roll back, render. `bundle` entries are
    checked one by one as they are processed; `public` (metadata) needs no token."""
    media = negotiate()
    pref = prefer()
    strict = pref.get("handling", "strict" if current_app.config["SEARCH_STRICT"] else "lenient") != "lenient"
    fhir = current_app.extensions["fhirtwin"]
    for attempt in range(MAX_ATTEMPTS):
        try:
            with fhir.db.session(write=write) as session:
                ctx = context(session, strict, pref.get("return"))
                if not public:
                    ctx.guard = Guard(protect.authenticate(session, ctx.base_url), ctx.parser)
                    if interaction in ("search-system", "history-system"):
                        ctx.guard.require(interaction, None)
                    elif interaction == "read" and rid is not None and ctx.guard.own_user(rtype or "", rid):
                        pass  # the user's own resource (see Guard.own_user)
                    elif interaction != "bundle":
                        ctx.guard.require(interaction or "", rtype)
                g.fhir_ctx = ctx
                try:
                    result = action(ctx)
                except RecursionError:
                    raise BadRequest("The resource is nested too deeply to be processed") from None
                if write:
                    session.commit()
            break
        except OperationalError as e:
            # PostgreSQL broke a deadlock or a serialisation conflict by failing this transaction:
            # nothing of it was kept, so run it again from the original request.
            code = getattr(e.orig, "sqlstate", None)
            if code not in RETRYABLE or attempt == MAX_ATTEMPTS - 1:
                raise
            log.warning("retrying after %s (attempt %d)", code, attempt + 1)
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    return render(result, media, pref.get("return"), write=write)


def not_modified(result: ix.Result) -> bool:
    s = result.stored
    if s is None or result.status != 200:
        return False
    inm = request.headers.get("If-None-Match")
    if inm:
        return any(ix.parse_etag(t) == s.version for t in inm.split(",")) or inm.strip() == "*"
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return s.lu // 1_000_000 <= since
    return False


def render(result: ix.Result, media: str, ret: str | None, *, write: bool) -> Response:
    headers = dict(result.headers)
    if not write and request.method in ("GET", "HEAD") and not_modified(result):
        headers.pop("Location", None)
        return Response(status=304, headers=headers)
    if result.status == 204 or (result.body is None and result.resource is None):
        return Response(status=result.status, headers=headers)
    if write and ret == "minimal" and result.resource is None:
        return Response(status=result.status, headers=headers)
    if write and ret == "OperationOutcome" and result.resource is None:
        oo = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational",
             "diagnostics": f"{request.method} succeeded with status {result.status}"}]}
        return Response(orjson.dumps(oo), status=result.status, headers=headers, content_type=f"{media}; charset=utf-8")
    body = result.body if result.body is not None else orjson.dumps(result.resource)
    pretty = request.args.get("_pretty") == "true"
    if pretty:
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return Response(body, status=result.status, headers=headers, content_type=f"{media}; charset=utf-8")


def error_response(e: FhirError) -> Response:
    body = orjson.dumps(e.outcome())
    return Response(body, status=e.status, headers=e.headers, content_type=f"{FHIR_JSON}; charset=utf-8")
