"""What part of one resource type a caller may reach (pure): the store applies it inside its SQL.

The authorization layer decides *what* applies (a SMART `patient/` scope confines a token to its
patient's compartment; a granular scope such as `Observation.rs?category=...` to the resources
matching that search); the store compiles it into the same statements that read, search, count,
page, include and check writes, so nothing outside it is ever fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .query import Clause


@dataclass(frozen=True, slots=True)
class Alternative:
    """Resources in `patient`'s compartment (None: any) that match every clause (() for none)."""

    patient: str | None
    clauses: tuple[Clause, ...] = ()


@dataclass(frozen=True, slots=True)
class Confinement:
    """The resources matching any of the alternatives; none at all when there are none."""

    alternatives: tuple[Alternative, ...]

    @property
    def nothing(self) -> bool:
        return not self.alternatives

    @property
    def patient(self) -> str | None:
        """The patient whose compartment every alternative lies in, if there is one: that
        compartment (one patient's resources) then drives the query."""
        first = self.alternatives[0].patient if self.alternatives else None
        if first is None or any(a.patient != first for a in self.alternatives):
            return None
        return first

    @property
    def filtered(self) -> bool:
        """Whether any alternative needs search clauses (else compartments alone decide)."""
        return any(a.clauses for a in self.alternatives)

    def admits(self, compartments: set[str] | frozenset[str]) -> bool | None:
        """For a resource about to be written, whose index rows put it in these compartments:
        True when it is inside, False when it cannot be, None when only its search clauses can
        tell (checked in SQL once it is written)."""
        undecided = False
        for a in self.alternatives:
            if a.patient is None or a.patient in compartments:
                if not a.clauses:
                    return True
                undecided = True
        return None if undecided else False


NOTHING = Confinement(())

# Per resource type: None (no constraint), a Confinement, or NOTHING for a type out of reach.
# Used where a request reaches other types than its own: _include targets, chains, _has.
TypeAccess = Callable[[str], Confinement | None]
