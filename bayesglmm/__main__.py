"""Main job: fit the Contraception model and print its tables.

Run ``python -m bayesglmm``.  The model is the one lme4 and rstanarm are
compared on in ``references.json``: contraceptive use of 1934 women in 60
districts of Bangladesh, with the raw (centred, unscaled) ``age**2`` and a
correlated random intercept and urban slope per district.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from . import GLMM, datasets
from .fit import SAMPLERS


def main(argv: list[str] | None = None) -> None:
    """Fit the Contraception model and print summary and variance components."""
    parser = argparse.ArgumentParser(prog="python -m bayesglmm", description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sampler", default="auto", choices=SAMPLERS)
    args = parser.parse_args(argv)

    df = datasets.load("contraception")
    formula = "use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)"
    start = time.perf_counter()
    model = GLMM(formula, df, family="bernoulli")
    res = model.fit(draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed, sampler=args.sampler)
    elapsed = time.perf_counter() - start
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print(res)
        print("\nVariance components (district):")
        print(res.varcorr())
    print(f"\nwall time {elapsed:.1f} s (build + compile + sampling)")


if __name__ == "__main__":
    main()
