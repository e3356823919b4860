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


def create_app(config: BaseConfig | None = None) -> Flask:
    from werkzeug.exceptions import HTTPException

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
    app.register_blueprint(routes.bp)
    app.register_error_handler(FhirError, error_response)
    app.register_error_handler(HTTPException, routes.http_error)
    app.register_error_handler(Exception, routes.unexpected)

    @app.get("/")
    def index() -> Any:
        return {"name": "fhirtwin", "fhir": "/fhir", "metadata": "/fhir/metadata"}

    return app
