"""SMART scope grammar and decisions (app/auth/scopes.py), table-driven."""

from __future__ import annotations

import pytest

from app.auth import scopes as sc

TYPES = frozenset({"Patient", "Observation", "Condition"})


@pytest.mark.parametrize(("text", "perms", "v1", "filters"), [
    ("patient/Observation.rs", "rs", False, ()),
    ("user/*.cruds", "cruds", False, ()),
    ("system/Patient.r", "r", False, ()),
    ("system/Patient.cud", "cud", False, ()),
    ("patient/Observation.read", "rs", True, ()),
    ("user/*.write", "cud", True, ()),
    ("system/*.*", "cruds", True, ()),
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", "rs",
     False, (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)),
    ("patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C4548-4", "rs", False, (("code", "http://loinc.org|4548-4"),)),
])
def test_valid_scopes(text: str, perms: str, v1: bool, filters: tuple[tuple[str, str], ...]) -> None:
    s = sc.parse_scope(text, known_types=TYPES)
    assert s is not None and s.perms == frozenset(perms) and s.v1 is v1 and s.filters == filters and s.text == text


@pytest.mark.parametrize("text", [
    "patient/Observation.sr", "patient/Observation.dus", "patient/Observation.rr", "patient/Observation.x",
    "patient/Observation.", "patient/.rs", "patient/observation.rs", "patient/Observation.rs?", "group/*.rs",
    "patient/Observation.read?category=x", "patient/Unknown.rs", "openid", "launch/patient", "offline_access",
])
def test_invalid_or_non_resource_scopes(text: str) -> None:
    assert sc.parse_scope(text, known_types=TYPES) is None


def test_split_dedupes_in_order() -> None:
    assert sc.split(" openid  patient/*.rs openid\tlaunch ") == ["openid", "patient/*.rs", "launch"]


@pytest.mark.parametrize(("requested", "contexts", "ceiling", "granted"), [
    ("system/*.rs bogus openid", {"system"}, None, ["system/*.rs"]),  # openid not allowed for backend
    ("patient/*.rs user/*.rs", {"system"}, None, []),
    ("system/*.cruds", {"system"}, "system/*.rs", ["system/*.rs"]),
    ("system/*.read", {"system"}, "system/*.cruds", ["system/*.read"]),  # v1 echoed
    ("system/*.*", {"system"}, "system/*.rs", ["system/*.read"]),  # narrowed v1 stays v1 when it can
    ("system/*.*", {"system"}, "system/*.r", ["system/*.r"]),  # ...and v2 when v1 cannot say it
    ("system/*.cruds", {"system"}, "system/Observation.rs system/Patient.r",
     ["system/Observation.rs", "system/Patient.r"]),
    ("system/Condition.rs", {"system"}, "system/Observation.rs", []),
    ("patient/*.rs openid fhirUser", {"patient"}, None, ["patient/*.rs", "openid", "fhirUser"]),
    ("patient/*.rs openid", {"patient"}, "patient/*.rs", ["patient/*.rs"]),  # ceiling lacks openid
])
def test_grant(requested: str, contexts: set[str], ceiling: str | None, granted: list[str]) -> None:
    non = frozenset() if contexts == {"system"} else sc.NON_RESOURCE_SCOPES
    assert sc.grant(requested, allowed_contexts=frozenset(contexts), ceiling=ceiling, known_types=TYPES,
                    non_resource=non) == granted


@pytest.mark.parametrize(("requested", "before", "ok"), [
    ("patient/Observation.rs", "patient/*.rs openid", True),
    ("patient/*.rs openid", "patient/*.rs openid", True),
    ("patient/*.cruds", "patient/*.rs", False),
    ("offline_access", "patient/*.rs", False),
])
def test_narrower(requested: str, before: str, ok: bool) -> None:
    assert sc.narrower(requested, before) is ok


def _scopes(text: str) -> list[sc.ResourceScope]:
    return [s for s in (sc.parse_scope(t) for t in text.split()) if s is not None]


@pytest.mark.parametrize(("scopes", "interaction", "rtype", "allowed", "patient", "nfilters"), [
    ("system/*.rs", "read", "Patient", True, False, 0),
    ("system/*.rs", "search-type", "Patient", True, False, 0),
    ("system/*.rs", "create", "Patient", False, False, 0),
    ("system/Patient.c", "create", "Patient", True, False, 0),
    ("system/Patient.c", "update", "Patient", False, False, 0),
    ("system/Patient.u", "patch", "Patient", True, False, 0),
    ("system/Patient.d", "delete", "Observation", False, False, 0),
    ("patient/*.rs", "read", "Observation", True, True, 0),
    ("patient/*.rs user/Observation.r", "read", "Observation", True, False, 0),
    ("patient/Observation.rs?category=a patient/Observation.rs?category=b", "search-type", "Observation", True, True, 2),
    ("patient/Observation.rs?category=a patient/*.rs", "search-type", "Observation", True, True, 0),
    ("patient/Observation.read", "history-instance", "Observation", True, True, 0),
    ("", "read", "Patient", False, False, 0),
])
def test_allows(scopes: str, interaction: str, rtype: str, allowed: bool, patient: bool, nfilters: int) -> None:
    d = sc.allows(_scopes(scopes), interaction, rtype)
    assert (d.allowed, d.patient, len(d.filters)) == (allowed, patient, nfilters)
    if not allowed:
        assert interaction in d.reason and rtype in d.reason


def test_unknown_interaction_is_an_error() -> None:
    with pytest.raises(ValueError):
        sc.allows([], "teleport", "Patient")


def test_readable_types() -> None:
    assert sc.readable_types(_scopes("system/Patient.rs system/Observation.c")) == frozenset({"Patient"})
    assert sc.readable_types(_scopes("system/Patient.rs system/*.r")) is None


CAT_A = (("category", "a"),)
CAT_B = (("category", "b"),)


@pytest.mark.parametrize(("scopes", "grants"), [
    ("system/*.rs", []),
    ("patient/*.rs", [(True, ())]),
    ("patient/Observation.rs?category=a patient/*.rs", [(True, ())]),
    ("patient/Observation.rs?category=a patient/Observation.rs?category=b", [(True, CAT_A), (True, CAT_B)]),
    # Mixed contexts stay apart: the compartment, or (anywhere) category b.
    ("patient/*.rs user/Observation.rs?category=b", [(True, ()), (False, CAT_B)]),
    ("patient/Observation.rs?category=b user/Observation.rs?category=b", [(False, CAT_B)]),
    ("patient/Observation.rs?category=a user/Observation.rs?category=b", [(True, CAT_A), (False, CAT_B)]),
    ("user/Observation.rs?category=a&status=final", [(False, (("category", "a"), ("status", "final")))]),
    ("patient/Observation.rs?category=a user/Patient.rs", [(True, CAT_A)]),
])
def test_grants(scopes: str, grants: list[tuple[bool, tuple[tuple[str, str], ...]]]) -> None:
    d = sc.allows(_scopes(scopes), "search-type", "Observation")
    assert d.allowed
    assert [(g.patient, g.filters) for g in d.grants] == grants


def test_unrestricted() -> None:
    assert sc.unrestricted(_scopes("system/*.rs"), "s")
    assert not sc.unrestricted(_scopes("system/*.rs"), "c")
    assert not sc.unrestricted(_scopes("patient/*.cruds system/Patient.rs"), "r")
    assert not sc.unrestricted(_scopes("user/*.rs?category=a"), "r")
