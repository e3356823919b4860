"""Twin facts between the write path and the store: a written version's facts as the rows the
store keeps (in the write's transaction), and stored rows back as facts for the twin state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.twin import mapping
from app.twin.state import Fact

if TYPE_CHECKING:
    from app.store.repository import ResourceStore

# The resource types whose versions carry twin facts.
SOURCE_TYPES: tuple[str, ...] = ("Patient", "Observation", "Condition", "MedicationRequest")
_SOURCES = frozenset(SOURCE_TYPES)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def _patient_of(rtype: str, resource: dict[str, Any], compartments: Iterable[str]) -> str | None:
    """Whose twin the facts belong to: the Patient itself, else the patient the subject names."""
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    subject = resource.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != "Patient":
        return None
    pid = parts[-1]
    # Only a patient the indexer also placed the resource with (a resolved, local reference).
    return pid if pid in set(compartments) else None


def fact_rows(rtype: str, resource: dict[str, Any], version: int,
              compartments: Iterable[str]) -> list[tuple[Any, ...]] | None:
    """The store's rows for this version: (patient_id, variable, value, unit, t, t_end, flags)."""
    if rtype not in _SOURCES:
        return None
    patient = _patient_of(rtype, resource, compartments)
    if patient is None:
        return None
    found = mapping.facts(resource, version)
    if not found:
        return None
    return [(patient, f.variable, f.value, f.unit, _us(f.time), _us(f.end), ",".join(f.flags)) for f in found]


def from_rows(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Fact]]:
    """Stored rows (see ResourceStore.twin_facts) as facts, per patient."""
    out: dict[str, list[Fact]] = {}
    for patient, variable, value, unit, t, t_end, flags, rtype, rid, version in rows:
        out.setdefault(patient, []).append(Fact(
            variable=variable, value=value, unit=unit, time=_dt(t), source=f"{rtype}/{rid}/_history/{version}",
            flags=tuple(flags.split(",")) if flags else (), end=_dt(t_end)))
    return out


def refresh(store: ResourceStore, commit: Callable[[], None], batch: int = 500) -> dict[str, tuple[int, int]]:
    """Recompute every stored fact from the stored current versions, after an operator changed
    the code lists in fhir_profiles/twin: per source type (resources read, resources whose facts
    changed). Commits after each batch, so a large store is not locked for the whole run."""
    out: dict[str, tuple[int, int]] = {}
    for rtype in SOURCE_TYPES:
        after, seen, rewritten = 0, 0, 0
        while True:
            last, n, changed = store.refresh_twin(rtype, after, fact_rows, batch)
            if last is None:
                break
            commit()
            seen += n
            rewritten += changed
            after = last
        out[rtype] = (seen, rewritten)
    return out
