"""Exact marginalisation of gaussian random effects: logp against dense algebra, draws, fits."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import ancestors
from pytensor.sparse.math import StructuredDot
from scipy import stats

import bayesglmm as bg
from bayesglmm import marginal
from bayesglmm.marginal import complete_posterior, marginal_layout


def _dense_marginal_logp(m, values, sampled=()):
    """log N(y | Xβ + Σ Z u, σ²I + Z G Zᵀ) from the model's own parameter values, by brute force;
    ``u`` the effects ``r_`` of the ``sampled`` blocks, ``G`` the covariance of the others."""
    design = m.design
    mean = design.fixed.X @ values["fixef"] if design.fixed.X.shape[1] else np.zeros(design.n)
    mean = mean + (0.0 if design.offset is None else design.offset)
    for block in sampled:
        mean = mean + (values[f"r_{block.name}"][block.idx] * block.Z).sum(axis=1)
    V = values["sigma"] ** 2 * np.eye(design.n)
    for block in (b for b in design.blocks if b not in sampled):
        sd = values[f"sd_{block.name}"]
        cor = values.get(f"cor_{block.name}", np.eye(len(block.terms)))
        G = np.outer(sd, sd) * cor
        Zfull = np.zeros((design.n, len(block.levels) * len(block.terms)))
        for t in range(len(block.terms)):
            Zfull[np.arange(design.n), block.idx * len(block.terms) + t] = block.Z[:, t]
        V += Zfull @ np.kron(np.eye(len(block.levels)), G) @ Zfull.T
    return stats.multivariate_normal(mean, V).logpdf(design.y)


def _values(model, names, point):
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")
    return dict(zip(names, fn(point)))


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 + x | g)",
        "y ~ x + f + (1 + x || g)",
        "y ~ x + (1 | g)",
        "y ~ x + (1 + x | g) + (1 | h)",
        "y ~ x + (1 | g) + (0 + x | g)",
        "y ~ x + f + (1 + x | g) + (0 + f | g)",
        "y ~ 0 + x + (1 + x | g)",
        "y ~ 1 + (1 | g)",
        "y ~ x + offset(h) + (1 + x | g)",
    ],
)
@pytest.mark.parametrize("fused", [False, True])
def test_marginal_logp_equals_dense_gaussian(sim_gaussian, formula, fused):
    """The marginal potential (through sufficient statistics) equals the dense gaussian density,
    with and without intercept, slopes or offset, as a graph and as one operation (one factor)."""
    m = bg.GLMM(formula, sim_gaussian)
    model = m.marginal_model(fused=fused)
    rng = np.random.default_rng(0)
    for _ in range(3):  # away from the initial point, where everything is symmetric
        point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}
        names = ["fixef", "sigma"] + [f"sd_{b.name}" for b in m.design.blocks]
        names += [f"cor_{b.name}" for b in m.design.blocks if b.correlated]
        potential = _values(model, ["y_marginal"], point)["y_marginal"]
        expected = _dense_marginal_logp(m, _values(model, names, point))
        assert potential == pytest.approx(expected, rel=1e-9, abs=1e-6)


def _jittered(model, seed=0):
    """A point away from the initial one, where everything is symmetric and sampled effects vanish."""
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 + x | g) + (1 | h)",
        "y ~ x + f + offset(h) + (1 | g) + (0 + x | g) + (1 + x || h)",
        "y ~ 0 + x + (1 | h) + (1 | g)",
        "y ~ 0 + (1 | h) + (1 | g)",
    ],
)
def test_partial_logp_equals_dense_gaussian(sim_gaussian, formula, monkeypatch):
    """Beyond DENSE_MAX effects over several factors, one factor is integrated out (all its blocks;
    here g, nested in h) and the others sampled: the potential is the dense gaussian given those."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    m = bg.GLMM(formula, sim_gaussian)
    out, sampled = marginal.split_blocks(m.design)
    assert marginal_layout(m.design) == "partial" and {b.group for b in out} == {"g"} and sampled
    model = m.marginal_model()
    assert {f"z_{b.name}" for b in sampled} <= {v.name for v in model.free_RVs}
    assert marginal.effect_draw_names(m.design) == [f"{k}_{b.name}" for k in ("z", "r") for b in out]
    names = ["fixef", "sigma"] + [f"sd_{b.name}" for b in m.design.blocks] + [f"r_{b.name}" for b in sampled]
    names += [f"cor_{b.name}" for b in m.design.blocks if b.correlated]
    names = [name for name in names if name in model.named_vars]  # no fixef without fixed effects
    for seed in range(3):
        point = _jittered(model, seed)
        potential = _values(model, ["y_marginal"], point)["y_marginal"]
        expected = _dense_marginal_logp(m, _values(model, names, point), sampled)
        assert potential == pytest.approx(expected, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize(
    "formula", ["y ~ x + (1 + x | g) + (1 | h)", "y ~ x + f + offset(h) + (1 | g) + (0 + x | g) + (1 + x || h)"]
)
def test_partial_gradient_matches_finite_differences(sim_gaussian, formula, monkeypatch):
    """The partial potential's gradient (the sparse quadratic form's own, 2 H d) is the density's:
    central differences of the log density agree to 1e-6 in every direction of the sampled space."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    model = bg.GLMM(formula, sim_gaussian).marginal_model()
    fn = model.logp_dlogp_function(ravel_inputs=True)
    fn.set_extra_values({})
    point = _jittered(model, 4)
    x = np.concatenate([np.ravel(point[v.name]) for v in fn._grad_vars])
    _, gradient = fn(x)
    step = 1e-5
    numeric = [(fn(x + step * e)[0] - fn(x - step * e)[0]) / (2 * step) for e in np.eye(x.size)]
    assert gradient == pytest.approx(np.array(numeric), rel=1e-6, abs=1e-6)


def test_partial_gradient_reads_the_sparse_statistics_once(sim_gaussian, monkeypatch):
    """The compiled density and gradient of the partial layout: three sparse products (AᵀA d, Z̃ᵀA d
    and its transpose), no row of the data (no gather or scatter over n)."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    m = bg.GLMM("y ~ x + (1 + x | g) + (1 | h)", sim_gaussian)
    fn = m.marginal_model().logp_dlogp_function(ravel_inputs=True)
    nodes = fn._pytensor_function.maker.fgraph.apply_nodes
    assert sum(isinstance(node.op, StructuredDot) for node in nodes) == 3
    shapes = [np.shape(v.data) for node in nodes for v in node.inputs if isinstance(v, Constant)]
    assert not [s for s in shapes if m.design.n in s]


def test_partial_layout_choice(sim_gaussian, monkeypatch):
    """The partial layout replaces the old refusal of marginalize=True; 'auto' takes it only where
    every effect would otherwise be sampled non-centred."""
    m = bg.GLMM("y ~ x + (1 + x | g) + (1 | h)", sim_gaussian)
    assert marginal_layout(m.design) == "dense" and m._use_marginal("auto") is False
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    assert marginal_layout(m.design) == "partial" and m._use_marginal(True) is True
    assert m._use_marginal("auto") is m._plain_non_centred()
    monkeypatch.setattr(type(m), "centring", lambda self: {"g": np.ones(12)})
    assert m._use_marginal("auto") is False
    assert m._use_marginal("auto", centre=False) is True  # the alternative is then plain non-centred


def test_partial_integrates_out_a_nested_factor_first(monkeypatch):
    """The factor integrated out is the largest nested in another factor of the model, else the largest."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    rng = np.random.default_rng(1)
    child = np.arange(120) % 12
    y, x = rng.normal(size=(2, 120))
    frame = pd.DataFrame({"y": y, "x": x, "a": rng.permutation(120) % 40, "c": child, "p": child % 3})
    nested = bg.GLMM("y ~ x + (1 | a) + (1 | p) + (1 | c)", frame).design
    crossed = bg.GLMM("y ~ x + (1 | a) + (1 | c)", frame).design
    assert [b.group for b in marginal.split_blocks(nested)[0]] == ["c"]
    assert [b.group for b in marginal.split_blocks(crossed)[0]] == ["a"]


@pytest.mark.parametrize(
    ("formula", "partial"),
    [("y ~ x + (1 + x | g)", False), ("y ~ x + (1 + x | g) + (1 | h)", False), ("y ~ x + (1 + x | g) + (1 | h)", True)],
)
def test_marginal_constants_are_contiguous(sim_gaussian, formula, partial, monkeypatch):
    """numba embeds only C- or F-ordered constant arrays; any other becomes a pointer.

    A pointer in a compiled graph stops numba (nutpie) from caching it on disk:
    sleepstudy's marginal model then recompiled in every process (25 s against 14 s).
    """
    if partial:
        monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    model = bg.GLMM(formula, sim_gaussian).marginal_model()
    constants = [v.data for v in ancestors([model.logp()]) if isinstance(v, Constant)]
    arrays = [a for a in constants if isinstance(a, np.ndarray) and a.ndim > 0]
    assert arrays
    assert all(a.flags.c_contiguous or a.flags.f_contiguous for a in arrays)


@pytest.mark.parametrize(
    "formula", ["y ~ x + f + (1 + x | g)", "y ~ x + (1 + x | g) + (1 | h)", "y ~ x + (1 | g) + (0 + x | g)"]
)
@pytest.mark.parametrize("fused", [False, True])
def test_marginal_logp_does_not_touch_the_rows(sim_gaussian, formula, fused):
    """The data enter the marginal log density only through per-level statistics."""
    m = bg.GLMM(formula, sim_gaussian)
    n = m.design.n
    assert n not in {len(b.levels) for b in m.design.blocks}
    logp = m.marginal_model(fused=fused).logp()
    inputs = [v for v in ancestors([logp]) if isinstance(v, Constant) or hasattr(v, "get_value")]
    shapes = [np.shape(v.data if isinstance(v, Constant) else v.get_value()) for v in inputs]
    assert shapes and not [s for s in shapes if n in s]


def test_marginal_model_samples_no_random_effects(sim_gaussian):
    m = bg.GLMM("y ~ x + (1 + x | g)", sim_gaussian)
    free = {v.name for v in m.marginal_model().free_RVs}
    assert free == {"Intercept_centered", "b_normal_scaled", "chol_g", "sigma"}
    assert marginal_layout(m.design) == "blocks"
    assert m._use_marginal("auto") is True
    assert bg.GLMM("y ~ x + (1 | g) + (1 | h)", sim_gaussian)._use_marginal("auto") is False
    # several blocks of one factor are one block with a block-diagonal factor
    two = bg.GLMM("y ~ x + (1 | g) + (0 + x | g)", sim_gaussian)
    assert marginal_layout(two.design) == "blocks" and two._use_marginal("auto") is True
    free = {v.name for v in two.marginal_model().free_RVs}
    assert free == {"Intercept_centered", "b_normal_scaled", "sd_g_1", "sd_g_2", "sigma"}


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | g)", "y ~ x + (1 + x | g) + (1 | h)"])
def test_conditional_draws_match_the_exact_posterior(sim_gaussian, formula, monkeypatch):
    """At fixed parameters the z draws have the Gaussian conditional's mean and covariance
    (with a second factor, in the partial layout: given its sampled effects)."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    m = bg.GLMM(formula, sim_gaussian)
    model = m.marginal_model()
    point = _jittered(model)
    (z,) = model.replace_rvs_by_values([model["z_g"]])
    fn = model.compile_fn(z, inputs=model.value_vars, random_seed=3, on_unused_input="ignore")
    draws = np.stack([fn(point) for _ in range(4000)])  # (S, J, k)
    sampled = marginal.split_blocks(m.design)[1]
    v = _values(model, ["fixef", "sigma", "sd_g", "cor_g"] + [f"r_{b.name}" for b in sampled], point)
    G = np.outer(v["sd_g"], v["sd_g"]) * v["cor_g"]
    L = np.linalg.cholesky(G)
    block = m.design.blocks[0]
    j = 4  # one group: z_j | y ~ N(P⁻¹ Lᵀ Z_jᵀ r_j / σ², P⁻¹), P = I + Lᵀ Z_jᵀ Z_j L / σ²
    rows = block.idx == j
    Zj = block.Z[rows]
    r = m.design.y[rows] - m.design.fixed.X[rows] @ v["fixef"]
    for b in sampled:
        r = r - (v[f"r_{b.name}"][b.idx] * b.Z).sum(axis=1)[rows]
    s2 = v["sigma"] ** 2
    P = np.eye(2) + L.T @ Zj.T @ Zj @ L / s2
    mean = np.linalg.solve(P, L.T @ Zj.T @ r / s2)
    assert draws[:, j].mean(axis=0) == pytest.approx(mean, abs=4 * np.sqrt(np.diag(np.linalg.inv(P)) / 4000).max())
    assert np.cov(draws[:, j].T) == pytest.approx(np.linalg.inv(P), abs=0.05)


@pytest.mark.parametrize(
    ("formula", "partial"),
    [("y ~ x + (1 + x | g)", False), ("y ~ x + (1 | g) + (1 + x | h)", False), ("y ~ x + (1 + x | g) + (1 | h)", True)],
)
def test_vectorised_draws_follow_the_graph_whatever_the_chunks(sim_gaussian, formula, partial, monkeypatch):
    """complete_posterior draws all posterior draws at once; at one repeated parameter value its z
    have the mean and covariance of the per-draw graph's, and chunks do not change them (partial:
    the integrated-out factor's, given the sampled effects)."""
    if partial:
        monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    m = bg.GLMM(formula, sim_gaussian)
    model = m.marginal_model()
    point = _jittered(model) if partial else model.initial_point()
    free = [v.name for v in model.free_RVs]
    values = _values(model, free, point)
    S = 3000
    posterior = xr.Dataset(
        {
            n: (
                ("chain", "draw", *[f"{n}_{i}" for i in range(np.ndim(v))]),
                np.broadcast_to(v, (2, S // 2, *np.shape(v))),
            )
            for n, v in values.items()
        },
        coords={"chain": [0, 1], "draw": np.arange(S // 2)},
    )
    whole, chunked = az.InferenceData(posterior=posterior), az.InferenceData(posterior=posterior.copy())
    complete_posterior(whole, model, m.design, seed=11)
    monkeypatch.setattr(marginal, "DRAW_BUDGET", 7 * marginal._draw_size(m.design))  # chunks of 7 draws
    complete_posterior(chunked, model, m.design, seed=11)
    out = marginal.split_blocks(m.design)[0]
    names = [f"z_{b.name}" for b in out]
    for name in names + [f"r_{b.name}" for b in out]:
        np.testing.assert_array_equal(whole.posterior[name].values, chunked.posterior[name].values)
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, random_seed=3, on_unused_input="ignore")
    reference = [np.stack(d) for d in zip(*(fn(point) for _ in range(S)))]
    for name, ref in zip(names, reference):
        drawn = whole.posterior[name].values.reshape(S, -1)
        ref = ref.reshape(S, -1)
        se = np.sqrt(drawn.var(axis=0) / S + ref.var(axis=0) / S)
        assert np.all(np.abs(drawn.mean(axis=0) - ref.mean(axis=0)) < 4.5 * se)
        np.testing.assert_allclose(np.cov(drawn.T), np.cov(ref.T), atol=0.06)


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | g)", "y ~ x + (1 + x || g)"])
def test_completed_effects_are_the_full_models(sim_gaussian, formula):
    """r drawn with z from the marginal model is the full model's r = z Lᵀ at the same parameters."""
    m = bg.GLMM(formula, sim_gaussian)
    marginal, full = m.marginal_model(), m.pymc_model
    point = marginal.initial_point()
    z, r = marginal.replace_rvs_by_values([marginal["z_g"], marginal["r_g"]])
    z_draw, r_draw = marginal.compile_fn([z, r], inputs=marginal.value_vars, random_seed=3)(point)
    (r_full,) = full.replace_rvs_by_values([full["r_g"]])
    inputs = [v for v in full.value_vars if v.name != "z_g"] + [full.rvs_to_values[full["z_g"]]]
    fn = full.compile_fn(r_full, inputs=inputs, on_unused_input="ignore")
    np.testing.assert_allclose(r_draw, fn({**point, "z_g": z_draw}), rtol=1e-12, atol=1e-12)


def test_bad_marginalize_argument(sim_gaussian, sim_binary):
    with pytest.raises(bg.FitArgumentError, match="marginalize must be"):
        bg.GLMM("y ~ x + (1 | g)", sim_gaussian).fit(marginalize="yes")
    with pytest.raises(bg.FitArgumentError, match="family='gaussian'"):
        bg.GLMM("y ~ x + (1 | g)", sim_binary, family="bernoulli").fit(marginalize=True)
    with pytest.raises(bg.FitArgumentError, match="no random effects"):
        bg.GLMM("y ~ x", sim_gaussian).fit(marginalize=True)


@pytest.mark.sampling
@pytest.mark.parametrize(
    "formula", ["y ~ x + (1 + x | g)", "y ~ x + (1 | g) + (0 + x | g)", "y ~ x + (1 + x | g) + (1 | f)"]
)
def test_marginal_fit_matches_full_fit(sim_gaussian, formula, monkeypatch):
    """Same posterior either way (means within a few MC standard errors); the third model
    in the partial layout (g integrated out, f sampled)."""
    monkeypatch.setattr(marginal, "DENSE_MAX", 5)
    m = bg.GLMM(formula, sim_gaussian)
    kw = {"draws": 500, "tune": 500, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        marg = m.fit(marginalize=True, **kw)
        assert m._pymc_model is None  # the model with the effects is built when needed, not by this fit
        full = m.fit(marginalize=False, **kw)
    assert set(marg.idata.posterior) <= set(m.pymc_model.named_vars)  # the full model's variables,
    for name in set(marg.idata.posterior) & set(full.idata.posterior):  # with the full fit's dims
        assert marg.idata.posterior[name].dims == full.idata.posterior[name].dims, name
    assert marg.idata.attrs["marginalized"] == 1 and full.idata.attrs["marginalized"] == 0
    assert marg.idata.attrs["collapsed_rows"] == 0  # marginalised, not collapsed
    a, b = marg.summary(), full.summary()
    se = np.sqrt((a["sd"] / np.sqrt(a["ess_bulk"])) ** 2 + (b["sd"] / np.sqrt(b["ess_bulk"])) ** 2)
    assert (np.abs(a["mean"] - b["mean"]) < 4 * se).all()
    ra, rb = marg.ranef(), full.ranef()
    assert np.abs(ra["mean"] - rb["mean"]).max() < 0.25 * ra["sd"].mean()
    assert marg.log_lik().shape == (*marg.idata.posterior["sigma"].shape, m.design.n)
    assert marg.predict().shape == (m.design.n, 4)
    assert pm.__version__  # the marginal model is a plain PyMC model
