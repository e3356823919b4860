"""SMART scopes (App Launch 2.x, v1 and v2 syntax): parsing, what may be granted, and whether a
set of scopes allows an interaction. Pure and default-deny; every refusal carries its reason."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

Context = Literal["patient", "user", "system"]

PERMS = "cruds"
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(PERMS)}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?(.*))?$")
_V2_PERMS = re.compile(r"^c?r?u?d?s?$")

NON_RESOURCE_SCOPES: frozenset[str] = frozenset({
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access",
})

INTERACTION_PERM: dict[str, str] = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search": "s", "search-type": "s", "search-system": "s", "history-type": "s", "history-system": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: Context
    rtype: str
    perms: frozenset[str]
    filters: tuple[tuple[str, str], ...]
    v1: bool
    text: str


@dataclass(frozen=True, slots=True)
class Grant:
    """One way a token reaches resources of a type: those in its patient's compartment (`patient`)
    and matching every (search parameter, value) of `filters` (a granular scope; () for none)."""

    patient: bool
    filters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    # () when allowed without restriction (or not at all); else the resources reachable through
    # any of these grants (an OR of grants, each an AND of its compartment and filters).
    grants: tuple[Grant, ...] = ()

    @property
    def patient(self) -> bool:
        """Some of the access is confined to the patient's compartment."""
        return any(g.patient for g in self.grants)

    @property
    def filters(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The filter sets of the grants that have one."""
        return tuple(g.filters for g in self.grants if g.filters)


def split(scope_string: str) -> list[str]:
    out: list[str] = []
    for s in scope_string.split():
        if s not in out:
            out.append(s)
    return out


def parse_scope(text: str, *, known_types: frozenset[str] | None = None) -> ResourceScope | None:
    m = _SCOPE.match(text)
    if m is None:
        return None
    context, rtype, perms, query = m[1], m[2], m[3], m[4]
    if rtype != "*" and known_types is not None and rtype not in known_types:
        return None
    if perms in _V1:
        if query is not None:
            return None
        return ResourceScope(context, rtype, _V1[perms], (), True, text)  # type: ignore[arg-type]
    if not perms or not _V2_PERMS.match(perms):
        return None
    filters: tuple[tuple[str, str], ...] = ()
    if query is not None:
        try:
            pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=True)
        except ValueError:
            return None
        if not pairs:
            return None
        filters = tuple(pairs)
    return ResourceScope(context, rtype, frozenset(perms), filters, False, text)  # type: ignore[arg-type]


def _text(context: str, rtype: str, perms: frozenset[str], v1: bool, query: str | None) -> str:
    if v1 and query is None:
        for word, p in _V1.items():
            if p == perms:
                return f"{context}/{rtype}.{word}"
    return f"{context}/{rtype}.{''.join(c for c in PERMS if c in perms)}" + (f"?{query}" if query else "")


def _query(s: ResourceScope) -> str | None:
    return s.text.split("?", 1)[1] if s.filters else None


def _render(s: ResourceScope, perms: frozenset[str]) -> str:
    """The scope as granted: as written when nothing was taken away, else in the same syntax
    where it can say it (v1 has no words for most subsets)."""
    return s.text if perms == s.perms else _text(s.context, s.rtype, perms, s.v1, _query(s))


def _covering(r: ResourceScope, ceiling: Sequence[ResourceScope]) -> frozenset[str]:
    """The permissions of `r` that the ceiling allows (for the same context, type and filter)."""
    got: set[str] = set()
    for c in ceiling:
        if c.context == r.context and c.rtype in ("*", r.rtype) and (not c.filters or c.filters == r.filters):
            got |= c.perms & r.perms
    return frozenset(got)


def grant(requested: str, *, allowed_contexts: frozenset[str], ceiling: str | None = None,
          known_types: frozenset[str] | None = None, non_resource: frozenset[str] = NON_RESOURCE_SCOPES) -> list[str]:
    """What can be granted of `requested`, in request order and syntax; the rest is dropped."""
    cap: list[ResourceScope] | None = None
    cap_words: set[str] = set()
    if ceiling is not None:
        cap = []
        for t in split(ceiling):
            p = parse_scope(t, known_types=known_types)
            if p is not None:
                cap.append(p)
            else:
                cap_words.add(t)
    out: list[str] = []
    for t in split(requested):
        p = parse_scope(t, known_types=known_types)
        if p is None:
            if t in non_resource and (cap is None or t in cap_words) and t not in out:
                out.append(t)
            continue
        if p.context not in allowed_contexts:
            continue
        perms = p.perms if cap is None else _covering(p, cap)
        texts = [_render(p, perms)] if perms else []
        if cap is not None and p.rtype == "*" and perms != p.perms and not p.filters:
            # A wildcard asked beyond a per-type ceiling gets what the ceiling allows of each type.
            for c in cap:
                if c.context == p.context and c.rtype != "*" and c.perms & p.perms:
                    texts.append(_text(p.context, c.rtype, c.perms & p.perms, p.v1, _query(c)))
        for text in texts:
            if text not in out:
                out.append(text)
    return out


def narrower(requested: str, granted_before: str) -> bool:
    """True when `requested` asks for nothing beyond `granted_before` (a refresh may only narrow)."""
    before = split(granted_before)
    cap = [p for p in (parse_scope(t) for t in before) if p is not None]
    for t in split(requested):
        p = parse_scope(t)
        if p is None:
            if t not in before:
                return False
        elif _covering(p, cap) != p.perms:
            return False
    return True


def allows(scopes: Sequence[ResourceScope], interaction: str, rtype: str) -> Decision:
    if interaction not in INTERACTION_PERM:
        raise ValueError(f"unknown interaction {interaction!r}")
    perm = INTERACTION_PERM[interaction]
    matching = [s for s in scopes if s.rtype in ("*", rtype) and perm in s.perms]
    if any(s.context != "patient" and not s.filters for s in matching):
        return Decision(True, f"{interaction} of {rtype} granted")
    if not matching:
        return Decision(False, f"The token's scopes do not allow {interaction} of {rtype}")
    grants = {Grant(s.context == "patient", s.filters) for s in matching}
    # A grant is redundant when a wider one is there: the same filters outside the compartment,
    # or the whole compartment.
    kept = tuple(sorted(
        (g for g in grants
         if not (g.patient and (Grant(False, g.filters) in grants or (g.filters and Grant(True) in grants)))),
        key=lambda g: (not g.patient, g.filters)))
    if kept == (Grant(True),):
        return Decision(True, f"{interaction} of {rtype} granted in the patient's compartment", kept)
    return Decision(True, f"{interaction} of {rtype} granted for some resources", kept)


def unrestricted(scopes: Sequence[ResourceScope], perm: str) -> bool:
    """Whether `perm` is granted on every type without confinement (a plain `user/*` or `system/*` scope)."""
    return any(s.rtype == "*" and perm in s.perms and not s.filters and s.context != "patient" for s in scopes)


def readable_types(scopes: Sequence[ResourceScope], perm: str = "r") -> frozenset[str] | None:
    types: set[str] = set()
    for s in scopes:
        if perm in s.perms:
            if s.rtype == "*":
                return None
            types.add(s.rtype)
    return frozenset(types)
