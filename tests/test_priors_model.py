"""Stages 3-4: priors and the PyMC graph (no sampling)."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

import bayesglmm as bg
from bayesglmm.families import LINKS


@pytest.fixture
def contraception_model():
    df = bg.datasets.load("contraception")
    return bg.GLMM("use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)", df, family="bernoulli")


def test_default_priors_are_autoscaled(sim_gaussian):
    m = bg.GLMM("y ~ x + (1 + x | g)", sim_gaussian)
    sy = sim_gaussian["y"].std(ddof=0)
    sx = sim_gaussian["x"].std(ddof=0)
    assert m.priors.intercept.kwargs == pytest.approx({"mu": sim_gaussian["y"].mean(), "sigma": 2.5 * sy})
    assert m.priors.b[0].kwargs["sigma"] == pytest.approx(2.5 * sy / sx)
    lam = [p.kwargs["lam"] for p in m.priors.sd["g"]]
    assert lam == pytest.approx([1 / sy, sx / sy])
    assert m.priors.cor["g"].kwargs == {"eta": 1.0}
    assert m.priors.aux["sigma"].kwargs["lam"] == pytest.approx(1 / sy)


def test_overrides_most_specific_wins(sim_gaussian):
    priors = {
        "b": bg.normal(0, 10),
        ("b", "x"): bg.student_t(4, 0, 1),
        "sd": bg.half_normal(2),
        ("sd", "g", "x"): bg.half_normal(0.5),
        ("cor", "g"): bg.lkj(2),
        "sigma": bg.exponential(3),
    }
    m = bg.GLMM("y ~ x + f + (1 + x | g)", sim_gaussian, priors=priors)
    table = m.prior_summary().set_index(["class", "coef", "group"])
    assert table.loc[("b", "x", ""), "prior"].startswith("student_t")
    assert table.loc[("b", "f[b]", ""), "prior"] == "normal(mu=0, sigma=10)"
    assert table.loc[("sd", "x", "g"), "prior"] == "half_normal(sigma=0.5)"
    assert table.loc[("sd", "Intercept", "g"), "prior"] == "half_normal(sigma=2)"
    assert table.loc[("cor", "", "g"), "prior"] == "lkj(eta=2)"
    assert table.loc[("cor", "", "g"), "source"] == "user"
    assert table.loc[("Intercept", "", ""), "source"] == "default"
    # the graph samples with mixed prior families (normal and student_t slopes)
    logp = m.pymc_model.compile_logp()(m.pymc_model.initial_point())
    assert np.isfinite(logp)


def test_graph_structure_one_lkj_per_correlated_block(sim_gaussian):
    m = bg.GLMM("y ~ x + (1 + x | g) + (1 + x || h)", sim_gaussian)
    model = m.pymc_model
    free = {v.name for v in model.free_RVs}
    assert free == {"Intercept_centered", "b_normal_scaled", "z_g", "chol_g", "z_h", "sd_h", "sigma"}
    lkj = [v for v in model.free_RVs if "LKJCholeskyCov" in str(v.owner.op)]
    assert [v.name for v in lkj] == ["chol_g"]
    assert model["z_g"].eval().shape == (12, 2)
    assert model["r_h"].eval().shape == (3, 2)
    assert model.named_vars_to_dims["r_g"] == ("g", "g__term")
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_fixef_deterministic_maps_back_to_user_scale(contraception_model):
    m = contraception_model
    model = m.pymc_model
    point = model.initial_point()
    point["Intercept_centered"] = np.array(0.3)
    point["b_normal_scaled"] = np.linspace(-1, 1, 6)
    point["z_district"] = np.zeros((60, 2))
    outs = model.replace_rvs_by_values([model["fixef"], model["eta"]])
    fixef, eta = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")(point)
    # the slopes are the internal ones divided by the column scales ...
    assert np.allclose(fixef[1:], np.linspace(-1, 1, 6) / m.design.fixed.scale[1:])
    # ... and the user-scale coefficients reproduce the linear predictor (random effects are zero)
    assert np.allclose(m.design.fixed.X @ fixef, eta)


def test_logp_at_initial_point_is_finite_for_every_family(sim_binary):
    for formula, family, link in [
        ("y ~ x + (1 | g)", "bernoulli", "logit"),
        ("y ~ x + (1 | g)", "bernoulli", "probit"),
        ("y ~ x + (1 | g)", "bernoulli", "cloglog"),
        ("p(k, n) ~ x + (1 | g)", "binomial", "logit"),
        ("p(k, n) ~ x + (1 | g)", "binomial", "cloglog"),
        ("k ~ x + offset(np.log(n)) + (1 | g)", "poisson", "log"),
        ("n ~ x + (1 | g)", "gaussian", "log"),
    ]:
        df = sim_binary.assign(n=sim_binary["n"] + sim_binary.index % 3) if family == "gaussian" else sim_binary
        m = bg.GLMM(formula, df, family=family, link=link)
        model = m.pymc_model
        assert np.isfinite(model.compile_logp()(model.initial_point())), (family, link)


@pytest.mark.parametrize("name", ["logit", "probit", "cloglog", "log", "identity"])
def test_links_numpy_and_pytensor_agree(name):
    link = LINKS[name]
    eta = np.linspace(-3, 2, 11)
    mu = link.inverse_np(eta)
    assert np.allclose(pt.as_tensor(link.inverse(pt.as_tensor(eta))).eval(), mu)
    assert np.allclose(link.forward_np(mu), eta)


def test_prior_predictive_draws(contraception_model):
    prior = contraception_model.sample_prior_predictive(draws=50, random_seed=3)
    assert prior.prior["fixef"].shape == (1, 50, 7)
    assert prior.prior["cor_district"].shape == (1, 50, 2, 2)
    assert set(np.unique(prior.prior_predictive["y"])) <= {0, 1}
    again = contraception_model.sample_prior_predictive(draws=50, random_seed=3)
    assert np.array_equal(prior.prior["fixef"], again.prior["fixef"])


def test_no_dense_z_in_graph():
    df = bg.datasets.load("contraception")
    m = bg.GLMM("use[Y] ~ urban + (1 | district)", df, family="bernoulli")
    shapes = [np.shape(v.get_value()) for v in m.pymc_model.data_vars]
    assert max(int(np.prod(s)) for s in shapes) <= m.design.n  # no n x J matrix
    assert pm.model_to_graphviz  # the model is an ordinary PyMC model


@pytest.mark.parametrize("trials", [None, np.array([1, 5, 5, 9, 3])])
def test_lean_logit_likelihood_is_exact(trials):
    from scipy.special import gammaln, log_expit

    from bayesglmm.families import logit_likelihood

    eta = np.array([-2.0, -0.3, 0.0, 1.5, 30.0])
    n = np.ones(5, dtype=int) if trials is None else trials
    y = np.array([0, 1, 1, 0, 1]) if trials is None else np.array([0, 1, 3, 9, 2])
    with pm.Model() as lean:
        logit_likelihood("y", pt.as_tensor(eta), y, None if trials is None else pt.as_tensor(trials))
    got = lean.compile_logp(sum=False)({})[0]
    exact = y * log_expit(eta) + (n - y) * log_expit(-eta) + gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-13)
    # PyMC's own density agrees where it is accurate (it loses digits, or gives -inf, at eta = 30)
    reference = pm.Bernoulli.dist(logit_p=eta) if trials is None else pm.Binomial.dist(n=trials, logit_p=eta)
    np.testing.assert_allclose(got[:4], pm.logp(reference, y).eval()[:4], rtol=1e-10)
    draws = pm.draw(lean["y"], draws=2000, random_seed=1)
    p = 1 / (1 + np.exp(-eta))
    assert np.all(np.abs(draws.mean(axis=0) - n * p) <= 5 * np.sqrt(n * p * (1 - p) / 2000) + 1e-9)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g) + (1 | h)", "y ~ x + (1 + x | g)", "y ~ x + (1 + x || g)"])
def test_one_scatter_add_per_term(sim_gaussian, formula):
    """The gradient of eta gathers one scatter-add per random term, not two or four."""
    model = bg.GLMM(formula, sim_gaussian).pymc_model
    graph = model.logp_dlogp_function(ravel_inputs=True)._pytensor_function.maker.fgraph
    scatters = [
        node
        for node in graph.apply_nodes
        if type(node.op).__name__.startswith("AdvancedIncSubtensor") and "idx_" in str(node.inputs[-1])
    ]
    assert len(scatters) == 2


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_unpack_lower_is_pymcs_expansion(k):
    """The factor L the model builds from LKJCholeskyCov's packed rows is PyMC's own."""
    from bayesglmm.model import unpack_lower

    packed = np.random.default_rng(k).normal(size=k * (k + 1) // 2)
    ours = unpack_lower(pt.as_tensor(packed), k).eval()
    np.testing.assert_array_equal(ours, pm.expand_packed_triangular(k, packed, lower=True).eval())
