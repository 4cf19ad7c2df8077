"""Simulation-based calibration (Talts et al. 2018) of four bayesglmm models.

For each model, data are drawn ``reps`` times from the prior predictive
distribution of a fixed design (explicit priors, so that nothing depends on
the simulated response), and each data set is fitted with NUTS (nutpie,
compiled once, the response container swapped per replication).  The model
sampled is the one ``GLMM.fit`` samples: gaussian random effects integrated
out, otherwise the sampling model with its partial centring and nested pairs
(:mod:`bayesglmm.parameterization`).  ``fit`` takes the centring weights from
the data; here they come from the first replication's data and serve every
replication, which is exact (any fixed weights give the same posterior) and
makes SBC check the reparameterisations themselves.  Rows are not collapsed.
The rank of every true parameter among L = 99 thinned posterior draws is
recorded.  If the fits are calibrated the ranks are uniform on 0..99; the
script writes rank histograms (10 bins) to ``docs/figures/sbc_<model>.png`` and
the raw ranks to ``bench/results/sbc_<model>.csv``, and prints a chi-square
uniformity test per parameter (copied into ``docs/sbc.md``).

Run: ``python bench/sbc.py --reps 1000`` (about 25 minutes for the four models on 2 cores:
0.14-0.49 s per replication).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import nutpie
import pandas as pd
from scipy import stats

import bayesglmm as bg
from bayesglmm.stats import convergence

ROOT = Path(__file__).resolve().parents[1]
L = 99  # posterior draws per rank (thinned): ranks lie in 0..L
BINS = 10


def _design(n_groups: int, per_group: int, seed: int, children: int = 1) -> pd.DataFrame:
    """``n_groups`` groups ``g`` of ``per_group`` rows, each split into ``children`` units ``u``."""
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{j:02d}" for j in range(n_groups)], per_group)
    u = np.tile(np.arange(per_group) % children, n_groups)
    return pd.DataFrame({"x": rng.normal(size=g.size), "g": g, "u": [f"u{k}" for k in u]})


MODELS = {
    "logistic_intercept": {
        "formula": "y ~ x + (1 | g)",
        "family": "bernoulli",
        "design": (20, 8),
        "priors": {"Intercept": bg.normal(0, 1), "b": bg.normal(0, 1), "sd": bg.exponential(1)},
        "placeholder": lambda n: np.arange(n) % 2,
    },
    "gaussian_correlated_slope": {
        "formula": "y ~ x + (1 + x | g)",
        "family": "gaussian",
        "design": (12, 6),
        "priors": {
            "Intercept": bg.normal(0, 1),
            "b": bg.normal(0, 1),
            "sd": bg.exponential(2),
            "cor": bg.lkj(2),
            "sigma": bg.exponential(2),
        },
        "placeholder": lambda n: np.linspace(-1, 1, n),
    },
    "poisson_intercept": {
        "formula": "y ~ x + (1 | g)",
        "family": "poisson",
        "design": (15, 6),
        "priors": {"Intercept": bg.normal(1, 0.5), "b": bg.normal(0, 0.5), "sd": bg.exponential(2)},
        "placeholder": lambda n: np.arange(n) % 3,
    },
    "poisson_nested": {
        "formula": "y ~ x + (1 | g/u)",
        "family": "poisson",
        "design": (16, 6, 2),
        "priors": {"Intercept": bg.normal(1, 0.5), "b": bg.normal(0, 0.5), "sd": bg.exponential(2)},
        "placeholder": lambda n: np.arange(n) % 3,
    },
}


def _scalars(posterior, model) -> dict[str, np.ndarray]:
    """Scalar parameters (chain, draw) keyed by readable name, from a posterior Dataset."""
    out = {}
    design = model.design
    fixef = posterior["fixef"]
    for label in design.fixed.labels:
        out[f"b:{label}"] = fixef.sel(fixef__term=label).values
    for block in design.blocks:
        sd = posterior[f"sd_{block.name}"].values
        for t, term in enumerate(block.terms):
            out[f"sd:{block.group}:{term}"] = sd[..., t]
        if block.correlated:
            out[f"cor:{block.group}"] = posterior[f"cor_{block.name}"].values[..., 0, 1]
    if "sigma" in posterior:
        out["sigma"] = posterior["sigma"].values
    return out


def run_model(name: str, spec: dict, reps: int, seed: int) -> pd.DataFrame:
    frame = _design(*spec["design"], seed)
    frame["y"] = spec["placeholder"](len(frame))
    template = bg.GLMM(spec["formula"], frame, family=spec["family"], priors=spec["priors"])
    prior = template.sample_prior_predictive(draws=reps, random_seed=seed)
    y = prior.prior_predictive["y"].values[0]
    first = bg.GLMM(spec["formula"], frame.assign(y=y[0]), family=spec["family"], priors=spec["priors"])
    if first._use_marginal("auto"):
        target = first.marginal_model()
    else:
        target = first.sampling_model(reduce=False)
        weights = {k: f"{np.min(w):.2f}-{np.max(w):.2f}" for k, w in first.centring().items()}
        pairs = [f"{p.parent}>{p.child}" for p in first.nested_pairs()]
        print(f"{name}: centring weights {weights or 'none'}, nested pairs {pairs or 'none'}", flush=True)
    keep = [v.name for v in target.free_RVs]
    keep += [v.name for v in target.deterministics if v.name.startswith(("fixef", "sd_", "cor_"))]
    compiled = nutpie.compile_pymc_model(target, var_names=keep)
    rows, t0 = [], time.perf_counter()
    for r in range(reps):
        start = time.perf_counter()
        trace = nutpie.sample(
            compiled.with_data(_y=y[r].astype(float)),
            draws=500,
            tune=500,
            chains=2,
            seed=seed + r,
            target_accept=0.95,
            progress_bar=False,
        )
        truth = _scalars(prior.prior.isel(chain=[0], draw=[r]), template)
        post = _scalars(trace.posterior, template)
        rhat = convergence(np.stack(list(post.values()), axis=-1))["r_hat"]
        row = {"rep": r, "seconds": time.perf_counter() - start}
        row.update({"max_rhat": float(np.max(rhat)), "divergences": int(trace.sample_stats["diverging"].sum())})
        for key, draws in post.items():
            flat = draws.reshape(-1)
            thinned = flat[np.linspace(0, flat.size - 1, L).astype(int)]
            row[key] = int(np.sum(thinned < truth[key].reshape(-1)[0]))
        rows.append(row)
        if (r + 1) % 20 == 0:
            print(f"{name}: {r + 1}/{reps} replications, {time.perf_counter() - t0:.0f}s", flush=True)
    return pd.DataFrame(rows)


def uniformity(ranks: pd.DataFrame) -> pd.DataFrame:
    """Chi-square test of uniform ranks in BINS equal bins, per parameter."""
    params = [c for c in ranks.columns if ":" in c or c == "sigma"]
    out = []
    for p in params:
        counts = np.histogram(ranks[p], bins=BINS, range=(0, L + 1))[0]
        chi2, pval = stats.chisquare(counts)
        out.append({"parameter": p, "chi2": chi2, "df": BINS - 1, "p_value": pval})
    return pd.DataFrame(out)


def plot(ranks: pd.DataFrame, name: str, path: Path) -> None:
    params = [c for c in ranks.columns if ":" in c or c == "sigma"]
    fig, axes = plt.subplots(1, len(params), figsize=(2.6 * len(params), 2.4), squeeze=False)
    expected = len(ranks) / BINS
    lo, hi = stats.binom.ppf([0.005, 0.995], len(ranks), 1 / BINS)
    for ax, p in zip(axes[0], params):
        ax.axhspan(lo, hi, color="0.85")
        ax.axhline(expected, color="0.5", lw=0.8)
        ax.hist(ranks[p], bins=BINS, range=(0, L + 1), color="C0", edgecolor="white")
        ax.set_title(p, fontsize=8)
        ax.set_yticks([])
    fig.suptitle(f"SBC ranks: {name} ({len(ranks)} replications; band: 99% binomial)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "figures").mkdir(parents=True, exist_ok=True)
    for name in args.models:
        ranks = run_model(name, MODELS[name], args.reps, args.seed)
        ranks.to_csv(ROOT / "bench" / "results" / f"sbc_{name}.csv", index=False)
        plot(ranks, name, ROOT / "docs" / "figures" / f"sbc_{name}.png")
        print(uniformity(ranks).to_string(index=False))


if __name__ == "__main__":
    main()
