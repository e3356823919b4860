"""fhirtwin: a FHIR R4 server that keeps a digital twin of each patient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask

from config.settings import BaseConfig, from_env


@dataclass
class FhirTwin:
    """What the app holds for the pipeline: the database and the compiled search registry."""

    db: Any
    parser: Any


def tune_gc() -> None:
    """Process-level garbage-collector settings for a serving or loading process.

    Parsing a Bundle allocates millions of short-lived containers (pydantic models, dicts), and
    CPython's default gen-0 threshold (700) runs a collection every few hundred of them; the
    compiled definitions loaded at start-up (search parameters, value sets, element tree) would
    also be traversed by every full collection. Freezing moves the start-up objects out of the
    collector's generations and a higher gen-0 threshold makes collections rarer. On the Synthea
    set this took 22% off the CPU time of warm ingest runs (alternating A/B in one process), with
    memory still bounded by the unchanged older-generation thresholds.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def create_app(config: BaseConfig | None = None) -> Flask:
    from werkzeug.exceptions import HTTPException

    from app import auth
    from app.errors import FhirError
    from app.fhir import routes
    from app.fhir.pipeline import error_response
    from app.fhir.resources import RESOURCE_TYPES
    from app.store.db import Database
    from app.store.query import QueryParser
    from app.store.registry import registry

    cfg = config or from_env()
    app = Flask(__name__, instance_path=str(cfg.INSTANCE_DIR))
    for key in dir(cfg):
        if key.isupper():
            app.config[key] = getattr(cfg, key)
    app.config["MAX_CONTENT_LENGTH"] = cfg.MAX_BODY_BYTES
    cfg.INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.database_url())
    parser = QueryParser(registry(), RESOURCE_TYPES, default_count=cfg.DEFAULT_COUNT, max_count=cfg.MAX_COUNT)
    app.extensions["fhirtwin"] = FhirTwin(db=db, parser=parser)
    auth.init_app(app, db, RESOURCE_TYPES)
    app.register_blueprint(routes.bp)
    app.register_error_handler(FhirError, error_response)
    app.register_error_handler(HTTPException, routes.http_error)
    app.register_error_handler(Exception, routes.unexpected)

    @app.get("/")
    def index() -> Any:
        return {"name": "fhirtwin", "fhir": "/fhir", "metadata": "/fhir/metadata"}

    return app
