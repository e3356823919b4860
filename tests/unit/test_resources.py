"""The validation boundary (app.fhir.resources) and the R4 definition files it is built on."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidResource
from app.fhir import resources
from app.fhir.resources import RESOURCE_TYPES, validate, walk

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "fhir_profiles"
SYNTHEA = Path("/work/shared/data/synthea")


@cache
def bundles() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SYNTHEA.glob("*/*.json"))]


def synthea(rtype: str) -> dict[str, Any]:
    """A deep copy of the first Synthea resource of this type."""
    for bundle in bundles():
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == rtype:
                return copy.deepcopy(entry["resource"])
    raise LookupError(rtype)


def rejected(resource: Any, expected_type: str | None = None) -> list[tuple[tuple[str, ...], str]]:
    with pytest.raises(InvalidResource) as info:
        validate(resource, expected_type)
    return [(i.expression, i.diagnostics) for i in info.value.issues]


def expressions(resource: Any, expected_type: str | None = None) -> list[str]:
    return [e for expr, _ in rejected(resource, expected_type) for e in expr]


# ---------------------------------------------------------------- real data passes


@pytest.mark.slow
def test_every_synthea_resource_validates() -> None:
    # ~8 s: fhir.resources parses all 10,773 resources (the walker alone takes 0.6 s, below).
    count = 0
    for bundle in bundles():
        for entry in bundle["entry"]:
            validate(entry["resource"])
            count += 1
    assert count > 10_000


def test_every_synthea_bundle_walks_clean_as_a_whole() -> None:
    # Walks Bundle.entry[n].resource recursively, each by its own type.
    assert len(bundles()) == 32
    for bundle in bundles():
        assert walk(bundle) == []


# ---------------------------------------------------------------- the checks fhir.resources misses


def test_required_binding_on_code() -> None:
    obs = synthea("Observation")
    obs["status"] = "bogus"
    [(expr, diag)] = rejected(obs)
    assert expr == ("Observation.status",)
    assert "observation-status" in diag


def test_gender_bogus() -> None:
    patient = synthea("Patient")
    patient["gender"] = "bogus"
    assert expressions(patient) == ["Patient.gender"]


def test_boolean_must_be_json_boolean() -> None:
    patient = synthea("Patient")
    patient["active"] = "yes"
    [(expr, diag)] = rejected(patient)
    assert expr == ("Patient.active",)
    assert "boolean" in diag
    patient["active"] = 1
    assert expressions(patient) == ["Patient.active"]


def test_unknown_element() -> None:
    patient = synthea("Patient")
    patient["favouriteColour"] = "blue"
    assert expressions(patient) == ["Patient.favouriteColour"]


def test_wrong_choice_suffix() -> None:
    obs = synthea("Observation")
    obs.pop("valueQuantity", None)
    obs["valueFoo"] = {"value": 1}
    [(expr, diag)] = rejected(obs)
    assert expr == ("Observation.valueFoo",)
    assert "value[x]" in diag and "valueQuantity" in diag


def test_two_choices_of_one_element() -> None:
    patient = {"resourceType": "Patient", "multipleBirthBoolean": True, "multipleBirthInteger": 2}
    assert expressions(patient) == ["Patient.multipleBirthInteger"]


def test_bad_dates() -> None:
    patient = synthea("Patient")
    patient["birthDate"] = "1990-13-45"
    assert expressions(patient) == ["Patient.birthDate"]
    patient["birthDate"] = "1990-02-30"  # matches the regex, but there is no such day
    assert expressions(patient) == ["Patient.birthDate"]
    patient["birthDate"] = "1990-02"
    validate(patient)


def test_instant_needs_a_time_and_zone() -> None:
    patient = {"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01"}}
    assert expressions(patient) == ["Patient.meta.lastUpdated"]


def test_empty_string_in_array() -> None:
    patient = synthea("Patient")
    patient["name"][0]["given"] = ["Ann", ""]
    assert expressions(patient) == ["Patient.name[0].given[1]"]


def test_empty_object_and_array_and_null() -> None:
    assert expressions({"resourceType": "Patient", "meta": {}}) == ["Patient.meta"]
    assert expressions({"resourceType": "Patient", "identifier": []}) == ["Patient.identifier"]
    assert expressions({"resourceType": "Patient", "gender": None}) == ["Patient.gender"]


def test_array_versus_single() -> None:
    patient = synthea("Patient")
    patient["name"] = patient["name"][0]
    assert expressions(patient) == ["Patient.name"]
    patient = synthea("Patient")
    patient["gender"] = [patient["gender"]]
    assert expressions(patient) == ["Patient.gender"]


def test_numbers() -> None:
    obs = synthea("Observation")
    obs.pop("valueQuantity", None)
    obs["valueQuantity"] = {"value": "1.5"}
    assert expressions(obs) == ["Observation.valueQuantity.value"]
    assert expressions({"resourceType": "Patient", "multipleBirthInteger": "2"}) == ["Patient.multipleBirthInteger"]


def test_required_element_missing() -> None:
    obs = synthea("Observation")
    del obs["code"]
    assert expressions(obs) == ["Observation.code"]


def test_required_binding_on_codeable_concept() -> None:
    cond = synthea("Condition")
    cond["clinicalStatus"]["coding"][0]["code"] = "bogus"
    assert expressions(cond) == ["Condition.clinicalStatus.coding[0].code"]


def test_simple_quantity_has_no_comparator() -> None:
    med = synthea("MedicationRequest")
    med["dispenseRequest"] = {"quantity": {"value": 1, "comparator": "<"}}
    assert expressions(med) == ["MedicationRequest.dispenseRequest.quantity.comparator"]


def test_primitive_extension_siblings() -> None:
    ok = {"resourceType": "Patient", "name": [{
        "given": [None, "B"],
        "_given": [{"extension": [{"url": "http://example.org/x", "valueString": "A"}]}, None],
    }]}
    validate(ok)
    bad = {"resourceType": "Patient", "_birthDate": {"foo": 1}}
    assert expressions(bad) == ["Patient._birthDate.foo"]
    both_null = {"resourceType": "Patient", "name": [{"given": [None], "_given": [None]}]}
    assert "Patient.name[0].given[0]" in expressions(both_null)


def test_unknown_resource_type() -> None:
    [(expr, diag)] = rejected({"resourceType": "Foo", "id": "1"})
    assert expr == ("resourceType",)
    assert "Foo" in diag
    assert expressions({"id": "1"}) == ["resourceType"]
    # R4B/R5-only types are not R4.
    assert expressions({"resourceType": "SubscriptionStatus"}) == ["resourceType"]


def test_expected_type() -> None:
    assert expressions(synthea("Patient"), "Observation") == ["resourceType"]
    validate(synthea("Patient"), "Patient")


def test_contained_resource_error_has_its_path() -> None:
    patient = synthea("Patient")
    patient["contained"] = [{"resourceType": "Observation", "status": "x", "code": {"text": "a"}}]
    assert expressions(patient) == ["Patient.contained[0].status"]


def test_bundle_entry_resource_error_has_its_path() -> None:
    bundle = copy.deepcopy(bundles()[2])
    bundle["entry"] = bundle["entry"][:5]
    del bundle["entry"][3]["resource"]["resourceType"]
    assert expressions(bundle) == ["Bundle.entry[3].resource.resourceType"]
    bundle = copy.deepcopy(bundles()[2])
    idx = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation")
    del bundle["entry"][idx]["resource"]["code"]
    assert expressions(bundle) == [f"Bundle.entry[{idx}].resource.code"]


def test_nested_content_reference() -> None:
    q = {"resourceType": "Questionnaire", "status": "draft",
         "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "2", "type": "bogus"}]}]}
    assert expressions(q) == ["Questionnaire.item[0].item[0].type"]


def test_all_issues_are_listed_and_capped() -> None:
    patient = {"resourceType": "Patient", "gender": "bogus", "active": "yes", "birthDate": "x"}
    assert sorted(expressions(patient)) == ["Patient.active", "Patient.birthDate", "Patient.gender"]
    many = {"resourceType": "Patient", **{f"bad{i}": 1 for i in range(200)}}
    assert 1 < len(expressions(many)) <= 50


def test_narrative_div() -> None:
    patient = synthea("Patient")
    patient["text"] = {"status": "generated", "div": "plain text"}
    assert expressions(patient) == ["Patient.text.div"]


# ---------------------------------------------------------------- R4 where R4B differs


def test_pydantic_errors_become_fhirpath_issues() -> None:
    import pydantic

    model = resources._model("Patient")
    bad: dict[str, Any] = {
        "resourceType": "Patient",
        "name": {"family": "x"},
        "contained": [{"resourceType": "Observation", "status": "final"}],
        "extension": [{"url": "http://example.org/x", "valueMeta": {"versionId": "1"}}],
    }
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(bad)
    issues = resources._pydantic_issues(bad, info.value)
    paths = sorted(e for i in issues for e in i.expression)
    # The valueMeta complaint is R4B's, not R4's, so it is dropped.
    assert paths == ["Patient.contained[0].code", "Patient.name"]
    assert all("Input should be" in i.diagnostics or "required" in i.diagnostics for i in issues)
    assert all("{" not in i.diagnostics for i in issues)


def test_r4_types_without_r4b_model_use_the_walker() -> None:
    assert "MedicinalProduct" in resources.R4B_WALKER_ONLY_TYPES
    validate({"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin"}]})
    assert "MedicinalProduct.name[0].productNam" in expressions(
        {"resourceType": "MedicinalProduct", "name": [{"productNam": "Aspirin"}]})


def test_r4_evidence_shape_not_r4b() -> None:
    # R4 Evidence has exposureBackground; R4B rewrote the resource without it.
    validate({"resourceType": "Evidence", "status": "draft", "exposureBackground": {"reference": "EvidenceVariable/1"}})


def test_meta_is_an_r4_open_type() -> None:
    # Extension.valueMeta is R4 only; R4B would reject it.
    validate({"resourceType": "Patient", "extension": [{"url": "http://example.org/x", "valueMeta": {"versionId": "1"}}]})


# ---------------------------------------------------------------- the generated definition files


def load(name: str) -> Any:
    return json.loads((PROFILES / name).read_text(encoding="utf-8"))


def test_resource_types_are_the_r4_list() -> None:
    assert len(RESOURCE_TYPES) == 146
    vs = load("valuesets.json")["http://hl7.org/fhir/ValueSet/resource-types"]["codes"]
    assert set(vs["http://hl7.org/fhir/resource-types"]) - {"Resource", "DomainResource"} == RESOURCE_TYPES
    assert {"Patient", "Observation", "MedicinalProduct", "EffectEvidenceSynthesis"} <= RESOURCE_TYPES
    assert not {"SubscriptionStatus", "Project", "Bot", "Resource", "DomainResource"} & RESOURCE_TYPES


def test_medplum_additions_are_filtered_out() -> None:
    elements = load("elements.json")
    assert set(elements["Meta"]["elements"]) == {
        "id", "extension", "versionId", "lastUpdated", "source", "profile", "security", "tag"}
    assert "url" not in elements["Binary"]["elements"]
    assert "label" not in elements["ResearchStudy"]["elements"]
    characteristic = elements["EvidenceVariable"]["elements"]["characteristic"]["elements"]
    assert "definition[x]" in characteristic and "definitionByCombination" not in characteristic
    assert elements["Bundle"]["elements"]["entry"]["elements"]["response"]["elements"]["outcome"]["types"] == [
        "Resource"]


def test_elements_file_shape() -> None:
    obs = load("elements.json")["Observation"]
    assert obs["kind"] == "resource"
    status = obs["elements"]["status"]
    assert status == {"types": ["code"], "min": 1, "max": "1",
                      "binding": "http://hl7.org/fhir/ValueSet/observation-status"}
    assert "Quantity" in obs["elements"]["value[x]"]["types"]
    assert obs["elements"]["component"]["elements"]["referenceRange"]["ref"] == "Observation.referenceRange"
    assert load("elements.json")["boolean"] == {"kind": "primitive-type", "json": "boolean", "regex": "true|false"}


def test_search_parameters_split_per_type() -> None:
    sp = load("search_parameters.json")
    assert sp["fhirVersion"] == "4.0.1"
    params = sp["params"]
    assert params["Observation"]["patient"]["expression"] == "Observation.subject.where(resolve() is Patient)"
    assert params["Observation"]["patient"]["target"] == ["Patient"]
    assert params["Condition"]["code"]["expression"] == "Condition.code"
    assert set(params["Resource"]) == {"_id", "_lastUpdated", "_profile", "_security", "_source", "_tag"}
    combo = params["Observation"]["component-code-value-quantity"]
    assert combo["type"] == "composite"
    assert combo["components"] == [
        {"code": "component-code", "type": "token", "expression": "code"},
        {"code": "component-value-quantity", "type": "quantity", "expression": "value.ofType(Quantity)"},
    ]
    assert "components" not in params["Observation"]["code"]
    for rtype, by_code in params.items():
        for code, p in by_code.items():
            for alt in p["expression"].split(" | "):
                assert alt.lstrip("(").startswith(rtype), (rtype, code, p["expression"])


def test_valuesets_and_compartment() -> None:
    vs = load("valuesets.json")
    assert vs["http://hl7.org/fhir/ValueSet/administrative-gender"]["codes"] == {
        "http://hl7.org/fhir/administrative-gender": ["female", "male", "other", "unknown"]}
    assert "http://hl7.org/fhir/ValueSet/mimetypes" in vs["unenforced"]
    compartment = load("compartment_patient.json")
    assert compartment["Observation"] == ["subject", "performer"]
    assert "Organization" not in compartment
