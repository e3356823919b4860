"""FHIRPath compiler: every R4 search expression compiles, and evaluates right on Synthea data."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.store import fhirpath, indexer
from app.store.fhirpath import FhirPathError, Node, compile_path, reference_type
from app.store.registry import PROFILES

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"
BLAZE_PATIENT = SYNTHEA / "blaze-synthea-2.7" / "1363ed76-25b9-dc4f-6de7-6ee133d82db3.json"
SMART_DECEASED = (
    SYNTHEA / "smart-generated-sample-data-r4" / "Almeda_Conn_67e13ece-8aed-46fa-ab6c-673137d5460e.json"
)


@cache
def _resources(path: Path) -> tuple[dict[str, Any], ...]:
    bundle = orjson.loads(path.read_bytes())
    return tuple(e["resource"] for e in bundle["entry"])


def _of(path: Path, rtype: str) -> list[dict[str, Any]]:
    return [r for r in _resources(path) if r["resourceType"] == rtype]


def _bp(path: Path) -> dict[str, Any]:
    return next(o for o in _of(path, "Observation") if "component" in o)


def _values(expr: str, resource: dict[str, Any]) -> list[Any]:
    return [n.value for n in compile_path(expr)(resource)]


def _definitions() -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = orjson.loads((PROFILES / "search_parameters.json").read_bytes())["params"]
    return params


def test_every_r4_expression_compiles() -> None:
    compiled = 0
    not_indexed: list[str] = []
    for rtype, table in _definitions().items():
        for code, p in table.items():
            if not p.get("expression"):
                not_indexed.append(f"{rtype}.{code}")
                continue
            compile_path(p["expression"], rtype)
            compile_path(p["expression"])
            compiled += 1 + len(p.get("components", ()))
            for c in p.get("components", ()):
                compile_path(c["expression"])
            if p["type"] == "special" or code in ("_id", "_lastUpdated"):
                not_indexed.append(f"{rtype}.{code}")
                compiled -= 1
    assert compiled > 1800
    # The indexer compiled the same set at import, less what is not an index table's business.
    assert sorted(indexer.INDEXER.skipped) == sorted(not_indexed)
    assert indexer.INDEXER.compiled == compiled


@pytest.mark.parametrize(
    "expr",
    [
        "Observation.code.foo()",
        "Observation.code +",
        "Observation.where(x = 1",
        "Observation.value.ofType()",
        "%vs-x",
    ],
)
def test_unsupported_fails_loudly_naming_the_expression(expr: str) -> None:
    with pytest.raises(FhirPathError) as exc:
        compile_path(expr)
    assert repr(expr) in str(exc.value)


def test_choice_types_on_a_real_blood_pressure() -> None:
    bp = _bp(BLAZE_PATIENT)
    comps = bp["component"]
    nodes = compile_path("Observation.component.value")(bp)
    assert [n.type for n in nodes] == ["Quantity", "Quantity"]
    assert [n.value for n in nodes] == [c["valueQuantity"] for c in comps]
    assert _values("Observation.component.value.ofType(Quantity)", bp) == [c["valueQuantity"] for c in comps]
    assert _values("Observation.component.value.as(Quantity).value", bp) == [
        c["valueQuantity"]["value"] for c in comps
    ]
    assert _values("(Observation.component.value as CodeableConcept)", bp) == []
    assert _values("Observation.component.value.ofType(Period)", bp) == []
    assert _values("Observation.component.value is Quantity", bp) == []  # not a singleton
    assert _values("Observation.component.value.first() is Quantity", bp) == [True]
    assert _values("Observation.effective is dateTime", bp) == [True]
    assert _values("Observation.effective", bp) == [bp["effectiveDateTime"]]
    codes = _values("Observation.component.code.coding.code", bp)
    assert sorted(codes) == ["8462-4", "8480-6"]
    assert _values("Observation.code.coding.code", bp) == ["85354-9"]


def test_where_with_equality_logic_and_existence() -> None:
    bp = _bp(BLAZE_PATIENT)
    systolic = next(c for c in bp["component"] if c["code"]["coding"][0]["code"] == "8480-6")
    expr = "Observation.component.where(code.coding.code = '8480-6').value.ofType(Quantity).value"
    assert _values(expr, bp) == [systolic["valueQuantity"]["value"]]
    assert len(_values("Observation.component.where(code.coding.code != '8480-6')", bp)) == 1
    both = "Observation.component.where(code.coding.code = '8480-6' or code.coding.code = '8462-4')"
    assert len(_values(both, bp)) == 2
    assert _values("Observation.component.where(code.exists() and value.empty())", bp) == []
    assert len(_values("Observation.component.where(dataAbsentReason.exists().not())", bp)) == 2
    assert _values("Observation.component.exists()", bp) == [True]
    assert _values("Observation.valueString.empty()", bp) == [True]
    assert _values("Observation.component[1].code.coding.code", bp) == [
        bp["component"][1]["code"]["coding"][0]["code"]
    ]
    assert _values("Observation.component.code.coding.code.first()", bp) == [
        bp["component"][0]["code"]["coding"][0]["code"]
    ]
    assert _values("Observation.component.code.coding.code.count()", bp) == [2]


def test_primitive_arrays_flatten_and_union() -> None:
    patient = _of(BLAZE_PATIENT, "Patient")[0]
    given = [g for n in patient["name"] for g in n.get("given", ())]
    assert _values("Patient.name.given", patient) == given
    family = [n["family"] for n in patient["name"]]
    # union drops duplicates: family | family is the family names once
    assert _values("Patient.name.family | Patient.name.family", patient) == family
    assert _values("Patient.name.given | Patient.name.family", patient) == given + family


def test_extensions_on_us_core_race() -> None:
    patient = _of(BLAZE_PATIENT, "Patient")[0]
    race = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    assert any(e["url"] == race for e in patient["extension"])
    ombs = _values(f"Patient.extension('{race}').extension('ombCategory').value", patient)
    raw = [
        x["valueCoding"]
        for e in patient["extension"]
        if e["url"] == race
        for x in e["extension"]
        if x["url"] == "ombCategory"
    ]
    assert ombs == raw and ombs
    assert (
        compile_path(f"Patient.extension('{race}').extension('ombCategory').value")(patient)[0].type
        == "Coding"
    )
    assert _values(f"Patient.hasExtension('{race}')", patient) == [True]
    assert _values("Patient.hasExtension('http://example.org/none')", patient) == [False]


def test_resolve_is_decided_from_the_reference_string() -> None:
    expr = compile_path("Observation.subject.where(resolve() is Patient)")
    general = compile_path("Observation.subject.resolve() is Patient")
    for ref, is_patient in [
        ("Patient/123", True),
        ("Patient/123/_history/2", True),
        ("https://x.org/fhir/Patient/123", True),
        ("Group/9", False),
        ("urn:uuid:67e13ece-8aed-46fa-ab6c-673137d5460e", False),  # undecidable: kept false
        ("Patient?identifier=http://x|1", True),
    ]:
        obs = {"resourceType": "Observation", "subject": {"reference": ref}}
        assert bool(expr(obs)) is is_patient, ref
        assert [n.value for n in general(obs)] == (
            [True] if is_patient else [] if reference_type(ref) is None else [False]
        )
    contained = {
        "resourceType": "Observation",
        "contained": [{"resourceType": "Patient", "id": "p1"}],
        "subject": {"reference": "#p1"},
    }
    assert expr(contained) == [Node({"reference": "#p1"}, None)]


def test_patient_deceased_expression() -> None:
    expr = "Patient.deceased.exists() and Patient.deceased != false"
    dead = _of(SMART_DECEASED, "Patient")[0]
    assert "deceasedDateTime" in dead
    assert _values(expr, dead) == [True]
    assert _values(expr, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert _values(expr, {"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert _values(expr, {"resourceType": "Patient"}) == [False]


def test_odd_r4_expressions() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {"resource": {"resourceType": "Composition", "id": "c1"}},
            {"resource": {"resourceType": "Patient"}},
        ],
    }
    assert _values("Bundle.entry[0].resource", bundle) == [{"resourceType": "Composition", "id": "c1"}]
    plan = {
        "resourceType": "ActivityDefinition",
        "relatedArtifact": [
            {"type": "composed-of", "resource": "http://x/Library/a"},
            {"type": "depends-on", "resource": "http://x/Library/b"},
        ],
    }
    assert _values("ActivityDefinition.relatedArtifact.where(type='composed-of').resource", plan) == [
        "http://x/Library/a"
    ]
    group = {
        "resourceType": "Group",
        "characteristic": [{"valueBoolean": True}, {"valueCodeableConcept": {"text": "x"}}],
    }
    nodes = compile_path(
        "(Group.characteristic.value.ofType(CodeableConcept)) | (Group.characteristic.value.ofType(boolean))"
    )(group)
    assert [(n.value, n.type) for n in nodes] == [({"text": "x"}, "CodeableConcept"), (True, "boolean")]
    qr = {"resourceType": "QuestionnaireResponse", "item": [{"linkId": "1", "item": [{"linkId": "1.1"}]}]}
    assert _values("QuestionnaireResponse.item.item.linkId", qr) == ["1.1"]
    seq = {
        "resourceType": "MolecularSequence",
        "referenceSeq": {"chromosome": {"text": "1"}},
        "variant": [{"start": 5}],
    }
    comp = compile_path("%resource.referenceSeq.chromosome")
    element = compile_path("MolecularSequence.variant")(seq)
    assert [n.value for n in comp.on(element, seq)] == [{"text": "1"}]
    cond = {"resourceType": "Condition", "abatementAge": {"value": 4, "unit": "a"}}
    nodes = compile_path("Condition.abatement.as(Age) | Condition.abatement.as(Range)")(cond)
    assert [(n.value["value"], n.type) for n in nodes] == [(4, "Age")]
    # an Age is a Quantity
    assert _values("Condition.abatement.ofType(Quantity)", cond) == [{"value": 4, "unit": "a"}]


def test_context_type_settles_the_leading_type() -> None:
    obs = _bp(BLAZE_PATIENT)
    assert compile_path("Observation.code", "Observation")(obs) == compile_path("Observation.code")(obs)
    assert compile_path("Patient.name", "Observation")(obs) == []
    assert compile_path("Resource.meta.profile", "Observation")(obs) == compile_path("Resource.meta.profile")(
        obs
    )
    assert compile_path("Patient.name")(obs) == []


@pytest.mark.parametrize(("expr", "ctx", "expected"), [
    ("Observation.code", "Observation", {"code"}),
    ("Observation.code", "Condition", set()),
    ("Resource.meta.lastUpdated", "Patient", {"meta"}),
    ("(Observation.value as Quantity) | (Observation.component.value as Quantity)", "Observation", {"value", "component"}),
    ("Observation.subject.where(resolve() is Patient)", "Observation", {"subject"}),
    ("Patient.extension('http://x').value", "Patient", {"extension"}),
    ("AllergyIntolerance.patient | CarePlan.subject", "CarePlan", {"subject"}),
    ("Patient.deceased.exists() and Patient.deceased != false", "Patient", None),
    ("Patient.name.exists()", "Patient", None),
    ("Patient", "Patient", None),
    ("Observation.code", None, None),
])
def test_roots_name_the_elements_an_expression_reads(expr: str, ctx: str | None, expected: set[str] | None) -> None:
    got = fhirpath.roots(fhirpath.parse(expr), ctx)
    assert got == (None if expected is None else frozenset(expected))


def test_element_name_maps_choice_properties() -> None:
    assert fhirpath.element_name("effectiveDateTime") == "effective"
    assert fhirpath.element_name("valueQuantity") == "value"
    assert fhirpath.element_name("status") == "status"
    assert fhirpath.element_name("_birthDate") == "_birthDate"
