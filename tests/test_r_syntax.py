"""R's spellings in formulas (lme4's cbind, brms's trials, ^, log, factor) and the caller's functions."""

import numpy as np
import pandas as pd
import pytest
from formulae.environment import Environment

import bayesglmm as bg
from bayesglmm.design import build_design
from bayesglmm.errors import ArgumentError, DataError, FormulaError
from bayesglmm.formula import parse_formula, translate_r

from .conftest import short_fit


@pytest.fixture
def cbpp():
    return bg.datasets.load("cbpp")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("cbind(incidence, size - incidence)", "p(incidence, I((incidence) + (size - incidence)))"),
        ("cbind( s , f )", "p(s, I((s) + (f)))"),
        ("incidence | trials(size)", "p(incidence, size)"),
        ("y | trials(n1 + n2)", "p(y, I(n1 + n2))"),
        ("y", "y"),
        ("use[Y]", "use[Y]"),
        ("p(y, n)", "p(y, n)"),
    ],
)
def test_translate_r_responses(response, expected):
    assert translate_r(response) == expected


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ("cbind(a)", r"cbind\(\) takes two columns"),
        ("cbind(a, b, c)", r"cbind\(\) takes two columns"),
        ("y | weights(w)", r"\['weights\(w\)'\] are not supported"),
        ("y | trials(n) + cens(c)", r"\['cens\(c\)'\]"),
        ("y | trials()", "write one trials"),
        ("y | trials(n) | trials(m)", "write one trials"),
    ],
)
def test_translate_r_refuses_what_it_cannot_read(response, message):
    with pytest.raises(FormulaError, match=message):
        translate_r(response)


def test_power_is_written_as_python_power_outside_levels():
    parsed = parse_formula("y[a^b] ~ I(x^2) + (a + b)^2 + (1 + x^2 | g)")
    assert parsed.fixed_formula == "y[a^b] ~ I(x**2) + (a + b)**2"
    assert parsed.random[0].expr == "1 + x**2"
    assert parsed.formula == "y[a^b] ~ I(x^2) + (a + b)^2 + (1 + x^2 | g)"  # as the user wrote it


@pytest.mark.parametrize(
    "formula",
    ["cbind(incidence, size - incidence) ~ period + (1 | herd)", "incidence | trials(size) ~ period + (1 | herd)"],
)
def test_lme4_and_brms_binomial_responses_equal_p(cbpp, formula):
    ref = bg.GLMM("p(incidence, size) ~ period + (1 | herd)", cbpp, family="binomial").design
    d = bg.GLMM(formula, cbpp, family="binomial").design
    np.testing.assert_array_equal(d.y, ref.y)
    np.testing.assert_array_equal(d.trials, ref.trials)
    np.testing.assert_array_equal(d.fixed.X, ref.fixed.X)


def test_r_function_names_equal_numpy_and_c():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=30), "x": rng.uniform(1, 2, 30), "f": rng.integers(0, 3, 30)})
    r = build_design(parse_formula("y ~ log(x) + exp(x) + sqrt(x) + I(x^2) + factor(f)"), df)
    py = build_design(parse_formula("y ~ np.log(x) + np.exp(x) + np.sqrt(x) + I(x**2) + C(f)"), df)
    np.testing.assert_allclose(r.fixed.X, py.fixed.X)
    assert r.fixed.labels[-2:] == ("factor(f)[1]", "factor(f)[2]")


def shift3(v):
    return np.asarray(v, dtype=float) + 3.0


def test_formula_sees_the_callers_functions_and_names():
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {"y": rng.normal(size=24), "x": rng.normal(size=24), "z": rng.normal(size=24), "f": [1, 2, 3] * 8}
    )
    df["g"] = list("ab") * 12

    def tenfold(v):
        return np.asarray(v) * 10.0

    order = [3, 2, 1]  # noqa: F841 (read by the formula)
    model = bg.GLMM("y ~ tenfold(x) + shift3(z) + C(f, levels=order) + (1 + tenfold(x) | g)", df)
    X = model.design.fixed.X
    np.testing.assert_allclose(X[:, 1], df["x"] * 10)
    np.testing.assert_allclose(X[:, 2], df["z"] + 3)
    assert model.design.fixed.labels[3:] == ("C(f, levels=order)[2]", "C(f, levels=order)[1]")
    np.testing.assert_allclose(model.design.blocks[0].Z[:, 1], df["x"] * 10)
    new = model.design.new_data(df.iloc[:3].drop(columns="y"))
    np.testing.assert_allclose(new.X, X[:3])


def test_eval_env_depth_and_environment():
    df = pd.DataFrame({"y": np.arange(6.0), "x": np.arange(6.0)})

    def build(formula):
        return bg.GLMM(formula, df, eval_env=1)  # the caller of build()

    def double(v):
        return np.asarray(v) * 2.0

    np.testing.assert_allclose(build("y ~ double(x)").design.fixed.X[:, 1], df["x"] * 2)
    env = Environment([{"triple": lambda v: np.asarray(v) * 3.0}])
    np.testing.assert_allclose(bg.GLMM("y ~ triple(x)", df, eval_env=env).design.fixed.X[:, 1], df["x"] * 3)
    with pytest.raises(ArgumentError, match="eval_env"):
        bg.GLMM("y ~ x", df, eval_env="here")


def test_an_array_in_the_callers_code_does_not_stand_in_for_a_missing_column():
    df = pd.DataFrame({"y": np.arange(6.0), "x": np.arange(6.0)})
    z = np.ones(6)  # noqa: F841 (a notebook variable, not a column)
    mu = 2.5  # noqa: F841 (a constant: allowed)
    with pytest.raises(DataError, match="'z', which is not a column of data"):
        bg.GLMM("y ~ x + z", df)
    np.testing.assert_allclose(bg.GLMM("y ~ I(x - mu)", df).design.fixed.X[:, 1], df["x"] - 2.5)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ undefined_function(x)", r"calls undefined_function\(\), which is not a function"),
        ("y ~ as.factor(x)", r"calls as.factor\(\).*write C\(x\) or factor\(x\)"),
        ("y ~ relevel(x)", r"calls relevel\(\).*levels=lv"),
        ("y ~ x + missing_column", "uses 'missing_column', which is not a column of data"),
    ],
)
def test_unknown_names_say_whether_function_or_column(formula, message):
    df = pd.DataFrame({"y": np.arange(6.0), "x": np.arange(6.0)})
    with pytest.raises(DataError, match=message):
        bg.GLMM(formula, df)


@pytest.mark.parametrize("term", ["I(x**2)", "poly(x, 2)", "I(x + 2.5)"])
def test_new_data_with_numbers_inside_terms(term):
    """formulae names a number inside a term '': new data must not be asked for that column."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=20), "x": rng.normal(size=20), "g": list("abcd") * 5})
    d = build_design(parse_formula(f"y ~ {term} + (1 | g)"), df)
    new = d.new_data(df[["x", "g"]].iloc[:5])
    np.testing.assert_allclose(new.X, d.fixed.X[:5])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['x'\]"):
        d.new_data(df[["g"]].iloc[:5])


def halve(v):
    return np.asarray(v, dtype=float) / 2.0


@pytest.mark.sampling
def test_fit_with_r_syntax_predicts_and_survives_save_load(cbpp, tmp_path):
    """A fit written the lme4 way predicts on new rows, and loads where its functions are."""
    df = cbpp.assign(t=np.tile([0.0, 1.0, 2.0, 3.0], 14)[: len(cbpp)])
    model = bg.GLMM("cbind(incidence, size - incidence) ~ halve(t) + I(t^2) + (1 | herd)", df, family="binomial")
    res = short_fit(model, draws=50, tune=50, chains=1, random_seed=4)
    new = df.drop(columns=["incidence", "size"]).iloc[:4]
    pred = res.predict(new)
    assert pred["mean"].between(0, 1).all()
    res.save(tmp_path / "fit.bglmm")
    back = bg.load(tmp_path / "fit.bglmm")
    pd.testing.assert_frame_equal(back.predict(new), pred)
