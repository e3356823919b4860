"""Framingham general cardiovascular disease risk, 2008, laboratory (TC/HDL) version.

Source: D'Agostino RB Sr, Vasan RS, Pencina MJ, Wolf PA, Cobain M, Massaro JM, Kannel WB. General
Cardiovascular Risk Profile for Use in Primary Care: The Framingham Heart Study. Circulation
2008;117(6):743-753, doi:10.1161/CIRCULATIONAHA.107.699579. Regression coefficients, mean linear
predictor and 10-year baseline survival: the paper's table of regression coefficients and hazard
ratios for the primary (laboratory) model (Table 2), as transcribed in shared/research/twin.md
section 3. The Framingham Heart Study's own risk-function page ("Regression Coefficients and Hazard
Ratios - Primary Model") prints the same coefficients and S0(10).

Model (Cox, one equation per sex):
    sum  = b_age ln(age) + b_tc ln(TC) + b_hdl ln(HDL) + b_sbp ln(SBP) + b_smoker smoker + b_dm diabetes,
           with the treated or the untreated SBP coefficient according to bp_treated;
    risk = 1 - S0 ** exp(sum - mean_sum).
Outcome: first general CVD event (coronary heart disease, stroke, peripheral artery disease or
heart failure) within 10 years.

Validity ranges:
- age 30-74: the paper's derivation sample attended an examination between 30 and 74 years of age
  (abstract).
- TC, HDL, SBP: the paper prints no input limits (its points tables use open-ended categories), so
  these are the ACC Pooled Cohort calculator's limits, the same as in `pce.py`: TC 130-320 mg/dL,
  HDL 20-100 mg/dL, SBP 90-200 mm[Hg].
- Primary prevention: the participants were free of CVD, so a prior ASCVD event is out of range, and
  so is known heart failure, which is itself one of the predicted outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass

import numpy as np

from app.twin.models.base import Array, Input, ModelSpec, Outcome, columns


@dataclass(frozen=True, slots=True)
class FraminghamEquation:
    ln_age: float
    ln_tc: float
    ln_hdl: float
    ln_untreated_sbp: float
    ln_treated_sbp: float
    smoker: float
    diabetes: float
    mean_sum: float
    baseline_survival: float


WOMEN = FraminghamEquation(
    ln_age=2.32888,
    ln_tc=1.20904,
    ln_hdl=-0.70833,
    ln_untreated_sbp=2.76157,
    ln_treated_sbp=2.82263,
    smoker=0.52873,
    diabetes=0.69154,
    mean_sum=26.1931,
    baseline_survival=0.95012,
)
MEN = FraminghamEquation(
    ln_age=3.06117,
    ln_tc=1.12370,
    ln_hdl=-0.93263,
    ln_untreated_sbp=1.93303,
    ln_treated_sbp=1.99881,
    smoker=0.65451,
    diabetes=0.57367,
    mean_sum=23.9802,
    baseline_survival=0.88936,
)

# Row order is the group index computed in `risk()`: female (0 men, 1 women).
EQUATIONS: tuple[FraminghamEquation, ...] = (MEN, WOMEN)
_TABLE = np.asarray([astuple(equation) for equation in EQUATIONS], dtype=np.float64)
_COEFFICIENTS = _TABLE[:, :-2]
_MEAN_SUM = _TABLE[:, -2]
_BASELINE_SURVIVAL = _TABLE[:, -1]

AGE_RANGE = (30.0, 74.0)
TC_RANGE = (130.0, 320.0)
HDL_RANGE = (20.0, 100.0)
SBP_RANGE = (90.0, 200.0)

SPEC = ModelSpec(
    code="framingham-cvd-10y",
    title="Framingham general cardiovascular disease risk (2008, TC/HDL), 10-year",
    version="2008.1",
    citation=(
        "D'Agostino RB Sr, Vasan RS, Pencina MJ, et al. General Cardiovascular Risk Profile for Use in "
        "Primary Care: The Framingham Heart Study. Circulation 2008;117:743-753. Table 2 (primary model)."
    ),
    doi="10.1161/CIRCULATIONAHA.107.699579",
    horizon_years=10,
    outcome=Outcome(
        text="general CVD (coronary heart disease, stroke, peripheral artery disease, heart failure)",
        code="49601007",
        display="Disorder of cardiovascular system",
    ),
    inputs=(
        Input("age", "a", *AGE_RANGE),
        Input("female", "1", 0.0, 1.0, boolean=True),
        Input("tc", "mg/dL", *TC_RANGE),
        Input("hdl", "mg/dL", *HDL_RANGE),
        Input("sbp", "mm[Hg]", *SBP_RANGE),
        Input("bp_treated", "1", 0.0, 1.0, boolean=True),
        Input("smoker", "1", 0.0, 1.0, boolean=True),
        Input("diabetes", "1", 0.0, 1.0, boolean=True),
        # Validity gates, not terms: the derivation cohort was free of CVD.
        Input("ascvd", "1", 0.0, 0.0, required=False, default=0.0, boolean=True),
        Input("heart_failure", "1", 0.0, 0.0, required=False, default=0.0, boolean=True),
    ),
    population=(
        "Adults aged 30-74 without cardiovascular disease (primary prevention); TC 130-320 mg/dL, "
        "HDL 20-100 mg/dL, SBP 90-200 mm[Hg] (calculator limits; the paper gives none)."
    ),
)


@dataclass(slots=True)
class FraminghamGeneralCvd:
    # Not frozen: base.Model declares `spec` as a plain attribute, which a frozen field cannot satisfy.
    spec: ModelSpec = SPEC

    def risk(self, x: Mapping[str, Array]) -> Array:
        age, female, tc, hdl, sbp, treated, smoker, diabetes, _, _ = columns(self.spec, x)
        ln_sbp = np.log(sbp)
        on_treatment = (treated == 1.0).astype(np.float64)
        terms = np.stack(
            [
                np.log(age),
                np.log(tc),
                np.log(hdl),
                ln_sbp * (1.0 - on_treatment),
                ln_sbp * on_treatment,
                smoker,
                diabetes,
            ],
            axis=-1,
        )
        group = (female == 1.0).astype(np.intp)
        linear = np.sum(terms * _COEFFICIENTS[group], axis=-1)
        result: Array = 1.0 - _BASELINE_SURVIVAL[group] ** np.exp(linear - _MEAN_SUM[group])
        return result


FRAMINGHAM = FraminghamGeneralCvd()

MODELS: tuple[FraminghamGeneralCvd, ...] = (FRAMINGHAM,)
