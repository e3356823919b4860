"""The twin's values: facts are named tuples (a Group run makes hundreds of thousands of them; a
frozen dataclass costs three times as much to build), variables and states frozen dataclasses.

A Fact is one thing a resource version says about a patient, in canonical units: an Observation's
value, a Condition's span, a MedicationRequest's treatment class, a Patient's sex, race or birth
date. A TwinState is the fold of a patient's facts at one moment (`as_of`): per variable the current
value, when it was measured, the exact source version, how many measurements there are, the trend
per year and data-quality flags. `app.twin.mapping` makes both.

Flags (on facts and on variables):
- "stale": the current value is older than the variable's staleness limit.
- "implausible": a value outside the plausible range was excluded. On a variable: the newest value
  was excluded (value None when nothing usable is left, else the older usable value is current).
- "unit-not-convertible": the same, for a value whose unit has no conversion to the canonical unit.
- "unconfirmed": a condition recorded as unconfirmed, provisional or differential; it does not count.
- "unit-assumed": the value had no unit and the code allows only one (blood pressure, BMI).
- "censored": the value had a comparator (<, <=, >, >=); the bound is used as the value.
- "preliminary": the value comes from a preliminary Observation.
- "derived": computed, not measured (eGFR by CKD-EPI 2021 from creatinine, age, sex).
- "no-record": a condition or treatment nothing records, taken as absent (0).
- "ended": a condition or treatment that was recorded but is over at `as_of` (0).
- "end-unknown": (fact) a resolved condition or stopped treatment whose end date is not recorded.
- "end-inferred": (variable) such an end was taken as the start of the next record of the same
  variable (a renewed prescription), so the variable stays 1 across renewals.
- "by-name": a treatment recognised by an ingredient name in the drug's text, not by its code.
- "deceased": (age) the patient died at or before `as_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

# Flags that keep a fact's value away from every model.
EXCLUDED = frozenset({"implausible", "unit-not-convertible", "unconfirmed"})


class Fact(NamedTuple):
    variable: str
    value: float  # canonical unit; booleans 1.0 / 0.0; an unconvertible value is kept as given
    unit: str
    time: datetime | None  # measured, onset, authored; None when the resource gives no date
    source: str  # "Observation/abc/_history/3"
    flags: tuple[str, ...] = ()
    end: datetime | None = None  # when a condition abated / a treatment stopped (None: ongoing)

    @property
    def usable(self) -> bool:
        return not EXCLUDED.intersection(self.flags)


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    value: float | None  # None: absent, or every value was excluded (see flags)
    unit: str
    time: datetime | None
    source: str | None  # the version the current value comes from
    count: int  # usable measurements (records, for booleans) at or before as_of
    trend_per_year: float | None
    flags: tuple[str, ...]
    sources: tuple[str, ...]  # every version behind the current value (derived eGFR: creatinine + Patient)


@dataclass(frozen=True, slots=True)
class TwinState:
    patient: str
    as_of: datetime
    variables: Mapping[str, Variable]

    def values(self) -> dict[str, float | None]:
        """What a model may use: the current value, None when absent or excluded."""
        return {name: v.value for name, v in self.variables.items()}

    def basis(self, names: Iterable[str]) -> list[str]:
        """The exact source versions behind these variables' values, in first-seen order."""
        out: dict[str, None] = {}
        for name in names:
            v = self.variables.get(name)
            if v is not None and v.value is not None:
                out.update(dict.fromkeys(v.sources))
        return list(out)
