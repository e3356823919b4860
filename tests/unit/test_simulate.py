"""app.twin.simulate (cvd-microsim): the worked numbers of shared/research/twin.md 5c-5d, seeding, and
the properties every simulation must keep (interventions never raise risk, intervals hold the point
estimate, cumulative risk never falls, trends stay bounded)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from app.twin.models.base import Array, Input, ModelSpec, Outcome
from app.twin.models.pce import MODELS as PCE_MODELS
from app.twin.simulate import (
    EFFECTS_PATH,
    LDL_MMOL_PER_MG_DL,
    SIM_MODEL_CODE,
    TREND_BOUNDS,
    BloodPressureTarget,
    Effect,
    Simulation,
    SimulationError,
    SmokingCessation,
    Statin,
    Trajectory,
    load_effects,
    microsim,
    parse_intervention,
)

PCE = next(m for m in PCE_MODELS if m.spec.code == "pce-ascvd-10y")


@dataclass
class FlatModel:
    """A 10-year risk that depends on nothing (so age advancing changes nothing); records the
    inputs of its last call."""

    p10: float
    spec: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            code="flat-test",
            title="constant risk, for tests",
            version="0",
            citation="none",
            doi=None,
            horizon_years=10,
            outcome=Outcome(text="test outcome"),
            inputs=(
                Input("age", "a", 40.0, 79.0),
                Input("sbp", "mm[Hg]", 90.0, 200.0),
                Input("bmi", "kg/m2", 15.0, 50.0, required=False, default=25.0),
                Input("smoker", "1", 0.0, 1.0, boolean=True),
            ),
            population="tests",
        )
    )
    seen: dict[str, Array] = field(default_factory=dict)

    def risk(self, x: Mapping[str, Array]) -> Array:
        self.seen = {k: np.asarray(v).copy() for k, v in x.items()}
        return np.full(np.asarray(x["age"]).shape, self.p10)


def flat(p10: float, **values: float) -> tuple[FlatModel, dict[str, float]]:
    return FlatModel(p10), {"age": 55.0, "sbp": 140.0, "smoker": 0.0, **values}


def annual(p10: float) -> float:
    return float(1.0 - (1.0 - p10) ** 0.1)


def hazard_scale(p: float, rr: float) -> float:
    return float(1.0 - (1.0 - p) ** rr)


PATIENT = {
    "age": 55.0,
    "female": 0.0,
    "black": 0.0,
    "tc": 213.0,
    "hdl": 50.0,
    "sbp": 150.0,
    "bp_treated": 0.0,
    "smoker": 1.0,
    "diabetes": 0.0,
    "ldl": 130.0,
}
ALL = (Statin("moderate"), Statin("high"), BloodPressureTarget(120.0), SmokingCessation())


# ------------------------------------------------------------------------------ effect data file


def test_effect_file_carries_the_published_numbers_and_sources() -> None:
    raw = json.loads(EFFECTS_PATH.read_text(encoding="utf-8"))
    table = load_effects()
    assert (table.ldl.point, table.ldl.low, table.ldl.high, table.ldl.per, table.ldl.unit) == (
        0.78,
        0.76,
        0.80,
        1.0,
        "mmol/L",
    )
    assert (table.sbp.point, table.sbp.low, table.sbp.high, table.sbp.per, table.sbp.unit) == (
        0.80,
        0.77,
        0.83,
        10.0,
        "mm[Hg]",
    )
    assert (table.smoking.point, table.smoking.low, table.smoking.high) == (0.61, 0.49, 0.76)
    assert (table.moderate.low, table.moderate.point, table.moderate.high) == (0.30, 0.40, 0.50)
    assert (table.high.low, table.high.point, table.high.high) == (0.50, 0.55, 0.60)
    assert table.ldl.doi == "10.1016/S0140-6736(10)61350-5"
    assert table.sbp.doi == "10.1016/S0140-6736(15)01225-8"
    assert table.smoking.doi == "10.1001/jama.2019.10298"
    assert table.moderate.doi == "10.1161/01.cir.0000437738.63853.7a"
    for entry in raw["effects"].values():
        assert entry["citation"] and entry["checked"]
    # SE on the log scale from the 95 % interval (twin.md 5c).
    assert table.ldl.log_se == pytest.approx((math.log(0.80) - math.log(0.76)) / 3.92)


# ------------------------------------------------------------------------------- interventions


def test_interventions_parse_from_codes() -> None:
    assert parse_intervention("statin-moderate") == Statin("moderate")
    assert parse_intervention("statin-high") == Statin("high")
    assert parse_intervention("statin-high:0.55") == Statin("high", 0.55)
    assert parse_intervention("smoking-cessation") == SmokingCessation()
    assert parse_intervention("bp-target", 130) == BloodPressureTarget(130.0)
    assert parse_intervention("bp-target:130") == BloodPressureTarget(130.0)
    assert parse_intervention(" bp-target ", "125.5").token == "bp-target:125.5"
    for bad in (
        "bp-target",
        "bp-target:abc",
        "bp-target:40",
        "statin-low",
        "smoking-cessation:1",
        "statin-high:1.5",
    ):
        with pytest.raises(SimulationError):
            parse_intervention(bad)
    with pytest.raises(ValueError):  # the error family is ValueError
        parse_intervention("aspirin")


# ------------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_results_and_different_seeds_differ() -> None:
    a = microsim(PCE, PATIENT, interventions=ALL, samples=2000, seed=7)
    b = microsim(PCE, PATIENT, interventions=ALL, samples=2000, seed=7)
    c = microsim(PCE, PATIENT, interventions=ALL, samples=2000, seed=8)
    assert a == b
    assert a.seed == 7
    assert a.scenario("statin-high").point != c.scenario("statin-high").point
    assert a.scenario("bp-target:120").low != c.scenario("bp-target:120").low
    assert a.baseline.events != c.baseline.events


def test_without_a_seed_one_is_drawn_reported_and_reproduces() -> None:
    first = microsim(PCE, PATIENT, interventions=(Statin("high"),), samples=500)
    again = microsim(PCE, PATIENT, interventions=(Statin("high"),), samples=500, seed=first.seed)
    assert first == again


def test_adding_a_scenario_does_not_move_the_baseline() -> None:
    alone = microsim(PCE, PATIENT, samples=3000, seed=3)
    with_all = microsim(PCE, PATIENT, interventions=ALL, samples=3000, seed=3)
    assert alone.baseline == with_all.baseline
    assert with_all.scenario("statin-high") == microsim(
        PCE, PATIENT, interventions=(Statin("high"),), samples=3000, seed=3
    ).scenario("statin-high")


# ---------------------------------------------------------------------- twin.md worked numbers


def test_constant_hazard_identity() -> None:
    # twin.md 5c: p10 = 7.5 % -> annual 0.7766 %; MC over 200k x 10 Bernoulli draws gave 7.49 %.
    model, x = flat(0.075)
    sim = microsim(model, x, samples=200_000, seed=2024)
    assert round(annual(0.075) * 100, 4) == 0.7766
    assert sim.baseline.point[0] == pytest.approx(annual(0.075), rel=1e-12)
    assert sim.baseline.point[-1] == pytest.approx(0.075, rel=1e-12)
    assert sim.baseline.low == sim.baseline.point == sim.baseline.high  # nothing uncertain
    for t in sim.years:
        assert sim.baseline.at(t).point == pytest.approx(1 - (1 - 0.075) ** (t / 10), rel=1e-12)
    # The microsimulated people: first events per year ~ Binomial(survivors, annual).
    events = np.cumsum(sim.baseline.events) / sim.samples
    se = math.sqrt(0.075 * 0.925 / sim.samples)
    assert abs(events[-1] - 0.075) < 4 * se
    assert abs(sim.baseline.events[0] / sim.samples - annual(0.075)) < 4 * math.sqrt(
        annual(0.075) / sim.samples
    )


def test_ctt_example_ldl_minus_one_mmol() -> None:
    # twin.md 5c: p10 = 10 %, LDL -1 mmol/L, CTT RR 0.78 (0.76-0.80) -> median 7.89 %, 7.70-8.09 %.
    ldl = 1.0 / (0.40 * LDL_MMOL_PER_MG_DL)  # a 40 % reduction removes exactly 1 mmol/L
    model, x = flat(0.10, ldl=ldl)
    sim = microsim(model, x, interventions=(Statin("moderate", 0.40),), samples=100_000, seed=11)
    statin = sim.scenario("statin-moderate:0.4").at(10)
    assert hazard_scale(0.10, 0.78) == pytest.approx(0.0789, abs=5e-5)
    assert statin.point == pytest.approx(0.0789, abs=1e-4)
    assert statin.low == pytest.approx(0.0770, abs=1.5e-4)
    assert statin.high == pytest.approx(0.0809, abs=1.5e-4)
    # Plain p * RR would give 7.80 %: the hazard scale is what is applied.
    assert abs(statin.point - 0.078) > 5e-4


def test_ctt_example_ldl_minus_one_and_a_half_mmol() -> None:
    # twin.md 5d: p = 10 %, dLDL 1.5 mmol/L -> RR 0.78^1.5 = 0.689 -> 7.00 % (p * RR would give 6.89 %).
    ldl = 1.5 / (0.40 * LDL_MMOL_PER_MG_DL)
    model, x = flat(0.10, ldl=ldl)
    sim = microsim(model, x, interventions=(Statin("moderate", 0.40),), samples=50_000, seed=12)
    scenario = sim.scenarios[0]
    assert scenario.hazard_ratio is not None
    assert scenario.hazard_ratio.point == pytest.approx(0.689, abs=1e-3)
    assert scenario.point[-1] == pytest.approx(0.0700, abs=1e-4)


def test_bp_example_minus_twenty_mmhg() -> None:
    # twin.md 5d: dSBP 20 mm[Hg] -> RR 0.80^2 = 0.64 -> 6.52 % from 10 %.
    model, x = flat(0.10, sbp=140.0)
    sim = microsim(model, x, interventions=(BloodPressureTarget(120.0),), samples=50_000, seed=13)
    scenario = sim.scenario("bp-target:120")
    assert scenario.hazard_ratio is not None
    assert scenario.hazard_ratio.point == pytest.approx(0.64, abs=1e-3)
    assert scenario.point[-1] == pytest.approx(0.0652, abs=1e-4)
    assert scenario.low[-1] < 0.0652 < scenario.high[-1]


def test_smoking_cessation_uses_duncan_hazard_ratio() -> None:
    model, x = flat(0.10, smoker=1.0)
    sim = microsim(model, x, interventions=(SmokingCessation(),), samples=50_000, seed=14)
    scenario = sim.scenario("smoking-cessation")
    assert scenario.point[-1] == pytest.approx(hazard_scale(0.10, 0.61), abs=2e-4)
    assert scenario.low[-1] == pytest.approx(
        hazard_scale(0.10, 0.61 * math.exp(-1.96 * load_effects().smoking.log_se)), abs=3e-4
    )
    assert sim.effects == (load_effects().smoking,)


# ------------------------------------------------------------------------- what-ifs that do nothing


def same_as_baseline(sim: Simulation, code: str) -> None:
    scenario = sim.scenario(code)
    base = sim.baseline
    assert (scenario.point, scenario.low, scenario.high, scenario.events) == (
        base.point,
        base.low,
        base.high,
        base.events,
    )
    assert scenario.relative_risk is not None
    assert scenario.relative_risk.point == scenario.relative_risk.low == scenario.relative_risk.high == 1.0


def test_smoking_cessation_does_nothing_for_a_non_smoker() -> None:
    sim = microsim(PCE, {**PATIENT, "smoker": 0.0}, interventions=(SmokingCessation(),), samples=2000, seed=1)
    same_as_baseline(sim, "smoking-cessation")


def test_bp_target_above_current_sbp_does_nothing() -> None:
    x = {**PATIENT, "sbp": 125.0}
    for target in (125.0, 130.0, 180.0):
        sim = microsim(PCE, x, interventions=(BloodPressureTarget(target),), samples=2000, seed=1)
        same_as_baseline(sim, f"bp-target:{target:g}")
    lower = microsim(PCE, x, interventions=(BloodPressureTarget(115.0),), samples=2000, seed=1)
    assert lower.scenarios[0].point[-1] < lower.baseline.point[-1]


def test_already_on_a_statin() -> None:
    x = {**PATIENT, "statin": 1.0}
    sim = microsim(PCE, x, interventions=(Statin("moderate"), Statin("high")), samples=20_000, seed=5)
    same_as_baseline(sim, "statin-moderate")
    # Moderate -> high removes 1 - (1 - r_high) / (1 - r_moderate) of the on-treatment LDL:
    # 20-28.6 % of 130 mg/dL, i.e. 0.67-0.96 mmol/L, so the hazard ratio lies in 0.78^0.96..0.78^0.67.
    switched = sim.scenario("statin-high")
    assert switched.hazard_ratio is not None
    ldl = 130.0 * LDL_MMOL_PER_MG_DL
    assert 0.76 ** (ldl * (1 - 0.5 / 0.7)) < switched.hazard_ratio.low
    assert switched.hazard_ratio.high < 0.80 ** (ldl * (1 - 0.4 / 0.5))
    naive = microsim(PCE, PATIENT, interventions=(Statin("high"),), samples=20_000, seed=5)
    assert naive.scenarios[0].point[-1] < switched.point[-1] < sim.baseline.point[-1]


# ------------------------------------------------------------------------------------- properties


def check_properties(sim: Simulation) -> None:
    base = sim.baseline
    for traj in (base, *sim.scenarios):
        for lo, pt, hi in zip(traj.low, traj.point, traj.high, strict=True):
            assert 0.0 <= lo <= pt <= hi <= 1.0, traj.code
        for series in (traj.low, traj.point, traj.high):
            assert all(b >= a for a, b in itertools.pairwise(series)), traj.code
        assert sum(traj.events) <= sim.samples
    for traj in sim.scenarios:
        assert all(s <= b for s, b in zip(traj.point, base.point, strict=True)), traj.code
        assert all(s <= b for s, b in zip(traj.low, base.low, strict=True)), traj.code
        assert all(s <= b for s, b in zip(traj.high, base.high, strict=True)), traj.code
        assert all(s <= b for s, b in zip(np.cumsum(traj.events), np.cumsum(base.events), strict=True)), (
            traj.code
        )
        assert traj.relative_risk is not None and traj.hazard_ratio is not None
        for interval in (traj.relative_risk, traj.hazard_ratio):
            assert interval.low <= interval.point <= interval.high <= 1.0, traj.code


def test_interventions_never_raise_risk_over_a_grid_of_patients() -> None:
    rng = np.random.default_rng(99)
    grid = itertools.product(
        (0.0, 1.0), (0.0, 1.0), (40.0, 58.0, 79.0), (95.0, 150.0, 200.0), (0.0, 1.0), (0.0, 1.0)
    )
    count = 0
    for female, black, age, sbp, smoker, on_statin in grid:
        x = {
            **PATIENT,
            "female": female,
            "black": black,
            "age": age,
            "sbp": sbp,
            "smoker": smoker,
            "statin": on_statin,
            "bp_treated": float(rng.integers(0, 2)),
            "diabetes": float(rng.integers(0, 2)),
            "tc": float(rng.uniform(130, 320)),
            "hdl": float(rng.uniform(20, 100)),
            "ldl": float(rng.uniform(40, 250)),
        }
        trends = {
            "sbp": float(rng.normal(0, 4)),
            "tc": float(rng.normal(0, 12)),
            "hdl": float(rng.normal(0, 3)),
            "ldl": float(rng.normal(0, 12)),
        }
        interventions = (*ALL, BloodPressureTarget(float(rng.uniform(90, 200))))
        sim = microsim(PCE, x, trends=trends, interventions=interventions, samples=400, seed=count)
        check_properties(sim)
        count += 1
    assert count == 144


def test_a_harmful_looking_draw_is_capped_at_no_effect() -> None:
    # An effect whose interval crosses 1: many samples draw RR > 1, none may raise the hazard.
    table = load_effects()
    doubtful = replace(table, smoking=replace(table.smoking, point=0.95, low=0.50, high=1.80))
    sim = microsim(PCE, PATIENT, interventions=(SmokingCessation(),), samples=5000, seed=4, effects=doubtful)
    check_properties(sim)
    scenario = sim.scenario("smoking-cessation")
    assert scenario.hazard_ratio is not None and scenario.relative_risk is not None
    assert scenario.hazard_ratio.high == 1.0
    assert scenario.relative_risk.high == 1.0
    assert scenario.high == sim.baseline.high


def test_measurement_noise_widens_the_baseline_interval() -> None:
    quiet = microsim(PCE, PATIENT, samples=4000, seed=6)
    noisy = microsim(PCE, PATIENT, samples=4000, seed=6, input_sd={"sbp": 8.0, "tc": 15.0}, interventions=ALL)
    assert quiet.baseline.low == quiet.baseline.high
    assert noisy.baseline.low[-1] < noisy.baseline.point[-1] < noisy.baseline.high[-1]
    assert noisy.input_sd == (("sbp", 8.0), ("tc", 15.0))
    check_properties(noisy)
    with pytest.raises(SimulationError):
        microsim(PCE, PATIENT, input_sd={"smoker": 0.1})


def test_combined_scenario() -> None:
    sim = microsim(
        PCE,
        PATIENT,
        interventions=(Statin("high"), BloodPressureTarget(120.0), SmokingCessation()),
        samples=3000,
        seed=9,
    )
    combined = sim.scenario("combined")
    for single in sim.scenarios[:3]:
        assert all(c <= s for c, s in zip(combined.point, single.point, strict=True))
    assert {e.code for e in sim.effects} == {"ctt-ldl", "ettehad-sbp", "duncan-smoking"}
    assert [b.intensity for b in sim.reductions] == ["moderate", "high"]
    # Two of one kind (a comparison, not a combination): no combined scenario.
    pair = microsim(PCE, PATIENT, interventions=(Statin("moderate"), Statin("high")), samples=1000, seed=9)
    assert [s.code for s in pair.scenarios] == ["statin-moderate", "statin-high"]
    assert pair.scenarios[1].point[-1] < pair.scenarios[0].point[-1]


# ------------------------------------------------------------------------------------------ trends


def test_trends_are_capped_and_projected_values_stay_in_range() -> None:
    model, x = flat(0.10, sbp=180.0, bmi=30.0)
    capped = microsim(
        model,
        x,
        trends={"sbp": 50.0, "bmi": -9.0, "smoker": 1.0, "age": 3.0, "unknown": 4.0},
        samples=10,
        seed=1,
    )
    assert dict(capped.trends) == {"sbp": TREND_BOUNDS["sbp"], "bmi": -0.05 * 30.0}
    sbp = model.seen["sbp"]
    assert sbp.tolist() == [min(180.0 + 3.0 * t, 200.0) for t in range(10)]
    assert model.seen["bmi"].tolist() == pytest.approx([30.0 - 1.5 * t for t in range(10)])
    assert model.seen["smoker"].tolist() == [0.0] * 10
    assert model.seen["age"].tolist() == [55.0 + t for t in range(10)]  # age moves with time only

    # Age is held at the top of the model's range; PCE never sees values outside its own.
    model, x = flat(0.10, age=75.0, sbp=100.0)
    microsim(model, x, trends={"sbp": -40.0}, samples=10, seed=1)
    assert model.seen["age"].tolist() == [75.0, 76.0, 77.0, 78.0, 79.0, 79.0, 79.0, 79.0, 79.0, 79.0]
    assert model.seen["sbp"].min() == 90.0

    # A capped trend gives exactly what the cap itself gives.
    steep = microsim(PCE, PATIENT, trends={"sbp": 40.0, "tc": -200.0}, interventions=ALL, samples=500, seed=2)
    at_cap = microsim(PCE, PATIENT, trends={"sbp": 3.0, "tc": -10.0}, interventions=ALL, samples=500, seed=2)
    assert steep == at_cap
    flat_run = microsim(PCE, PATIENT, samples=500, seed=2)
    assert steep.baseline.point != flat_run.baseline.point


def test_rising_sbp_raises_risk_and_the_bp_target_holds_it() -> None:
    rising = microsim(
        PCE, PATIENT, trends={"sbp": 2.0}, interventions=(BloodPressureTarget(120.0),), samples=1000, seed=3
    )
    steady = microsim(PCE, PATIENT, interventions=(BloodPressureTarget(120.0),), samples=1000, seed=3)
    assert rising.baseline.point[-1] > steady.baseline.point[-1]
    # The target caps the treated SBP, so the larger gap of a rising SBP is lowered further.
    assert rising.scenarios[0].hazard_ratio == steady.scenarios[0].hazard_ratio  # year 1: same SBP
    assert rising.scenarios[0].relative_risk is not None and steady.scenarios[0].relative_risk is not None
    assert rising.scenarios[0].relative_risk.point < steady.scenarios[0].relative_risk.point


# -------------------------------------------------------------------------------------- the result


def test_result_shape_and_refusals() -> None:
    sim = microsim(PCE, PATIENT, horizon=5, interventions=(Statin("high"),), samples=100, seed=1)
    assert sim.code == SIM_MODEL_CODE == "cvd-microsim"
    assert (sim.model, sim.years, sim.samples, sim.horizon) == ("pce-ascvd-10y", (1, 2, 3, 4, 5), 100, 5)
    assert isinstance(sim.baseline, Trajectory) and sim.baseline.relative_risk is None
    assert all(isinstance(e, Effect) for e in sim.effects)
    assert len(sim.baseline.events) == 5
    with pytest.raises(SimulationError, match="age"):
        microsim(PCE, {**PATIENT, "age": 85.0})
    with pytest.raises(SimulationError, match="hdl"):
        microsim(PCE, {k: v for k, v in PATIENT.items() if k != "hdl"})
    with pytest.raises(SimulationError, match="ldl"):
        microsim(PCE, {k: v for k, v in PATIENT.items() if k != "ldl"}, interventions=(Statin("high"),))
    with pytest.raises(SimulationError):
        microsim(PCE, PATIENT, horizon=0)
    with pytest.raises(SimulationError):
        microsim(PCE, PATIENT, samples=0)
    with pytest.raises(SimulationError):
        microsim(PCE, PATIENT, seed=-1)
    with pytest.raises(SimulationError):
        microsim(PCE, {**PATIENT, "ldl": math.nan}, interventions=(Statin("high"),))
