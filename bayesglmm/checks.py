"""Posterior predictive checks and Bayes R².

* :func:`ppc` — replicated data sets ``y_rep`` drawn from the fitted graph (one
  per posterior draw), stored in ``res.idata.posterior_predictive`` next to
  ``observed_data`` so every ArviZ check works on them.
* :func:`grouped_ppc` — a statistic per level of a grouping factor (the
  proportion of 1s per doctor, the mean count per location, ...) for the
  observed data against its replicated distribution, with a posterior
  predictive p-value per level.
* :func:`bayes_r2` — Bayesian R² (Gelman, Goodrich, Gabry & Vehtari 2019):
  per draw, ``var(mu) / (var(mu) + mean residual variance)``; the residual
  variance is the family's (σ², μ(1−μ)/trials, μ) or, with
  ``method="residual"``, the variance of ``y − mu`` (as brms computes it).
  ``re_formula="~0"`` gives the share explained by the fixed effects alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from . import stats
from .errors import ArgumentError
from .predict import predict_draws

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults

STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda y: np.mean(y, axis=-1),
    "sd": lambda y: np.std(y, axis=-1),
    "min": lambda y: np.min(y, axis=-1),
    "max": lambda y: np.max(y, axis=-1),
    "zeros": lambda y: np.mean(y == 0, axis=-1),
}


def ppc(res: GLMMResults, random_seed: int | None = None) -> xr.Dataset:
    """Draw one replicated data set per posterior draw into ``res.idata``.

    Returns the ``posterior_predictive`` group (variable ``y``, dims
    ``chain, draw, obs``); ``observed_data`` holds the fitted response.
    """
    y_rep = predict_draws(res, kind="response", random_seed=random_seed)
    predicted = xr.Dataset({"y": (("chain", "draw", "obs"), y_rep)})
    observed = xr.Dataset({"y": ("obs", res.model.family.decode(res.model.design.y))})
    for name, group in (("posterior_predictive", predicted), ("observed_data", observed)):
        if name in res.idata.groups():
            del res.idata[name]
        res.idata.add_groups({name: group})
    return res.idata.posterior_predictive


def _replicates(res: GLMMResults, random_seed: int | None) -> np.ndarray:
    """Stored replicated data (chain, draw, row), drawn first if absent."""
    if "posterior_predictive" not in res.idata.groups():
        ppc(res, random_seed)
    return np.asarray(res.idata.posterior_predictive["y"].values)


def _statistic(stat: str | Callable, family) -> Callable[[np.ndarray], np.ndarray]:
    if callable(stat):
        return stat
    if family.categories and stat in family.categories:  # share of rows in that category
        value = family.values[family.categories.index(stat)]
        return lambda a: np.mean(a == value, axis=-1)
    if family.name == "categorical":
        raise ArgumentError(
            f"stat {stat!r} of unordered category codes means nothing; pass a category, one of "
            f"{list(family.categories)} (the share of rows in it), or a callable"
        )
    if stat not in STATISTICS:
        raise ArgumentError(f"stat must be a callable or one of {sorted(STATISTICS)}, got {stat!r}")
    return STATISTICS[stat]


def grouped_ppc(
    res: GLMMResults,
    group: str,
    stat: str | Callable = "mean",
    prob: float = 0.94,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """A statistic per level of ``group``: observed against replicated data.

    Parameters
    ----------
    group : str
        A grouping factor of the model.
    stat : {"mean", "sd", "min", "max", "zeros"} or callable
        Computed on the rows of each level; a callable must reduce the last
        axis (like ``np.mean``).  For a binomial response ``"mean"`` is the
        proportion of successes, ``sum(y) / sum(trials)``.  For ordinal and
        categorical responses a category gives the share of rows in it
        (categorical responses need one: the mean of unordered codes means nothing).
    prob : float
        Probability of the interval of the replicated statistic.

    Returns
    -------
    DataFrame with ``level, n, observed, mean, hdi_low, hdi_high, p_value``
    where ``p_value`` is P(T(y_rep) ≥ T(y)); values near 0 or 1 flag levels
    the model does not reproduce.
    """
    prob = stats.check_prob(prob)
    design = res.model.design
    blocks = [b for b in design.blocks if b.group == group]
    if not blocks:
        raise ArgumentError(f"group {group!r} is not a grouping factor; they are {list(design.groups)}")
    block, fn = blocks[0], _statistic(stat, res.model.family)
    y_rep, y = _replicates(res, random_seed), res.model.family.decode(design.y)
    proportion = stat == "mean" and design.trials is not None
    rows = []
    idx = np.asarray(block.idx)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(len(block.levels) + 1))
    for j, level in enumerate(block.levels):
        at = order[bounds[j] : bounds[j + 1]]
        if proportion:
            n_trials = design.trials[at].sum()
            obs, rep = y[at].sum() / n_trials, y_rep[..., at].sum(axis=-1) / n_trials
        else:
            obs, rep = float(fn(y[at])), fn(y_rep[..., at])
        low, high = stats.hdi(rep, prob)
        rows.append((level, at.size, obs, rep.mean(), low, high, float(np.mean(rep >= obs))))
    return pd.DataFrame(rows, columns=["level", "n", "observed", "mean", "hdi_low", "hdi_high", "p_value"])


def bayes_r2_draws(res: GLMMResults, re_formula: str | None = None, method: str = "model") -> np.ndarray:
    """Bayes R² per posterior draw, shape (chain, draw)."""
    if method not in ("model", "residual"):
        raise ArgumentError(f"method must be 'model' or 'residual', got {method!r}")
    design, family = res.model.design, res.model.family
    if family.categories:
        raise ArgumentError(f"Bayes R² needs one mean per row; family {family.name!r} has one per category")
    mu = predict_draws(res, kind="mean", re_formula=re_formula)
    if design.n < 2:
        raise ArgumentError("Bayes R² needs at least two rows")
    fitted = mu.var(axis=-1, ddof=1)
    if method == "model":
        params = {name: res.draws(name) for name in family.aux}
        residual = family.variance(mu, params, design.trials).mean(axis=-1)
    else:
        y = design.y if design.trials is None else design.y / design.trials
        residual = (y - mu).var(axis=-1, ddof=1)
    return fitted / (fitted + residual)


def bayes_r2(
    res: GLMMResults, re_formula: str | None = None, method: str = "model", prob: float = 0.94
) -> pd.DataFrame:
    """Bayesian R² (Gelman et al. 2019): one row, ``mean, sd, hdi_low, hdi_high``.

    ``re_formula=None`` includes every random effect (conditional R²);
    ``"~0"`` the fixed effects only (marginal R²).
    """
    prob = stats.check_prob(prob)
    s = stats.summarize(bayes_r2_draws(res, re_formula, method)[..., None], prob, diagnostics=False)
    return pd.DataFrame({k: s[k] for k in ("mean", "sd", "hdi_low", "hdi_high")}, index=["R2"])


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def prior_predictive(model, draws: int = 1000, random_seed: int | None = None) -> pd.DataFrame:
    """What the priors imply, in the quantities users think in.

    Rows: the mean response over the data; per grouping factor the ICC on the
    latent scale and the SD, between its levels, of the level-mean response
    (response scale: probability, count, ...).  Columns: the prior's mean and
    its 5, 25, 50, 75 and 95 % quantiles.  A prior whose ICC piles up at 0 or
    1, or whose between-group spread of probabilities is near 0.5, says more
    than it was meant to.
    """
    from .effects import icc_draws
    from .results import GLMMResults

    idata = model.sample_prior_predictive(draws=draws, random_seed=random_seed)
    prior = GLMMResults(model, type(idata)(posterior=idata.prior), check=False)
    mu = np.asarray(idata.prior["mu"].values)
    # one mean per category (ordinal, categorical): (chain, draw, row, category)
    means = {"": mu} if mu.ndim == 3 else {f" [{c}]": mu[..., k] for k, c in enumerate(model.family.categories)}
    rows = {f"mean response{suffix}": m.mean(axis=-1) for suffix, m in means.items()}
    design = model.design
    for p in range(design.n_predictors if design.blocks else 0):
        shares = icc_draws(prior, predictor=p)
        suffix = f" [{design.predictors[p]}]" if design.predictors else ""
        for group, share in shares.items():
            rows[f"ICC ({group}){suffix}"] = share
    for block in design.blocks:
        J = len(block.levels)
        for suffix, m in means.items():
            level_means = stats.group_sums(m, block.idx, J) / np.bincount(block.idx, minlength=J)
            rows[f"between-{block.group} SD of the mean response{suffix}"] = level_means.std(axis=-1)
    table = {name: [v.mean(), *np.quantile(v, QUANTILES)] for name, v in rows.items()}
    return pd.DataFrame.from_dict(table, orient="index", columns=["mean", "q05", "q25", "q50", "q75", "q95"])
