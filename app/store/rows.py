"""Index rows: what the pure indexer derives from a resource and the store writes beside it.

Every row carries the search parameter code (`param`). Rows of a composite parameter carry
`param` = "<composite>$<component index>" and a `grp` number shared by the components that
came from the same matched element, so a composite search joins components on (resource, grp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TokenRow(NamedTuple):
    param: str
    system: str | None  # None: the value had no system
    code: str | None  # None: e.g. a CodeableConcept with text only
    text: str | None = None  # display / CodeableConcept.text, normalised (for :text)
    grp: int | None = None


class StringRow(NamedTuple):
    param: str
    norm: str  # case-folded, accents stripped, whitespace collapsed (default and :contains)
    exact: str  # as written (:exact)
    grp: int | None = None


class DateRow(NamedTuple):
    param: str
    low: float  # epoch seconds UTC, inclusive start of the value's implicit range
    high: float  # epoch seconds UTC, exclusive end (open end of a Period: +inf)
    grp: int | None = None


class NumberRow(NamedTuple):
    param: str
    value: float
    low: float  # implicit range from the written precision
    high: float
    grp: int | None = None


class QuantityRow(NamedTuple):
    param: str
    value: float
    low: float
    high: float
    system: str | None
    code: str | None  # Quantity.code, or Quantity.unit when there is no code
    cvalue: float | None = None  # UCUM canonical value (None when not convertible)
    ccode: str | None = None  # UCUM canonical unit
    grp: int | None = None


class ReferenceRow(NamedTuple):
    param: str
    target_type: str | None  # "Patient" for "Patient/123"; None for urn:/unparseable
    target_id: str | None
    url: str  # the reference string as written (absolute URLs, canonicals, urn:)
    grp: int | None = None


class UriRow(NamedTuple):
    param: str
    value: str
    grp: int | None = None


@dataclass(slots=True)
class IndexResult:
    tokens: list[TokenRow] = field(default_factory=list)
    strings: list[StringRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)
    compartments: set[str] = field(default_factory=set)  # patient ids this resource belongs to
