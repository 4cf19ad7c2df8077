"""Posterior plots (matplotlib).  Every function returns the Figure and accepts ``ax=``.

* :func:`forest` — fixed effects with intervals (link or exponentiated scale);
* :func:`caterpillar` — random effects of every level, sorted, with intervals;
* :func:`curves` — conditional (typical group) vs population-averaged mean
  response over a covariate (the seed article's Figures 1 and 3);
* :func:`quantile_histograms` — predicted probabilities over the data with the
  group effect held at quantiles of its distribution (the UCLA figures);
* :func:`z_pattern` — the sparsity pattern of the random-effects design Z;
* :func:`trace`, :func:`rank` — ArviZ trace and rank plots of the parameters;
* :func:`ppc` — ArviZ posterior predictive check of the response;
* :func:`grouped_ppc` — a statistic per group, observed against replicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import stats
from .errors import ArgumentError
from .predict import predict_draws

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults


def _axes(ax=None, **fig_kw):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(**fig_kw)
        return fig, ax
    return ax.figure, ax


def forest(res: GLMMResults, exp: bool = False, intercept: bool = False, prob: float = 0.94, ax=None):
    """Fixed effects: posterior mean and HDI per coefficient.

    ``exp=True`` shows odds or rate ratios (log and logit links).
    """
    table = res.fixef(prob)
    if not intercept:
        table = table.drop(index="Intercept", errors="ignore")
    if exp and res.model.link.ratio_name is None:
        raise ArgumentError(f"exp=True needs a log or logit link, not {res.model.link.name!r}")
    cols = ["exp_mean", "exp_hdi_low", "exp_hdi_high"] if exp else ["mean", "hdi_low", "hdi_high"]
    mean, low, high = (table[c].to_numpy() for c in cols)
    fig, ax = _axes(ax, figsize=(6, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    ax.errorbar(mean, y, xerr=[mean - low, high - mean], fmt="o", color="C0", capsize=3)
    ax.axvline(1.0 if exp else 0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, table.index)
    ax.set_xlabel((res.model.link.ratio_name or "ratio") if exp else f"coefficient ({res.model.link.name} scale)")
    ax.set_title(f"Fixed effects ({int(prob * 100)}% HDI)")
    if exp:
        ax.set_xscale("log")
    fig.tight_layout()
    return fig


def caterpillar(res: GLMMResults, group: str | None = None, term: str = "Intercept", prob: float = 0.94, ax=None):
    """Random effects of every level of ``group`` for ``term``, sorted, with HDIs."""
    table = res.ranef(prob)
    groups = list(dict.fromkeys(table["group"]))
    group = groups[0] if group is None else group
    if group not in groups:
        raise ArgumentError(f"group {group!r} is not a grouping factor; they are {groups}")
    sub = table[(table["group"] == group) & (table["term"] == term)]
    if sub.empty:
        raise ArgumentError(f"term {term!r} does not vary over {group!r}")
    sub = sub.sort_values("mean")
    fig, ax = _axes(ax, figsize=(7, 4))
    x = np.arange(len(sub))
    ax.vlines(x, sub["hdi_low"], sub["hdi_high"], color="C0", lw=1, alpha=0.6)
    ax.plot(x, sub["mean"], "o", ms=3, color="C0")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{group} (ranked)")
    ax.set_ylabel(f"random effect: {term}")
    ax.set_title(f"{len(sub)} levels of {group}, {int(prob * 100)}% HDI")
    if len(sub) <= 40:
        ax.set_xticks(x, sub["level"], rotation=90, fontsize=7)
    fig.tight_layout()
    return fig


def typical_row(res: GLMMResults, at: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row of covariates: numeric columns at their mean, others at their most frequent value."""
    data = res.model.design.data
    row = {}
    for col in data.columns:
        s = data[col]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        row[col] = s.mean() if numeric else s.mode().iloc[0]
    row.update(at or {})
    return pd.DataFrame([row])


def curves(
    res: GLMMResults,
    variable: str,
    values: Sequence[float] | None = None,
    at: Mapping[str, Any] | None = None,
    prob: float = 0.94,
    ax=None,
):
    """Conditional (random effects at zero) and population-averaged mean response over ``variable``.

    Other covariates are held at ``at`` (default: mean or most frequent value).
    """
    data = res.model.design.data
    if variable not in data.columns:
        raise ArgumentError(f"variable {variable!r} is not a column the model was fitted with")
    if values is None:
        values = np.linspace(data[variable].min(), data[variable].max(), 40)
    grid = typical_row(res, at).loc[np.zeros(len(values), dtype=int)].reset_index(drop=True)
    grid[variable] = np.asarray(values)
    fig, ax = _axes(ax, figsize=(6, 4))
    for label, kw, color in (("conditional (typical group)", {"re_formula": "~0"}, "C0"),
                             ("population-averaged", {"marginal": True}, "C1")):  # fmt: skip
        draws = predict_draws(res, grid, "mean", **kw)
        low, high = stats.hdi(draws, prob)
        ax.plot(values, draws.mean(axis=(0, 1)), color=color, label=label)
        ax.fill_between(values, low, high, color=color, alpha=0.2)
    ax.set_xlabel(variable)
    ax.set_ylabel("expected response")
    ax.legend()
    fig.tight_layout()
    return fig


def quantile_histograms(res: GLMMResults, quantiles: Sequence[float] = (0.2, 0.4, 0.6, 0.8), group=None, bins=30):
    """Histograms over the data of the predicted mean with the group effect at each quantile."""
    import matplotlib.pyplot as plt

    design = res.model.design
    group = design.blocks[0].group if group is None else group
    fig, axes = plt.subplots(1, len(quantiles), figsize=(3.2 * len(quantiles), 3), sharex=True, sharey=True)
    for ax, q in zip(np.atleast_1d(axes), quantiles):
        draws = predict_draws(res, None, "mean", re_quantile={group: q})
        ax.hist(draws.mean(axis=(0, 1)), bins=bins, range=(0, 1) if res.model.link.name != "log" else None)
        ax.set_title(f"{group} effect at {int(q * 100)}th pct")
        ax.set_xlabel("predicted mean")
    fig.tight_layout()
    return fig


def z_pattern(res: GLMMResults, ax=None, max_rows: int = 2000):
    """Sparsity pattern of the random-effects design Z (rows sorted by the first factor)."""
    from scipy import sparse

    design = res.model.design
    if not design.blocks:
        raise ArgumentError("the model has no random effects")
    order = np.argsort(design.blocks[0].idx, kind="stable")[:max_rows]
    mats = []
    for block in design.blocks:
        k = len(block.terms)
        rows = np.repeat(np.arange(order.size), k)
        cols = (block.idx[order][:, None] * k + np.arange(k)).ravel()
        vals = block.Z[order].ravel()
        mats.append(sparse.coo_matrix((vals, (rows, cols)), shape=(order.size, len(block.levels) * k)))
    Z = sparse.hstack(mats)
    fig, ax = _axes(ax, figsize=(6, 6))
    ax.spy(Z, markersize=0.5, aspect="auto")
    ax.set_xlabel("random effect (" + ", ".join(design.groups) + ")")
    ax.set_ylabel("observation")
    ax.set_title(f"Z: {Z.shape[0]} x {Z.shape[1]}, {Z.nnz} non-zeros")
    return fig


def _parameter_names(res: GLMMResults) -> list[str]:
    names = ["fixef"] if res.model.design.fixed.labels else []
    for block in res.model.design.blocks:
        names.append(f"sd_{block.name}")
        if block.correlated:
            names.append(f"cor_{block.name}")
    return names + list(res.model.family.aux)


def trace(res: GLMMResults, var_names: Sequence[str] | None = None):
    """ArviZ trace plot of the fixed effects, SDs, correlations and family parameters."""
    axes = stats.az.plot_trace(res.idata, var_names=list(var_names or _parameter_names(res)))
    return np.asarray(axes).ravel()[0].figure


def rank(res: GLMMResults, var_names: Sequence[str] | None = None):
    """ArviZ rank plot (chains should look alike and uniform)."""
    axes = stats.az.plot_rank(res.idata, var_names=list(var_names or _parameter_names(res)))
    return np.asarray(axes).ravel()[0].figure


def ppc(res: GLMMResults, draws: int = 100, random_seed: int | None = None, ax=None):
    """ArviZ posterior predictive check: the observed response against replicated data sets.

    Uses the replicated data in ``res.idata.posterior_predictive`` (drawing
    them first with :meth:`GLMMResults.ppc` if absent) and shows ``draws`` of them.
    """
    import xarray as xr

    from .checks import _replicates

    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ArgumentError(f"draws must be a positive integer, got {draws!r}")
    y_rep = _replicates(res, random_seed)
    flat = y_rep.reshape((-1, y_rep.shape[-1]))
    pick = np.random.default_rng(random_seed).choice(flat.shape[0], size=min(draws, flat.shape[0]), replace=False)
    observed = res.idata.observed_data  # stored with the replicates by checks.ppc
    predicted = xr.Dataset({"y": (("chain", "draw", "obs"), flat[pick][None])})
    data = stats.az.InferenceData(posterior_predictive=predicted, observed_data=observed)
    fig, ax = _axes(ax, figsize=(6, 4))
    stats.az.plot_ppc(data, ax=ax, num_pp_samples=len(pick), random_seed=random_seed)
    ax.set_xlabel(res.model.design.response_name)
    return fig


def grouped_ppc(res: GLMMResults, group: str, stat="mean", prob: float = 0.94, random_seed=None, ax=None):
    """Grouped check: per level, the replicated statistic's interval and the observed value.

    Levels are sorted by the observed statistic; observed values outside
    their interval are drawn in red.  See :func:`bayesglmm.checks.grouped_ppc`.
    """
    from .checks import grouped_ppc as table_of

    table = table_of(res, group, stat=stat, prob=prob, random_seed=random_seed).sort_values("observed")
    pos = np.arange(len(table))
    fig, ax = _axes(ax, figsize=(max(5, 0.12 * len(table) + 3), 3.5))
    ax.vlines(pos, table["hdi_low"], table["hdi_high"], color="0.6", lw=2, label=f"replicated ({prob:.0%})")
    outside = (table["observed"] < table["hdi_low"]) | (table["observed"] > table["hdi_high"])
    ax.scatter(pos, table["observed"], c=np.where(outside, "C3", "k"), s=12, zorder=3, label="observed")
    ax.set_xlabel(f"levels of {group} (sorted)")
    ax.set_ylabel(stat if isinstance(stat, str) else getattr(stat, "__name__", "statistic"))
    ax.set_xticks([])
    ax.legend(frameon=False, fontsize=8)
    return fig
