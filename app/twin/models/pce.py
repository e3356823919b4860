"""ACC/AHA 2013 Pooled Cohort Equations (PCE): 10-year risk of a first hard ASCVD event.

Source: Goff DC Jr, Lloyd-Jones DM, Bennett G, et al. 2013 ACC/AHA Guideline on the Assessment of
Cardiovascular Risk. Circulation 2014;129(25 Suppl 2):S49-S73, doi:10.1161/01.cir.0000437741.48606.98
(also J Am Coll Cardiol 2014;63(25 Pt B):2935-2959, doi:10.1016/j.jacc.2013.11.005).
Coefficients, mean linear predictors and 10-year baseline survival: Appendix 7, Table A of the
guideline, as transcribed in shared/research/twin.md section 1 (which checked them against two
independent implementations).

Model (Cox, one equation per sex and race):
    sum  = sum of coefficient x term, the terms being ln(age), ln(TC), ln(HDL), ln(SBP), the products
           of those logs for the interactions, smoker and diabetes (1/0);
    risk = 1 - S10 ** exp(sum - mean_sum).
The treated and untreated SBP terms are mutually exclusive (treated when bp_treated = 1).
The guideline says to use the white equations for races other than African American, so only
black = 1 selects the African-American equations.

Validity: ages 40-79, TC 130-320 mg/dL, HDL 20-100 mg/dL, SBP 90-200 mm[Hg] (the ACC calculator's
input limits, twin.md section 1); primary prevention only, so a prior ASCVD event is out of range.

Properties of the published equations, not of this code (the tests pin them): inside the validity
range the risk is not monotone everywhere.
- White women: ln age x ln TC (-3.114) makes TC lower the risk above age exp(13.540/3.114) = 77.3 y,
  ln age x ln HDL (+3.149) makes HDL raise it above exp(13.578/3.149) = 74.6 y, and risk falls with
  age for some young women with very high TC and very low HDL.
- African-American women: HDL raises the risk above exp(18.920/4.475) = 68.6 y, and risk falls with
  age when SBP is very high and HDL very low (ln age x ln SBP is -6.4 / -6.1).
- White men: smoking lowers the risk above exp(7.837/1.795) = 78.7 y (by less than 0.1 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass

import numpy as np

from app.twin.models.base import Array, Input, ModelSpec, Outcome, columns


@dataclass(frozen=True, slots=True)
class PceEquation:
    """One column of Table A; a dash in the table is 0.0 here."""

    ln_age: float
    ln_age_squared: float
    ln_tc: float
    ln_age_x_ln_tc: float
    ln_hdl: float
    ln_age_x_ln_hdl: float
    ln_treated_sbp: float
    ln_age_x_ln_treated_sbp: float
    ln_untreated_sbp: float
    ln_age_x_ln_untreated_sbp: float
    smoker: float
    ln_age_x_smoker: float
    diabetes: float
    mean_sum: float
    baseline_survival: float


WHITE_WOMEN = PceEquation(
    ln_age=-29.799,
    ln_age_squared=4.884,
    ln_tc=13.540,
    ln_age_x_ln_tc=-3.114,
    ln_hdl=-13.578,
    ln_age_x_ln_hdl=3.149,
    ln_treated_sbp=2.019,
    ln_age_x_ln_treated_sbp=0.0,
    ln_untreated_sbp=1.957,
    ln_age_x_ln_untreated_sbp=0.0,
    smoker=7.574,
    ln_age_x_smoker=-1.665,
    diabetes=0.661,
    mean_sum=-29.18,
    baseline_survival=0.9665,
)
AFRICAN_AMERICAN_WOMEN = PceEquation(
    ln_age=17.114,
    ln_age_squared=0.0,
    ln_tc=0.940,
    ln_age_x_ln_tc=0.0,
    ln_hdl=-18.920,
    ln_age_x_ln_hdl=4.475,
    ln_treated_sbp=29.291,
    ln_age_x_ln_treated_sbp=-6.432,
    ln_untreated_sbp=27.820,
    ln_age_x_ln_untreated_sbp=-6.087,
    smoker=0.691,
    ln_age_x_smoker=0.0,
    diabetes=0.874,
    mean_sum=86.61,
    baseline_survival=0.9533,
)
WHITE_MEN = PceEquation(
    ln_age=12.344,
    ln_age_squared=0.0,
    ln_tc=11.853,
    ln_age_x_ln_tc=-2.664,
    ln_hdl=-7.990,
    ln_age_x_ln_hdl=1.769,
    ln_treated_sbp=1.797,
    ln_age_x_ln_treated_sbp=0.0,
    ln_untreated_sbp=1.764,
    ln_age_x_ln_untreated_sbp=0.0,
    smoker=7.837,
    ln_age_x_smoker=-1.795,
    diabetes=0.658,
    mean_sum=61.18,
    baseline_survival=0.9144,
)
AFRICAN_AMERICAN_MEN = PceEquation(
    ln_age=2.469,
    ln_age_squared=0.0,
    ln_tc=0.302,
    ln_age_x_ln_tc=0.0,
    ln_hdl=-0.307,
    ln_age_x_ln_hdl=0.0,
    ln_treated_sbp=1.916,
    ln_age_x_ln_treated_sbp=0.0,
    ln_untreated_sbp=1.809,
    ln_age_x_ln_untreated_sbp=0.0,
    smoker=0.549,
    ln_age_x_smoker=0.0,
    diabetes=0.645,
    mean_sum=19.54,
    baseline_survival=0.8954,
)

# Row order is the group index computed in `risk()`: 2 * female + black.
EQUATIONS: tuple[PceEquation, ...] = (WHITE_MEN, AFRICAN_AMERICAN_MEN, WHITE_WOMEN, AFRICAN_AMERICAN_WOMEN)
_TABLE = np.asarray([astuple(equation) for equation in EQUATIONS], dtype=np.float64)
_COEFFICIENTS = _TABLE[:, :-2]
_MEAN_SUM = _TABLE[:, -2]
_BASELINE_SURVIVAL = _TABLE[:, -1]

AGE_RANGE = (40.0, 79.0)
TC_RANGE = (130.0, 320.0)
HDL_RANGE = (20.0, 100.0)
SBP_RANGE = (90.0, 200.0)

SPEC = ModelSpec(
    code="pce-ascvd-10y",
    title="ACC/AHA 2013 Pooled Cohort Equations, 10-year hard ASCVD risk",
    version="2013.1",
    citation=(
        "Goff DC Jr, Lloyd-Jones DM, Bennett G, et al. 2013 ACC/AHA Guideline on the Assessment of "
        "Cardiovascular Risk. Circulation 2014;129(25 Suppl 2):S49-S73. Appendix 7, Table A."
    ),
    doi="10.1161/01.cir.0000437741.48606.98",
    horizon_years=10,
    outcome=Outcome(text="hard ASCVD (nonfatal MI, CHD death, fatal or nonfatal stroke)"),
    inputs=(
        Input("age", "a", *AGE_RANGE),
        Input("female", "1", 0.0, 1.0, boolean=True),
        Input("black", "1", 0.0, 1.0, required=False, default=0.0, boolean=True),
        Input("tc", "mg/dL", *TC_RANGE),
        Input("hdl", "mg/dL", *HDL_RANGE),
        Input("sbp", "mm[Hg]", *SBP_RANGE),
        Input("bp_treated", "1", 0.0, 1.0, boolean=True),
        Input("smoker", "1", 0.0, 1.0, boolean=True),
        Input("diabetes", "1", 0.0, 1.0, boolean=True),
        # A validity gate, not a term: the equations are for people without clinical ASCVD.
        Input("ascvd", "1", 0.0, 0.0, required=False, default=0.0, boolean=True),
    ),
    population=(
        "Adults aged 40-79 without clinical ASCVD (primary prevention); TC 130-320 mg/dL, "
        "HDL 20-100 mg/dL, SBP 90-200 mm[Hg]. African-American equations for black patients, "
        "white equations for everyone else."
    ),
)


@dataclass(slots=True)
class PooledCohortEquations:
    # Not frozen: base.Model declares `spec` as a plain attribute, which a frozen field cannot satisfy.
    spec: ModelSpec = SPEC

    def risk(self, x: Mapping[str, Array]) -> Array:
        age, female, black, tc, hdl, sbp, treated, smoker, diabetes, _ = columns(self.spec, x)
        ln_age = np.log(age)
        ln_tc = np.log(tc)
        ln_hdl = np.log(hdl)
        ln_sbp = np.log(sbp)
        on_treatment = (treated == 1.0).astype(np.float64)
        untreated = 1.0 - on_treatment
        terms = np.stack(
            [
                ln_age,
                ln_age * ln_age,
                ln_tc,
                ln_age * ln_tc,
                ln_hdl,
                ln_age * ln_hdl,
                ln_sbp * on_treatment,
                ln_age * ln_sbp * on_treatment,
                ln_sbp * untreated,
                ln_age * ln_sbp * untreated,
                smoker,
                ln_age * smoker,
                diabetes,
            ],
            axis=-1,
        )
        group = 2 * (female == 1.0).astype(np.intp) + (black == 1.0).astype(np.intp)
        linear = np.sum(terms * _COEFFICIENTS[group], axis=-1)
        result: Array = 1.0 - _BASELINE_SURVIVAL[group] ** np.exp(linear - _MEAN_SUM[group])
        return result


PCE = PooledCohortEquations()

MODELS: tuple[PooledCohortEquations, ...] = (PCE,)
