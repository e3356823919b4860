"""The /fhir blueprint. Each view names its interaction and hands it to the pipeline."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from app.auth import protect
from app.errors import BadRequest, FhirError, MethodNotAllowed, NotFound, PayloadTooLarge

from . import bundles
from . import interactions as ix
from .capability import capability_statement
from .operations import simulate as simulate_op
from .operations import twin as twin_op
from .pipeline import base_url, error_response, parse_body, run
from .resources import RESOURCE_TYPES

bp = Blueprint("fhir", __name__, url_prefix="/fhir")


@bp.before_request
def bearer_first() -> None:
    """An unauthenticated request is answered 401 before its body or type is looked at."""
    if request.endpoint != "fhir.metadata" and request.method != "OPTIONS":
        protect.precheck(base_url())


def _type(rtype: str) -> str:
    if rtype not in RESOURCE_TYPES:
        raise NotFound(f"Resource type '{rtype}' is not known to this R4 server", expression="resourceType")
    return rtype


def _params() -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.args.items(multi=True)]


def _query_string() -> str:
    return request.query_string.decode("utf-8", "replace")


@bp.get("/metadata")
def metadata() -> Response:
    def action(ctx: ix.Context) -> ix.Result:
        return ix.Result(200, resource=capability_statement(ctx.base_url))

    return run(action, write=False, public=True)


@bp.post("")
@bp.post("/")
def system_bundle() -> Response:
    body = parse_body()
    limit = current_app.config["MAX_BUNDLE_ENTRIES"]
    return run(lambda ctx: ix.Result(200, resource=bundles.process(ctx, body(), limit)), write=True, interaction="bundle")


@bp.get("")
@bp.get("/")
def system_search() -> Response:
    if not request.args:
        raise BadRequest("A system-level search needs parameters (for example _type or _lastUpdated)")
    params = _params()
    return run(lambda ctx: ix.search(ctx, None, params, strict=ctx.strict, path=""), write=False,
               interaction="search-system")


@bp.get("/_history")
def system_history() -> Response:
    params = _params()
    return run(lambda ctx: ix.history(ctx, None, None, params, "_history"), write=False, interaction="history-system")


@bp.route("/<rtype>", methods=["GET", "HEAD"])
def search_type(rtype: str) -> Response:
    _type(rtype)
    params = _params()
    return run(lambda ctx: ix.search(ctx, rtype, params, strict=ctx.strict, path=rtype), write=False,
               interaction="search-type", rtype=rtype)


@bp.post("/<rtype>/_search")
def search_post(rtype: str) -> Response:
    _type(rtype)
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
    if ctype != "application/x-www-form-urlencoded":
        from app.errors import UnsupportedMediaType

        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    params = _params() + [(k, v) for k, v in request.form.items(multi=True)]
    return run(lambda ctx: ix.search(ctx, rtype, params, strict=ctx.strict, path=rtype), write=False,
               interaction="search-type", rtype=rtype)


@bp.post("/<rtype>")
def create(rtype: str) -> Response:
    _type(rtype)
    body = parse_body()
    ine = request.headers.get("If-None-Exist")
    return run(lambda ctx: ix.create(ctx, rtype, body(), if_none_exist=ine), write=True, interaction="create", rtype=rtype)


@bp.put("/<rtype>")
def conditional_update(rtype: str) -> Response:
    _type(rtype)
    body = parse_body()
    qs = _query_string()
    if not qs:
        raise MethodNotAllowed("PUT on a resource type needs search criteria (conditional update) or an id")
    if_match = request.headers.get("If-Match")
    return run(lambda ctx: ix.conditional_update(ctx, rtype, qs, body(), if_match=if_match), write=True,
               interaction="update", rtype=rtype)


@bp.delete("/<rtype>")
def conditional_delete(rtype: str) -> Response:
    _type(rtype)
    qs = _query_string()
    if not qs:
        raise MethodNotAllowed("DELETE on a resource type needs search criteria (conditional delete)")
    return run(lambda ctx: ix.conditional_delete(ctx, rtype, qs), write=True, interaction="delete", rtype=rtype)


@bp.patch("/<rtype>")
def conditional_patch(rtype: str) -> Response:
    _type(rtype)
    body = parse_body(allow_patch=True)
    qs = _query_string()
    ctype = request.headers.get("Content-Type", "")
    if_match = request.headers.get("If-Match")

    def action(ctx: ix.Context) -> ix.Result:
        matches = ix.conditional_matches(ctx, rtype, qs, "Conditional patch", "patch")
        if len(matches) != 1:
            from app.errors import MultipleMatches

            if matches:
                raise MultipleMatches(f"Conditional patch criteria match {len(matches)} resources")
            raise NotFound("Conditional patch criteria match no resource")
        return ix.patch(ctx, rtype, matches[0][1], body(), ctype, if_match=if_match)

    return run(action, write=True, interaction="patch", rtype=rtype)


@bp.get("/<rtype>/_history")
def type_history(rtype: str) -> Response:
    _type(rtype)
    params = _params()
    return run(lambda ctx: ix.history(ctx, rtype, None, params, f"{rtype}/_history"), write=False,
               interaction="history-type", rtype=rtype)


@bp.get("/Patient/<rid>/$twin")
def patient_twin(rid: str) -> Response:
    params = _params()
    return run(lambda ctx: twin_op.twin(ctx, rid, params), write=False, interaction="read", rtype="Patient", rid=rid)


@bp.route("/<target>/<rid>/$simulate", methods=["GET", "POST"])
def simulate(target: str, rid: str) -> Response:
    if target not in ("Patient", "Group"):
        raise NotFound(f"$simulate is defined on Patient and Group, not on {target}")
    if request.method == "POST":
        body = parse_body()
        req = simulate_op.from_parameters(body(), simulate_op.known_models())
    else:
        req = simulate_op.from_query(_params(), simulate_op.known_models())
    return run(lambda ctx: simulate_op.simulate(ctx, target, rid, req), write=req.persist, interaction="read",
               rtype=target, rid=rid)


@bp.route("/<rtype>/<rid>", methods=["GET", "HEAD"])
def read(rtype: str, rid: str) -> Response:
    _type(rtype)
    summary = request.args.get("_summary")
    elements = request.args.get("_elements")
    els = [e.strip() for e in elements.split(",")] if elements else None
    return run(lambda ctx: ix.read(ctx, rtype, rid, summary=summary, elements=els), write=False,
               interaction="read", rtype=rtype, rid=rid)


@bp.put("/<rtype>/<rid>")
def update(rtype: str, rid: str) -> Response:
    _type(rtype)
    body = parse_body()
    if_match = request.headers.get("If-Match")
    return run(lambda ctx: ix.update(ctx, rtype, rid, body(), if_match=if_match), write=True, interaction="update",
               rtype=rtype)


@bp.patch("/<rtype>/<rid>")
def patch(rtype: str, rid: str) -> Response:
    _type(rtype)
    body = parse_body(allow_patch=True)
    ctype = request.headers.get("Content-Type", "")
    if_match = request.headers.get("If-Match")
    return run(lambda ctx: ix.patch(ctx, rtype, rid, body(), ctype, if_match=if_match), write=True,
               interaction="patch", rtype=rtype)


@bp.delete("/<rtype>/<rid>")
def delete(rtype: str, rid: str) -> Response:
    _type(rtype)
    return run(lambda ctx: ix.delete(ctx, rtype, rid), write=True, interaction="delete", rtype=rtype)


@bp.get("/<rtype>/<rid>/_history")
def instance_history(rtype: str, rid: str) -> Response:
    _type(rtype)
    params = _params()
    return run(lambda ctx: ix.history(ctx, rtype, rid, params, f"{rtype}/{rid}/_history"), write=False,
               interaction="history-instance", rtype=rtype)


@bp.get("/<rtype>/<rid>/_history/<vid>")
def vread(rtype: str, rid: str, vid: str) -> Response:
    _type(rtype)
    return run(lambda ctx: ix.vread(ctx, rtype, rid, vid), write=False, interaction="vread", rtype=rtype)


@bp.errorhandler(FhirError)
def fhir_error(e: FhirError) -> Response:
    return error_response(e)


def http_error(e: HTTPException) -> Response:
    """Werkzeug's own errors (unknown route, wrong method, body too large) as OperationOutcomes."""
    code = e.code or 500
    if code == 413:
        return error_response(PayloadTooLarge(f"The body exceeds {current_app.config['MAX_BODY_BYTES']} bytes"))
    if code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
    if code == 404:
        return error_response(NotFound(f"No route for {request.path}"))
    err = FhirError(e.description or e.name)
    err.status = code
    return error_response(err)


def unexpected(e: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    err = FhirError("The server hit an internal error; nothing was changed")
    return error_response(err)
