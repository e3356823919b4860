"""app.twin.models.kfre: the 4-variable Kidney Failure Risk Equation against reference numbers.

shared/research/twin.md section 4b found no published worked example; its values (2 decimals) were
computed from the published equation and agree with the `kfre` package 0.1.18. Tolerance: their
rounding, 0.005 percentage points.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from app.twin import models
from app.twin.models import kfre
from app.twin.models.base import Array, as_arrays, complete, problems

PP = 0.01  # one percentage point, as a fraction

MAN_57 = {"age": 57.0, "female": 0.0, "egfr": 30.0, "uacr": 300.0}
WOMAN_70 = {"age": 70.0, "female": 1.0, "egfr": 25.0, "uacr": 100.0}

NORTH_AMERICA = {2: kfre.KFRE_2Y, 5: kfre.KFRE_5Y}
OTHER_REGIONS = {2: kfre.kfre(2, "non-north-america"), 5: kfre.kfre(5, "non-north-america")}


def risk_of(model: kfre.KidneyFailureRiskEquation, values: Mapping[str, float]) -> float:
    assert problems(model.spec, values) == []
    return float(model.risk(as_arrays(complete(model.spec, values)))[0])


# --- golden cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient", "years", "north_america", "non_north_america"),
    [
        (MAN_57, 2, 9.19, 6.25),
        (MAN_57, 5, 26.00, 22.11),
        (WOMAN_70, 2, 5.84, 3.95),
        (WOMAN_70, 5, 17.13, 14.44),
    ],
)
def test_twin_md_examples(
    patient: dict[str, float], years: int, north_america: float, non_north_america: float
) -> None:
    assert risk_of(NORTH_AMERICA[years], patient) == pytest.approx(north_america * PP, abs=0.005 * PP)
    assert risk_of(OTHER_REGIONS[years], patient) == pytest.approx(non_north_america * PP, abs=0.005 * PP)


# --- properties on grids ------------------------------------------------------------------------

AXES: dict[str, Array] = {
    "age": np.linspace(18.0, 95.0, 30),
    "egfr": np.linspace(10.0, 59.9, 30),
    "uacr": np.geomspace(1.0, 5000.0, 30),
}
MODEL_IDS = ["na-2y", "na-5y", "other-2y", "other-5y"]
ALL_MODELS = [NORTH_AMERICA[2], NORTH_AMERICA[5], OTHER_REGIONS[2], OTHER_REGIONS[5]]


def on_grid(model: kfre.KidneyFailureRiskEquation, female: float) -> Array:
    mesh = np.meshgrid(*AXES.values(), indexing="ij")
    x = {name: grid.ravel() for name, grid in zip(AXES, mesh, strict=True)}
    x["female"] = np.full(mesh[0].size, female)
    return model.risk(x).reshape(mesh[0].shape)


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("female", [0.0, 1.0])
def test_risk_is_a_probability(model: kfre.KidneyFailureRiskEquation, female: float) -> None:
    risk = on_grid(model, female)
    assert np.all(np.isfinite(risk))
    assert np.all((risk > 0.0) & (risk < 1.0))


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("female", [0.0, 1.0])
def test_direction_of_each_input(model: kfre.KidneyFailureRiskEquation, female: float) -> None:
    risk = on_grid(model, female)
    assert np.all(np.diff(risk, axis=0) < 0.0)  # age: negative coefficient (competing death)
    assert np.all(np.diff(risk, axis=1) < 0.0)  # better kidney function, lower risk
    assert np.all(np.diff(risk, axis=2) > 0.0)  # more albuminuria, higher risk


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_men_have_higher_risk(model: kfre.KidneyFailureRiskEquation) -> None:
    assert np.all(on_grid(model, 0.0) > on_grid(model, 1.0))


@pytest.mark.parametrize("female", [0.0, 1.0])
def test_horizon_and_region_order(female: float) -> None:
    assert np.all(on_grid(NORTH_AMERICA[5], female) > on_grid(NORTH_AMERICA[2], female))
    assert np.all(on_grid(OTHER_REGIONS[5], female) > on_grid(OTHER_REGIONS[2], female))
    for years in (2, 5):
        assert np.all(on_grid(NORTH_AMERICA[years], female) > on_grid(OTHER_REGIONS[years], female))


def test_vectorised_risk_equals_one_patient_at_a_time() -> None:
    rng = np.random.default_rng(2011)
    n = 300
    batch = {
        "age": rng.uniform(18.0, 95.0, n),
        "female": rng.integers(0, 2, n).astype(np.float64),
        "egfr": rng.uniform(10.0, 59.9, n),
        "uacr": np.exp(rng.uniform(0.0, 8.5, n)),
    }
    for model in ALL_MODELS:
        together = model.risk(batch)
        one_by_one = np.concatenate(
            [
                model.risk(as_arrays({name: float(column[i]) for name, column in batch.items()}))
                for i in range(n)
            ]
        )
        assert together.shape == (n,)
        np.testing.assert_allclose(together, one_by_one, rtol=1e-13, atol=0.0)


# --- spec, validity and registry ----------------------------------------------------------------


def test_problems_names_every_missing_required_input() -> None:
    found = problems(kfre.KFRE_2Y.spec, {})
    assert [(p.input, p.kind) for p in found] == [
        (name, "missing") for name in ("age", "female", "egfr", "uacr")
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("age", 17.9),
        ("egfr", 60.0),  # CKD G3-G5 only: eGFR < 60
        ("egfr", 75.0),
        ("egfr", 9.9),
        ("uacr", 0.0),  # enters as ln(ACR)
        ("uacr", -3.0),
        ("female", 2.0),
    ],
)
def test_problems_names_each_out_of_range_input(name: str, value: float) -> None:
    for model in (kfre.KFRE_2Y, kfre.KFRE_5Y):
        found = problems(model.spec, {**MAN_57, name: value})
        assert [(p.input, p.kind, p.value) for p in found] == [(name, "out-of-range", value)]


@pytest.mark.parametrize(
    "values",
    [
        {"egfr": 59.999},
        {"egfr": 10.0},
        {"uacr": 0.1},
        {"age": 18.0},
        {"age": 104.0},
    ],
)
def test_values_inside_the_validity_range(values: dict[str, float]) -> None:
    assert problems(kfre.KFRE_5Y.spec, {**MAN_57, **values}) == []


def test_specs() -> None:
    for years, model in NORTH_AMERICA.items():
        assert model.spec.code == f"kfre-{years}y"
        assert model.spec.horizon_years == years
        assert (model.spec.outcome.code, model.spec.outcome.display) == (
            "46177005",
            "End-stage renal disease",
        )
    assert [m.spec.code for m in OTHER_REGIONS.values()] == ["kfre-2y-non-na", "kfre-5y-non-na"]
    inputs = {item.name: item.unit for item in kfre.KFRE_2Y.spec.inputs}
    assert inputs == {"age": "a", "female": "1", "egfr": "mL/min/{1.73_m2}", "uacr": "mg/g"}


def test_registry_serves_only_the_north_american_models() -> None:
    assert models.get("kfre-2y") is kfre.KFRE_2Y
    assert models.get("kfre-5y") is kfre.KFRE_5Y
    assert models.get("kfre-2y-non-na") is None
    assert models.get("kfre-5y-non-na") is None
    assert [m.spec.code for m in kfre.MODELS] == ["kfre-2y", "kfre-5y"]
