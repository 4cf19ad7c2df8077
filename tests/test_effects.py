"""Interpretation: ICC, marginal (population-averaged) predictions, quantiles, effects, plots."""

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import bayesglmm as bg
from bayesglmm.quadrature import normal_nodes

matplotlib.use("Agg")
pytestmark = pytest.mark.sampling

SHORT = {"draws": 200, "tune": 300, "chains": 2, "cores": 1, "progressbar": False}


def _fit(formula, data, family, seed=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return bg.GLMM(formula, data, family=family).fit(random_seed=seed, **SHORT)


@pytest.fixture(scope="module")
def logistic():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(30), 12)
    x = rng.normal(size=g.size)
    y = rng.binomial(1, expit(-0.3 + 0.8 * x + rng.normal(0, 1.5, 30)[g]))
    return _fit("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), "bernoulli")


@pytest.fixture(scope="module")
def slopes_fit():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=g.size)
    u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=20)
    y = 1 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(0, 0.7, g.size)
    return _fit("y ~ x + (1 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g}), "gaussian")


def test_normal_nodes_integrate_moments():
    for dim in (1, 2, 3):
        nodes, w = normal_nodes(dim, random_seed=1)
        assert w.sum() == pytest.approx(1.0)
        assert (w[:, None] * nodes**2).sum(axis=0) == pytest.approx(np.ones(dim), abs=0.02)
        assert (w[:, None] * nodes).sum(axis=0) == pytest.approx(np.zeros(dim), abs=0.02)


def test_icc_logistic_is_variance_share_per_draw(logistic):
    table = logistic.icc()
    v = logistic.draws("sd_g")[..., 0] ** 2
    icc = v / (v + np.pi**2 / 3)
    assert list(table.columns) == ["group", "mean", "sd", "hdi_low", "hdi_high"]
    assert table.loc[0, "mean"] == pytest.approx(icc.mean(), rel=1e-12)
    assert table.loc[0, "sd"] == pytest.approx(icc.std(ddof=1), rel=1e-6)


def test_icc_with_random_slope_depends_on_at(slopes_fit):
    at0, at2 = slopes_fit.icc()["mean"][0], slopes_fit.icc(at={"x": 2.0})["mean"][0]
    sd, cor, sigma = (slopes_fit.draws(n) for n in ("sd_g", "cor_g", "sigma"))
    v = sd[..., 0] ** 2 + 4 * sd[..., 1] ** 2 + 4 * cor[..., 0, 1] * sd[..., 0] * sd[..., 1]
    assert at2 == pytest.approx((v / (v + sigma**2)).mean())
    assert at0 == pytest.approx((sd[..., 0] ** 2 / (sd[..., 0] ** 2 + sigma**2)).mean())
    with pytest.raises(bg.ArgumentError, match="not random-slope terms"):
        slopes_fit.icc(at={"z": 1})


def test_marginal_probabilities_match_brute_force_monte_carlo(logistic):
    grid = pd.DataFrame({"x": [-2.0, 0.0, 1.5]})
    marg = logistic.predict(grid, marginal=True, summary=False)
    cond = logistic.predict(grid, re_formula="~0", summary=False)
    fe, sd = logistic.draws("fixef"), logistic.draws("sd_g")[..., 0]
    z = np.random.default_rng(0).standard_normal(1_000_000)
    for c, d in [(0, 0), (1, 57), (0, 199)]:
        for i, x in enumerate(grid["x"]):
            brute = expit(fe[c, d, 0] + fe[c, d, 1] * x + sd[c, d] * z).mean()
            assert marg[c, d, i] == pytest.approx(brute, abs=1e-3)
    # marginal probabilities lie between the conditional ones and 0.5
    lo, hi = np.minimum(cond, 0.5), np.maximum(cond, 0.5)
    assert np.all((marg >= lo - 1e-12) & (marg <= hi + 1e-12))


def test_marginal_needs_no_group_column_and_link_kind(logistic):
    grid = pd.DataFrame({"x": [0.0]})
    mean = logistic.predict(grid, marginal=True, summary=False)
    link = logistic.predict(grid, marginal=True, kind="link", summary=False)
    assert link == pytest.approx(np.log(mean / (1 - mean)))
    with pytest.raises(bg.ArgumentError, match="kind='response'"):
        logistic.predict(grid, marginal=True, kind="response")
    with pytest.raises(bg.DataError, match="grouping column"):
        logistic.predict(grid)


def test_quantile_held_effects(logistic):
    grid = pd.DataFrame({"x": [0.0]})
    fe, sd = logistic.draws("fixef"), logistic.draws("sd_g")[..., 0]
    p20 = logistic.predict(grid, re_quantile=0.2, summary=False)[..., 0]
    assert p20 == pytest.approx(expit(fe[..., 0] + sd * -0.8416212335729143))
    p80 = logistic.predict(grid, re_quantile={"g": 0.8}, summary=False)[..., 0]
    assert np.all(p80 > p20)
    with pytest.raises(bg.ArgumentError, match="probability in"):
        logistic.predict(grid, re_quantile=1.5)
    with pytest.raises(bg.ArgumentError, match="not a grouping factor"):
        logistic.predict(grid, re_quantile={"school": 0.5})


def test_new_levels_spread_grows_with_fitted_sd(logistic):
    new = pd.DataFrame({"x": [0.0] * 200, "g": [f"new{i}" for i in range(200)]})
    with pytest.raises(bg.NewLevelError, match="allow_new_levels"):
        logistic.predict(new, kind="link")
    eta = logistic.predict(new, kind="link", allow_new_levels=True, summary=False, random_seed=1)
    fe, sd = logistic.draws("fixef")[..., 0], logistic.draws("sd_g")[..., 0]
    spread = (eta - fe[..., None]).std(axis=-1)  # per draw, across new groups
    assert np.corrcoef(spread.ravel(), sd.ravel())[0, 1] > 0.9
    assert spread.mean() == pytest.approx(sd.mean(), rel=0.1)


@pytest.fixture(scope="module")
def two_blocks():
    """lme4's uncorrelated spelling: two blocks of one grouping factor, which share its levels."""
    rng = np.random.default_rng(6)
    g = np.repeat(np.arange(15), 8)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(0, 1.0, 15)[g] + rng.normal(0, 0.5, 15)[g] * x + rng.normal(0, 0.7, g.size)
    return _fit("y ~ x + (1 | g) + (0 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g}), "gaussian")


def test_blocks_of_one_factor_predict_together(two_blocks):
    """New levels, integration and quantiles resize or pin both blocks of the factor at once."""
    fe = two_blocks.draws("fixef")
    sd0, sd1 = two_blocks.draws("sd_g_1")[..., 0], two_blocks.draws("sd_g_2")[..., 0]
    grid = pd.DataFrame({"x": [1.0]})
    fixed = fe[..., 0] + fe[..., 1]
    # identity link: averaging over the effects gives the fixed part (the nodes are symmetric)
    assert two_blocks.predict(grid, marginal=True, summary=False)[..., 0] == pytest.approx(fixed)
    # the first block at its quantile, the other at its mean (as the terms of a || block)
    p20 = two_blocks.predict(grid, re_quantile=0.2, summary=False)[..., 0]
    assert p20 == pytest.approx(fixed + sd0 * -0.8416212335729143)
    new = pd.DataFrame({"x": [0.0, 1.0] * 100, "g": np.repeat([f"new{i}" for i in range(100)], 2)})
    eta = two_blocks.predict(new, allow_new_levels=True, summary=False, random_seed=1)
    again = two_blocks.predict(new, allow_new_levels=True, summary=False, random_seed=1)
    np.testing.assert_array_equal(eta, again)
    slope = eta[..., 1::2] - eta[..., 0::2] - fe[..., 1:2]  # each new group's slope effect
    assert slope.std(axis=-1).mean() == pytest.approx(sd1.mean(), rel=0.15)
    # one block of the factor left out: the other's new-level effects alone
    only = two_blocks.predict(new, re_formula="~(1 | g)", allow_new_levels=True, summary=False, random_seed=1)
    np.testing.assert_allclose(only[..., 1::2] - only[..., 0::2], np.broadcast_to(fe[..., 1:2], only[..., 0::2].shape))
    with pytest.raises(bg.ArgumentError, match="kept or integrated together"):
        two_blocks.predict(grid.assign(g=0), marginal=True, re_formula="~(1 | g)")


def test_blocks_of_one_factor_are_one_factor_in_tables(two_blocks):
    """One ICC row per factor (the blocks' variances add) and per-level rows in ranef/coef, as for ||."""
    sd0, sd1 = two_blocks.draws("sd_g_1")[..., 0], two_blocks.draws("sd_g_2")[..., 0]
    s2 = two_blocks.draws("sigma") ** 2
    table = two_blocks.icc(at={"x": 1.0})
    assert list(table["group"]) == ["g"]
    assert table["mean"].iloc[0] == pytest.approx(np.mean((sd0**2 + sd1**2) / (sd0**2 + sd1**2 + s2)))
    for frame in (two_blocks.ranef(), two_blocks.coef()):
        assert list(frame["term"][:4]) == ["Intercept", "x", "Intercept", "x"]
        assert frame["level"].iloc[0] == frame["level"].iloc[1] != frame["level"].iloc[2]
    assert two_blocks.diagnose().table.loc["effects | g", "n_params"] == 30  # both blocks' 15 levels


def test_comparisons_and_slopes(logistic):
    cond = logistic.comparisons("x", re_formula="~0", scale="link")
    assert cond["mean"][0] == pytest.approx(logistic.fixef().loc["x", "mean"], rel=1e-6)
    marg = logistic.comparisons("x", marginal=True, scale="link")
    assert 0 < marg["mean"][0] < cond["mean"][0]  # population-averaged log OR is attenuated
    assert {"exp_mean", "exp_hdi_low", "exp_hdi_high"} <= set(marg.columns)
    resp = logistic.comparisons("x", values=(0, 1), by="g")
    assert len(resp) == 30 and resp["mean"].between(0, 1).all()
    slope = logistic.slopes("x", marginal=True)
    diff = logistic.comparisons("x", values=(0.0, 1e-3), marginal=True, newdata=pd.DataFrame({"x": [0.0]}))
    assert slope["mean"][0] > 0 and diff["mean"][0] > 0
    with pytest.raises(bg.ArgumentError, match="not a column"):
        logistic.comparisons("age")
    with pytest.raises(bg.ArgumentError, match="pair"):
        logistic.comparisons("x", values=(1, 2, 3))


def test_plots_return_figures(logistic, slopes_fit):
    import matplotlib.pyplot as plt

    for fig in (
        bg.plots.forest(logistic, exp=True),
        bg.plots.caterpillar(logistic),
        bg.plots.curves(logistic, "x"),
        bg.plots.quantile_histograms(logistic),
        bg.plots.z_pattern(slopes_fit),
        bg.plots.trace(logistic),
        bg.plots.ppc(slopes_fit, draws=20, random_seed=1),
        bg.plots.grouped_ppc(logistic, logistic.model.design.blocks[0].group),
    ):
        assert isinstance(fig, plt.Figure)
        plt.close(fig)
    fig, ax = plt.subplots()
    assert bg.plots.forest(slopes_fit, ax=ax) is fig
    with pytest.raises(bg.ArgumentError, match="log or logit"):
        bg.plots.forest(slopes_fit, exp=True)
    plt.close("all")


def test_simulators_are_reproducible():
    a, b = bg.simulate.doctors(random_seed=4), bg.simulate.doctors(random_seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert a["DID"].nunique() == 407
    sizes = a.groupby("DID").size()
    assert sizes.min() >= 2 and sizes.max() <= 40
    p = bg.simulate.pisa(random_seed=4)
    assert p["school"].nunique() == 148
    assert np.allclose(p.groupby("school")["school_ses"].first(), p.groupby("school")["ses"].mean())
