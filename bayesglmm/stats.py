"""Array core of the posterior summaries: plain NumPy in, plain NumPy out.

Draws are arrays of shape ``(chain, draw, ...)``; every function summarises
over the first two axes and keeps the rest.  ESS and R-hat come from ArviZ
(rank-normalised split R-hat, bulk and tail ESS of Vehtari et al. 2021).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .errors import ArgumentError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def hdi(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of ``prob`` mass for every trailing element.

    Parameters
    ----------
    draws : ndarray, shape (chain, draw, ...)
    prob : float in (0, 1)

    Returns
    -------
    (low, high) : arrays of the trailing shape.
    """
    flat = draws.reshape((-1,) + draws.shape[2:])
    n = flat.shape[0]
    ordered = np.sort(flat, axis=0)
    width_idx = int(np.floor(prob * n))
    widths = ordered[width_idx:] - ordered[: n - width_idx]
    start = np.argmin(widths, axis=0)
    low = np.take_along_axis(ordered, start[None], axis=0)[0]
    high = np.take_along_axis(ordered, (start + width_idx)[None], axis=0)[0]
    return low, high


def _dataset(draws: np.ndarray) -> xr.Dataset:
    """``draws`` (chain, draw, ...) as one variable with the trailing axes flattened."""
    return xr.Dataset({"x": xr.DataArray(draws.reshape(draws.shape[:2] + (-1,)), dims=("chain", "draw", "param"))})


def convergence(draws: np.ndarray) -> dict[str, np.ndarray]:
    """Bulk ESS, tail ESS and R-hat for every trailing element of ``draws``."""
    ds = _dataset(draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"ess_bulk": az.ess(ds, method="bulk")["x"].values, "ess_tail": az.ess(ds, method="tail")["x"].values}
    return {k: v.reshape(draws.shape[2:]) for k, v in out.items()} | {"r_hat": rhat(draws)}


def rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat alone for every trailing element of ``draws``.

    :func:`convergence` without the two ESS, for scans over many elements:
    for the 4000 random effects of a 2000-level correlated block, 4.5 s
    instead of 10 s.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return az.rhat(_dataset(draws))["x"].values.reshape(draws.shape[2:])


def group_sums(values: np.ndarray, idx: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the last axis of ``values`` (..., row) within groups: (..., group).

    ``idx`` gives the group (0..n_groups-1) of every row.
    """
    out = np.zeros(values.shape[:-1] + (n_groups,))
    np.add.at(np.moveaxis(out, -1, 0), np.asarray(idx), np.moveaxis(values, -1, 0))
    return out


def summarize(draws: np.ndarray, prob: float, diagnostics: bool = True) -> dict[str, np.ndarray]:
    """Mean, SD, HDI and (optionally) convergence diagnostics per element."""
    low, high = hdi(draws, prob)
    out = {
        "mean": draws.mean(axis=(0, 1)),
        "sd": draws.std(axis=(0, 1), ddof=1),
        "hdi_low": low,
        "hdi_high": high,
    }
    if diagnostics:
        out.update(convergence(draws))
    return out


def check_prob(prob: float) -> float:
    """Validate an interval probability."""
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 < prob < 1:
        raise ArgumentError(f"prob must be a number strictly between 0 and 1, got {prob!r}")
    return float(prob)
