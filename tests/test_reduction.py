"""Exact data reduction: identical rows of binary and count data collapse for sampling."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm.model import build_model
from bayesglmm.reduction import collapse


def _frame(seed=1, groups=30, per_group=20):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per_group)
    a, b = rng.integers(0, 2, g.size), rng.integers(0, 3, g.size)
    eta = -0.5 + 0.8 * a - 0.4 * b + rng.normal(0, 0.7, groups)[g]
    return pd.DataFrame(
        {
            "y": rng.binomial(1, 1 / (1 + np.exp(-eta))),
            "count": rng.poisson(np.exp(eta)),
            "n": 3,
            "k": rng.binomial(3, 1 / (1 + np.exp(-eta))),
            "a": a,
            "b": b.astype(str),
            "g": g,
            "x": rng.normal(size=g.size),
        }
    )


@pytest.mark.parametrize(
    ("formula", "family", "new_family"),
    [
        ("y ~ a + b + (1 | g)", "bernoulli", "binomial"),
        ("p(k, n) ~ a + b + (1 | g)", "binomial", "binomial"),
        ("count ~ a + b + (1 | g)", "poisson", "poisson"),
    ],
)
def test_collapsed_model_has_the_same_posterior(formula, family, new_family):
    model = bg.GLMM(formula, _frame(), family=family)
    design, fam = collapse(model.design, model.family)
    assert fam.name == new_family and design.n <= 180 < model.design.n  # 30 groups x 6 patterns
    assert design.y.sum() == model.design.y.sum()
    if design.trials is not None:
        expected = len(_frame()) if family == "bernoulli" else 3 * len(_frame())
        assert design.trials.sum() == expected
    full, small = model.pymc_model, build_model(design, fam, model.link, model.priors)
    assert [v.name for v in full.free_RVs] == [v.name for v in small.free_RVs]
    logp_full, logp_small = full.compile_logp(), small.compile_logp()
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(5):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in full.initial_point().items()}
        gaps.append(logp_full(point) - logp_small(point))
    # the likelihoods differ by a constant (binomial coefficients): same posterior
    np.testing.assert_allclose(gaps, gaps[0], atol=1e-8)


def test_not_reduced_when_it_does_not_pay_or_does_not_apply():
    df = _frame()
    continuous = bg.GLMM("y ~ x + (1 | g)", df, family="bernoulli")  # every row distinct
    assert collapse(continuous.design, continuous.family) is None
    nb = bg.GLMM("count ~ a + (1 | g)", df, family="negativebinomial")
    assert collapse(nb.design, nb.family) is None
    with pytest.raises(bg.FitArgumentError, match="reduce must be True or False"):
        nb.fit(reduce="yes")


@pytest.mark.sampling
def test_reduced_fit_equals_full_fit():
    model = bg.GLMM("y ~ a + b + (1 | g)", _frame(), family="bernoulli")
    short = {"draws": 200, "tune": 200, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 5}
    short["sampler"] = "nutpie"  # its trajectories are reproducible to rounding across the two models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        reduced, full = model.fit(**short), model.fit(reduce=False, **short)
    assert reduced.idata.attrs["collapsed_rows"] == collapse(model.design, model.family)[0].n
    assert full.idata.attrs["collapsed_rows"] == 0
    assert reduced.log_lik().shape == (2, 200, 600)  # one value per original row
    # the same gradients (up to rounding) from the same start: NUTS follows the same trajectories
    a, b = reduced.summary()[["mean", "sd"]], full.summary()[["mean", "sd"]]
    pd.testing.assert_frame_equal(a, b, rtol=1e-3, atol=1e-4)
