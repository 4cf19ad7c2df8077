"""Divergences at NUTS ``target_accept`` 0.8 against the partial-centring weights.

``fit`` samples at 0.8 (Stan's and PyMC's default) when every random effect is at
least half centred (``fit.CENTRED_ENOUGH``), and at 0.95 otherwise.  This study
puts that line to the test on simulated random-intercept models
``y ~ x + (1 | g)``: binomial (10 trials), bernoulli and poisson responses,
10, 20 or 40 levels, 5, 20 or 50 rows per level, random-intercept SD 0.3 or 1.
Each data set is fitted (4 chains x 1000 draws after 1000 tuning steps; by default
with the nutpie-c sampler, ``--sampler pymc`` for PyMC's NUTS, as in session 13)
at 0.8 and at 0.95 and the script records the smallest and median
centring weight, divergences, min bulk ESS and max R-hat over the fixed effects and
the SD, and leapfrog steps per draw.  It prints, per band of the smallest weight,
how many fits diverged at each setting, and writes every fit to
``bench/results/target_accept_<sampler>.csv``.

Run: ``python bench/target_accept.py`` (about 12 minutes on 2 cores; ``--seeds 1 2``
for more replications).
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

import bayesglmm as bg

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"binomial": -1.5, "bernoulli": -0.5, "poisson": 0.5}
BANDS = [-0.001, 0.0, 0.25, 0.5, 0.8, 1.0]


def simulate(family: str, levels: int, rows: int, sd: float, seed: int) -> tuple[pd.DataFrame, str]:
    """One data set and its formula; the seed is a pure function of the design and ``seed``."""
    key = [list(FAMILIES).index(family), levels, rows, int(sd * 10), seed]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    g = np.repeat(np.arange(levels), rows)
    x = rng.normal(size=g.size)
    eta = FAMILIES[family] + 0.5 * x + rng.normal(0.0, sd, levels)[g]
    frame = pd.DataFrame({"g": [f"g{j}" for j in g], "x": x})
    if family == "poisson":
        frame["y"] = rng.poisson(np.exp(eta))
        return frame, "y ~ x + (1 | g)"
    if family == "bernoulli":
        frame["y"] = rng.binomial(1, expit(eta))
        return frame, "y ~ x + (1 | g)"
    frame["k"], frame["m"] = rng.binomial(10, expit(eta)), 10
    return frame, "p(k, m) ~ x + (1 | g)"


def one(family: str, levels: int, rows: int, sd: float, seed: int, target_accept: float, sampler: str) -> dict:
    """Fit one simulated data set at ``target_accept`` and return its weights and diagnostics."""
    frame, formula = simulate(family, levels, rows, sd, seed)
    model = bg.GLMM(formula, frame, family=family)
    weights = model.centring().get("g", np.zeros(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(random_seed=seed, progressbar=False, sampler=sampler, target_accept=target_accept)
    summary = res.summary()
    return {
        "family": family,
        "levels": levels,
        "rows": rows,
        "sd": sd,
        "seed": seed,
        "target_accept": target_accept,
        "min_weight": float(np.min(weights)),
        "median_weight": float(np.median(weights)),
        "divergences": int(res.diagnostics["divergences"]),
        "min_ess": float(summary["ess_bulk"].min()),
        "max_rhat": float(summary["r_hat"].max()),
        "steps": float(res.idata.sample_stats["n_steps"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--sampler", default="nutpie-c", choices=["nutpie-c", "nutpie", "pymc"])
    args = parser.parse_args()
    rows = []
    grid = itertools.product(FAMILIES, [10, 20, 40], [5, 20, 50], [0.3, 1.0], args.seeds, [0.8, 0.95])
    for design in grid:
        rows.append(one(*design, args.sampler))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    table.to_csv(ROOT / "bench" / "results" / f"target_accept_{args.sampler}.csv", index=False)
    table["band"] = pd.cut(table["min_weight"], BANDS)
    table["diverged"] = table["divergences"] > 0
    out = table.groupby(["band", "target_accept"], observed=True).agg(
        fits=("diverged", "size"),
        diverged=("diverged", "sum"),
        divergences=("divergences", "sum"),
        median_ess=("min_ess", "median"),
        steps=("steps", "mean"),
    )
    print(out.round(1).to_string())


if __name__ == "__main__":
    main()
