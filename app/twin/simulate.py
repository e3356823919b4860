"""cvd-microsim: a seeded Monte Carlo forward simulation of cardiovascular risk, with what-ifs.

What it does, in plain words
----------------------------
Starting from one patient's current state, the simulation walks forward one year at a time over a
horizon (10 years by default). For each year it asks a validated 10-year risk model (for example the
Pooled Cohort Equations) what the patient's 10-year risk would be at that year's age and risk
factors, and turns that 10-year risk into a constant yearly hazard, `h = -ln(1 - p10) / 10`
(twin.md 5c: p10 = 7.5 % gives a yearly event probability of 0.7766 %). The cumulative risk after
t years is `1 - exp(-(h1 + ... + ht))`; with no trends and a model that ignores age it ends at
exactly the model's 10-year risk.

- Risk factors move with the patient's own trend (a slope per year, computed elsewhere from the
  patient's history). No published drift slopes were found (twin.md 5d), so trends default to none,
  each slope is capped (`TREND_BOUNDS`, engineering limits, not evidence) and every projected value
  is clipped to the model's declared validity range, so the model is never evaluated outside the
  range it was validated for. Age advances one year per year and is held at the top of the range.
  The hazard of year t uses the state at the start of that year (t - 1 years from now), so year 1 is
  the patient as they are today.
- What-ifs multiply the hazard by a relative risk (proportional hazards, twin.md 5d: on the risk
  scale that is `p_new = 1 - (1 - p)^RR`, not `p * RR`):
  - statin (moderate or high intensity): the LDL cholesterol falls by a fraction drawn uniformly
    from the intensity band of the 2013 ACC/AHA cholesterol guideline (Stone 2013: moderate 30 % to
    < 50 %, high >= 50 %; the 60 % ceiling of the high band is this project's assumption), and each
    mmol/L of LDL lowered multiplies the hazard by the CTT 2010 rate ratio 0.78 (0.76-0.80) per
    1.0 mmol/L. A patient already on a statin (`statin` = 1) is taken to be on a moderate-intensity
    regimen with an on-treatment LDL: "moderate" then adds nothing, "high" adds only the further
    fall, `LDL * (1 - (1 - r_high) / (1 - r_moderate))`; CTT 2010 found the per-mmol/L benefit of
    more- versus less-intensive regimens similar to that of statin versus control;
  - blood pressure lowered to a target: each 10 mm[Hg] of `max(0, SBP - target)` multiplies the
    hazard by the Ettehad 2016 relative risk 0.80 (0.77-0.83); a target above the current SBP
    does nothing;
  - smoking cessation, only for current smokers: the Duncan 2019 hazard ratio 0.61 (0.49-0.76) for
    heavy smokers who quit within 5 years versus those who kept smoking. The model's own smoker
    input is not switched off, because former smokers stay above never-smokers for years.
  The model's inputs are never changed by a what-if (that would count the effect twice). Effects of
  several interventions multiply. No intervention can raise the hazard: every sampled relative risk
  is capped at 1.
- Uncertainty: each sample draws every effect size once, normal on the log scale with
  `SE = (ln upper - ln lower) / 3.92` from the published 95 % interval, and one statin LDL-lowering
  fraction. By default the baseline inputs carry no measurement noise, because no justified
  magnitude is recorded yet; callers may pass per-input standard deviations (`input_sd`).
- The point estimate is the median across samples (as in twin.md's worked example, and it equals the
  risk at the point effect sizes), the 95 % interval the 2.5th and 97.5th percentiles.
- Every scenario uses the same random numbers as the baseline (common random numbers), so the
  relative risk against the baseline does not carry simulation noise of its own, and an
  intervention can never look harmful by chance.
- Microsimulation: each sample is also one simulated person who has a first event in a year with
  probability `1 - exp(-h)` (a Bernoulli draw, the same uniform draws in every scenario); the
  result carries the number of first events per year.

Everything is vectorised with numpy: the model runs once per call, on all years (and all samples
when inputs carry noise) at once; the only Python loops run over model inputs and interventions.
The same seed gives identical results; without a seed one is drawn and reported.

Sources
-------
- Cholesterol Treatment Trialists' (CTT) Collaboration. Lancet 2010;376:1670-81,
  doi:10.1016/S0140-6736(10)61350-5.
- Ettehad D et al. Blood pressure lowering for prevention of cardiovascular disease and death.
  Lancet 2016;387:957-67, doi:10.1016/S0140-6736(15)01225-8.
- Duncan MS et al. Association of smoking cessation with subsequent risk of cardiovascular disease.
  JAMA 2019;322(7):642-650, doi:10.1001/jama.2019.10298.
- Stone NJ et al. 2013 ACC/AHA guideline on the treatment of blood cholesterol. Circulation
  2014;129(25 Suppl 2):S1-S45, doi:10.1161/01.cir.0000437738.63853.7a.
The numbers live in fhir_profiles/twin/interventions.json, each with its citation.

Caveats: the effects' outcomes (CTT major vascular events, Ettehad major CVD events, Duncan incident
CVD) are broader than the model's outcome (PCE: hard ASCVD) and are applied to it unchanged; the
smoking-cessation effect is observational and reported for the first 5 years after quitting; the
hazard is piecewise constant within a year.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from app.twin.models.base import Array, Model, ModelSpec, complete, problems

SIM_MODEL_CODE: Final = "cvd-microsim"
SIM_VERSION: Final = "1.0.0"
SIM_TITLE: Final = "cvd-microsim: Monte Carlo forward simulation of cardiovascular risk with what-ifs"

EFFECTS_PATH: Final = Path(__file__).resolve().parents[2] / "fhir_profiles" / "twin" / "interventions.json"

# LDL cholesterol mg/dL -> mmol/L (1 / 38.67).
LDL_MMOL_PER_MG_DL: Final = 0.02586
# Width of a 95 % interval on the normal scale, 2 x 1.96.
_CI95_WIDTH: Final = 3.92
_PERCENTILES: Final = (2.5, 50.0, 97.5)

MAX_HORIZON: Final = 30
MAX_SAMPLES: Final = 200_000
BP_TARGET_RANGE: Final = (90.0, 200.0)

# Caps on a patient's own per-year trend, in the variable's canonical unit per year. They are
# engineering limits, not published drift rates (none were found, twin.md 5d): a slope fitted to a
# few noisy readings can be wild, and over 10 years these caps still allow 30 mm[Hg] of SBP or
# 100 mg/dL of cholesterol.
TREND_BOUNDS: Final[Mapping[str, float]] = {"sbp": 3.0, "tc": 10.0, "ldl": 10.0, "hdl": 3.0}
# For continuous variables without an entry above: this fraction of the current value per year.
RELATIVE_TREND_BOUND: Final = 0.05
# Variables that are flags (1/0) whatever the model declares; trends and noise never apply.
FLAGS: Final = frozenset({"female", "black", "smoker", "diabetes", "bp_treated", "statin", "ascvd"})

# Per-sample random streams, spawned from the seed so that each is independent of the others'
# sizes (a longer horizon does not change the effect-size draws, noise does not move the events).
_EFFECT_STREAM, _STATIN_STREAM, _EVENT_STREAM, _NOISE_STREAM = range(4)


class SimulationError(ValueError):
    """The request cannot be simulated (missing or out-of-range inputs, bad parameters)."""


# --------------------------------------------------------------------------------- effect sizes


@dataclass(frozen=True, slots=True)
class Effect:
    """A published relative effect with its 95 % interval: the hazard is multiplied by
    `RR ** (change / per)`, the change measured in `unit`."""

    code: str
    measure: str
    point: float
    low: float
    high: float
    per: float
    unit: str
    effect: str
    outcome: str
    citation: str
    doi: str | None

    @property
    def log_se(self) -> float:
        """Standard error of ln(RR) from the 95 % interval."""
        return (math.log(self.high) - math.log(self.low)) / _CI95_WIDTH


@dataclass(frozen=True, slots=True)
class ReductionBand:
    """The fraction of LDL cholesterol a statin intensity lowers, sampled uniformly low..high."""

    intensity: str
    point: float
    low: float
    high: float
    basis: str
    citation: str
    doi: str | None


@dataclass(frozen=True, slots=True)
class EffectTable:
    ldl: Effect  # per 1 mmol/L LDL lowered
    sbp: Effect  # per 10 mm[Hg] SBP lowered
    smoking: Effect  # quitting versus continuing
    moderate: ReductionBand
    high: ReductionBand


def _effect(code: str, raw: Mapping[str, Any]) -> Effect:
    effect = Effect(
        code=code,
        measure=str(raw["measure"]),
        point=float(raw["point"]),
        low=float(raw["low"]),
        high=float(raw["high"]),
        per=float(raw["per"]),
        unit=str(raw["unit"]),
        effect=str(raw["effect"]),
        outcome=str(raw["outcome"]),
        citation=str(raw["citation"]),
        doi=raw.get("doi"),
    )
    if not 0.0 < effect.low <= effect.point <= effect.high or effect.per <= 0.0:
        raise ValueError(f"effect {code}: need 0 < low <= point <= high and per > 0")
    return effect


def _band(intensity: str, raw: Mapping[str, Any], parent: Mapping[str, Any]) -> ReductionBand:
    band = ReductionBand(
        intensity=intensity,
        point=float(raw["point"]),
        low=float(raw["low"]),
        high=float(raw["high"]),
        basis=str(raw["basis"]),
        citation=str(parent["citation"]),
        doi=parent.get("doi"),
    )
    if not 0.0 <= band.low <= band.point <= band.high < 1.0:
        raise ValueError(f"statin {intensity}: need 0 <= low <= point <= high < 1")
    return band


def parse_effects(raw: Mapping[str, Any]) -> EffectTable:
    """The effect table from the JSON layout of fhir_profiles/twin/interventions.json."""
    effects = raw["effects"]
    statin = raw["statin_ldl_reduction"]
    return EffectTable(
        ldl=_effect("ctt-ldl", effects["ctt-ldl"]),
        sbp=_effect("ettehad-sbp", effects["ettehad-sbp"]),
        smoking=_effect("duncan-smoking", effects["duncan-smoking"]),
        moderate=_band("moderate", statin["moderate"], statin),
        high=_band("high", statin["high"], statin),
    )


@lru_cache(maxsize=1)
def load_effects() -> EffectTable:
    """The effect sizes shipped with the server, read once."""
    return parse_effects(json.loads(EFFECTS_PATH.read_text(encoding="utf-8")))


# -------------------------------------------------------------------------------- interventions


@dataclass(frozen=True, slots=True)
class Statin:
    """Start a statin of the given intensity. `reduction` fixes the LDL-lowering fraction instead of
    sampling it from the intensity band (a what-if such as "a statin that lowers LDL by 45 %")."""

    intensity: Literal["moderate", "high"]
    reduction: float | None = None

    def __post_init__(self) -> None:
        if self.intensity not in ("moderate", "high"):
            raise SimulationError(f"statin intensity must be moderate or high, not {self.intensity!r}")
        if self.reduction is not None and not (math.isfinite(self.reduction) and 0.0 < self.reduction < 1.0):
            raise SimulationError("statin LDL reduction must be a fraction between 0 and 1")

    @property
    def code(self) -> str:
        return f"statin-{self.intensity}"

    @property
    def token(self) -> str:
        return self.code if self.reduction is None else f"{self.code}:{self.reduction:g}"


@dataclass(frozen=True, slots=True)
class BloodPressureTarget:
    """Lower systolic blood pressure to `target` mm[Hg] (no change when it is already lower)."""

    target: float

    def __post_init__(self) -> None:
        low, high = BP_TARGET_RANGE
        if not (math.isfinite(self.target) and low <= self.target <= high):
            raise SimulationError(f"bp-target must be a systolic value between {low:g} and {high:g} mm[Hg]")

    @property
    def code(self) -> str:
        return "bp-target"

    @property
    def token(self) -> str:
        return f"bp-target:{self.target:g}"


@dataclass(frozen=True, slots=True)
class SmokingCessation:
    """Stop smoking (no change for a non-smoker)."""

    @property
    def code(self) -> str:
        return "smoking-cessation"

    @property
    def token(self) -> str:
        return self.code


Intervention: TypeAlias = Statin | BloodPressureTarget | SmokingCessation

INTERVENTION_CODES: Final = ("statin-moderate", "statin-high", "bp-target", "smoking-cessation")


def parse_intervention(code: str, value: float | str | None = None) -> Intervention:
    """An intervention from its code: "statin-moderate", "statin-high", "smoking-cessation",
    "bp-target" with a target (`value`, or written "bp-target:130"). A statin code may carry a
    fixed LDL-lowering fraction the same way ("statin-high:0.55")."""
    text = code.strip()
    if ":" in text:
        if value is not None:
            raise SimulationError(f"intervention {code!r} has two values")
        text, value = (part.strip() for part in text.split(":", 1))
    number: float | None = None
    if value is not None:
        try:
            number = float(value)
        except ValueError:
            raise SimulationError(f"intervention {code!r}: {value!r} is not a number") from None
    if text in ("statin-moderate", "statin-high"):
        return Statin("moderate" if text == "statin-moderate" else "high", number)
    if text == "bp-target":
        if number is None:
            raise SimulationError("bp-target needs a target systolic pressure, e.g. bp-target:130")
        return BloodPressureTarget(number)
    if text == "smoking-cessation":
        if number is not None:
            raise SimulationError("smoking-cessation takes no value")
        return SmokingCessation()
    raise SimulationError(f"unknown intervention {code!r}; known: {', '.join(INTERVENTION_CODES)}")


# -------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Interval:
    point: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One scenario: cumulative risk by the end of each year (median and 95 % interval across
    samples) and the simulated first events in each year."""

    code: str  # "baseline", an intervention token such as "bp-target:130", or "combined"
    interventions: tuple[Intervention, ...]
    point: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    events: tuple[int, ...]
    # At the horizon, versus the baseline (per sample, then summarised); None for the baseline.
    relative_risk: Interval | None
    # The hazard multiplier of the first year across samples; None for the baseline.
    hazard_ratio: Interval | None

    def at(self, year: int) -> Interval:
        """Cumulative risk by the end of `year` (1-based)."""
        if not 1 <= year <= len(self.point):
            raise IndexError(year)
        return Interval(self.point[year - 1], self.low[year - 1], self.high[year - 1])


@dataclass(frozen=True, slots=True)
class Simulation:
    model: str  # code of the risk model that gave the hazards
    model_version: str
    years: tuple[int, ...]  # 1..horizon
    baseline: Trajectory
    scenarios: tuple[Trajectory, ...]
    samples: int
    seed: int
    effects: tuple[Effect, ...]  # the effect sizes the scenarios used
    reductions: tuple[ReductionBand, ...]  # the statin LDL-lowering bands the scenarios used
    trends: tuple[tuple[str, float], ...]  # per-year slopes used, after capping
    input_sd: tuple[tuple[str, float], ...]  # measurement noise used on the baseline inputs
    code: str = SIM_MODEL_CODE
    version: str = SIM_VERSION

    @property
    def horizon(self) -> int:
        return len(self.years)

    def scenario(self, code: str) -> Trajectory:
        for item in (self.baseline, *self.scenarios):
            if item.code == code:
                return item
        raise KeyError(code)


# ----------------------------------------------------------------------------------- simulation


def bounded_trends(
    spec: ModelSpec, values: Mapping[str, float], trends: Mapping[str, float] | None
) -> dict[str, float]:
    """The per-year slopes that will be used: capped, and only for continuous variables the patient
    has (age moves with time, flags do not drift, unknown variables are ignored)."""
    used: dict[str, float] = {}
    flags = FLAGS | {item.name for item in spec.inputs if item.boolean}
    for name, slope in sorted((trends or {}).items()):
        if name == "age" or name in flags or name not in values:
            continue
        if not math.isfinite(slope):
            raise SimulationError(f"trend of {name} is not a number")
        bound = TREND_BOUNDS.get(name, RELATIVE_TREND_BOUND * abs(values[name]))
        used[name] = min(max(float(slope), -bound), bound)
    return used


def microsim(
    model: Model,
    inputs: Mapping[str, float],
    *,
    trends: Mapping[str, float] | None = None,
    horizon: int = 10,
    interventions: Sequence[Intervention] = (),
    samples: int = 1000,
    seed: int | None = None,
    input_sd: Mapping[str, float] | None = None,
    effects: EffectTable | None = None,
) -> Simulation:
    """Simulate `samples` futures of one patient over `horizon` years, without and with each
    intervention (and with all of them together when there are several of different kinds).

    `inputs` are the patient's twin variables in canonical units (the model's inputs, plus `ldl`
    for a statin what-if and `statin` when already treated); `trends` are per-year slopes in the
    same units; `input_sd` optional standard deviations of measurement noise on the baseline
    inputs; `effects` overrides the shipped effect table (tests, sensitivity analyses).
    """
    spec = model.spec
    if not 1 <= horizon <= MAX_HORIZON:
        raise SimulationError(f"horizon must be 1 to {MAX_HORIZON} years")
    if not 1 <= samples <= MAX_SAMPLES:
        raise SimulationError(f"samples must be 1 to {MAX_SAMPLES}")
    if seed is not None and seed < 0:
        raise SimulationError("seed must be a non-negative integer")
    found = problems(spec, inputs)
    if found:
        described = ", ".join(f"{p.input} {p.kind}" for p in found)
        raise SimulationError(f"model {spec.code} cannot run: {described}")
    values: dict[str, float] = {name: float(value) for name, value in inputs.items() if value is not None}
    values.update(complete(spec, inputs))
    for name, value in values.items():
        if not math.isfinite(value):
            raise SimulationError(f"input {name} is not a number")
    _check_needs(interventions, values)
    table = effects if effects is not None else load_effects()
    slopes = bounded_trends(spec, values, trends)
    noise_sd = _noise_sd(spec, values, input_sd)

    seed_used = int(np.random.default_rng().integers(0, 2**63)) if seed is None else int(seed)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed_used).spawn(4)]
    z_effects = streams[_EFFECT_STREAM].standard_normal((3, samples))
    u_statin = streams[_STATIN_STREAM].random(samples)
    u_events = streams[_EVENT_STREAM].random((samples, horizon))
    z_noise = streams[_NOISE_STREAM].standard_normal((len(noise_sd), samples))
    noise = {name: sd * z_noise[i] for i, (name, sd) in enumerate(noise_sd)}

    ranges = {item.name: (item.low, item.high) for item in spec.inputs}
    elapsed = np.arange(horizon, dtype=np.float64)
    rows = samples if noise else 1

    def project(name: str) -> Array:
        """The variable at the start of each year, shape (rows, horizon), kept in range."""
        base = np.full((rows, 1), values[name], dtype=np.float64)
        if name in noise:
            base = base + noise[name][:, None]
        slope = 1.0 if name == "age" else slopes.get(name, 0.0)
        path: Array = base + slope * elapsed[None, :] if slope else np.broadcast_to(base, (rows, horizon))
        low, high = ranges.get(name, (0.0, None))
        return np.clip(path, low, high) if low is not None or high is not None else path

    columns = {item.name: project(item.name).ravel() for item in spec.inputs}
    p10 = np.asarray(model.risk(columns), dtype=np.float64).reshape(rows, horizon)
    hazard: Array = -np.log1p(-np.clip(p10, 0.0, 1.0 - 1e-12)) / spec.horizon_years

    log_rr = {
        "ldl": _sampled_log_rr(table.ldl, z_effects[0]),
        "sbp": _sampled_log_rr(table.sbp, z_effects[1]),
        "smoking": _sampled_log_rr(table.smoking, z_effects[2]),
    }

    def log_multiplier(item: Intervention) -> Array:
        """ln of the hazard multiplier, shape (samples, horizon) or broadcastable to it, <= 0."""
        if isinstance(item, Statin):
            fraction = _ldl_fraction(item, table, u_statin, on_statin=values.get("statin", 0.0) >= 0.5)
            lowered = project("ldl") * LDL_MMOL_PER_MG_DL * fraction[:, None]
            out = log_rr["ldl"][:, None] * (lowered / table.ldl.per)
        elif isinstance(item, BloodPressureTarget):
            lowered = np.maximum(project("sbp") - item.target, 0.0)
            out = log_rr["sbp"][:, None] * (lowered / table.sbp.per)
        elif values["smoker"] >= 0.5:
            out = log_rr["smoking"][:, None]
        else:
            out = np.zeros((samples, 1))
        return np.minimum(out, 0.0)

    base_cum = _cumulative(hazard)
    baseline = _trajectory("baseline", (), base_cum, hazard, u_events, None, None)
    parts = [(item, log_multiplier(item)) for item in interventions]
    plans: list[tuple[str, tuple[Intervention, ...], Array]] = [
        (item.token, (item,), multiplier) for item, multiplier in parts
    ]
    kinds = {item.code if not isinstance(item, Statin) else "statin" for item in interventions}
    if len(parts) > 1 and len(kinds) == len(parts):
        combined = parts[0][1]
        for _, multiplier in parts[1:]:
            combined = combined + multiplier
        plans.append(("combined", tuple(interventions), combined))
    scenarios = []
    for code, items, log_m in plans:
        treated = hazard * np.exp(log_m)
        scenarios.append(_trajectory(code, items, _cumulative(treated), treated, u_events, base_cum, log_m))

    used: list[Effect] = []
    reductions: list[ReductionBand] = []
    for item in interventions:
        effect = (
            table.ldl
            if isinstance(item, Statin)
            else table.sbp
            if isinstance(item, BloodPressureTarget)
            else table.smoking
        )
        if effect not in used:
            used.append(effect)
        if isinstance(item, Statin) and item.reduction is None:
            for band in (table.moderate, table.high) if item.intensity == "high" else (table.moderate,):
                if band not in reductions:
                    reductions.append(band)

    return Simulation(
        model=spec.code,
        model_version=spec.version,
        years=tuple(range(1, horizon + 1)),
        baseline=baseline,
        scenarios=tuple(scenarios),
        samples=samples,
        seed=seed_used,
        effects=tuple(used),
        reductions=tuple(reductions),
        trends=tuple(sorted(slopes.items())),
        input_sd=noise_sd,
    )


def _check_needs(interventions: Sequence[Intervention], values: Mapping[str, float]) -> None:
    needs = {"ldl"} if any(isinstance(i, Statin) for i in interventions) else set()
    if any(isinstance(i, BloodPressureTarget) for i in interventions):
        needs.add("sbp")
    if any(isinstance(i, SmokingCessation) for i in interventions):
        needs.add("smoker")
    missing = sorted(needs - values.keys())
    if missing:
        raise SimulationError(f"the what-ifs need {', '.join(missing)}")
    if "ldl" in needs and values["ldl"] <= 0.0:
        raise SimulationError("ldl must be positive")


def _noise_sd(
    spec: ModelSpec, values: Mapping[str, float], input_sd: Mapping[str, float] | None
) -> tuple[tuple[str, float], ...]:
    flags = FLAGS | {item.name for item in spec.inputs if item.boolean}
    out: list[tuple[str, float]] = []
    for name, sd in sorted((input_sd or {}).items()):
        if name in flags or name == "age":
            raise SimulationError(f"measurement noise does not apply to {name}")
        if not (math.isfinite(sd) and sd >= 0.0):
            raise SimulationError(f"measurement noise of {name} must be a non-negative number")
        if name in values and sd > 0.0:
            out.append((name, float(sd)))
    return tuple(out)


def _sampled_log_rr(effect: Effect, z: Array) -> Array:
    out: Array = math.log(effect.point) + effect.log_se * z
    return out


def _ldl_fraction(item: Statin, table: EffectTable, u: Array, *, on_statin: bool) -> Array:
    """Per sample, the fraction of the current LDL the intervention removes. The same uniform draw
    places the patient in both bands: a patient who responds well to one intensity responds well
    to the other."""
    moderate = table.moderate.low + (table.moderate.high - table.moderate.low) * u
    if item.intensity == "moderate":
        chosen = moderate if item.reduction is None else np.full_like(u, item.reduction)
        # Already on a statin (taken as moderate intensity): nothing more to gain.
        return np.zeros_like(u) if on_statin else chosen
    high = table.high.low + (table.high.high - table.high.low) * u
    chosen = high if item.reduction is None else np.full_like(u, item.reduction)
    if not on_statin:
        return chosen
    # The measured LDL is on moderate treatment: untreated LDL = LDL / (1 - moderate).
    further: Array = np.maximum(1.0 - (1.0 - chosen) / (1.0 - moderate), 0.0)
    return further


def _cumulative(hazard: Array) -> Array:
    out: Array = -np.expm1(-np.cumsum(hazard, axis=1))
    return out


def _summary(values: Array) -> NDArray[np.float64]:
    """Rows: 2.5th percentile, median, 97.5th percentile across samples (axis 0)."""
    return np.asarray(np.percentile(values, _PERCENTILES, axis=0), dtype=np.float64)


def _interval(values: Array) -> Interval:
    low, point, high = (float(v) for v in _summary(values))
    return Interval(point, low, high)


def _trajectory(
    code: str,
    interventions: tuple[Intervention, ...],
    cumulative: Array,
    hazard: Array,
    u_events: Array,
    base_cum: Array | None,
    log_m: Array | None,
) -> Trajectory:
    samples, horizon = u_events.shape
    low, point, high = _summary(cumulative)
    hit = u_events < -np.expm1(-np.broadcast_to(hazard, (samples, horizon)))
    first = np.argmax(hit, axis=1)[hit.any(axis=1)]
    events = np.bincount(first, minlength=horizon)
    relative: Interval | None = None
    ratio: Interval | None = None
    if base_cum is not None and log_m is not None:
        end, base_end = np.broadcast_arrays(cumulative[:, -1], base_cum[:, -1])
        rr = np.divide(end, base_end, out=np.ones_like(end), where=base_end > 0.0)
        relative = _interval(rr)
        ratio = _interval(np.exp(np.broadcast_to(log_m, (samples, log_m.shape[1]))[:, 0]))
    return Trajectory(
        code=code,
        interventions=interventions,
        point=tuple(float(v) for v in point),
        low=tuple(float(v) for v in low),
        high=tuple(float(v) for v in high),
        events=tuple(int(v) for v in events),
        relative_risk=relative,
        hazard_ratio=ratio,
    )
