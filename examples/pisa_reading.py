"""Rabe-Hesketh & Skrondal's PISA 2000 example: reading proficiency of students in schools.

Simulates 148 schools from the article's Table 1 (:mod:`bayesglmm.simulate`) and fits the
logistic random-intercept model with school mean SES as a contextual effect:

    proficient ~ school_ses + female + ses + highschool + college + english + (1 | school)

Prints Table 1 with odds ratios, the contextual effect (between- minus within-school SES
effect), the latent-response ICC (truth 0.27 / (0.27 + pi^2/3) = 0.076), empirical-Bayes
predictions of the school effects, and draws Figure 1: conditional and population-averaged
probabilities against school mean SES, for students who do and do not speak English at home.

Run ``python examples/pisa_reading.py [--draws N]``; figures go to ``examples/figures/``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bayesglmm as bg

OUT = Path(__file__).parent / "figures"
FORMULA = "proficient ~ school_ses + female + ses + highschool + college + english + (1 | school)"


def figure1(res: bg.GLMMResults) -> plt.Figure:
    """Boys of mean SES whose parents' highest education is high school (the article's Figure 1)."""
    df = res.model.design.data
    grid_ses = np.linspace(df["school_ses"].min(), df["school_ses"].max(), 40)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for english, style in ((1, "--"), (0, "-")):
        grid = pd.DataFrame({"school_ses": grid_ses, "female": 0, "ses": 0.0, "highschool": 1, "college": 0})
        grid["english"] = english
        cond = res.predict(grid, re_formula="~0")["mean"]
        marg = res.predict(grid, marginal=True)["mean"]
        label = "English at home" if english else "other language"
        ax.plot(grid_ses, cond, style, color="C0", label=f"conditional (school effect 0), {label}")
        ax.plot(grid_ses, marg, style, color="C1", label=f"population-averaged, {label}")
    ax.set_xlabel("school mean SES")
    ax.set_ylabel("probability of reading proficiency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(draws: int) -> None:
    OUT.mkdir(exist_ok=True)
    pd.set_option("display.width", 160)
    df = bg.simulate.pisa(random_seed=2000)
    print(f"{len(df)} students in {df['school'].nunique()} schools\n")
    res = bg.GLMM(FORMULA, df, family="bernoulli").fit(draws=draws, tune=draws, random_seed=1, progressbar=False)
    cols = ["mean", "sd", "exp_mean", "exp_hdi_low", "exp_hdi_high", "r_hat"]
    print("Table 1 (truth: -2.02, 1.38, .56, .29, .39, .71, .62; school variance .27)")
    print(res.summary()[cols].round(3).to_string())
    print("school variance:", round(float((res.draws("sd_school") ** 2).mean()), 3))

    fixef = res.draws("fixef")
    labels = list(res.model.design.fixed.labels)
    between = fixef[..., labels.index("school_ses")] + fixef[..., labels.index("ses")]
    within = fixef[..., labels.index("ses")]
    print(
        f"\nContextual effect of school mean SES: {fixef[..., labels.index('school_ses')].mean():.2f} "
        f"(between-school SES effect {between.mean():.2f} vs within-school {within.mean():.2f})"
    )
    print("\nICC of the latent response (truth 0.076):")
    print(res.icc().round(3).to_string(index=False))
    eng_c = res.comparisons("english", values=(0, 1), re_formula="~0", scale="link")["exp_mean"].iloc[0]
    eng_m = res.comparisons("english", values=(0, 1), marginal=True, scale="link")["exp_mean"].iloc[0]
    print(f"\nEnglish at home: school-specific OR {eng_c:.2f}, population-averaged OR {eng_m:.2f}")
    eb = res.ranef().sort_values("mean")
    print("\nSchools with the lowest and highest predicted effects (posterior means, 94% HDI):")
    print(pd.concat([eb.head(3), eb.tail(3)]).round(3).to_string(index=False))
    figure1(res).savefig(OUT / "pisa_figure1.png", dpi=100)
    bg.plots.caterpillar(res).savefig(OUT / "pisa_school_effects.png", dpi=100)
    print(f"\nfigures written to {OUT}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    main(parser.parse_args().draws)
