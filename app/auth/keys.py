"""The server's signing keys: RSA key pairs kept as a private JWKS file in the instance folder
(created on first start) or at FHIRTWIN_SIGNING_KEYS. The newest key signs; every key stays in
the published JWKS, so tokens signed before a rotation still verify until they expire."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

ALG = "RS256"  # access tokens and id_tokens (OpenID Connect requires RS256 support)


def _new_key() -> dict[str, Any]:
    kid = f"k{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALG}, private=True)
    return dict(key.as_dict(private=True))


def create_once(path: Path, content: str) -> None:
    """Write a secret file unless it exists. On a first start several worker processes may get here
    at once: the file is linked into place, which fails if another process was first, and then
    everyone reads the winner's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def session_secret(path: Path) -> str:
    """The secret that signs login-session cookies and pending authorization requests (shared by
    every worker process; created on first start)."""
    if not path.exists():
        create_once(path, os.urandom(32).hex())
    return path.read_text().strip()


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self._create()
        data = json.loads(self.path.read_text())
        keys = data.get("keys") or []
        if not keys:
            raise ValueError(f"{self.path} holds no keys")
        self._mtime = self.path.stat().st_mtime
        self.private = KeySet.import_key_set({"keys": keys})
        self.signing_kid = str(keys[-1]["kid"])
        self.public_jwks = {"keys": [
            {k: v for k, v in RSAKey.import_key(key).as_dict(private=False).items()} for key in keys
        ]}

    def _create(self) -> None:
        create_once(self.path, json.dumps({"keys": [_new_key()]}, indent=1))

    def _write(self, keys: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": keys}, f, indent=1)
        os.replace(tmp, self.path)

    def refresh(self) -> None:
        """Pick up a rotation made by another process (`fhirtwin keys rotate`)."""
        try:
            if self.path.stat().st_mtime != self._mtime:
                self._load()
        except FileNotFoundError:
            pass

    def rotate(self, keep: int = 3) -> str:
        """Add a new signing key; keep the newest `keep` keys (older tokens must have expired)."""
        keys = json.loads(self.path.read_text())["keys"]
        keys.append(_new_key())
        self._write(keys[-keep:])
        self._load()
        return self.signing_kid
