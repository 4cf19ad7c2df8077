"""The array core of the summaries: R-hat and ESS equal ArviZ's, for all elements at once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from bayesglmm import stats


def _arviz(draws: np.ndarray) -> dict[str, np.ndarray]:
    ds = xr.Dataset({"x": xr.DataArray(draws, dims=("chain", "draw", "k"))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "r_hat": stats.az.rhat(ds)["x"].values,
            "ess_bulk": stats.az.ess(ds, method="bulk")["x"].values,
            "ess_tail": stats.az.ess(ds, method="tail")["x"].values,
        }


def _draws(chains: int, draws: int, seed: int) -> np.ndarray:
    """Elements that mix well, badly (AR(1) with ρ = 0.95), anticorrelated, heavy-tailed,
    shifted between chains, and one discrete (ties in the ranks)."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=(chains, draws, 6))
    out = np.empty_like(eps)
    out[..., 0] = eps[..., 0]
    for k, rho in ((1, 0.95), (2, -0.6)):
        out[:, 0, k] = eps[:, 0, k]
        for t in range(1, draws):
            out[:, t, k] = rho * out[:, t - 1, k] + eps[:, t, k]
    out[..., 3] = rng.standard_t(2, size=(chains, draws))
    out[..., 4] = eps[..., 4] + np.arange(chains)[:, None]
    out[..., 5] = rng.poisson(1.0, size=(chains, draws))
    return out


@pytest.mark.parametrize(("chains", "draws", "seed"), [(4, 1000, 1), (2, 37, 2), (3, 8, 3), (1, 200, 4), (4, 5, 5)])
def test_diagnostics_equal_arviz(chains, draws, seed):
    x = _draws(chains, draws, seed)
    ours, theirs = stats.convergence(x), _arviz(x)
    for key in ("ess_bulk", "ess_tail") + (("r_hat",) if chains > 1 else ()):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, err_msg=key)
    if chains == 1:
        assert np.isnan(ours["r_hat"]).all()


def test_degenerate_elements():
    """A constant element has ESS equal to the number of draws (ArviZ's convention) and no R-hat;
    a NaN anywhere in an element makes its diagnostics NaN, not its neighbours'."""
    x = _draws(4, 100, 6)
    x[..., 0] = 2.0
    x[1, 3, 1] = np.nan
    ours, theirs = stats.convergence(x), _arviz(x)
    assert ours["ess_bulk"][0] == 400 == theirs["ess_bulk"][0]
    assert np.isnan(ours["r_hat"][0]) and np.isnan(theirs["r_hat"][0])
    assert np.isnan([ours[k][1] for k in ours]).all()
    np.testing.assert_allclose(ours["ess_bulk"][2:], theirs["ess_bulk"][2:], rtol=1e-9)
    np.testing.assert_allclose(ours["r_hat"][2:], theirs["r_hat"][2:], rtol=1e-9)


def test_trailing_shape_is_kept():
    x = _draws(4, 60, 7)[..., :4].reshape(4, 60, 2, 2)
    out = stats.convergence(x)
    assert all(v.shape == (2, 2) for v in out.values())
    np.testing.assert_allclose(stats.rhat(x).ravel(), _arviz(x.reshape(4, 60, 4))["r_hat"], rtol=1e-9)


def test_ess_of_the_mean_equals_arviz():
    x = _draws(4, 300, 8)
    ds = xr.Dataset({"x": xr.DataArray(x, dims=("chain", "draw", "k"))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = stats.az.ess(ds, method="mean")["x"].values
    np.testing.assert_allclose(stats.ess_mean(x), theirs, rtol=1e-9)
