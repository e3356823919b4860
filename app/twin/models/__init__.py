"""The model registry: every validated risk model, by its API code.

Each model module lists its models in a module-level `MODELS` tuple; only those are served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from app.twin.models import framingham, kfre, pce, prevent
from app.twin.models.base import Model


def _by_code(*groups: Iterable[Model]) -> Mapping[str, Model]:
    found: dict[str, Model] = {}
    for group in groups:
        for model in group:
            code = model.spec.code
            if code in found:
                raise ValueError(f"two models share the code {code!r}")
            found[code] = model
    return MappingProxyType(found)


MODELS: Mapping[str, Model] = _by_code(pce.MODELS, prevent.MODELS, framingham.MODELS, kfre.MODELS)


def get(code: str) -> Model | None:
    """The model with this code, or None when no such model is registered."""
    return MODELS.get(code)
