"""Pointwise log-likelihood in chunks, for fits too large to store it.

A fit stores its (draws × rows) log-likelihood only within ``fit.LOGLIK_BUDGET``
values.  Beyond that, :func:`loo_elpd` evaluates it chunk by chunk through the
fitted graph (``predict.log_likelihood_draws``) and applies PSIS to each chunk:
PSIS-LOO is computed per observation, so the chunks' results simply concatenate.
Leave-one-group-out accumulates the group sums over the chunks instead.
Memory stays at (draws × chunk) plus (draws × groups).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .model import OBSERVED
from .predict import log_likelihood_draws, row_chunks
from .stats import az, ess_mean, group_sums

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults


def chunks(res: GLMMResults):
    """Yield (row indices, log-likelihood (chain, draw, rows)) over the fitted rows."""
    design = res.model.design
    for chunk in row_chunks(res, design.n):
        rows = np.arange(design.n)[chunk]
        trials = None if design.trials is None else design.trials[rows]
        yield rows, log_likelihood_draws(res, design.data.iloc[rows], design.y[rows], trials)


def relative_efficiency(posterior: xr.Dataset) -> float:
    """ArviZ's default ``reff`` for PSIS: mean ESS (method "mean") per draw over the posterior, 1 for one chain.

    Computed by :func:`bayesglmm.stats.ess_mean`: ArviZ's own, through numba,
    took 0.43 s of sleepstudy's first ``loo()`` in a new process.
    """
    if posterior.sizes["chain"] == 1:
        return 1.0
    values = np.hstack([ess_mean(np.asarray(posterior[v].values)).ravel() for v in posterior.data_vars])
    return float(np.nanmean(values) / (posterior.sizes["chain"] * posterior.sizes["draw"]))


def _loo(ll: np.ndarray, posterior: xr.Dataset, dim: str, reff: float, coords=None):
    da = xr.DataArray(ll, dims=("chain", "draw", dim), coords=coords)
    data = az.InferenceData(posterior=posterior, log_likelihood=xr.Dataset({OBSERVED: da}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(data, pointwise=True, var_name=OBSERVED, reff=reff)


def loo_elpd(res: GLMMResults, block=None):
    """PSIS-LOO (ArviZ ``ELPDData``) from chunked log-likelihoods; by group if ``block``."""
    posterior = res.idata.posterior
    reff = relative_efficiency(posterior)
    if block is not None:
        idx = np.asarray(block.idx)
        summed = sum(group_sums(ll, idx[rows], len(block.levels)) for rows, ll in chunks(res))
        return _loo(summed, posterior, block.group, reff, {block.group: list(block.levels)})
    parts = [_loo(ll, posterior, "obs", reff, {"obs": rows}) for rows, ll in chunks(res)]
    loo_i = xr.concat([p["loo_i"] for p in parts], dim="obs")
    pareto_k = xr.concat([p["pareto_k"] for p in parts], dim="obs")
    out = parts[0].copy()
    out["loo_i"], out["pareto_k"] = loo_i, pareto_k
    out["elpd_loo"] = float(loo_i.sum())
    out["se"] = float(np.sqrt(loo_i.size * loo_i.var(ddof=0)))
    out["p_loo"] = float(sum(p["p_loo"] for p in parts))
    out["n_data_points"] = int(loo_i.size)
    out["warning"] = bool(any(p["warning"] for p in parts))
    return out
