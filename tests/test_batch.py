"""Graphs evaluated for a batch of draws at once equal PyMC's one-draw-at-a-time evaluation."""

import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest

import bayesglmm as bg
import bayesglmm.batch
from bayesglmm.stats import az

RESPONSES = {  # family: (formula, response column from a linear predictor eta)
    "gaussian": ("y ~ x + (1 + x | g)", lambda eta, rng: eta + rng.normal(size=eta.size)),
    "bernoulli": ("y ~ x + (1 | g)", lambda eta, rng: rng.binomial(1, 1 / (1 + np.exp(-eta)))),
    "binomial": ("p(y, n) ~ x + (1 | g)", lambda eta, rng: rng.binomial(5, 1 / (1 + np.exp(-eta)))),
    "poisson": ("y ~ x + (1 | g) + offset(np.log(n))", lambda eta, rng: rng.poisson(np.exp(eta))),
    "negativebinomial": ("y ~ x + (1 | g)", lambda eta, rng: rng.poisson(np.exp(eta))),
    "gamma": ("y ~ x + (1 | g)", lambda eta, rng: rng.gamma(2.0, np.exp(eta) / 2)),
    "student_t": ("y ~ x + (1 | g)", lambda eta, rng: eta + rng.standard_t(4, size=eta.size)),
    "cumulative": ("y ~ x + (1 | g)", lambda eta, rng: np.digitize(eta + rng.logistic(size=eta.size), [-1, 0, 1])),
    "categorical": ("y ~ x + (1 | g)", lambda eta, rng: np.digitize(eta + rng.logistic(size=eta.size), [-0.5, 0.5])),
}


def _frame(family: str) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(6), 7)
    x = rng.normal(size=g.size)
    eta = 0.3 + 0.4 * x + rng.normal(0, 0.5, 6)[g]
    return pd.DataFrame({"y": RESPONSES[family][1](eta, rng), "x": x, "g": g, "n": 5})


def _model_and_draws(family: str):
    """The model of ``family`` and 30 prior draws of its parameters, standing in for a posterior."""
    model = bg.GLMM(RESPONSES[family][0], _frame(family), family=family).pymc_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, pm.sample_prior_predictive(draws=30, model=model, random_seed=1).prior


@pytest.mark.parametrize("family", list(RESPONSES))
def test_batched_log_likelihood_equals_pymc(family, monkeypatch):
    model, prior = _model_and_draws(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pm.compute_log_likelihood(
            az.InferenceData(posterior=prior), model=model, extend_inferencedata=False, progressbar=False
        )["y"].values
    monkeypatch.setattr(bayesglmm.batch, "BATCH_BUDGET", 42 * 4)  # a batch of 4 draws: 1 + 8 batches
    values = bayesglmm.batch.log_likelihood(prior, model, "y")
    assert values.shape == expected.shape == (1, 30, 42)
    np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["gaussian", "binomial", "cumulative"])
def test_batched_deterministic_equals_pymc(family, monkeypatch):
    model, prior = _model_and_draws(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pm.sample_posterior_predictive(
            prior, model=model, var_names=["mu"], progressbar=False, return_inferencedata=False
        )["mu"]
    monkeypatch.setattr(bayesglmm.batch, "BATCH_BUDGET", expected[0, 0].size * 8)
    mu = bayesglmm.batch.deterministic(prior, model, model["mu"])  # batches of 8 draws
    np.testing.assert_allclose(mu, expected, rtol=1e-12)
    halves = bayesglmm.batch.deterministic(prior, model, 0.5 * model["mu"], spread=4)  # batches of 2 draws
    np.testing.assert_allclose(halves, 0.5 * expected, rtol=1e-12)
    with pytest.raises(RuntimeError, match="random draws"):  # a response draw is not a function of the posterior
        bayesglmm.batch.deterministic(prior, model, model["y"])
