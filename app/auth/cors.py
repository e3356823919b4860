"""CORS for browser SMART apps: discovery, token, FHIR and error responses all carry it, and
preflights are answered before routing. No credentials mode: tokens travel in headers."""

from __future__ import annotations

from typing import Any

from flask import Response, request

ALLOW_HEADERS = ("authorization, content-type, accept, prefer, if-match, if-none-match, if-none-exist, "
                 "if-modified-since, x-requested-with")
EXPOSE_HEADERS = "location, etag, last-modified, content-location, www-authenticate"
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def init_app(app: Any) -> None:
    @app.before_request  # type: ignore[untyped-decorator]
    def preflight() -> Response | None:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return Response(status=204, headers={"Access-Control-Allow-Methods": METHODS,
                                                 "Access-Control-Allow-Headers": ALLOW_HEADERS,
                                                 "Access-Control-Max-Age": "600"})
        return None

    @app.after_request  # type: ignore[untyped-decorator]
    def cors(resp: Response) -> Response:
        if "Origin" in request.headers:
            resp.headers["Access-Control-Allow-Origin"] = "*"
            resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            resp.headers.add("Vary", "Origin")
        return resp
