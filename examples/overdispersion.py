"""Overdispersed counts, two ways: negative binomial vs an observation-level random effect.

grouseticks (lme4): ticks on red grouse chicks, chicks in broods in locations.  Counts vary
more than a Poisson allows.  Two standard remedies, side by side:

* ``family="negativebinomial"``: a gamma-distributed multiplicative error per observation,
  variance mu + mu²/alpha;
* ``family="poisson"`` with ``(1 | INDEX)``, one level per observation: a log-normal error
  per observation (lme4's and rstanarm's reference model for these data).

Both are fitted with the same fixed effects and random intercepts for brood and location,
and compared by PSIS-LOO (with its caveat for observation-level effects).  Run ``python examples/overdispersion.py``.
"""

import warnings
from pathlib import Path

import pandas as pd

import bayesglmm as bg

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "grouseticks.csv"  # beside the repository
REST = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)"


def main() -> None:
    df = pd.read_csv(DATA).astype({c: str for c in ("YEAR", "BROOD", "INDEX", "LOCATION")})
    fits = {
        "negative binomial": bg.GLMM(REST, df, family="negativebinomial"),
        "poisson + (1 | INDEX)": bg.GLMM(REST + " + (1 | INDEX)", df, family="poisson"),
    }
    results = {}
    for name, model in fits.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bg.ConvergenceWarning)
            results[name] = model.fit(random_seed=1, progressbar=False)
        print(f"\n{name}:\n", results[name].summary()[["mean", "sd", "hdi_low", "hdi_high", "r_hat"]].round(3))
        print(results[name].icc().round(3).to_string(index=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        print("\n", bg.compare(results)[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse"]].round(1))
        for name, res in results.items():
            k = res.loo().pareto_k.values
            print(f"{name}: {int((k > 0.7).sum())} of {k.size} observations with Pareto k > 0.7")
    print(
        "\nWith one random effect per observation, leaving an observation out also removes all the"
        "\ninformation about its own effect: PSIS-LOO is then unreliable (high Pareto k), and its"
        "\npreference for the observation-level model is not to be trusted.  Judge the two by K-fold"
        "\ncross-validation (res.kfold(k=10)) or by leaving out whole broods (res.loo(group='BROOD'))."
    )


if __name__ == "__main__":
    main()
