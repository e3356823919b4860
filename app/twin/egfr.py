"""eGFR by the race-free CKD-EPI 2021 creatinine equation.

Inker LA, Eneanya ND, Coresh J, et al. New Creatinine- and Cystatin C-Based Equations to Estimate
GFR without Race. N Engl J Med 2021;385:1737-1749, doi:10.1056/NEJMoa2102953:

    eGFR = 142 * min(Scr/k, 1)^a * max(Scr/k, 1)^-1.200 * 0.9938^age * 1.012 [if female]

with k = 0.7 (female) or 0.9 (male), a = -0.241 (female) or -0.302 (male), Scr in mg/dL
(umol/L / 88.4, the factor the NKF calculator uses), age in years. Result in mL/min/{1.73_m2},
the quantity LOINC 98979-8 reports. The NKF calculator gives 80 for 1.09 mg/dL, 55, male and 66
for 85 umol/L, 65, female (shared/research/twin.md 4a); tests/unit/test_twin_mapping.py checks both.
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
UMOL_L_PER_MG_DL = 88.4


@overload
def ckd_epi_2021(scr_mg_dl: float, age: float, female: float | bool) -> float: ...
@overload
def ckd_epi_2021(scr_mg_dl: Array, age: Array | float, female: Array | float | bool) -> Array: ...


def ckd_epi_2021(scr_mg_dl: float | Array, age: float | Array, female: float | bool | Array) -> float | Array:
    """eGFR (mL/min/1.73 m2) from serum creatinine (mg/dL), age (years) and sex (1 female, 0 male).

    Broadcasts over numpy arrays; a creatinine that is not positive gives NaN.
    """
    scr = np.asarray(scr_mg_dl, dtype=np.float64)
    years = np.asarray(age, dtype=np.float64)
    is_female = np.asarray(female, dtype=np.float64) == 1.0
    kappa = np.where(is_female, 0.7, 0.9)
    alpha = np.where(is_female, -0.241, -0.302)
    ratio = np.where(scr > 0, scr, np.nan) / kappa
    out = (142.0 * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200 * 0.9938**years
           * np.where(is_female, 1.012, 1.0))
    if out.ndim == 0:
        return float(out)
    return np.asarray(out, dtype=np.float64)
