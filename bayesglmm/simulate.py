"""Simulators of the two reference analyses (data from published estimates).

The original data are not redistributable, so the examples simulate data of
the same design from the published tables; covariate distributions are
assumptions stated in each docstring.

* :func:`doctors` — the UCLA introduction to GLMMs: patients nested in 407
  doctors (2–40 each), remission (random-intercept logistic) and tumour
  counts (random-intercept Poisson).
* :func:`pisa` — Rabe-Hesketh & Skrondal's PISA 2000 (US) example: reading
  proficiency of students in 148 schools, logistic random intercept with
  school mean SES as a contextual effect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

#: UCLA table "Mixed effects logistic for remission" (log-odds scale).
UCLA_REMISSION = {"Intercept": 1.467, "Age": -0.056, "Married": 0.26, "IL6": -0.053, "doctor_variance": 3.979}
#: UCLA table "Mixed effects Poisson for tumor count" (log scale).
UCLA_TUMORS = {"Intercept": -0.233, "Age": 0.026, "Married": -0.13, "IL6": 0.005, "doctor_variance": 0.169}
#: Rabe-Hesketh & Skrondal, Table 1 (maximum likelihood, log-odds scale).
PISA_TABLE1 = {
    "Intercept": -2.02,
    "school_ses": 1.38,
    "female": 0.56,
    "ses": 0.29,
    "highschool": 0.39,
    "college": 0.71,
    "english": 0.62,
    "school_variance": 0.27,
}


def _linear(coefs: dict[str, float], frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    return coefs["Intercept"] + sum(coefs[n] * frame[n].to_numpy(float) for n in names)


def doctors(n_doctors: int = 407, random_seed: int | None = None) -> pd.DataFrame:
    """Patients nested in doctors, with remission (0/1) and tumour counts.

    Each doctor sees 2–40 patients (uniform); Age ~ N(51, 6.3²) years,
    Married ~ Bernoulli(0.6), IL6 ~ Gamma(shape 1.7, scale 2.4) (mean 4, sd 3),
    roughly as in UCLA's ``hdp`` file.  The doctor effects of the two outcomes
    are independent N(0, variance) draws with the published variances.

    Returns columns ``DID`` (doctor id, string), ``Age``, ``Married``, ``IL6``,
    ``remission`` and ``tumors``.
    """
    rng = np.random.default_rng(random_seed)
    sizes = rng.integers(2, 41, size=n_doctors)
    did = np.repeat(np.arange(n_doctors), sizes)
    n = did.size
    frame = pd.DataFrame(
        {
            "DID": [f"d{j + 1:03d}" for j in did],
            "Age": np.round(rng.normal(51.0, 6.3, n), 1),
            "Married": rng.binomial(1, 0.6, n),
            "IL6": np.round(rng.gamma(1.7, 2.4, n), 2),
        }
    )
    covs = ["Age", "Married", "IL6"]
    u = rng.normal(0, np.sqrt(UCLA_REMISSION["doctor_variance"]), n_doctors)
    frame["remission"] = rng.binomial(1, expit(_linear(UCLA_REMISSION, frame, covs) + u[did]))
    v = rng.normal(0, np.sqrt(UCLA_TUMORS["doctor_variance"]), n_doctors)
    frame["tumors"] = rng.poisson(np.exp(_linear(UCLA_TUMORS, frame, covs) + v[did]))
    return frame


def pisa(n_schools: int = 148, students: tuple[int, int] = (5, 23), random_seed: int | None = None) -> pd.DataFrame:
    """Students in schools with reading proficiency (0/1), PISA 2000 design.

    SES is the international socio-economic index, grand-mean centred and
    divided by 20: school means ~ N(0, 0.4²), students ~ school mean +
    N(0, 0.7²); ``school_ses`` is the school's mean of the simulated student
    SES (computed from the data, as in the article).  Parents' highest
    education: less than high school 0.15, high school 0.35, college 0.5;
    female 0.5; English at home 0.9.  School sizes are uniform on
    ``students`` (about 2000 students in all, like the US sample).
    """
    rng = np.random.default_rng(random_seed)
    sizes = rng.integers(students[0], students[1] + 1, size=n_schools)
    school = np.repeat(np.arange(n_schools), sizes)
    n = school.size
    ses = rng.normal(0, 0.4, n_schools)[school] + rng.normal(0, 0.7, n)
    education = rng.choice(3, size=n, p=[0.15, 0.35, 0.5])
    frame = pd.DataFrame(
        {
            "school": [f"s{j + 1:03d}" for j in school],
            "female": rng.binomial(1, 0.5, n),
            "ses": np.round(ses, 3),
            "highschool": (education == 1).astype(int),
            "college": (education == 2).astype(int),
            "english": rng.binomial(1, 0.9, n),
        }
    )
    frame["school_ses"] = frame.groupby("school")["ses"].transform("mean")
    covs = ["school_ses", "female", "ses", "highschool", "college", "english"]
    b = rng.normal(0, np.sqrt(PISA_TABLE1["school_variance"]), n_schools)
    frame["proficient"] = rng.binomial(1, expit(_linear(PISA_TABLE1, frame, covs) + b[school]))
    return frame
