"""Pure indexer on real Synthea resources: rows by parameter type, composites, compartments."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.store import indexer
from app.store.indexer import date_range, index_resource, normalize, number_range, parse_reference
from app.store.rows import DateRow, IndexResult, QuantityRow, ReferenceRow, StringRow, TokenRow

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"
BLAZE_PATIENT = SYNTHEA / "blaze-synthea-2.7" / "1363ed76-25b9-dc4f-6de7-6ee133d82db3.json"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"


def _files() -> list[Path]:
    return sorted(SYNTHEA.glob("*/*.json"))


@cache
def _bundle(path: Path) -> tuple[dict[str, Any], ...]:
    """The bundle's resources with urn:uuid references rewritten to Type/id, as a server's
    transaction processing stores them."""
    bundle = orjson.loads(path.read_bytes())
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if e.get("fullUrl", "").startswith("urn:uuid:") and "id" in e["resource"]
    }

    def fix(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "reference" and isinstance(v, str) and v in ids:
                    x[k] = ids[v]
                else:
                    fix(v)
        elif isinstance(x, list):
            for v in x:
                fix(v)

    fix(bundle)
    return tuple(e["resource"] for e in bundle["entry"])


def _of(path: Path, rtype: str) -> list[dict[str, Any]]:
    return [r for r in _bundle(path) if r["resourceType"] == rtype]


def _tokens(res: IndexResult, param: str) -> set[tuple[str | None, str | None]]:
    return {(t.system, t.code) for t in res.tokens if t.param == param}


@cache
def _full() -> indexer.Indexer:
    """An indexer that also writes the rows of derived parameters (the server's does not)."""
    from app.store.registry import profile_json

    return indexer.Indexer(profile_json("search_parameters.json"), profile_json("compartment_patient.json"), derive=False)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------------------------------
# value helpers


def test_date_ranges_follow_precision() -> None:
    assert date_range("2019") == (_epoch("2019-01-01"), _epoch("2020-01-01"))
    assert date_range("2019-12") == (_epoch("2019-12-01"), _epoch("2020-01-01"))
    assert date_range("2019-02-28") == (_epoch("2019-02-28"), _epoch("2019-03-01"))
    assert date_range("2015-08-23T01:16:09+02:00") == (
        _epoch("2015-08-22T23:16:09"),
        _epoch("2015-08-22T23:16:10"),
    )
    assert date_range("2015-08-23T01:16:09Z") == (
        _epoch("2015-08-23T01:16:09"),
        _epoch("2015-08-23T01:16:10"),
    )
    assert date_range("2015-08-23T01:16:09") == (_epoch("2015-08-23T01:16:09"), _epoch("2015-08-23T01:16:10"))
    low, high = date_range("2015-08-23T01:16:09.120-05:00") or (0.0, 0.0)
    assert low == pytest.approx(_epoch("2015-08-23T06:16:09.12")) and high - low == pytest.approx(
        0.001, abs=1e-6
    )
    for bad in ("2019-13", "2019-02-30", "hello", "12:00:00", ""):
        assert date_range(bad) is None


def test_number_ranges_follow_written_precision() -> None:
    assert number_range(100) == (99.5, 100.5)
    assert number_range(1.5) == pytest.approx((1.45, 1.55))
    assert number_range(0.001) == pytest.approx((0.0005, 0.0015))
    assert number_range(1e-7) == pytest.approx((0.5e-7, 1.5e-7))


def test_normalize_case_accents_whitespace() -> None:
    assert normalize("  Zoë   ÅNGSTRÖM\tJr ") == "zoe angstrom jr"
    assert normalize("Straße") == "strasse"
    assert normalize("Mr.") == "mr."


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("Patient/123", ("Patient", "123")),
        ("Patient/123/_history/2", ("Patient", "123")),
        ("https://x.org/fhir/Patient/123", ("Patient", "123")),
        ("urn:uuid:67e13ece-8aed-46fa-ab6c-673137d5460e", (None, None)),
        ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999", (None, None)),
    ],
)
def test_parse_reference(ref: str, parsed: tuple[str | None, str | None]) -> None:
    assert parse_reference(ref) == parsed


# ---------------------------------------------------------------------------------------------
# real resources


def test_blood_pressure_components_and_composites() -> None:
    bp = next(o for o in _of(BLAZE_PATIENT, "Observation") if o["code"]["coding"][0]["code"] == "85354-9")
    # The server writes no combo-* rows (they are derived: see test_derived_parameters_...).
    served = index_resource(bp)
    assert not {r.param for r in (*served.tokens, *served.quantities) if r.param.startswith("combo-")}
    res = _full().index(bp)
    assert _tokens(res, "code") == {(LOINC, "85354-9")}
    assert _tokens(res, "component-code") == {(LOINC, "8480-6"), (LOINC, "8462-4")}
    assert _tokens(res, "combo-code") == {(LOINC, "85354-9"), (LOINC, "8480-6"), (LOINC, "8462-4")}
    want = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in bp["component"]}
    combo = {q.value for q in res.quantities if q.param == "combo-value-quantity"}
    assert combo == set(want.values())
    assert all(q.system == "http://unitsofmeasure.org" and q.code == "mm[Hg]" for q in res.quantities)

    for composite in ("component-code-value-quantity", "combo-code-value-quantity"):
        codes = {t.grp: t.code for t in res.tokens if t.param == f"{composite}$0"}
        values = {q.grp: q.value for q in res.quantities if q.param == f"{composite}$1"}
        assert set(codes) == set(values) and len(codes) == 2
        assert {codes[g]: values[g] for g in codes} == want
    # groups are unique within the resource, across composites
    grps = [t.grp for t in res.tokens if t.grp is not None]
    assert len(grps) == len(set(grps)) == 4
    # the BP panel has no value of its own: code-value-quantity has no half-filled rows
    assert not [t for t in res.tokens if t.param.startswith("code-value-quantity")]
    assert [d for d in res.dates if d.param == "date"] == [
        DateRow("date", *(date_range(bp["effectiveDateTime"]) or (0.0, 0.0)))
    ]


def test_observation_subject_reference_and_compartment() -> None:
    patient = _of(BLAZE_PATIENT, "Patient")[0]
    obs = _of(BLAZE_PATIENT, "Observation")[0]
    res = index_resource(obs)
    ref = f"Patient/{patient['id']}"
    assert obs["subject"]["reference"] == ref
    assert ReferenceRow("subject", "Patient", patient["id"], ref) in res.references
    assert ReferenceRow("patient", "Patient", patient["id"], ref) in res.references
    enc = [r for r in res.references if r.param == "encounter"]
    assert len(enc) == 1 and enc[0].target_type == "Encounter"
    assert res.compartments == {patient["id"]}


def test_patient_strings_dates_tokens() -> None:
    patient = _of(BLAZE_PATIENT, "Patient")[0]
    res = index_resource(patient)
    names = {(s.norm, s.exact) for s in res.strings if s.param == "name"}
    for n in patient["name"]:
        assert (n["family"].lower(), n["family"]) in names
        for g in n["given"]:
            assert (normalize(g), g) in names
    assert {s.exact for s in res.strings if s.param == "family"} == {n["family"] for n in patient["name"]}
    addr = patient["address"][0]
    assert StringRow("address-city", normalize(addr["city"]), addr["city"]) in res.strings
    assert [(d.low, d.high) for d in res.dates if d.param == "birthdate"] == [
        (_epoch(patient["birthDate"]), _epoch(patient["birthDate"]) + 86400)
    ]
    assert _tokens(res, "gender") == {("http://hl7.org/fhir/administrative-gender", patient["gender"])}
    assert _tokens(res, "deceased") == {(None, "true" if "deceasedDateTime" in patient else "false")}
    ids = _tokens(res, "identifier")
    assert {(i.get("system"), i["value"]) for i in patient["identifier"]} == ids
    mrn = next(
        i for i in patient["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR"
    )
    of_type = _tokens(res, "identifier:of-type")
    assert (mrn["type"]["coding"][0]["system"], f"MR|{mrn['value']}") in of_type
    phone = next(t["value"] for t in patient["telecom"] if t["system"] == "phone")
    assert _tokens(res, "phone") == {(None, phone)}
    assert res.compartments == {patient["id"]}


def _manifest() -> dict[str, dict[str, str]]:
    with (SYNTHEA / "manifest.csv").open(newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def _walk_codes(x: Any, found: set[str]) -> None:
    if isinstance(x, dict):
        if isinstance(x.get("code"), str):
            found.add(x["code"])
        for v in x.values():
            _walk_codes(v, found)
    elif isinstance(x, list):
        for v in x:
            _walk_codes(v, found)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name[:24])
def test_counts_per_bundle_match_independent_counts(path: Path) -> None:
    manifest = _manifest()[str(path.relative_to(SYNTHEA))]
    counts = dict(kv.split("=") for kv in manifest["resource_counts"].split(";") if kv)
    hits = dict(kv.split("=") for kv in manifest["loinc_hits"].split(";") if kv)
    conditions = _of(path, "Condition")
    assert len(conditions) == int(counts.get("Condition", 0))

    diabetes_indexed = sum(1 for c in conditions if (SCT, "44054006") in _tokens(index_resource(c), "code"))
    diabetes_walked = sum(
        1 for c in conditions if any(cd.get("code") == "44054006" for cd in c["code"].get("coding", ()))
    )
    assert diabetes_indexed == diabetes_walked
    assert (diabetes_walked > 0) == ("T2DM" in manifest["conditions"])

    observations = [index_resource(o) for o in _of(path, "Observation")]
    for code in ("4548-4", "2093-3", "8480-6"):
        key = f"{code}(comp)" if code == "8480-6" else code
        param = "component-code" if code == "8480-6" else "code"
        indexed = sum(1 for r in observations if (LOINC, code) in _tokens(r, param))
        assert indexed == int(hits.get(key, 0)), code
        # combo-code is searched through the rows of the parameters it is derived from
        combo = indexer.INDEXER.derived[("Observation", "combo-code")]
        assert sum(1 for r in observations if any((LOINC, code) in _tokens(r, q) for q in combo)) == indexed

    patients = _of(path, "Patient")
    if patients:
        pid = patients[0]["id"]
        for rtype in (
            "Observation",
            "Condition",
            "Encounter",
            "Procedure",
            "MedicationRequest",
            "Immunization",
        ):
            for r in _of(path, rtype):
                assert index_resource(r).compartments == {pid}, (rtype, r["id"])
        found: set[str] = set()
        _walk_codes(conditions, found)
        indexed_codes = {t.code for c in conditions for t in index_resource(c).tokens if t.param == "code"}
        assert {c for c in found if c in indexed_codes} == indexed_codes


def test_quantity_units_are_canonicalised_when_ucum_is_there() -> None:
    obs = next(o for o in _of(BLAZE_PATIENT, "Observation") if "valueQuantity" in o)
    q = next(x for x in index_resource(obs).quantities if x.param == "value-quantity")
    assert q.value == obs["valueQuantity"]["value"]
    assert q.code == obs["valueQuantity"]["code"]
    if indexer._ucum_canonical is None:
        assert q.cvalue is None and q.ccode is None
    else:
        assert (q.cvalue, q.ccode) == indexer._ucum_canonical(q.value, obs["valueQuantity"]["code"])


# ---------------------------------------------------------------------------------------------
# shapes Synthea does not have


def test_reference_shapes() -> None:
    res = index_resource(
        {
            "resourceType": "Observation",
            "contained": [{"resourceType": "Patient", "id": "c"}],
            "subject": {"reference": "https://x.org/fhir/Patient/9/_history/3"},
            "performer": [
                {"reference": "#c"},
                {"reference": "urn:uuid:0f1e"},
                {"identifier": {"system": "http://npi", "value": "77"}},
            ],
            "hasMember": [{"reference": "Observation/1"}, {"reference": "Observation/1"}],
        }
    )
    refs = {(r.param, r.target_type, r.target_id, r.url) for r in res.references}
    assert ("subject", "Patient", "9", "https://x.org/fhir/Patient/9/_history/3") in refs
    assert ("performer", None, None, "urn:uuid:0f1e") in refs
    assert not [r for r in res.references if r.url == "#c"]
    assert [r for r in res.references if r.param == "has-member"] == [
        ReferenceRow("has-member", "Observation", "1", "Observation/1")
    ]  # deduplicated
    assert TokenRow("performer:identifier", "http://npi", "77") in res.tokens
    assert res.compartments == {"9"}


def test_codeable_concept_text_and_dedupe() -> None:
    res = index_resource(
        {
            "resourceType": "Condition",
            "code": {
                "coding": [
                    {"system": SCT, "code": "1", "display": "Ä b"},
                    {"system": SCT, "code": "1", "display": "Ä b"},
                ],
                "text": "Something else",
            },
            "category": [{"text": "only text"}],
            "onsetPeriod": {"start": "2020-05"},
            "abatementAge": {"value": 5, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        }
    )
    assert [t for t in res.tokens if t.param == "code"] == [
        TokenRow("code", SCT, "1", "a b"),
        TokenRow("code", None, None, "something else"),
    ]
    assert [t for t in res.tokens if t.param == "category"] == [TokenRow("category", None, None, "only text")]
    assert [d for d in res.dates if d.param == "onset-date"] == [
        DateRow("onset-date", _epoch("2020-05-01"), math.inf)
    ]
    ages = [q for q in res.quantities if q.param == "abatement-age"]
    assert [(q.value, q.low, q.high, q.code) for q in ages] == [(5.0, 4.5, 5.5, "a")]
    assert not [d for d in res.dates if d.param == "abatement-date"]  # an Age is not a date


def test_range_timing_money_number_uri() -> None:
    res = index_resource(
        {
            "resourceType": "Condition",
            "onsetRange": {"low": {"value": 2, "unit": "a"}, "high": {"value": 4, "unit": "a"}},
        }
    )
    assert [q for q in res.quantities if q.param == "onset-age"] == [
        QuantityRow("onset-age", 2.0, 2.0, 4.0, None, "a")
    ]
    plan = index_resource(
        {
            "resourceType": "CarePlan",
            "activity": [
                {
                    "detail": {
                        "scheduledTiming": {
                            "event": ["2021-01-02"],
                            "repeat": {"boundsPeriod": {"end": "2021"}},
                        }
                    }
                },
                {"detail": {"scheduledString": "every day"}},
            ],
        }
    )
    assert sorted((d.low, d.high) for d in plan.dates if d.param == "activity-date") == [
        (-math.inf, _epoch("2022-01-01")),
        (_epoch("2021-01-02"), _epoch("2021-01-03")),
    ]
    risk = index_resource({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]})
    assert [n.value for n in risk.numbers] == [0.25]
    assert (risk.numbers[0].low, risk.numbers[0].high) == pytest.approx((0.245, 0.255))
    vs = index_resource({"resourceType": "ValueSet", "url": "http://x.org/vs", "name": "N"})
    assert [(u.param, u.value) for u in vs.uris] == [("url", "http://x.org/vs")]
    claim = index_resource(
        {"resourceType": "ChargeItem", "priceOverride": {"value": 10.5, "currency": "USD"}}
    )
    assert [(q.value, q.system, q.code) for q in claim.quantities if q.param == "price-override"] == [
        (10.5, "urn:iso:std:iso:4217", "USD")
    ]


def test_long_strings_are_truncated() -> None:
    res = index_resource({"resourceType": "Patient", "name": [{"family": "x" * 2000}]})
    fam = next(s for s in res.strings if s.param == "family")
    assert len(fam.norm) == indexer.MAX_STRING and len(fam.exact) == indexer.MAX_STRING


def test_skipping_absent_elements_changes_no_row() -> None:
    """The indexer skips parameters whose root elements a resource lacks; evaluating every
    parameter instead must give the same rows, on every resource of every shared bundle."""
    from app.store.registry import profile_json

    args = (profile_json("search_parameters.json"), profile_json("compartment_patient.json"))
    fast, full = indexer.Indexer(*args), indexer.Indexer(*args, prefilter=False)
    n = 0
    for path in _files():
        for r in _bundle(path):
            assert fast.index(r) == full.index(r), (r["resourceType"], r.get("id"))
            n += 1
    assert n > 10_000
    # Choice elements, primitives' extensions and keys whose prefix is a choice name.
    odd = {"resourceType": "Observation", "id": "x", "status": "final", "code": {"text": "t"},
           "effectivePeriod": {"start": "2020-01-01"}, "valueCodeableConcept": {"coding": [{"code": "a"}]},
           "_issued": {"extension": [{"url": "http://e", "valueString": "s"}]}}
    assert fast.index(odd) == full.index(odd)
    assert {t.param for t in fast.index(odd).tokens} >= {"value-concept", "status"}


def test_derived_parameters_are_exactly_the_union_of_their_sources() -> None:
    """A parameter left unindexed because its expression is the union of others' (Observation
    combo-*) must be answered by their rows: on every resource of every shared bundle, the rows
    it would have are those of its sources (composites: the same component values per element)."""
    derived = indexer.INDEXER.derived
    assert {code for (rtype, code) in derived if rtype == "Observation"} >= {
        "combo-code", "combo-value-quantity", "combo-code-value-quantity", "combo-value-concept"}
    assert all(code not in sources for (_, code), sources in derived.items())
    full = _full()

    def plain(res: IndexResult, params: set[str]) -> set[tuple[Any, ...]]:
        rows = (*res.tokens, *res.quantities)
        return {(type(r).__name__, *r[1:-1]) for r in rows if r.param in params}

    def composite(res: IndexResult, params: set[str]) -> list[tuple[Any, ...]]:
        parts: dict[Any, list[tuple[Any, ...]]] = {}
        for r in (*res.tokens, *res.quantities):
            name, _, i = r.param.rpartition("$")
            if name in params:
                parts.setdefault(r.grp, []).append((i, *r[1:-1]))
        return sorted(tuple(sorted(v)) for v in parts.values())

    from app.store.registry import profile_json

    types = {(t, c): p["type"] for t, table in profile_json("search_parameters.json")["params"].items()
             for c, p in table.items()}
    n = checked = 0
    for path in _files():
        for r in _bundle(path):
            rtype = r["resourceType"]
            mine = [(code, sources) for (t, code), sources in derived.items() if t == rtype]
            if not mine:
                continue
            got, served = full.index(r), index_resource(r)
            for code, sources in mine:
                if types[(rtype, code)] == "composite":
                    assert composite(got, {code}) == composite(served, set(sources)), (rtype, r.get("id"), code)
                else:
                    assert plain(got, {code}) == plain(served, set(sources)), (rtype, r.get("id"), code)
                checked += 1
            n += 1
    assert n > 4_000 and checked > 20_000
