"""Signing keys: one key per instance folder, whichever process creates it."""

from __future__ import annotations


def test_concurrent_first_starts_share_one_signing_key(tmp_path) -> None:
    """Gunicorn workers start together: whoever creates the key file, all must sign with one key."""
    import multiprocessing as mp

    path = tmp_path / "keys" / "signing-jwks.json"
    with mp.get_context("spawn").Pool(4) as pool:
        kids = pool.map(_signing_kid, [str(path)] * 8)
    assert len(set(kids)) == 1


def _signing_kid(path: str) -> str:
    from pathlib import Path

    from app.auth.keys import SigningKeys

    return SigningKeys(Path(path)).signing_kid
