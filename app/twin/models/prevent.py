"""AHA PREVENT base model: 10- and 30-year risk of total CVD, ASCVD and heart failure.

Source: Khan SS, Matsushita K, Sang Y, et al. Development and Validation of the American Heart
Association's PREVENT Equations. Circulation 2024;149(6):430-449, doi:10.1161/CIRCULATIONAHA.123.067626.
Coefficients: supplemental Table S12A (base model, 10-year) and Table S12F (base model, 30-year), kept
as data in fhir_profiles/twin/prevent_base.json. Its "source" block records where each number was read
and how it was checked: with these numbers the Table S25 worked example reproduces for all six
outcome/horizon pairs.

Model (logistic, one equation per outcome, horizon and sex; race-free; no baseline survival):
    log-odds = sum of coefficient x term,  risk = 1 / (1 + exp(-log-odds)).
Terms (TC and HDL in mg/dL, converted with 0.02586 mmol/L per mg/dL):
    age_t    = (age - 55) / 10; the 30-year equations add age_t ** 2
    non-HDL  = (TC - HDL) x 0.02586 - 3.5;  HDL = (HDL x 0.02586 - 1.3) / 0.3
    SBP      = (min(SBP, 110) - 110) / 20 and (max(SBP, 110) - 130) / 20
    BMI      = (min(BMI, 30) - 25) / 5 and (max(BMI, 30) - 30) / 5       (heart-failure equations only)
    eGFR     = (min(eGFR, 60) - 60) / -15 and (max(eGFR, 60) - 90) / -15
    diabetes, current smoking, antihypertensive use, statin use (1/0), and the interactions
    antihypertensive x SBP>=110, statin x non-HDL, age_t x {non-HDL, HDL, SBP>=110, diabetes, smoking,
    BMI>=30, eGFR<60}.
Each model declares only the inputs its equation uses: the heart-failure equations have no cholesterol
or statin terms, and only they use BMI.

Validity: TC 130-320 mg/dL, HDL 20-100 mg/dL, SBP 90-180 mm[Hg], BMI 18.5-39.9 kg/m2, eGFR 15-140
(race-free CKD-EPI 2021), the input limits in shared/research/twin.md section 2. Adults without known
CVD, so a prior ASCVD event or heart failure is out of range. Age 30-79 for the 10-year equations and
30-59 for the 30-year ones: twin.md gives 30-79 for PREVENT as a whole, but the Stata port (Linden,
SSC 2024) gates its 30-year estimates at 30-59 while gating 10-year ones at 30-79, another port does
the same, and past 60 the 30-year equations stop making sense: age_t x smoking makes smoking lower
the 30-year risk from age 66.5 (ASCVD, men) to 74.9 (total CVD, women).

Properties of the published 10-year equations, not of this code (the tests pin them), all from the
age interactions:
- Non-HDL cholesterol raises the risk only up to an age when not on a statin: total CVD in women up
  to 58.7 y (0.0305 - 0.0820 age_t = 0), in men up to 69.2 y, ASCVD in women up to 75.7 y, ASCVD in
  men at every age. Within 30-59 the 30-year equations rise with non-HDL throughout.
- The log-odds are linear in age_t, and the negative age_t x {non-HDL, SBP, diabetes, smoking, eGFR}
  terms make the age slope negative for extreme profiles, so risk falls with age for, for example, a woman with diabetes who smokes, TC 240, HDL 20 and SBP 180 (total
  CVD). Risk rises with age wherever TC <= 240, HDL >= 35, SBP <= 160 and eGFR >= 60.
- Below 110 mm[Hg] risk falls as SBP rises towards 110 (the SBP<110 coefficients are negative); above
  110 it rises with SBP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from app.twin.models.base import Array, Input, ModelSpec, Outcome, columns

COEFFICIENTS_PATH: Final = (
    Path(__file__).resolve().parents[3] / "fhir_profiles" / "twin" / "prevent_base.json"
)

# mg/dL of cholesterol -> mmol/L, the factor the PREVENT equations are written with.
MMOL_PER_MG_DL: Final = 0.02586

Horizon = Literal[10, 30]
OutcomeKey = Literal["total_cvd", "ascvd", "heart_failure"]

AGE_RANGE: Final[Mapping[int, tuple[float, float]]] = {10: (30.0, 79.0), 30: (30.0, 59.0)}
TC_RANGE: Final = (130.0, 320.0)
HDL_RANGE: Final = (20.0, 100.0)
SBP_RANGE: Final = (90.0, 180.0)
BMI_RANGE: Final = (18.5, 39.9)
EGFR_RANGE: Final = (15.0, 140.0)

# Transformed variables, each from the raw inputs (canonical units).
_BASE_TERMS: Final[Mapping[str, Callable[[Mapping[str, Array]], Array]]] = {
    "age": lambda v: (v["age"] - 55.0) / 10.0,
    "non_hdl": lambda v: (v["tc"] - v["hdl"]) * MMOL_PER_MG_DL - 3.5,
    "hdl": lambda v: (v["hdl"] * MMOL_PER_MG_DL - 1.3) / 0.3,
    "sbp_lt_110": lambda v: (np.minimum(v["sbp"], 110.0) - 110.0) / 20.0,
    "sbp_ge_110": lambda v: (np.maximum(v["sbp"], 110.0) - 130.0) / 20.0,
    "diabetes": lambda v: v["diabetes"],
    "smoker": lambda v: v["smoker"],
    "bmi_lt_30": lambda v: (np.minimum(v["bmi"], 30.0) - 25.0) / 5.0,
    "bmi_ge_30": lambda v: (np.maximum(v["bmi"], 30.0) - 30.0) / 5.0,
    "egfr_lt_60": lambda v: (np.minimum(v["egfr"], 60.0) - 60.0) / -15.0,
    "egfr_ge_60": lambda v: (np.maximum(v["egfr"], 60.0) - 90.0) / -15.0,
    "bp_treated": lambda v: v["bp_treated"],
    "statin": lambda v: v["statin"],
}
# Every coefficient's term as a product of transformed variables (the constant is the empty product).
TERMS: Final[Mapping[str, tuple[str, ...]]] = {
    "age": ("age",),
    "age_squared": ("age", "age"),
    "non_hdl": ("non_hdl",),
    "hdl": ("hdl",),
    "sbp_lt_110": ("sbp_lt_110",),
    "sbp_ge_110": ("sbp_ge_110",),
    "diabetes": ("diabetes",),
    "smoker": ("smoker",),
    "bmi_lt_30": ("bmi_lt_30",),
    "bmi_ge_30": ("bmi_ge_30",),
    "egfr_lt_60": ("egfr_lt_60",),
    "egfr_ge_60": ("egfr_ge_60",),
    "bp_treated": ("bp_treated",),
    "statin": ("statin",),
    "bp_treated_x_sbp_ge_110": ("bp_treated", "sbp_ge_110"),
    "statin_x_non_hdl": ("statin", "non_hdl"),
    "age_x_non_hdl": ("age", "non_hdl"),
    "age_x_hdl": ("age", "hdl"),
    "age_x_sbp_ge_110": ("age", "sbp_ge_110"),
    "age_x_diabetes": ("age", "diabetes"),
    "age_x_smoker": ("age", "smoker"),
    "age_x_bmi_ge_30": ("age", "bmi_ge_30"),
    "age_x_egfr_lt_60": ("age", "egfr_lt_60"),
    "constant": (),
}
# The raw inputs each transformed variable reads.
_READS: Final[Mapping[str, tuple[str, ...]]] = {
    "age": ("age",),
    "non_hdl": ("tc", "hdl"),
    "hdl": ("hdl",),
    "sbp_lt_110": ("sbp",),
    "sbp_ge_110": ("sbp",),
    "diabetes": ("diabetes",),
    "smoker": ("smoker",),
    "bmi_lt_30": ("bmi",),
    "bmi_ge_30": ("bmi",),
    "egfr_lt_60": ("egfr",),
    "egfr_ge_60": ("egfr",),
    "bp_treated": ("bp_treated",),
    "statin": ("statin",),
}

_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "total_cvd": Outcome(
        text="total cardiovascular disease (ASCVD or heart failure)",
        code="49601007",
        display="Disorder of cardiovascular system",
    ),
    "ascvd": Outcome(text="atherosclerotic cardiovascular disease (MI, stroke)"),
    "heart_failure": Outcome(text="heart failure", code="84114007", display="Heart failure"),
}
_CODES: Final[Mapping[str, str]] = {"total_cvd": "cvd", "ascvd": "ascvd", "heart_failure": "hf"}
_TITLES: Final[Mapping[str, str]] = {
    "total_cvd": "total CVD",
    "ascvd": "ASCVD",
    "heart_failure": "heart failure",
}
_TABLES: Final[Mapping[int, str]] = {10: "S12A", 30: "S12F"}


@dataclass(frozen=True, slots=True)
class Equations:
    """One outcome and horizon: the coefficients by sex, rows (male, female), columns as `terms`."""

    terms: tuple[str, ...]
    by_sex: Array

    @property
    def used(self) -> tuple[str, ...]:
        """The terms with a non-zero coefficient for either sex."""
        return tuple(t for t, column in zip(self.terms, self.by_sex.T, strict=True) if np.any(column != 0.0))


def parse_coefficients(raw: Mapping[str, Any]) -> dict[tuple[int, str], Equations]:
    """The coefficient sets from the JSON layout of fhir_profiles/twin/prevent_base.json."""
    terms = tuple(raw["terms"])
    if set(terms) != set(TERMS) or len(terms) != len(TERMS):
        raise ValueError(f"prevent_base.json terms {terms} differ from the model's {tuple(TERMS)}")
    out: dict[tuple[int, str], Equations] = {}
    for horizon in (10, 30):
        for outcome in _OUTCOMES:
            sets = raw["coefficients"][str(horizon)][outcome]
            rows = []
            for sex in ("male", "female"):
                given = sets[sex]
                if set(given) != set(terms):
                    raise ValueError(f"prevent_base.json {horizon}-year {outcome} {sex}: terms differ")
                rows.append([float(given[t]) for t in terms])
            out[(horizon, outcome)] = Equations(terms, np.asarray(rows, dtype=np.float64))
    for outcome in _OUTCOMES:
        if np.any(out[(10, outcome)].by_sex[:, terms.index("age_squared")] != 0.0):
            raise ValueError(f"prevent_base.json: the 10-year {outcome} equations have no age squared term")
    return out


@lru_cache(maxsize=1)
def load_coefficients() -> dict[tuple[int, str], Equations]:
    """The coefficients shipped with the server, read once."""
    return parse_coefficients(json.loads(COEFFICIENTS_PATH.read_text(encoding="utf-8")))


def _inputs(horizon: int, used: tuple[str, ...]) -> tuple[Input, ...]:
    reads = {name for term in used for factor in TERMS[term] for name in _READS[factor]}
    declared = (
        Input("age", "a", *AGE_RANGE[horizon]),
        Input("female", "1", 0.0, 1.0, boolean=True),
        Input("tc", "mg/dL", *TC_RANGE),
        Input("hdl", "mg/dL", *HDL_RANGE),
        Input("sbp", "mm[Hg]", *SBP_RANGE),
        Input("bp_treated", "1", 0.0, 1.0, boolean=True),
        Input("statin", "1", 0.0, 1.0, boolean=True),
        Input("smoker", "1", 0.0, 1.0, boolean=True),
        Input("diabetes", "1", 0.0, 1.0, boolean=True),
        Input("bmi", "kg/m2", *BMI_RANGE),
        Input("egfr", "mL/min/{1.73_m2}", *EGFR_RANGE),
    )
    gates = (
        # Validity gates, not terms: the equations are for people without known CVD.
        Input("ascvd", "1", 0.0, 0.0, required=False, default=0.0, boolean=True),
        Input("heart_failure", "1", 0.0, 0.0, required=False, default=0.0, boolean=True),
    )
    return tuple(item for item in declared if item.name in reads or item.name == "female") + gates


def _spec(horizon: int, outcome: str, used: tuple[str, ...]) -> ModelSpec:
    inputs = _inputs(horizon, used)
    names = {item.name for item in inputs}
    low, high = AGE_RANGE[horizon]
    limits = [f"TC {TC_RANGE[0]:g}-{TC_RANGE[1]:g} mg/dL", f"HDL {HDL_RANGE[0]:g}-{HDL_RANGE[1]:g} mg/dL"]
    limits = [text for text, name in zip(limits, ("tc", "hdl"), strict=True) if name in names]
    limits.append(f"SBP {SBP_RANGE[0]:g}-{SBP_RANGE[1]:g} mm[Hg]")
    if "bmi" in names:
        limits.append(f"BMI {BMI_RANGE[0]:g}-{BMI_RANGE[1]:g} kg/m2")
    limits.append(f"eGFR {EGFR_RANGE[0]:g}-{EGFR_RANGE[1]:g} mL/min/1.73 m2 (race-free CKD-EPI 2021)")
    return ModelSpec(
        code=f"prevent-{_CODES[outcome]}-{horizon}y",
        title=f"AHA PREVENT base model, {horizon}-year {_TITLES[outcome]} risk",
        version="2024.1",
        citation=(
            "Khan SS, Matsushita K, Sang Y, et al. Development and Validation of the American Heart "
            "Association's PREVENT Equations. Circulation 2024;149(6):430-449. "
            f"Base model, supplemental Table {_TABLES[horizon]}."
        ),
        doi="10.1161/CIRCULATIONAHA.123.067626",
        horizon_years=horizon,
        outcome=_OUTCOMES[outcome],
        inputs=inputs,
        population=(
            f"Adults aged {low:g}-{high:g} without known cardiovascular disease (no prior ASCVD event, "
            f"no heart failure); {', '.join(limits)}."
        ),
    )


@dataclass(slots=True)
class PreventModel:
    """One PREVENT base-model equation pair (men, women) for one outcome and horizon."""

    # Not frozen: base.Model declares `spec` as a plain attribute, which a frozen field cannot satisfy.
    spec: ModelSpec
    equations: Equations

    def risk(self, x: Mapping[str, Array]) -> Array:
        values = _columns(self.spec, x)
        used = self.equations.used
        factors = {factor for term in used for factor in TERMS[term]}
        transformed = {factor: _BASE_TERMS[factor](values) for factor in factors}
        shape = values["age"].shape
        design = np.stack(
            [_product(transformed, TERMS[term], shape) for term in used],
            axis=-1,
        )
        columns = [self.equations.terms.index(term) for term in used]
        female = (values["female"] == 1.0).astype(np.intp)
        linear = np.sum(design * self.equations.by_sex[:, columns][female], axis=-1)
        return _logistic(linear)


def _product(transformed: Mapping[str, Array], factors: tuple[str, ...], shape: tuple[int, ...]) -> Array:
    out: Array = np.ones(shape, dtype=np.float64)
    for factor in factors:
        out = out * transformed[factor]
    return out


def _logistic(linear: Array) -> Array:
    # exp of a non-positive number only, so no overflow for any finite log-odds.
    z = np.exp(-np.abs(linear))
    result: Array = np.where(linear >= 0.0, 1.0 / (1.0 + z), z / (1.0 + z))
    return result


def _columns(spec: ModelSpec, x: Mapping[str, Array]) -> dict[str, Array]:
    """The declared inputs by name, absent optional ones defaulted, broadcast together."""
    return {item.name: col for item, col in zip(spec.inputs, columns(spec, x), strict=True)}


def _model(horizon: Horizon, outcome: OutcomeKey) -> PreventModel:
    equations = load_coefficients()[(horizon, outcome)]
    return PreventModel(_spec(horizon, outcome, equations.used), equations)


PREVENT_CVD_10Y = _model(10, "total_cvd")
PREVENT_ASCVD_10Y = _model(10, "ascvd")
PREVENT_HF_10Y = _model(10, "heart_failure")
PREVENT_CVD_30Y = _model(30, "total_cvd")
PREVENT_ASCVD_30Y = _model(30, "ascvd")
PREVENT_HF_30Y = _model(30, "heart_failure")

MODELS: tuple[PreventModel, ...] = (
    PREVENT_CVD_10Y,
    PREVENT_ASCVD_10Y,
    PREVENT_HF_10Y,
    PREVENT_CVD_30Y,
    PREVENT_ASCVD_30Y,
    PREVENT_HF_30Y,
)
