"""Categorical (multinomial logit) family with correlated random intercepts per category (issue 5)."""

import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import optimize, special

import bayesglmm as bg

CATEGORIES = ("bus", "car", "walk")
TRUTH = {
    "Intercept[car]": 0.3,
    "x[car]": 0.8,
    "Intercept[walk]": -0.4,
    "x[walk]": -0.5,
    "sd(Intercept[car]|g)": 0.8,
    "sd(Intercept[walk]|g)": 0.5,
    "cor(Intercept[car],Intercept[walk]|g)": 0.5,
}


def simulate(n_groups=40, per_group=30, seed=0, shift=0.0):
    """Baseline-category logit data; the intercepts hold at x = 0 (x is centred at ``shift``)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=g.size) + shift
    sd = np.array([TRUTH["sd(Intercept[car]|g)"], TRUTH["sd(Intercept[walk]|g)"]])
    rho = TRUTH["cor(Intercept[car],Intercept[walk]|g)"]
    u = rng.multivariate_normal([0, 0], np.outer(sd, sd) * np.array([[1, rho], [rho, 1]]), n_groups)
    eta = np.stack(
        [
            TRUTH["Intercept[car]"] + TRUTH["x[car]"] * x + u[g, 0],
            TRUTH["Intercept[walk]"] + TRUTH["x[walk]"] * x + u[g, 1],
        ],
        axis=1,
    )
    p = special.softmax(np.c_[np.zeros(g.size), eta], axis=1)
    choice = np.array(CATEGORIES)[(rng.random(g.size)[:, None] > p.cumsum(axis=1)).sum(axis=1)]
    return pd.DataFrame({"choice": choice, "x": x, "g": [f"s{j}" for j in g]})


def test_design_has_one_predictor_per_category():
    df = simulate(n_groups=10, per_group=6)
    before = df.copy()
    model = bg.GLMM("choice ~ x + (1 | g)", df, family="categorical")
    pd.testing.assert_frame_equal(df, before)  # the user's data is unchanged
    design = model.design
    assert model.family.categories == CATEGORIES and design.predictors == ("car", "walk")
    assert design.fixed.labels == ("Intercept[car]", "x[car]", "Intercept[walk]", "x[walk]")
    (block,) = design.blocks
    assert block.terms == ("Intercept[car]", "Intercept[walk]") and block.correlated
    uncorrelated = bg.GLMM("choice ~ x + (1 || g)", df, family="categorical").design.blocks[0]
    assert not uncorrelated.correlated
    assert set(design.y) == {0.0, 1.0, 2.0}
    pm_model = model.pymc_model
    assert "chol_g" in pm_model.named_vars  # one LKJCholeskyCov across the categories
    # at the initial point every linear predictor is 0: each category has probability 1/3
    logp = pm_model.compile_logp(vars=[pm_model["y"]])(pm_model.initial_point())
    assert logp == pytest.approx(-len(df) * np.log(3))


def test_slopes_vary_per_category_and_reference_follows_category_order():
    df = simulate(n_groups=10, per_group=6)
    ordered = df.assign(choice=pd.Categorical(df["choice"], categories=["walk", "bus", "car"]))
    model = bg.GLMM("choice ~ x + (1 + x | g)", ordered, family="multinomial")
    assert model.family.categories == ("walk", "bus", "car")
    (block,) = model.design.blocks
    assert block.terms == ("Intercept[bus]", "x[bus]", "Intercept[car]", "x[car]")
    pm_model = model.pymc_model
    assert pm_model.initial_point()["z_g"].shape == (10, 4)
    assert np.isfinite(pm_model.compile_logp()(pm_model.initial_point()))


def test_bad_categorical_input():
    df = simulate(n_groups=10, per_group=6)
    with pytest.raises(bg.ResponseError, match="single category"):
        bg.GLMM("choice ~ x + (1 | g)", df.assign(choice="bus"), family="categorical")
    with pytest.raises(bg.FamilyError, match="does not allow link 'probit'"):
        bg.GLMM("choice ~ x + (1 | g)", df, family="categorical", link="probit")
    with pytest.raises(bg.FormulaError, match="offset"):
        bg.GLMM("choice ~ x + offset(x) + (1 | g)", df, family="categorical")
    with pytest.raises(bg.ResponseError, match="distinct values"):
        bg.GLMM("x ~ 1 + (1 | g)", df, family="categorical")


def _multinomial_ml(df):
    """Maximum-likelihood fit of choice ~ x (no random effects), by direct optimisation."""
    y = pd.Categorical(df["choice"], categories=CATEGORIES).codes
    X = np.c_[np.ones(len(df)), df["x"].to_numpy()]

    def nll(theta):
        eta = np.c_[np.zeros(len(df)), X @ theta.reshape(2, 2).T]
        return -(eta[np.arange(len(df)), y] - special.logsumexp(eta, axis=1)).sum()

    return optimize.minimize(nll, np.zeros(4), method="BFGS").x


@pytest.mark.sampling
def test_fixed_effects_match_maximum_likelihood_and_results_plug_in(tmp_path):
    df = simulate(n_groups=20, per_group=40, seed=4, shift=3.0)  # uncentred x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("choice ~ x", df, family="categorical").fit(
            draws=500, tune=500, chains=2, cores=1, progressbar=False, random_seed=2
        )
    s = res.summary()
    ml = _multinomial_ml(df)
    for label, value in zip(["Intercept[car]", "x[car]", "Intercept[walk]", "x[walk]"], ml):
        assert abs(s.loc[label, "mean"] - value) < 0.35 * s.loc[label, "sd"], (label, s.loc[label, "mean"], value)
    assert "exp_mean" in s.columns  # odds ratios against the reference category
    for marginal in (False, True):
        probs = res.predict(df.head(3), summary=False, marginal=marginal)
        assert probs.shape == (2, 500, 3, 3)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-9)
    table = res.predict(df.head(2))
    assert list(table["category"]) == list(CATEGORIES) * 2
    link = res.predict(df.head(2), kind="link")
    assert list(link["category"]) == ["car", "walk"] * 2
    drawn = res.predict(df.head(3), kind="response", summary=False)
    assert set(np.unique(drawn)) <= {0.0, 1.0, 2.0}
    with pytest.raises(bg.ArgumentError, match="unordered category codes"):
        res.predict(df.head(3), kind="response")
    comp = res.comparisons("x")
    assert comp["mean"].sum() == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(res.loo().elpd_loo)
    res.save(tmp_path / "categorical.bglmm")
    back = bg.load(tmp_path / "categorical.bglmm")
    pd.testing.assert_frame_equal(back.summary(), s)
    pd.testing.assert_frame_equal(back.predict(df.head(2)), table)


@pytest.mark.sampling
def test_random_intercepts_give_icc_per_category():
    df = simulate(n_groups=15, per_group=20, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("choice ~ x + (1 | g)", df, family="categorical").fit(
            draws=200, tune=300, chains=2, cores=1, progressbar=False, random_seed=3
        )
    icc = res.icc()
    assert list(icc["category"]) == ["car", "walk"] and icc["mean"].between(0, 1).all()
    sd = res.draws("sd_g")  # ICC of category k: sd_k² / (sd_k² + π²/3)
    expected = (sd**2 / (sd**2 + np.pi**2 / 3)).mean(axis=(0, 1))
    np.testing.assert_allclose(icc["mean"], expected)
    ranef = res.ranef()
    assert set(ranef["term"]) == {"Intercept[car]", "Intercept[walk]"} and len(ranef) == 30
    same = res.predict(df.head(2), re_formula="~(1 | g)")
    pd.testing.assert_frame_equal(same, res.predict(df.head(2)))
    new = df.head(2).assign(g="unseen")
    with pytest.raises(bg.NewLevelError):
        res.predict(new)
    assert np.isfinite(res.predict(new, allow_new_levels=True, random_seed=1)["mean"]).all()
    shares = res.grouped_ppc("g", stat="car", random_seed=1)
    observed = df.groupby("g")["choice"].apply(lambda c: np.mean(c == "car"))
    np.testing.assert_allclose(shares["observed"], observed.loc[list(shares["level"])])
    with pytest.raises(bg.ArgumentError, match="unordered category codes"):
        res.grouped_ppc("g")


@pytest.mark.slow
def test_categorical_recovery():
    """Posterior means within 3 posterior SD of the simulation's truth; R-hat <= 1.01."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("choice ~ x + (1 | g)", simulate(n_groups=60, shift=2.0), family="categorical").fit(
            random_seed=1, progressbar=False
        )
    s = res.summary()
    for name, value in TRUTH.items():
        assert abs(s.loc[name, "mean"] - value) < 3 * s.loc[name, "sd"], (name, s.loc[name, "mean"], value)
    assert s["r_hat"].max() <= 1.01 and res.diagnostics["divergences"] == 0


def test_density_and_draws_are_pymcs_categorical():
    """The lean categorical density (one-index gather, C code in the gradient) is PyMC's, and its
    draws have the softmax probabilities."""
    from bayesglmm.categorical import _categorical_logp, _categorical_random

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 4))
    value = rng.integers(0, 4, size=50)
    expected = pm.logp(pm.Categorical.dist(logit_p=logits, shape=50), value).eval()
    np.testing.assert_allclose(_categorical_logp(pt.as_tensor(value), pt.as_tensor(logits)).eval(), expected)
    draws = _categorical_random(np.tile(logits[:2], (20_000, 1, 1)), rng=np.random.default_rng(3))
    p = np.exp(logits[:2]) / np.exp(logits[:2]).sum(axis=1, keepdims=True)
    freq = np.stack([(draws == k).mean(axis=0) for k in range(4)], axis=1)
    np.testing.assert_allclose(freq, p, atol=0.015)  # 4.5 SE at p = 0.5
