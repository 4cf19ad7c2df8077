"""Short-sampling tests: a real (small) fit through every result method."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg

pytestmark = pytest.mark.sampling

SHORT = {"draws": 250, "tune": 300, "chains": 2, "cores": 1, "progressbar": False}


def _sim(seed=11):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(15), 12)
    x = rng.normal(size=g.size)
    u = rng.multivariate_normal([0, 0], [[0.8, -0.2], [-0.2, 0.3]], size=15)
    eta = -0.5 + 0.7 * x + u[g, 0] + u[g, 1] * x
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "x": x, "school": [f"s{i}" for i in g]})


@pytest.fixture(scope="module")
def data():
    return _sim()


@pytest.fixture(scope="module")
def res(data):
    model = bg.GLMM("y ~ x + (1 + x | school)", data, family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return model.fit(random_seed=5, **SHORT)


def test_idata_holds_every_group_effect(res):
    r = res.idata.posterior["r_school"]
    assert r.dims == ("chain", "draw", "school", "school__term")
    assert list(r["school"].values[:3]) == ["s0", "s1", "s10"]
    assert "log_likelihood" not in res.idata.groups()  # computed when first needed, then kept
    assert res.log_lik().dims == ("chain", "draw", "y_dim_0") and res.log_lik().shape == (2, 250, 180)
    assert "log_likelihood" in res.idata.groups() and res.idata.attrs["log_likelihood"] == "stored"
    assert "mu" not in res.idata.posterior and "eta" not in res.idata.posterior


def test_summary_layout(res):
    s = res.summary(prob=0.9)
    assert list(s.index) == ["Intercept", "x", "sd(Intercept|school)", "sd(x|school)", "cor(Intercept,x|school)"]
    assert list(s.columns) == [
        "mean",
        "sd",
        "hdi_low",
        "hdi_high",
        "ess_bulk",
        "ess_tail",
        "r_hat",
        "exp_mean",
        "exp_hdi_low",
        "exp_hdi_high",
    ]
    assert np.isnan(s.loc["sd(x|school)", "exp_mean"])
    fx = res.draws("fixef")[..., 1]
    assert s.loc["x", "exp_mean"] == pytest.approx(np.exp(fx).mean())
    assert (s["hdi_low"] <= s["mean"]).all() and (s["mean"] <= s["hdi_high"]).all()
    assert res.fixef().index.tolist() == ["Intercept", "x"]


def test_varcorr_ranef_coef(res):
    vc = res.varcorr()
    assert list(vc.columns) == ["group", "term1", "term2", "mean", "sd", "hdi_low", "hdi_high"]
    assert vc["term2"].isna().sum() == 2 and vc.iloc[2][["term1", "term2"]].tolist() == ["Intercept", "x"]
    re = res.ranef()
    assert len(re) == 30 and list(re.columns) == ["group", "level", "term", "mean", "sd", "hdi_low", "hdi_high"]
    co = res.coef().set_index(["level", "term"])
    fx = res.fixef()["mean"]
    rr = re.set_index(["level", "term"])["mean"]
    assert co.loc[("s3", "x"), "mean"] == pytest.approx(fx["x"] + rr[("s3", "x")])


def test_predict_conditional_typical_and_new_levels(res, data):
    p = res.predict()
    assert p.shape == (180, 4) and p["mean"].between(0, 1).all()
    new = pd.DataFrame({"x": [0.0, 0.0], "school": ["s1", "s1"]})
    typical = res.predict(new, re_formula="~0", summary=False)
    fx = res.draws("fixef")[..., 0]
    assert np.allclose(typical[..., 0], 1 / (1 + np.exp(-fx)))
    link = res.predict(new, kind="link", summary=False)
    r = res.idata.posterior["r_school"].sel(school="s1", school__term="Intercept").values
    assert np.allclose(link[..., 0], fx + r)
    with pytest.raises(bg.NewLevelError, match=r"1 level\(s\) of 'school' not seen.*allow_new_levels=True"):
        res.predict(pd.DataFrame({"x": [0.0], "school": ["new"]}))
    fresh = res.predict(
        pd.DataFrame({"x": [0.0], "school": ["new"]}), kind="link", allow_new_levels=True, summary=False, random_seed=2
    )
    sd0 = res.draws("sd_school")[..., 0]
    # a new school's intercept spread = fixed-effect spread + the fitted between-school SD
    assert fresh.std() == pytest.approx(np.sqrt(fx.var() + np.mean(sd0**2)), rel=0.15)
    keep_int = res.predict(
        pd.DataFrame({"x": [1.0], "school": ["s1"]}), kind="link", re_formula="~(1 | school)", summary=False
    )
    fx1 = res.draws("fixef")[..., 1]
    assert np.allclose(keep_int[..., 0], fx + fx1 + r)


def test_response_draws_are_seeded(res):
    a = res.predict(kind="response", summary=False, random_seed=3)
    b = res.predict(kind="response", summary=False, random_seed=3)
    assert set(np.unique(a)) <= {0, 1} and np.array_equal(a, b)


def test_save_load_round_trip(res, tmp_path):
    path = tmp_path / "fit.zip"
    res.save(path)
    back = bg.load(path)
    pd.testing.assert_frame_equal(back.summary(), res.summary())
    pd.testing.assert_frame_equal(back.ranef(), res.ranef())
    new = pd.DataFrame({"x": [0.5, -1.0], "school": ["s2", "s9"]})
    pd.testing.assert_frame_equal(back.predict(new), res.predict(new))
    with pytest.raises(bg.ArgumentError, match="cannot read"):
        bg.load(tmp_path / "missing.zip")


def test_repr_and_html(res):
    text = repr(res)
    assert "y ~ x + (1 + x | school)" in text and "cor(Intercept,x|school)" in text and "random_seed=5" in text
    assert "<table" in res._repr_html_()


def test_same_seed_same_draws(data):
    model = bg.GLMM("y ~ x + (1 | school)", data, family="bernoulli")
    kw = dict(SHORT, draws=60, tune=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        a, b = model.fit(random_seed=9, **kw), model.fit(random_seed=9, **kw)
        c = model.fit(random_seed=10, **kw)
    assert np.array_equal(a.draws("fixef"), b.draws("fixef"))
    assert not np.array_equal(a.draws("fixef"), c.draws("fixef"))


def test_heap_is_frozen_while_fitting_only(data, monkeypatch):
    """The objects alive when a fit starts are kept from the collector's passes during it, and given back."""
    import gc

    from bayesglmm import glmm

    seen = []
    real = glmm.sample
    monkeypatch.setattr(glmm, "sample", lambda *a, **k: seen.append(gc.get_freeze_count()) or real(*a, **k))
    model = bg.GLMM("y ~ x + (1 | school)", data, family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        model.fit(random_seed=1, **dict(SHORT, draws=30, tune=30))
        assert seen[-1] > 0 and gc.get_freeze_count() == 0
        gc.freeze()  # frozen by someone else: left as it is, not unfrozen at the end
        try:
            frozen = gc.get_freeze_count()
            model.fit(random_seed=1, **dict(SHORT, draws=30, tune=30))
            assert seen[-1] <= frozen and gc.get_freeze_count() > 0  # not frozen again, not unfrozen
        finally:
            gc.unfreeze()


def test_short_run_warns_naming_parameters(data):
    model = bg.GLMM("y ~ x + (1 | school)", data, family="bernoulli")
    with pytest.warns(bg.ConvergenceWarning, match=r"effective sample size below 400 for .*sd\(Intercept\|school\)"):
        model.fit(random_seed=1, **dict(SHORT, draws=40, tune=40))


def test_one_chain_fits_and_says_rhat_is_not_checked(data):
    """With chains=1 there is no R-hat: the fit says so, and the tables show NaN, not an error."""
    model = bg.GLMM("y ~ x + (1 | school)", data, family="bernoulli")
    with pytest.warns(bg.ConvergenceWarning, match="R-hat needs at least two chains"):
        res = model.fit(random_seed=1, **dict(SHORT, chains=1))
    assert np.isnan(res.diagnostics["max_rhat"]) and res.diagnostics["min_ess_bulk"] > 0
    table = res.summary()
    assert table["r_hat"].isna().all() and (table["ess_bulk"] > 0).all()


@pytest.mark.parametrize(
    ("rows", "columns", "effects", "chosen"),
    [
        (56, 5, 15, "nutpie-c"),
        (1934, 8, 120, "nutpie-c"),
        (403, 7, 584, "nutpie"),
        (7584, 8, 340, "nutpie"),
        (10**6, 2, 0, "nutpie"),
    ],
)
def test_auto_sampler_by_size(rows, columns, effects, chosen):
    from bayesglmm.fit import choose_sampler, make_config

    cfg = choose_sampler(make_config(random_seed=1), rows, columns, effects)
    assert cfg.sampler == chosen
    assert choose_sampler(make_config(random_seed=1, sampler="numpyro"), rows, columns, effects).sampler == "numpyro"


@pytest.fixture
def no_nutpie(monkeypatch):
    """``import nutpie`` fails for the test."""
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "nutpie":
            raise ImportError("no nutpie")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)


def test_auto_sampler_without_nutpie(no_nutpie):
    """Without nutpie, ``"auto"`` falls back to PyMC's NUTS; an explicit choice is kept."""
    from bayesglmm.fit import choose_sampler, make_config

    assert choose_sampler(make_config(random_seed=1), 56, 5, 15).sampler == "pymc"
    assert choose_sampler(make_config(random_seed=1, sampler="nutpie-c"), 56, 5, 15).sampler == "nutpie-c"


@pytest.mark.parametrize(
    "effects, weights, default",
    [(0, None, 0.8), (18, None, 0.95), (18, [0.0, 0.9], 0.95), (18, [0.49, 0.9], 0.95), (18, [0.5, 0.9], 0.8)],
)
def test_default_target_accept(effects, weights, default):
    """0.95 while random effects are sampled (funnels), 0.8 once integrated out or all at least half centred."""
    from bayesglmm.fit import choose_target_accept, make_config

    centring = {} if weights is None else {"a": np.array([[weights[0]], [0.7]]), "b": np.array([[weights[1]]])}
    assert choose_target_accept(make_config(random_seed=1), effects, centring).target_accept == default
    chosen = make_config(random_seed=1, target_accept=0.9)
    assert choose_target_accept(chosen, effects, centring).target_accept == 0.9


def test_correlated_centred_target_accept():
    """A correlated block centred whole needs weights of 0.8 everywhere for 0.8 (one divergence at 0.55)."""
    from bayesglmm.fit import choose_target_accept, make_config

    cfg, weights = make_config(random_seed=1), {"g": np.array([[0.95, 0.6], [0.9, 0.85]])}
    assert choose_target_accept(cfg, 4, weights).target_accept == 0.8
    assert choose_target_accept(cfg, 4, weights, correlated=("g",)).target_accept == 0.95
    weights["g"][0, 1] = 0.8
    assert choose_target_accept(cfg, 4, weights, correlated=("g",)).target_accept == 0.8


def test_nested_pairs_target_accept():
    """0.98 with nested pairs while effects are sampled; an explicit choice and marginal models are untouched."""
    from bayesglmm.fit import choose_target_accept, make_config

    assert choose_target_accept(make_config(random_seed=1), 18, {}, nested=True).target_accept == 0.98
    assert choose_target_accept(make_config(random_seed=1), 0, {}, nested=True).target_accept == 0.8
    chosen = make_config(random_seed=1, target_accept=0.9)
    assert choose_target_accept(chosen, 18, {}, nested=True).target_accept == 0.9


@pytest.mark.parametrize("sampler", ["nutpie-c", "nutpie", "pymc", "numpyro"])
def test_other_samplers(data, sampler):
    if sampler == "numpyro":
        pytest.importorskip("numpyro")
    model = bg.GLMM("y ~ x + (1 | school)", data, family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        fit = model.fit(random_seed=4, sampler=sampler, **SHORT)
    assert fit.idata.attrs["sampler"] == sampler
    assert fit.idata.posterior["r_school"].shape == (2, 250, 15, 1)
    assert fit.summary().loc["x", "mean"] == pytest.approx(0.7, abs=0.5)
    assert fit.log_lik().shape == (2, 250, 180)


def test_auto_sampler_for_marginal_models(sim_gaussian):
    """One integrated-out factor takes nutpie-c (its likelihood is C code); several follow the size rule."""
    from bayesglmm.fit import choose_marginal_sampler, choose_sampler, make_config

    one = bg.GLMM("y ~ x + (1 + x | g)", sim_gaussian).design
    two = bg.GLMM("y ~ x + (1 | g) + (1 | h)", sim_gaussian).design
    cfg = make_config(random_seed=1)
    assert choose_marginal_sampler(cfg, one).sampler == "nutpie-c"
    levels = sum(len(b.levels) for b in two.blocks)
    assert choose_marginal_sampler(cfg, two) == choose_sampler(cfg, levels, two.fixed.X.shape[1] + 2, 0)
    assert choose_marginal_sampler(make_config(random_seed=1, sampler="numpyro"), one).sampler == "numpyro"


def test_auto_sampler_for_marginal_models_without_nutpie(sim_gaussian, no_nutpie):
    from bayesglmm.fit import choose_marginal_sampler, make_config

    design = bg.GLMM("y ~ x + (1 + x | g)", sim_gaussian).design
    assert choose_marginal_sampler(make_config(random_seed=1), design).sampler == "pymc"
