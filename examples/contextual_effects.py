"""Contextual effects: within- and between-school effects of SES (Rabe-Hesketh & Skrondal).

The article's PISA model has individual SES (0.29) and school mean SES; left out, school mean
SES would leave individual SES at 0.41, "absorbing some of the contextual effect".  This
example fits the three versions of the model to the simulated PISA data
(:func:`bayesglmm.simulate.pisa`, Table 1) with the formula helpers ``gmean`` and ``gcenter``,
which compute the school means from the fitting data (and reuse them for new data):

1. ``ses`` only: a blend of the within- and between-school effects;
2. ``gcenter(ses, school) + gmean(ses, school)``: the within and the between effect;
3. ``ses + gmean(ses, school)``: the within effect and the contextual effect (between - within).

Run ``python examples/contextual_effects.py [--draws N]``.
"""

import argparse

import pandas as pd

import bayesglmm as bg

COVARIATES = "female + highschool + college + english + (1 | school)"
MODELS = {
    "1. ses only": "proficient ~ ses + " + COVARIATES,
    "2. within + between": "proficient ~ gcenter(ses, school) + gmean(ses, school) + " + COVARIATES,
    "3. within + contextual": "proficient ~ ses + gmean(ses, school) + " + COVARIATES,
}
ROWS = ["ses", "gcenter(ses, school)", "gmean(ses, school)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    df = bg.simulate.pisa(random_seed=2000)
    table = {}
    for name, formula in MODELS.items():
        res = bg.GLMM(formula, df, family="bernoulli").fit(draws=args.draws, random_seed=1, progressbar=False)
        fixef = res.fixef()
        table[name] = {
            row: f"{fixef.loc[row, 'mean']:.2f} ({fixef.loc[row, 'sd']:.2f})" for row in ROWS if row in fixef.index
        }
    print("Effects of SES on the log odds of proficiency, posterior mean (SD):")
    print(pd.DataFrame(table).reindex(ROWS).fillna("").to_string())
    print(
        "\nModel 1's coefficient lies between the within effect (model 2, first row) and the between"
        "\neffect (model 2, school mean); model 3's school-mean coefficient is the contextual effect,"
        "\nbetween minus within.  Truth of the simulation: within 0.29 (Table 1's individual SES),"
        "\ncontextual 1.38, so between 1.67."
    )


if __name__ == "__main__":
    main()
