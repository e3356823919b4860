"""app.store.ucum: parsing UCUM codes to canonical (base-unit) values for quantity search."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.store import ucum
from app.store.ucum import canonical, conversion

UCUM_SYSTEM = "http://unitsofmeasure.org"
SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"


def same(a: str, b: str) -> float:
    """Factor from unit a to unit b, asserting they are commensurable."""
    ca, cb = conversion(a), conversion(b)
    assert ca is not None and cb is not None, (a, b)
    assert ca[1] == cb[1], (a, ca, b, cb)
    return ca[0] / cb[0]


def test_mass_concentration() -> None:
    assert math.isclose(same("mg/dL", "g/L"), 0.01)
    assert canonical(1.0, "mg/dL") == (10.0, "g.m-3")
    assert canonical(1.0, "g/L") == (1000.0, "g.m-3")
    assert math.isclose(same("g/dL", "mg/dL"), 1000)
    assert math.isclose(same("ng/mL", "ug/L"), 1)
    assert math.isclose(same("g%", "g/dL"), 1)


def test_substance_concentration_keeps_mol_as_base() -> None:
    assert canonical(5.4, "mmol/L") == pytest.approx((5.4, "mol.m-3"))
    assert math.isclose(same("mmol/L", "mol/m3"), 1)
    assert math.isclose(same("umol/mL", "mmol/L"), 1)
    # mol is not collapsed to a count, so it does not compare with plain numbers.
    assert conversion("mol")[1] != conversion("10*23")[1]  # type: ignore[index]
    assert conversion("mmol/mol") == pytest.approx((0.001, "1"))


def test_pressure() -> None:
    value, unit = canonical(1.0, "mm[Hg]")  # type: ignore[misc]
    assert unit == conversion("Pa")[1] == "g.m-1.s-2"  # type: ignore[index]
    # 1 Pa = 1 kg/(m.s2) = 1000 g/(m.s2); base mass is the gram.
    assert math.isclose(value / 1000, 133.322)
    assert math.isclose(same("kPa", "mm[Hg]"), 1000 / 133.322)
    assert math.isclose(same("cm[H2O]", "Pa"), 98.0665)


def test_body_measures() -> None:
    assert canonical(25.0, "kg/m2") == (25000.0, "g.m-2")
    assert math.isclose(same("[lb_av]", "kg"), 0.45359237)
    assert math.isclose(same("[in_i]", "cm"), 2.54)
    assert math.isclose(same("[ft_i]2", "m2"), 0.09290304)
    assert math.isclose(same("[oz_av]", "g"), 28.349523125)


def test_counts_rates_and_dimensionless() -> None:
    assert math.isclose(same("10*3/uL", "10*9/L"), 1)
    assert math.isclose(same("10^3/uL", "10*9/L"), 1)
    assert math.isclose(same("10*6/uL", "10*12/L"), 1)
    assert canonical(50.0, "%") == (0.5, "1")
    assert math.isclose(same("[ppm]", "10*-6"), 1)
    assert math.isclose(same("/min", "s-1"), 1 / 60)
    assert math.isclose(same("{beats}/min", "/min"), 1)
    assert math.isclose(same("/h", "h-1"), 1)
    assert canonical(3.0, "{score}") == (3.0, "1")
    assert canonical(1.0, "1000") == (1000.0, "1")
    assert math.isclose(same("mL/min/{1.73_m2}", "mL/min"), 1)
    assert math.isclose(same("mg{total}", "mg"), 1)
    assert math.isclose(same("g/(8.h){shift}", "g/h"), 1 / 8)


def test_grammar() -> None:
    # `.` and `/` are left-associative: kg/m.s is (kg/m).s, not kg/(m.s).
    assert conversion("kg/m.s") == (1000.0, "g.s.m-1")
    assert conversion("kg/(m.s)") == (1000.0, "g.m-1.s-1")
    assert math.isclose(same("ug/(kg.h)", "ng/g/h"), 1)
    assert math.isclose(same("m+2", "m2"), 1)
    assert math.isclose(same("cm3", "mL"), 1)
    assert math.isclose(same("10*-3", "m[iU]/[iU]"), 1)
    assert math.isclose(same("Ohm-1", "S"), 1)
    assert math.isclose(same("dam", "m"), 10)  # `da` (deka) beats `d` (deci)


def test_arbitrary_units_compare_only_with_themselves() -> None:
    assert math.isclose(same("[IU]/L", "m[IU]/mL"), 1)
    assert math.isclose(same("[IU]", "[iU]"), 1)
    assert conversion("[IU]")[1] != conversion("[arb'U]")[1]  # type: ignore[index]
    assert conversion("[IU]")[1] != "1"  # type: ignore[index]


@pytest.mark.parametrize(
    "code",
    [
        "",
        "xyz",
        "m(",
        "(m",
        "m)",
        "{",
        "m{a",
        "m]",
        "[in_i",
        "mg/",
        "/",
        "m..s",
        "m g",
        "2mg",
        "(score)",
        "da[in_i]",  # prefixes need a metric atom
        "m" * 300,
        "10*999999999",
        # Non-linear (special) units have no factor; searches keep the code-equality fallback.
        "Cel",
        "[degF]",
        "[pH]",
        "dB",
        "B[SPL]",
        "mCel",
    ],
)
def test_unparseable_or_non_linear_is_none(code: str) -> None:
    assert canonical(1.0, code) is None


def test_cached() -> None:
    conversion.cache_clear()
    for _ in range(3):
        canonical(1.0, "mg/dL")
    info = conversion.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_table_matches_ucum_essence() -> None:
    raw = orjson.loads(ucum.DATA_PATH.read_bytes())
    assert raw["ucum_version"] == "2.2"
    assert raw["bases"] == ["C", "K", "cd", "g", "m", "mol", "rad", "s"]
    assert "Cel" in raw["special"] and "Cel" not in raw["units"]
    assert ucum.DATA_PATH.stat().st_size < 300_000


def _ucum_codes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("system") == UCUM_SYSTEM and isinstance(node.get("code"), str):
            yield node["code"]
        for v in node.values():
            yield from _ucum_codes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _ucum_codes(v)


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
def test_every_synthea_quantity_code() -> None:
    codes: set[str] = set()
    for path in sorted(SYNTHEA.rglob("*.json")):
        codes.update(_ucum_codes(orjson.loads(path.read_bytes())))
    assert len(codes) > 20
    failed = {c for c in codes if conversion(c) is None}
    # "(score)" is a Synthea bug (not UCUM); Cel is special (non-linear) by our choice.
    assert failed == {"(score)", "Cel"}
    # Synthea writes "pH" for [pH]; in UCUM that is picohenry. It parses, and only compares
    # with inductances, so it does no harm to search.
    # (H = kg.m2/C2 = 1000 g.m2.C-2, so 1 pH = 1e-9 of those.)
    assert conversion("pH") == pytest.approx((1e-9, "g.m2.C-2"))
