"""What every risk model declares and how its inputs are checked.

A model is a pure, vectorised function of named twin variables (see docs/twin.md for the
vocabulary): `risk(x)` takes arrays of equal length, one per input, in the canonical unit the
input declares, and returns the predicted probability of the outcome within the horizon as a
fraction 0..1. Inputs outside the published validity range are never clamped silently: callers
run `problems()` first and refuse to compute (the API answers 422).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Input:
    """One model input: a twin variable, its canonical unit and the model's validity range."""

    name: str
    unit: str
    low: float | None = None
    high: float | None = None
    required: bool = True
    # Used when an optional input is absent (for example "not on a statin" = 0.0).
    default: float | None = None
    boolean: bool = False
    # Open bounds: "eGFR < 60" is high=60, high_open=True.
    low_open: bool = False
    high_open: bool = False

    def outside(self, value: float) -> bool:
        if self.boolean and value not in (0.0, 1.0):
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return True
        return self.high is not None and (value > self.high or (self.high_open and value == self.high))

    def limits(self) -> str:
        """The validity range in words, e.g. "40 to 79", "below 60", "above 0"."""
        lo = None if self.low is None else (f"above {self.low:g}" if self.low_open else f"at least {self.low:g}")
        hi = None if self.high is None else (f"below {self.high:g}" if self.high_open else f"at most {self.high:g}")
        if lo and hi and not self.low_open and not self.high_open:
            return f"{self.low:g} to {self.high:g}"
        return " and ".join(x for x in (lo, hi) if x) or "any value"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The predicted outcome, coded in SNOMED CT where a code exists (text otherwise)."""

    text: str
    code: str | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    code: str  # the API's model code, e.g. "pce-ascvd-10y"
    title: str
    version: str  # bumped whenever coefficients or handling change
    citation: str
    doi: str | None
    horizon_years: int
    outcome: Outcome
    inputs: tuple[Input, ...]
    population: str  # who the model is validated for, in words


class Model(Protocol):
    @property
    def spec(self) -> ModelSpec: ...

    def risk(self, x: Mapping[str, Array]) -> Array: ...


@dataclass(frozen=True, slots=True)
class Problem:
    input: str
    kind: Literal["missing", "out-of-range"]
    value: float | None = None
    low: float | None = None
    high: float | None = None


def problems(spec: ModelSpec, values: Mapping[str, float | None]) -> list[Problem]:
    """Missing required inputs and inputs outside the validity range, in declaration order."""
    found: list[Problem] = []
    for item in spec.inputs:
        value = values.get(item.name)
        if value is None:
            if item.required:
                found.append(Problem(item.name, "missing", low=item.low, high=item.high))
            continue
        if item.outside(value):
            found.append(Problem(item.name, "out-of-range", value, item.low, item.high))
    return found


def complete(spec: ModelSpec, values: Mapping[str, float | None]) -> dict[str, float]:
    """The inputs with optional ones defaulted; call only when `problems()` found none."""
    out: dict[str, float] = {}
    for item in spec.inputs:
        value = values.get(item.name)
        if value is None:
            if item.default is None:
                raise ValueError(f"input {item.name} is missing")
            value = item.default
        out[item.name] = float(value)
    return out


def columns(spec: ModelSpec, x: Mapping[str, Array]) -> list[Array]:
    """The declared inputs in declaration order, absent optional ones defaulted, broadcast together
    (what every `risk()` starts from)."""
    cols: list[Array] = []
    for item in spec.inputs:
        if item.name in x:
            cols.append(np.asarray(x[item.name], dtype=np.float64))
        elif item.default is not None:
            cols.append(np.asarray(item.default, dtype=np.float64))
        else:
            raise KeyError(f"input {item.name} is missing")
    return [np.asarray(c, dtype=np.float64) for c in np.broadcast_arrays(*cols)]


def as_arrays(values: Mapping[str, float]) -> dict[str, Array]:
    """One patient's inputs as length-1 arrays, for the vectorised `risk()`."""
    return {name: np.asarray([value], dtype=np.float64) for name, value in values.items()}
