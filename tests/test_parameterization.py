"""Partially centred random effects: the weights, the anchors, the same posterior."""

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
from pytensor.graph.traversal import ancestors
from scipy import special

import bayesglmm as bg
from bayesglmm.families import LINKS
from bayesglmm.parameterization import centring, level_covariates, level_sd, working_fit

from .conftest import short_fit


def _frame(seed=3, groups=40):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 60, groups)
    g = np.repeat(np.arange(groups), sizes)
    school_ses = rng.normal(size=groups)
    x = rng.normal(size=g.size)
    eta = -0.3 + 0.5 * x + 0.6 * school_ses[g] + rng.normal(0, 0.8, groups)[g]
    return pd.DataFrame(
        {
            "y": rng.binomial(1, 1 / (1 + np.exp(-eta))),
            "count": rng.poisson(np.exp(eta)),
            "amount": rng.gamma(4.0, np.exp(eta) / 4.0),
            "x": x,
            "ses": school_ses[g],
            "school": g.astype(str),
            "pupil": np.arange(g.size).astype(str),
            "class": (g * 2 + rng.integers(0, 2, g.size)).astype(str),
            "rater": rng.integers(0, 10, g.size).astype(str),
            "grade": np.digitize(eta + rng.logistic(size=g.size), [-1.0, 0.0, 1.0]),
            "share": rng.beta(8 / (1 + np.exp(-eta)), 8 / (1 + np.exp(eta))),
        }
    )


def _logistic(groups: int, size: int, sd: float, seed: int) -> pd.DataFrame:
    """Random-intercept logistic data: ``groups`` levels of ``size`` rows, effects of SD ``sd``."""
    rng = np.random.default_rng(seed * 100 + groups + size)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=groups * size)
    eta = -1 + 0.5 * x + rng.normal(0, sd, groups)[g]
    y = (rng.random(groups * size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})


def test_weights_follow_the_information_of_each_level():
    df = _frame()
    model = bg.GLMM("y ~ x + ses + (1 | school)", df, family="bernoulli")
    (block,) = model.design.blocks
    c = centring(model.design, model.family, model.link)[block.name][:, 0]
    weights, _ = working_fit(model.design, model.family, model.link)
    info = np.bincount(block.idx, weights=weights)
    assert np.all((c > 0) & (c < 1))
    sd2 = c / (1 - c) / info  # c = ρ / (1 + ρ), ρ = info · sd²: one SD for every level
    np.testing.assert_allclose(sd2, sd2[0], rtol=1e-9)
    assert 0.2**2 < sd2[0] < 0.8**2  # a low guess of the true SD, 0.8


def test_level_sd_is_the_moment_estimate_lowered_by_its_uncertainty():
    rng = np.random.default_rng(1)
    info = rng.uniform(2, 50, 20_000)
    deviation = rng.normal(0, np.sqrt(0.6**2 + 1 / info))
    assert level_sd(info, deviation) == pytest.approx(0.6, rel=0.03)
    assert level_sd(info[:10], rng.normal(0, np.sqrt(1 / info[:10]))) < 0.2  # no spread beyond noise
    assert level_sd(info[:1], deviation[:1]) == 0.0


@pytest.mark.parametrize(("groups", "size", "sd"), [(10, 50, 0.25), (400, 50, 1.0)])
def test_weights_do_not_overshoot_the_true_sd(groups, size, sd):
    """The centred form is the one that fails when the SD is overestimated (funnel at small SDs).

    The earlier rule took the SD from its prior (mean 1): with 10 levels of true SD
    0.25 it centred at 0.9 (see the regression test below).
    """
    model = bg.GLMM("y ~ x + (1 | g)", _logistic(groups, size, sd, seed=1), family="bernoulli")
    c = centring(model.design, model.family, model.link)["g"][:, 0]
    weights, _ = working_fit(model.design, model.family, model.link)
    info = np.bincount(model.design.blocks[0].idx, weights=weights)
    best = info * sd**2 / (1 + info * sd**2)
    assert np.all(c <= best + 0.05)
    if groups > 100:  # one-step estimates shrink large logit effects: the guess errs low, not far
        assert np.all(c >= best - 0.1)


def test_rule_leaves_nested_weak_correlated_and_other_families_non_centred():
    df = _frame()
    nested = bg.GLMM("count ~ x + (1 | school) + (1 | class)", df, family="poisson")
    assert centring(nested.design, nested.family, nested.link) == {}
    correlated = bg.GLMM("y ~ x + (1 + x | school)", df, family="bernoulli")  # weakly informed: 2-60 rows
    assert centring(correlated.design, correlated.family, correlated.link) == {}
    identity = bg.GLMM("amount ~ x + (1 | school)", df, family="gamma", link="identity")
    assert centring(identity.design, identity.family, identity.link) == {}
    assert identity.sampling_model() is identity.pymc_model
    independent = bg.GLMM("y ~ x + (1 + x || school)", df, family="bernoulli")
    weights = centring(independent.design, independent.family, independent.link)
    assert [w.shape for w in weights.values()] == [(40, 2)]


@pytest.mark.parametrize("family", ["gamma", "negativebinomial"])
def test_log_link_weights_use_the_dispersion(family):
    """Fisher weights μ²/Var(y): the gamma's shape; μ / (1 + μ/α) for the negative binomial."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=20_000)
    mu = np.exp(0.5 + 0.4 * x)
    y = rng.gamma(4.0, mu / 4.0) if family == "gamma" else rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    df = pd.DataFrame({"y": y, "x": x, "g": np.arange(x.size) % 50})
    model = bg.GLMM("y ~ x + (1 | g)", df, family=family)
    weights, residuals = working_fit(model.design, model.family, model.link)
    expected = np.full_like(mu, 4.0) if family == "gamma" else mu / (1 + mu / 3.0)
    np.testing.assert_allclose(weights, expected, rtol=0.06)
    np.testing.assert_allclose(np.mean(residuals), 0.0, atol=0.02)
    assert set(centring(model.design, model.family, model.link)) == {"g"}


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binary_link_weights_are_the_fisher_weights(link):
    """n μ'(η)² / (μ(1 - μ)) at the GLM's estimate; residuals (y/n - μ) / μ'(η) average 0."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=20_000)
    n = rng.integers(1, 6, x.size)
    eta = -0.4 + 0.5 * x
    inverse, derivative = LINKS[link].inverse_np, LINKS[link].mu_eta_np
    df = pd.DataFrame({"y": rng.binomial(n, inverse(eta)), "n": n, "x": x, "g": np.arange(x.size) % 50})
    model = bg.GLMM("p(y, n) ~ x + (1 | g)", df, family="binomial", link=link)
    weights, residuals = working_fit(model.design, model.family, model.link)
    expected = n * derivative(eta) ** 2 / (inverse(eta) * (1 - inverse(eta)))
    np.testing.assert_allclose(weights, expected, rtol=0.06)
    np.testing.assert_allclose(np.average(residuals, weights=weights), 0.0, atol=1e-8)
    assert set(centring(model.design, model.family, model.link)) == {"g"}


@pytest.mark.parametrize("link", ["logit", "cloglog"])
def test_beta_weights_are_the_fisher_information(link):
    """φ² (ψ'(μφ) + ψ'((1 - μ)φ)) μ'(η)², with φ from the residuals' moments."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=20_000)
    eta, phi = -0.3 + 0.5 * x, 12.0
    mu, dmu = LINKS[link].inverse_np(eta), LINKS[link].mu_eta_np(eta)
    df = pd.DataFrame({"y": rng.beta(mu * phi, (1 - mu) * phi), "x": x, "g": np.arange(x.size) % 50})
    model = bg.GLMM("y ~ x + (1 | g)", df, family="beta", link=link)
    weights, residuals = working_fit(model.design, model.family, model.link)
    expected = phi**2 * (special.polygamma(1, mu * phi) + special.polygamma(1, (1 - mu) * phi)) * dmu**2
    np.testing.assert_allclose(weights, expected, rtol=0.06)
    assert abs(np.sum(weights * residuals)) < 1e-3 * np.sum(weights)
    assert set(centring(model.design, model.family, model.link)) == {"g"}


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_ordinal_weights_are_the_fisher_information(link):
    """Σ_k (f(c_k - η) - f(c_{k-1} - η))² / P_k at the ML fit; the scores sum to 0 there."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=20_000)
    eta, cuts = 0.6 * x, np.array([-1.0, 0.2, 1.5])
    cdf, pdf = (LINKS[link].inverse_np, LINKS[link].mu_eta_np)
    y = np.digitize(eta + (rng.logistic(size=x.size) if link == "logit" else rng.normal(size=x.size)), cuts)
    df = pd.DataFrame({"y": y, "x": x, "g": np.arange(x.size) % 50})
    model = bg.GLMM("y ~ x + (1 | g)", df, family="cumulative", link=link)
    weights, residuals = working_fit(model.design, model.family, model.link)
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])[None, :] - eta[:, None]
    expected = np.sum(np.diff(pdf(edges), axis=1) ** 2 / np.diff(cdf(edges), axis=1), axis=1)
    np.testing.assert_allclose(weights, expected, rtol=0.06)
    assert abs(np.sum(weights * residuals)) < 1e-3 * np.sum(weights)
    assert set(centring(model.design, model.family, model.link)) == {"g"}


def test_level_covariates_are_the_columns_constant_within_levels():
    df = _frame()
    model = bg.GLMM("y ~ x + ses + (1 | school)", df, family="bernoulli")
    fixed = model.design.fixed
    X = fixed.standardized(fixed.X)
    cols, values = level_covariates(model.design.blocks[0], X)
    labels = [fixed.labels[j] for j in fixed.slope_columns]
    assert [labels[c] for c in cols] == ["ses"]
    first = df.groupby("school", sort=False)["ses"].first().reindex(list(model.design.blocks[0].levels))
    np.testing.assert_allclose(values[:, 0], (first.to_numpy() - fixed.center[2]) / fixed.scale[2])


@pytest.mark.parametrize(
    ("formula", "family"),
    [
        ("y ~ x + ses + (1 | school)", "bernoulli"),
        ("y ~ x + ses + (1 | school)", ("bernoulli", "probit")),
        ("y ~ x + ses + (1 | school)", ("bernoulli", "cloglog")),
        ("count ~ x + (1 + x || school)", "poisson"),
        ("amount ~ x + (1 | school)", "gamma"),
        ("share ~ x + ses + (1 | school)", ("beta", "logit")),
        ("amount ~ x + (1 | school)", "student_t"),
        ("grade ~ x + ses + (1 | school)", ("cumulative", "logit")),
        ("grade ~ x + (1 | school)", ("cumulative", "probit")),
    ],
)
def test_sampling_model_has_the_same_posterior(formula, family):
    """logp(w) = logp(z(w)) + log|dz/dw|, with dz/dw = sd^(-c): one density, two coordinates."""
    family, link = family if isinstance(family, tuple) else (family, None)
    model = bg.GLMM(formula, _frame(), family=family, link=link)
    full, target = model.pymc_model, model.sampling_model(reduce=False)
    (block,) = model.design.blocks
    c = centring(model.design, model.family, model.link)[block.name]
    assert f"w_{block.name}" in {v.name for v in target.free_RVs}
    logp_full, logp_target = full.compile_logp(), target.compile_logp()
    (z_graph,) = target.replace_rvs_by_values([target[f"z_{block.name}"]])
    z_of = target.compile_fn(z_graph, inputs=target.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    for _ in range(4):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in target.initial_point().items()}
        full_point = {k: v for k, v in point.items() if not k.startswith("w_")}
        full_point[f"z_{block.name}"] = z_of(point)
        log_sd = point[f"sd_{block.name}_log__"]
        jacobian = -np.sum(c * log_sd)
        np.testing.assert_allclose(logp_target(point), logp_full(full_point) + jacobian, rtol=1e-10)


def _slopes_frame(groups=20, size=100, seed=4):
    """Poisson counts with a well-informed correlated random slope (SDs 0.8, 0.4; correlation 0.3)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(1.0, 1.0, g.size)  # off-centre: the intercept's anchor must allow for it
    u = rng.multivariate_normal([0, 0], [[0.64, 0.096], [0.096, 0.16]], size=groups)
    eta = 0.5 + 0.3 * x + u[g, 0] + u[g, 1] * x
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "w": rng.normal(size=g.size), "g": g.astype(str)})


def test_correlated_block_is_centred_whole_or_not_at_all():
    informed = bg.GLMM("y ~ x + (1 + x | g)", _slopes_frame(), family="poisson")
    assert np.min(informed.centring()["g"]) >= 0.5
    weak = bg.GLMM("y ~ x + (1 + x | g)", _slopes_frame(size=4), family="poisson")
    assert weak.centring() == {}
    assert weak.sampling_model() is weak.pymc_model


def test_correlated_centred_block_has_the_same_posterior():
    """w = m + z Lᵀ per level: logp(w) = logp(z) - J log|L| = logp(z) - (J/2) log det Σ."""
    model = bg.GLMM("y ~ x + w + (1 + x | g)", _slopes_frame(), family="poisson")
    full, target = model.pymc_model, model.sampling_model(reduce=False)
    assert "w_g" in {v.name for v in target.free_RVs}
    logp_full, logp_target = full.compile_logp(), target.compile_logp()
    outs = target.replace_rvs_by_values([target["z_g"], target["sd_g"], target["cor_g"]])
    values = target.compile_fn(outs, inputs=target.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    for _ in range(4):
        point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in target.initial_point().items()}
        z, sd, cor = values(point)
        full_point = {k: v for k, v in point.items() if k != "w_g"} | {"z_g": z}
        half_logdet = 0.5 * np.linalg.slogdet(np.outer(sd, sd) * cor)[1]
        np.testing.assert_allclose(logp_target(point), logp_full(full_point) - 20 * half_logdet, rtol=1e-10)


def test_anchors_take_the_fixed_intercept_and_slope_off_the_likelihood():
    """With every level's intercept and slope anchored, eta depends on w alone (x off-centre)."""
    model = bg.GLMM("y ~ x + (1 + x | g)", _slopes_frame(), family="poisson")
    target = model.sampling_model(reduce=False)
    (eta,) = target.replace_rvs_by_values([target["eta"]])
    eta_of = target.compile_fn(eta, inputs=target.value_vars, on_unused_input="ignore")
    point = target.initial_point()
    moved = point | {
        "Intercept_centered": point["Intercept_centered"] + 0.7,
        "b_normal_scaled": point["b_normal_scaled"] - 0.4,
    }
    np.testing.assert_allclose(eta_of(moved), eta_of(point), rtol=1e-10)


@pytest.mark.sampling
def test_correlated_centred_fit_stores_z_and_r():
    """Draws of the centred block are stored as the non-centred model holds them: r = z Lᵀ."""
    model = bg.GLMM("y ~ x + (1 + x | g)", _slopes_frame(groups=12, size=60), family="poisson")
    res = short_fit(model, random_seed=3, sampler="pymc")
    post = res.idata.posterior
    assert res.idata.attrs["centred_blocks"] == "g" and "w_g" not in post
    sd, cor = post["sd_g"].values[0, :5], post["cor_g"].values[0, :5]
    z, r = post["z_g"].values[0, :5], post["r_g"].values[0, :5]
    for d in range(5):
        L = np.linalg.cholesky(np.outer(sd[d], sd[d]) * cor[d])
        np.testing.assert_allclose(z[d] @ L.T, r[d], rtol=1e-8, atol=1e-10)


@pytest.mark.sampling
def test_centred_fit_stores_the_non_centred_variables():
    df = _frame()
    model = bg.GLMM("y ~ x + ses + (1 | school)", df, family="bernoulli")
    res = short_fit(model, random_seed=2)
    post = res.idata.posterior
    assert res.idata.attrs["centred_blocks"] == model.design.blocks[0].name
    assert {"z_school", "r_school"} <= set(post.data_vars) and "w_school" not in post
    # z is r / sd in every draw, so predictions through the non-centred graph see the same effects
    np.testing.assert_allclose(post["z_school"] * post["sd_school"], post["r_school"], rtol=1e-10)
    assert res.predict().shape[0] == len(df)
    with pytest.raises(bg.FitArgumentError, match="centre must be True or False"):
        model.fit(centre="yes")


def test_models_mixing_eligible_and_other_blocks_stay_non_centred():
    df = _frame()
    mixed = bg.GLMM("y ~ x + (1 | school) + (1 + x | rater)", df, family="bernoulli")  # rater: correlated
    assert centring(mixed.design, mixed.family, mixed.link) == {}
    assert mixed.sampling_model(reduce=False) is mixed.pymc_model
    crossed = bg.GLMM("y ~ x + (1 | school) + (1 | rater)", df, family="bernoulli")
    assert list(centring(crossed.design, crossed.family, crossed.link)) == ["school", "rater"]
    model = crossed.sampling_model(reduce=False)
    assert all(_depends_on(model[f"w_{g}"], model["Intercept_centered"]) for g in ("school", "rater"))


def _depends_on(rv, other) -> bool:
    """Whether ``other`` is among the ancestors of ``rv``'s parameters (its mean, here)."""
    return other in set(ancestors(rv.owner.inputs[2:]))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_small_sd_and_few_levels_sample_cleanly(seed):
    """Regression: with the SD guessed from its prior (mean 1) these data were centred at
    c ≈ 0.9 and the default fit gave R-hat 1.031 with 56 (seed 1) and 18 (seed 2) divergences."""
    model = bg.GLMM("y ~ x + (1 | g)", _logistic(10, 50, 0.25, seed), family="bernoulli")
    assert centring(model.design, model.family, model.link)["g"].max() < 0.5
    res = model.fit(random_seed=seed, progressbar=False)
    assert res.diagnostics["max_rhat"] <= 1.01
    assert res.diagnostics["divergences"] == 0


def test_correlated_centred_gradient_runs_no_python():
    """The centred block's N(anchor, L Lᵀ) density is written elementwise (model._mv_normal): PyMC's
    MvNormal runs a Cholesky factorisation and triangular solves, and their gradients, in Python."""
    from pytensor.link.c.interface import CLinkerOp

    from bayesglmm import cnuts

    model = bg.GLMM("y ~ x + (1 + x | g)", _slopes_frame(), family="poisson")
    fns = cnuts.compile_functions(model.sampling_model(), ["fixef", "z_g"])
    for fn in (fns.logp_dlogp, fns.expand):
        python = {str(node.op) for node in fn.maker.fgraph.apply_nodes if not isinstance(node.op, CLinkerOp)}
        assert not python, python


def test_mv_normal_density_draws_and_start():
    """model._mv_normal: the rows' multivariate normal log density, draws with mean mu and
    covariance L Lᵀ, and an initial point at mu."""
    from scipy import stats

    from bayesglmm.model import _mv_normal

    mu = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, -5.0]])
    L = np.array([[1.0, 0.0], [0.5, 2.0]])
    with pm.Model() as m:
        w = _mv_normal("w", pt.as_tensor(mu), pt.as_tensor(L), 2, dims=None)
    value = np.array([[0.3, 0.1], [1.0, 4.0], [5.0, -4.0]])
    expected = [stats.multivariate_normal(mu[j], L @ L.T).logpdf(value[j]) for j in range(3)]
    np.testing.assert_allclose(pm.logp(w, value).eval(), expected, rtol=1e-12)
    draws = pm.draw(w, draws=20_000, random_seed=1)
    assert draws.shape == (20_000, 3, 2)
    np.testing.assert_allclose(draws.mean(axis=0), mu, atol=0.06)  # 4 SE of the mean at SD 2.06
    np.testing.assert_allclose(np.cov(draws[:, 1].T), L @ L.T, atol=0.15)
    np.testing.assert_array_equal(m.initial_point()["w"], mu)
