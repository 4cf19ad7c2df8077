"""Posterior predictive checks, Bayes R², diagnose, prior predictive summary, K-fold."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm.checks import bayes_r2_draws
from bayesglmm.families import FAMILIES

pytestmark = pytest.mark.sampling
SHORT = {"draws": 200, "tune": 300, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 4}


@pytest.fixture(scope="module")
def gaussian_fit():
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(10), 8)
    x = rng.normal(size=g.size)
    y = 2 + 1.0 * x + rng.normal(0, 1.5, 10)[g] + rng.normal(0, 0.7, g.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return bg.GLMM("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g})).fit(**SHORT)


@pytest.fixture(scope="module")
def binomial_fit():
    rng = np.random.default_rng(12)
    g = np.repeat(np.arange(8), 6)
    x = rng.normal(size=g.size)
    k = rng.binomial(10, 1 / (1 + np.exp(-(x + rng.normal(0, 1, 8)[g]))))
    df = pd.DataFrame({"k": k, "n": 10, "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return bg.GLMM("p(k, n) ~ x + (1 | g)", df, family="binomial").fit(**SHORT)


def test_family_variance_functions():
    mu = np.array([[0.2, 0.5]])
    close = np.testing.assert_allclose
    close(FAMILIES["bernoulli"].variance(mu, {}), [[0.16, 0.25]])
    close(FAMILIES["binomial"].variance(mu, {}, np.array([4, 5])), [[0.04, 0.05]])
    close(FAMILIES["poisson"].variance(mu, {}), mu)
    close(FAMILIES["gaussian"].variance(mu, {"sigma": np.array([2.0])}), [[4.0, 4.0]])


def test_ppc_stores_replicates(gaussian_fit):
    res = gaussian_fit
    pp = res.ppc(random_seed=1)
    assert pp["y"].shape == (2, 200, res.model.design.n)
    assert "observed_data" in res.idata.groups()
    again = res.ppc(random_seed=1)  # replaces, reproducibly
    np.testing.assert_array_equal(again["y"].values, pp["y"].values)
    # replicated means centre on the observed mean
    assert abs(pp["y"].values.mean() - res.model.design.y.mean()) < 0.5


def test_grouped_ppc(gaussian_fit, binomial_fit):
    table = gaussian_fit.grouped_ppc("g", stat="sd")
    assert list(table.columns) == ["level", "n", "observed", "mean", "hdi_low", "hdi_high", "p_value"]
    assert len(table) == 10 and table["p_value"].between(0, 1).all()
    assert (table["hdi_low"] <= table["hdi_high"]).all()
    custom = gaussian_fit.grouped_ppc("g", stat=lambda y: np.median(y, axis=-1))
    assert len(custom) == 10
    prop = binomial_fit.grouped_ppc("g")  # proportion of successes per level
    design = binomial_fit.model.design
    first = design.y[design.blocks[0].idx == 0].sum() / design.trials[design.blocks[0].idx == 0].sum()
    assert prop.loc[0, "observed"] == pytest.approx(first)
    assert prop["mean"].between(0, 1).all()
    with pytest.raises(bg.ArgumentError, match="not a grouping factor"):
        gaussian_fit.grouped_ppc("school")
    with pytest.raises(bg.ArgumentError, match="stat must be"):
        gaussian_fit.grouped_ppc("g", stat="median")


def test_bayes_r2(gaussian_fit, binomial_fit):
    res = gaussian_fit
    r2 = res.bayes_r2()
    assert list(r2.columns) == ["mean", "sd", "hdi_low", "hdi_high"] and 0 < r2.loc["R2", "mean"] < 1
    # by hand, per draw: var(mu) / (var(mu) + sigma^2)
    mu = res.predict(summary=False)
    sigma = res.draws("sigma")
    by_hand = mu.var(axis=-1, ddof=1) / (mu.var(axis=-1, ddof=1) + sigma**2)
    np.testing.assert_allclose(bayes_r2_draws(res), by_hand, rtol=1e-10)
    # the fixed effects alone explain less than with the group effects
    assert res.bayes_r2(re_formula="~0").loc["R2", "mean"] < r2.loc["R2", "mean"]
    assert 0 < res.bayes_r2(method="residual").loc["R2", "mean"] < 1
    assert 0 < binomial_fit.bayes_r2().loc["R2", "mean"] < 1
    with pytest.raises(bg.ArgumentError, match="method must be"):
        res.bayes_r2(method="adjusted")


def test_diagnose_report(gaussian_fit):
    report = gaussian_fit.diagnose()
    assert {"fixed effects", "sd | g", "effects | g", "sigma"} <= set(report.table.index)
    assert list(report.table.columns) == ["n_params", "max_r_hat", "min_ess_bulk", "min_ess_tail"]
    assert len(report.bfmi) == 2 and all(b > 0 for b in report.bfmi)
    assert "E-BFMI" in repr(report) and "<ul>" in report._repr_html_()
    # 200 draws x 2 chains: the ESS of something falls short of 400, and it says what to do
    assert any("Draw more" in a or "Run longer" in a for a in report.advice)


def test_diagnose_flags_boundaries(gaussian_fit, sim_gaussian):
    res = gaussian_fit
    original = res.idata.posterior["sd_g"].copy()
    try:
        res.idata.posterior["sd_g"] = original * np.where(np.arange(200) % 2 == 0, 1e-4, 1.0)[None, :, None]
        assert any("piled near zero" in a and "sd(Intercept|g)" in a for a in res.diagnose().advice)
    finally:
        res.idata.posterior["sd_g"] = original
    assert not any("piled near zero" in a for a in res.diagnose().advice)


def test_diagnose_flags_correlation_near_one(sim_gaussian):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("y ~ x + (1 + x | g)", sim_gaussian).fit(**SHORT)
    cor = res.idata.posterior["cor_g"]
    res.idata.posterior["cor_g"] = cor * 0 + np.array([[1.0, 0.97], [0.97, 1.0]])
    advice = res.diagnose().advice
    assert any("cor(Intercept,x|g)" in a and "||" in a for a in advice)


def test_prior_predictive_summary(sim_binary):
    model = bg.GLMM("y ~ x + (1 | g)", sim_binary, family="bernoulli")
    table = model.prior_predictive(draws=400, random_seed=3)
    assert list(table.index) == ["mean response", "ICC (g)", "between-g SD of the mean response"]
    assert list(table.columns) == ["mean", "q05", "q25", "q50", "q75", "q95"]
    assert np.all(np.diff(table[["q05", "q25", "q50", "q75", "q95"]].to_numpy(), axis=1) >= 0)
    assert table.loc["ICC (g)"].between(0, 1).all()
    # the ICC implied by sd ~ exponential(1) on the logit scale: E[s^2/(s^2 + pi^2/3)] by simulation
    s = np.random.default_rng(0).exponential(1.0, 200_000)
    expected = np.mean(s**2 / (s**2 + np.pi**2 / 3))
    assert table.loc["ICC (g)", "mean"] == pytest.approx(expected, abs=0.03)
    again = model.prior_predictive(draws=400, random_seed=3)
    pd.testing.assert_frame_equal(table, again)


def test_kfold_by_group(gaussian_fit):
    short = {"draws": 150, "tune": 200, "chains": 2, "cores": 1, "progressbar": False}  # a fit argument too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        kf = gaussian_fit.kfold(group="g", k=2, random_seed=1, new_level_draws=5, **short)
    assert list(kf.pointwise.columns) == ["unit", "fold", "elpd"] and len(kf.pointwise) == 10
    assert np.isfinite(kf.pointwise["elpd"]).all() and kf.elpd == pytest.approx(kf.pointwise["elpd"].sum())
    assert set(kf.pointwise["fold"]) == {0, 1} and "2-fold" in repr(kf)
    # close to the PSIS approximation of the same quantity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logo = gaussian_fit.loo(group="g")
    assert abs(kf.elpd - logo.elpd_loo) < 3 * (kf.se + logo.se)
    with pytest.raises(bg.ArgumentError, match="k must be"):
        gaussian_fit.kfold(group="g", k=11)
    with pytest.raises(bg.ArgumentError, match="not a grouping factor"):
        gaussian_fit.kfold(group="school", k=2)
