"""Kidney Failure Risk Equation (KFRE), 4-variable: 2- and 5-year risk of kidney failure.

Sources:
- Tangri N, Stevens LA, Griffith J, Tighiouart H, Djurdjev O, Naimark D, Levin A, Levey AS.
  A Predictive Model for Progression of Chronic Kidney Disease to Kidney Failure.
  JAMA 2011;305(15):1553-1559, doi:10.1001/jama.2011.451: the 4-variable model (age, sex, eGFR,
  urine albumin-to-creatinine ratio), its coefficients and centring values.
- Tangri N, Grams ME, Levey AS, et al. Multinational Assessment of Accuracy of Equations for
  Predicting Risk of Kidney Failure: A Meta-analysis. JAMA 2016;315(2):164-174,
  doi:10.1001/jama.2015.18202: baseline survival at 2 and 5 years for North America and the
  recalibrated values for other regions.
Both as transcribed in shared/research/twin.md section 4b, which reproduced them with the MIT
package `kfre` 0.1.18. I could not check which table of each paper prints them.

Model (Cox):
    x    = -0.2201 (age/10 - 7.036) + 0.2467 (male - 0.5642) - 0.5567 (eGFR/5 - 7.222)
           + 0.4510 (ln ACR - 5.137),      ACR in mg/g;
    risk = 1 - S0 ** exp(x).
Age has a negative coefficient: at equal kidney function an older patient is less likely to reach
kidney failure (death competes), so risk falls with age by design.

Two baseline survivals exist: North America (2 y 0.9750, 5 y 0.9240) and non-North America
(2 y 0.9832, 5 y 0.9365). The registry carries the North American models (`MODELS`); build the
other variant with `kfre(horizon_years, region="non-north-america")`.

Validity:
- population CKD G3-G5, so eGFR < 60 is required. base.Input bounds are inclusive, so "< 60" is
  written as the largest float below 60. Lower bound 10 mL/min/1.73 m2: the 2011 development and
  validation cohorts were referred CKD stage 3-5 patients with eGFR 10-59 (my reading of the 2011
  abstract; twin.md gives no lower bound).
- ACR > 0 (it enters as a logarithm), written as the smallest positive float.
- adults: age >= 18; no upper limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.twin.models.base import Array, Input, ModelSpec, Outcome

Region = Literal["north-america", "non-north-america"]
Horizon = Literal[2, 5]

AGE_PER_DECADE = -0.2201
AGE_DECADES_CENTRE = 7.036
MALE = 0.2467
MALE_CENTRE = 0.5642
EGFR_PER_5 = -0.5567
EGFR_FIFTHS_CENTRE = 7.222
LN_UACR = 0.4510
LN_UACR_CENTRE = 5.137

BASELINE_SURVIVAL: Mapping[tuple[Region, Horizon], float] = {
    ("north-america", 2): 0.9750,
    ("north-america", 5): 0.9240,
    ("non-north-america", 2): 0.9832,
    ("non-north-america", 5): 0.9365,
}

MIN_AGE = 18.0
EGFR_LOW = 10.0
EGFR_HIGH = 60.0  # eGFR < 60 (an open bound)
UACR_LOW = 0.0  # ACR > 0 (an open bound)

INPUTS: tuple[Input, ...] = (
    Input("age", "a", MIN_AGE, None),
    Input("female", "1", 0.0, 1.0, boolean=True),
    Input("egfr", "mL/min/{1.73_m2}", EGFR_LOW, EGFR_HIGH, high_open=True),
    Input("uacr", "mg/g", UACR_LOW, None, low_open=True),
)

OUTCOME = Outcome(
    text="kidney failure (dialysis or kidney transplantation)",
    code="46177005",
    display="End-stage renal disease",
)

_REGION_TEXT: Mapping[Region, str] = {
    "north-america": "North American baseline survival",
    "non-north-america": "non-North American baseline survival",
}
_CODE_SUFFIX: Mapping[Region, str] = {"north-america": "", "non-north-america": "-non-na"}


@dataclass(slots=True)
class KidneyFailureRiskEquation:
    # Not frozen: base.Model declares `spec` as a plain attribute, which a frozen field cannot satisfy.
    spec: ModelSpec
    baseline_survival: float

    def risk(self, x: Mapping[str, Array]) -> Array:
        age, female, egfr, uacr = np.broadcast_arrays(*(_column(x, item.name) for item in self.spec.inputs))
        male = 1.0 - (female == 1.0).astype(np.float64)
        linear = (
            AGE_PER_DECADE * (age / 10.0 - AGE_DECADES_CENTRE)
            + MALE * (male - MALE_CENTRE)
            + EGFR_PER_5 * (egfr / 5.0 - EGFR_FIFTHS_CENTRE)
            + LN_UACR * (np.log(uacr) - LN_UACR_CENTRE)
        )
        result: Array = 1.0 - self.baseline_survival ** np.exp(linear)
        return result


def _column(x: Mapping[str, Array], name: str) -> Array:
    if name not in x:
        raise KeyError(f"input {name} is missing")
    return np.asarray(x[name], dtype=np.float64)


def kfre(horizon_years: Horizon, region: Region = "north-america") -> KidneyFailureRiskEquation:
    """The 4-variable KFRE for one horizon and one region's baseline survival."""
    return KidneyFailureRiskEquation(
        spec=ModelSpec(
            code=f"kfre-{horizon_years}y{_CODE_SUFFIX[region]}",
            title=f"Kidney Failure Risk Equation, 4-variable, {horizon_years}-year ({_REGION_TEXT[region]})",
            version="2016.1",
            citation=(
                "Tangri N, Stevens LA, Griffith J, et al. A Predictive Model for Progression of Chronic "
                "Kidney Disease to Kidney Failure. JAMA 2011;305(15):1553-1559. Baseline survival: "
                "Tangri N, Grams ME, Levey AS, et al. JAMA 2016;315(2):164-174, doi:10.1001/jama.2015.18202."
            ),
            doi="10.1001/jama.2011.451",
            horizon_years=horizon_years,
            outcome=OUTCOME,
            inputs=INPUTS,
            population=(
                "Adults with chronic kidney disease G3-G5 (eGFR 10 to < 60 mL/min/1.73 m2) not on "
                "dialysis; urine albumin-to-creatinine ratio in mg/g."
            ),
        ),
        baseline_survival=BASELINE_SURVIVAL[(region, horizon_years)],
    )


KFRE_2Y = kfre(2)
KFRE_5Y = kfre(5)

MODELS: tuple[KidneyFailureRiskEquation, ...] = (KFRE_2Y, KFRE_5Y)
