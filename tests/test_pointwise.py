"""Fits too large to store their log-likelihood: LOO and predictions in chunks give the same answers."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
import bayesglmm.fit
import bayesglmm.pointwise
import bayesglmm.predict
from bayesglmm.results import GLMMResults

pytestmark = pytest.mark.sampling
SHORT = {"draws": 150, "tune": 200, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 6}


@pytest.fixture(scope="module")
def stored():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 9)
    x = rng.normal(size=g.size)
    y = rng.poisson(np.exp(0.3 + 0.5 * x + rng.normal(0, 0.5, 12)[g]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return bg.GLMM("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), family="poisson").fit(
            log_likelihood=True, **SHORT
        )


def _without_loglik(res):
    idata = res.idata.copy()
    del idata["log_likelihood"]
    return GLMMResults(res.model, idata, warn=False)


def test_chunked_loo_equals_stored_loo(stored, monkeypatch):
    monkeypatch.setattr(bayesglmm.predict, "BUDGET", 300 * 40)  # 40 rows per chunk: 3 chunks
    monkeypatch.setattr(bayesglmm.fit, "LOGLIK_BUDGET", 1000)  # too large to keep
    big = _without_loglik(stored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for group in (None, "g"):
            a, b = stored.loo(group=group), big.loo(group=group)
            assert b["elpd_loo"] == pytest.approx(a["elpd_loo"], abs=1e-8)
            assert b["se"] == pytest.approx(a["se"], abs=1e-8)
            assert b["p_loo"] == pytest.approx(a["p_loo"], abs=1e-8)
            np.testing.assert_allclose(b["pareto_k"].values, a["pareto_k"].values, atol=1e-8)
        table = bg.compare({"stored": stored, "chunked": big})
    assert table["elpd_loo"].nunique() == 1 or np.ptp(table["elpd_loo"]) < 1e-8
    with pytest.raises(bg.ArgumentError, match="use loo\\(\\)"):
        big.waic()


def test_large_fits_do_not_store_the_loglik(stored, monkeypatch):
    monkeypatch.setattr(bayesglmm.fit, "LOGLIK_BUDGET", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = stored.model.fit(log_likelihood=True, **SHORT)
        warnings.simplefilter("ignore", UserWarning)
        res.loo()
    assert "log_likelihood" not in res.idata.groups()
    assert res.idata.attrs["log_likelihood"] == "on demand"
    assert stored.idata.attrs["log_likelihood"] == "stored"
    with pytest.raises(bg.ArgumentError, match=r"log_lik\(\) needs the stored .* too large to store it"):
        res.log_lik()
    with pytest.raises(bg.ArgumentError, match=r"compare\(ic='waic'\) needs .*: use ic='loo'"):
        bg.compare({"stored": stored, "large": res}, ic="waic")


def test_the_loglik_is_computed_when_first_needed_and_kept(stored):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = stored.model.fit(**SHORT)
    assert "log_likelihood" not in res.idata.groups() and res.idata.attrs["log_likelihood"] == "on demand"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = res.loo()
    assert res.idata.attrs["log_likelihood"] == "stored"
    np.testing.assert_array_equal(res.idata.log_likelihood["y"].values, stored.idata.log_likelihood["y"].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again = stored.loo()
    assert first["elpd_loo"] == pytest.approx(again["elpd_loo"], abs=1e-10)


def test_chunked_predictions_equal_whole_ones(stored, monkeypatch):
    """Summaries computed chunk by chunk (rows beyond the budget) equal the whole computation."""
    data = stored.model.design.data
    whole = {kw: stored.predict(**dict(kw)) for kw in [(), (("marginal", True), ("random_seed", 1))]}
    newdata = pd.concat([data.head(3), data.head(3)]).assign(g="unseen")  # one new level, in two chunks
    monkeypatch.setattr(bayesglmm.predict, "BUDGET", 300 * 2)  # 2 rows per chunk
    for kw, table in whole.items():
        pd.testing.assert_frame_equal(stored.predict(**dict(kw)), table)
    new = stored.predict(newdata, allow_new_levels=True, random_seed=3)
    np.testing.assert_allclose(new["mean"].to_numpy()[:3], new["mean"].to_numpy()[3:])  # same effect draws
    drawn = stored.predict(data.head(4), kind="response", random_seed=3)
    assert len(drawn) == 4 and np.isfinite(drawn["mean"]).all()
