"""UCLA's introduction to GLMMs: patients nested in 407 doctors.

Simulates patients from the published tables (:mod:`bayesglmm.simulate`), then fits

* remission ~ Age + Married + IL6 + (1 | DID), logistic: odds ratios, the doctor ICC,
  predicted-probability histograms with the doctor effect held at its 20/40/60/80th
  percentiles, and population-averaged vs conditional odds ratios;
* tumors ~ Age + Married + IL6 + (1 | DID), Poisson: rate ratios and the same histograms
  of expected counts.

Run ``python examples/ucla_doctors.py [--draws N]``; figures go to ``examples/figures/``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd

import bayesglmm as bg

OUT = Path(__file__).parent / "figures"
COLUMNS = ["mean", "hdi_low", "hdi_high", "exp_mean", "exp_hdi_low", "exp_hdi_high", "r_hat"]


def main(draws: int) -> None:
    OUT.mkdir(exist_ok=True)
    pd.set_option("display.width", 160)
    df = bg.simulate.doctors(random_seed=2024)
    print(f"{len(df)} patients in {df['DID'].nunique()} doctors (2-40 each)\n")
    fit = {"draws": draws, "tune": draws, "random_seed": 1, "progressbar": False}

    remission = bg.GLMM("remission ~ Age + Married + IL6 + (1 | DID)", df, family="bernoulli").fit(**fit)
    print("Mixed effects logistic for remission (truth: 1.467, -.056, .26, -.053; doctor variance 3.979)")
    print(remission.summary()[COLUMNS].round(3).to_string())
    print("doctor variance:", round(float((remission.draws("sd_DID") ** 2).mean()), 3))
    print("\nICC (latent scale, pi^2/3 residual):")
    print(remission.icc().round(3).to_string(index=False))
    print("\nConditional (same doctor) vs population-averaged odds ratios:")
    for var in ("Married", "IL6"):
        cond = remission.comparisons(var, values=(0, 1) if var == "Married" else None, re_formula="~0", scale="link")
        marg = remission.comparisons(var, values=(0, 1) if var == "Married" else None, marginal=True, scale="link")
        c, m = cond["exp_mean"].iloc[0], marg["exp_mean"].iloc[0]
        print(f"  {var:8s} conditional OR {c:.3f}   population-averaged OR {m:.3f}")
    bg.plots.quantile_histograms(remission).savefig(OUT / "ucla_remission_percentiles.png", dpi=100)
    bg.plots.caterpillar(remission).savefig(OUT / "ucla_doctor_effects.png", dpi=100)
    bg.plots.z_pattern(remission, max_rows=400).savefig(OUT / "ucla_z_pattern.png", dpi=100)
    bg.plots.forest(remission, exp=True).savefig(OUT / "ucla_remission_forest.png", dpi=100)

    tumors = bg.GLMM("tumors ~ Age + Married + IL6 + (1 | DID)", df, family="poisson").fit(**fit)
    print("\nMixed effects Poisson for tumor count (truth: -.233, .026, -.13, .005; doctor variance .169)")
    print(tumors.summary()[COLUMNS].round(3).to_string())
    print("doctor variance:", round(float((tumors.draws("sd_DID") ** 2).mean()), 3))
    print("\nICC (latent scale, log-normal approximation):")
    print(tumors.icc().round(3).to_string(index=False))
    bg.plots.quantile_histograms(tumors).savefig(OUT / "ucla_tumors_percentiles.png", dpi=100)
    print(f"\nfigures written to {OUT}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    main(parser.parse_args().draws)
