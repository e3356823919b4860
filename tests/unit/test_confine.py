"""What a partly granted token may reach (app/store/confine.py, app/auth/protect.py Guard): the
Confinement built from scopes and a patient context, and the write-side compartment check."""

from __future__ import annotations

import pytest

from app.auth import scopes as sc
from app.auth.protect import Guard, confinement_of
from app.auth.tokens import AccessContext
from app.errors import Forbidden
from app.fhir.resources import RESOURCE_TYPES
from app.store.confine import NOTHING, Alternative, Confinement
from app.store.query import QueryParser
from app.store.registry import registry

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.fixture(scope="module")
def parser() -> QueryParser:
    return QueryParser(registry(), RESOURCE_TYPES, default_count=20, max_count=1000)


def guard(scope: str, patient: str | None, parser: QueryParser) -> Guard:
    scopes = tuple(s for s in (sc.parse_scope(t) for t in scope.split()) if s is not None)
    return Guard(AccessContext(client_id="c", scope=scope, scopes=scopes, jti="j", patient=patient), parser)


@pytest.mark.parametrize(("alternatives", "compartments", "admitted"), [
    ([("p1", 0)], {"p1"}, True),
    ([("p1", 0)], {"p2"}, False),
    ([("p1", 0)], set(), False),
    ([("p1", 1)], {"p1"}, None),  # only the written index rows can tell
    ([("p1", 1)], {"p2"}, False),
    ([("p1", 1), ("p1", 0)], {"p1"}, True),
    ([(None, 1)], set(), None),
    ([], {"p1"}, False),
])
def test_admits(parser: QueryParser, alternatives: list[tuple[str | None, int]], compartments: set[str],
                admitted: bool | None) -> None:
    clause = parser.clause("Observation", "category", LAB)
    assert clause is not None
    conf = Confinement(tuple(Alternative(p, (clause,) * n) for p, n in alternatives))
    assert conf.admits(compartments) is admitted


def test_common_patient() -> None:
    assert Confinement((Alternative("p1"), Alternative("p1"))).patient == "p1"
    assert Confinement((Alternative("p1"), Alternative(None))).patient is None
    assert NOTHING.patient is None and NOTHING.nothing


def test_filters_compile_with_the_search_parser(parser: QueryParser) -> None:
    grants = (sc.Grant(True, (("category", LAB), ("status", "final,amended"))),)
    conf = confinement_of(grants, "p1", "Observation", parser)
    (alt,) = conf.alternatives
    assert alt.patient == "p1" and [c.name for c in alt.clauses] == ["category", "status"]
    assert alt.clauses[1].values == ["final", "amended"]
    # A filter the type cannot have, or a bad value, reaches nothing; so does a patient/ grant without a patient.
    assert confinement_of((sc.Grant(True, (("category", LAB),)),), "p1", "Patient", parser).nothing
    assert confinement_of((sc.Grant(False, (("date", "notadate"),)),), None, "Observation", parser).nothing
    assert confinement_of((sc.Grant(True),), None, "Observation", parser).nothing
    mixed = confinement_of((sc.Grant(True), sc.Grant(False, (("category", LAB),))), None, "Observation", parser)
    assert [a.patient for a in mixed.alternatives] == [None]


def test_guard_confinements(parser: QueryParser) -> None:
    g = guard("system/*.rs", None, parser)
    assert g.confinement("read", "Observation") is None and g.reach("read") is None
    g = guard(f"patient/Observation.rs?category={LAB} patient/Patient.r", "p1", parser)
    conf = g.confinement("search-type", "Observation")
    assert conf is not None and conf.patient == "p1" and len(conf.alternatives[0].clauses) == 1
    assert g.confinement("read", "Patient") == Confinement((Alternative("p1"),))
    with pytest.raises(Forbidden):
        g.confinement("search-type", "Patient")  # no s on Patient
    reach = g.reach("read")
    assert reach is not None and reach("Practitioner") is NOTHING and reach("Patient") is not None


def test_patient_scopes_need_a_patient(parser: QueryParser) -> None:
    g = guard("patient/*.rs", None, parser)
    with pytest.raises(Forbidden, match="names no patient"):
        g.require("read", "Observation")
    with pytest.raises(Forbidden):
        g.confinement("read", "Observation")
    g = guard(f"patient/*.rs?category={LAB}", "p1", parser)
    with pytest.raises(Forbidden, match="does not have"):
        g.require("read", "Patient")
