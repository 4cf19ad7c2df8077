"""Bad input gets a clear error from one hierarchy, before any sampling."""

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm import errors


def glmm(formula, data, **kw):
    return bg.GLMM(formula, data, **kw)


CASES = [
    # (formula, data modifier, kwargs, error class, message pattern)
    ("y ~ nope + (1 | g)", None, {}, errors.DataError, "'nope', which is not a column"),
    ("y ~ x + (1 | nope)", None, {}, errors.DataError, "'nope', which is not a column"),
    ("y ~ x + (1 | g)", None, {"family": "weibull"}, errors.FamilyError, "unknown family 'weibull'"),
    (
        "y ~ x + (1 | g)",
        None,
        {"family": "gaussian", "link": "logit"},
        errors.FamilyError,
        "does not allow link 'logit'",
    ),
    ("y ~ x + (1 | g)", None, {"family": "poisson", "link": "sqrtx"}, errors.FamilyError, "unknown link"),
    ("two ~ x + (1 | g)", None, {"family": "bernoulli"}, errors.ResponseError, "must be 0/1"),
    ("neg ~ x + (1 | g)", None, {"family": "poisson"}, errors.ResponseError, "non-negative integers"),
    ("frac ~ x + (1 | g)", None, {"family": "poisson"}, errors.ResponseError, "non-negative integers"),
    ("p(big, n) ~ x + (1 | g)", None, {"family": "binomial"}, errors.ResponseError, "more successes than trials"),
    ("k ~ x + (1 | g)", None, {"family": "binomial"}, errors.ResponseError, "needs the number of trials"),
    ("p(k, n) ~ x + (1 | g)", None, {"family": "bernoulli"}, errors.ResponseError, "family='binomial'"),
    ("word ~ x + (1 | g)", None, {"family": "bernoulli"}, errors.ResponseError, "is not numeric"),
    ("y ~ x + (1 | one)", None, {}, errors.GroupingError, "grouping factor 'one' has a single level"),
    ("y ~ x + (1 | g", None, {}, errors.FormulaError, "unbalanced"),
    ("y ~ x +* z", None, {}, errors.FormulaError, "cannot"),
    ("y ~ x + x2 + (1 | g)", None, {}, errors.DataError, "rank deficient: \\['x2'\\]"),
    ("y ~ np.log(neg) + (1 | g)", None, {}, errors.DataError, "non-finite"),
    ("y ~ x + (1 | g)", None, {"na_action": "ignore"}, errors.DataError, "na_action must be one of"),
    ("y ~ x + (1 | g) + (x | g)", None, {}, errors.FormulaError, "varies over 'g' in two"),
    ("one ~ x + (1 | g)", None, {"family": "categorical"}, errors.ResponseError, "single category"),
    ("word ~ x + offset(x) + (1 | g)", None, {"family": "categorical"}, errors.FormulaError, "offset"),
    ("y ~ nofunction(x) + (1 | g)", None, {}, errors.DataError, r"calls nofunction\(\), which is not a function"),
    ("cbind(k) ~ x + (1 | g)", None, {"family": "binomial"}, errors.FormulaError, "cbind\\(\\) takes two columns"),
    ("k | weights(n) ~ x + (1 | g)", None, {"family": "binomial"}, errors.FormulaError, "are not supported"),
]


@pytest.fixture
def bad_data(sim_binary):
    rng = np.random.default_rng(0)
    n = len(sim_binary)
    return sim_binary.assign(
        two=rng.integers(0, 3, n),
        neg=-rng.integers(1, 3, n),
        frac=rng.random(n),
        big=7,
        word=rng.choice(["yes", "no"], n),
        one="only",
        x2=2 * sim_binary["x"],
    )


@pytest.mark.parametrize(("formula", "mod", "kw", "cls", "pattern"), CASES)
def test_bad_input_raises_named_error(bad_data, formula, mod, kw, cls, pattern):
    with pytest.raises(cls, match=pattern) as info:
        glmm(formula, bad_data, **kw)
    assert isinstance(info.value, errors.BayesGLMMError)


def test_missing_values_error_counts_rows_and_columns(sim_binary):
    df = sim_binary.copy()
    df.loc[[0, 1, 2], "x"] = np.nan
    df.loc[[2, 5], "g"] = np.nan
    df.loc[7, "unused"] = np.nan  # columns the model does not use do not count
    with pytest.raises(errors.MissingDataError, match=r"4 of 300 rows .* 'x' \(3\), 'g' \(2\).*na_action='drop'"):
        glmm("y ~ x + (1 | g)", df, family="bernoulli")


def test_na_action_drop_warns_with_count(sim_binary):
    df = sim_binary.copy()
    df.loc[[0, 1, 2], "x"] = np.nan
    before = df.copy()
    with pytest.warns(errors.DataWarning, match="dropped 3 of 300 rows"):
        m = glmm("y ~ x + (1 | g)", df, family="bernoulli", na_action="drop")
    assert m.design.n == 297
    pd.testing.assert_frame_equal(df, before)


def test_data_must_be_a_dataframe():
    with pytest.raises(errors.DataError, match="must be a pandas DataFrame"):
        glmm("y ~ x", {"y": [1, 2]})


def test_fit_arguments_checked_before_sampling(sim_binary):
    m = glmm("y ~ x + (1 | g)", sim_binary, family="bernoulli")
    for kw, pattern in [
        ({"draws": 0}, "draws must be an integer"),
        ({"chains": 1.5}, "chains must be an integer"),
        ({"target_accept": 1.2}, "target_accept"),
        ({"sampler": "gibbs"}, "sampler must be one of"),
        ({"random_seed": -1}, "random_seed must be an integer"),
    ]:
        with pytest.raises(errors.FitArgumentError, match=pattern):
            m.fit(**kw)
    assert m._pymc_model is None  # nothing was built


def test_prior_errors(sim_binary):
    for priors, pattern in [
        ({"b": bg.exponential(1)}, "cannot be used for class 'b'"),
        ({("b", "nope"): bg.normal(0, 1)}, "matches no parameter"),
        ({"sd": "normal(0, 1)"}, "must be made with"),
        ({3: bg.normal()}, "must be a class name"),
    ]:
        with pytest.raises(errors.PriorError, match=pattern):
            glmm("y ~ x + (1 | g)", sim_binary, family="bernoulli", priors=priors)
    with pytest.raises(errors.PriorError, match="must be positive"):
        bg.normal(0, -1)
    with pytest.raises(errors.PriorError, match="must be a number"):
        bg.normal("a", 1)
