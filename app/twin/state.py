"""The twin's values (frozen dataclasses).

A Fact is one thing a resource version says about a patient, in canonical units: an Observation's
value, a Condition's span, an active MedicationRequest. A TwinState is the fold of a patient's
facts at one moment (`as_of`): per variable the current value, when it was measured, the exact
source version, how many measurements there are, the trend per year and data-quality flags.

Flags: "stale" (older than the variable's staleness limit), "implausible" (a value outside the
plausible range was excluded), "unit-not-convertible" (a value in a unit that cannot be converted
was excluded), "preliminary" (the current value comes from a preliminary Observation), "derived"
(computed: eGFR by CKD-EPI 2021 from creatinine), "no-record" (a condition or treatment nothing
records, taken as absent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

EXCLUDED = frozenset({"implausible", "unit-not-convertible"})


@dataclass(frozen=True, slots=True)
class Fact:
    variable: str
    value: float | None  # canonical unit; booleans 1.0 / 0.0; None when it could not be read
    unit: str
    time: datetime | None
    source: str  # "Observation/abc/_history/3"
    flags: tuple[str, ...] = ()
    end: datetime | None = None  # when a condition abated (None: ongoing)

    @property
    def usable(self) -> bool:
        return self.value is not None and not EXCLUDED.intersection(self.flags)


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    value: float | None
    unit: str
    time: datetime | None
    source: str | None
    count: int
    trend_per_year: float | None
    flags: tuple[str, ...]
    sources: tuple[str, ...]  # every version behind the value (a derived value has several)


@dataclass(frozen=True, slots=True)
class TwinState:
    patient: str
    as_of: datetime
    variables: Mapping[str, Variable]

    def values(self) -> dict[str, float | None]:
        """What a model may use: the current value, None when absent or excluded."""
        return {name: v.value for name, v in self.variables.items()}

    def basis(self, names: Iterable[str]) -> list[str]:
        """The exact source versions behind these variables, in first-seen order."""
        out: list[str] = []
        for name in names:
            v = self.variables.get(name)
            if v is None or v.value is None:
                continue
            for s in v.sources:
                if s not in out:
                    out.append(s)
        return out
