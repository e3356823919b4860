"""Configuration objects. Values come from the environment, with defaults for a local checkout."""

from __future__ import annotations

import os
from pathlib import Path


class BaseConfig:
    INSTANCE_DIR = Path(os.environ.get("FHIRTWIN_INSTANCE", "./instance")).resolve()
    DATABASE_URL = os.environ.get("DATABASE_URL", "")
    PUBLIC_URL = os.environ.get("FHIRTWIN_PUBLIC_URL", "")  # base URL of /fhir behind a proxy
    # Unknown search parameters: 400 unless the client sends Prefer: handling=lenient.
    SEARCH_STRICT = os.environ.get("FHIRTWIN_SEARCH_STRICT", "1") != "0"
    DEFAULT_COUNT = 20
    MAX_COUNT = 1000
    MAX_BODY_BYTES = int(os.environ.get("FHIRTWIN_MAX_BODY_BYTES", str(64 * 1024 * 1024)))
    MAX_BUNDLE_ENTRIES = int(os.environ.get("FHIRTWIN_MAX_BUNDLE_ENTRIES", "20000"))
    MAX_JSON_DEPTH = 64
    MAX_INCLUDES = 1000  # included resources per page before truncation is signalled
    TESTING = False
    # SMART authorization: "smart" (default) or "open" (no authorization at all; loudly logged).
    AUTH_MODE = os.environ.get("FHIRTWIN_AUTH", "smart")
    SIGNING_KEYS = os.environ.get("FHIRTWIN_SIGNING_KEYS", "")  # private JWKS file; default instance/keys/
    ASSERTION_ALGS = os.environ.get("FHIRTWIN_ASSERTION_ALGS", "RS384 ES384")
    BACKEND_TOKEN_LIFETIME_S = int(os.environ.get("FHIRTWIN_BACKEND_TOKEN_LIFETIME_S", "300"))
    ACCESS_TOKEN_LIFETIME_S = int(os.environ.get("FHIRTWIN_ACCESS_TOKEN_LIFETIME_S", "3600"))
    OFFLINE_REFRESH_LIFETIME_S = int(os.environ.get("FHIRTWIN_OFFLINE_REFRESH_LIFETIME_S", str(90 * 86_400)))
    ONLINE_REFRESH_LIFETIME_S = int(os.environ.get("FHIRTWIN_ONLINE_REFRESH_LIFETIME_S", str(8 * 3600)))
    # RFC 7591 registration: "admin" (a system/*.cruds bearer token) or "open" (anyone; demo mode).
    REGISTRATION = os.environ.get("FHIRTWIN_REGISTRATION", "admin")
    LOGIN_SESSION_S = int(os.environ.get("FHIRTWIN_LOGIN_SESSION_S", str(8 * 3600)))
    # Signs login-session cookies and pending authorizations; default: instance/keys/session-secret.
    SECRET_KEY = os.environ.get("FHIRTWIN_SECRET_KEY", "") or None

    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        return f"sqlite:///{self.INSTANCE_DIR / 'fhirtwin.sqlite'}"


class DevConfig(BaseConfig):
    REGISTRATION = os.environ.get("FHIRTWIN_REGISTRATION", "open")  # `make run` is demo mode


class TestConfig(BaseConfig):
    TESTING = True
    REGISTRATION = os.environ.get("FHIRTWIN_REGISTRATION", "open")


class ProdConfig(BaseConfig):
    pass


def from_env() -> BaseConfig:
    name = os.environ.get("FHIRTWIN_CONFIG", "dev").lower()
    return {"dev": DevConfig, "test": TestConfig, "prod": ProdConfig}.get(name, DevConfig)()
