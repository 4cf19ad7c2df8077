"""Separation of binary responses: by a predictor, by a combination, within groups."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg


def _frame(seed=0, n=120):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), n // 12)
    x = rng.normal(size=n)
    y = rng.binomial(1, 1 / (1 + np.exp(-x)))
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_no_separation_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", bg.DataWarning)
        model = bg.GLMM("y ~ x + (1 | g)", _frame(), family="bernoulli")
    assert model.separation().query("kind != 'group'").empty


def test_complete_separation_by_a_predictor():
    df = _frame()
    df["y"] = (df["x"] > 0.3).astype(int)
    with pytest.warns(bg.DataWarning, match=r"separation of the binary response: x \(complete"):
        model = bg.GLMM("y ~ x + (1 | g)", df, family="bernoulli")
    found = model.separation()
    assert found.loc[found["kind"] == "predictor", "what"].tolist() == ["x"]


def test_quasi_separation_by_a_category():
    df = _frame()
    df["f"] = np.where(np.arange(len(df)) % 5 == 0, "rare", "common")
    df.loc[df["f"] == "rare", "y"] = 1
    with pytest.warns(bg.DataWarning, match=r"f\[rare\] \(quasi-complete"):
        model = bg.GLMM("y ~ x + f + (1 | g)", df, family="bernoulli")
    assert "f[rare]" in model.separation()["what"].tolist()


def test_separation_by_a_combination_only():
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=200), rng.normal(size=200)
    df = pd.DataFrame({"x1": x1, "x2": x2, "y": (x1 + x2 > 0).astype(int), "g": np.arange(200) % 10})
    with pytest.warns(bg.DataWarning, match=r"x1 \+ x2"):
        model = bg.GLMM("y ~ x1 + x2 + (1 | g)", df, family="bernoulli")
    found = model.separation()
    assert found["kind"].tolist().count("combination") == 1
    assert "predictor" not in found["kind"].tolist()  # neither column alone separates


def test_binomial_rows_with_both_outcomes_do_not_separate():
    df = _frame()
    df["n"] = 4
    df["k"] = np.where(df["x"] > 0, 4, 2)  # x > 0: all successes; x <= 0: some of each
    model = bg.GLMM("p(k, n) ~ x + (1 | g)", df, family="binomial")
    assert model.separation().query("kind != 'group'").empty


def test_groups_with_all_outcomes_equal_are_reported():
    df = _frame()
    df.loc[df["g"].isin([3, 7]), "y"] = 0
    model = bg.GLMM("y ~ x + (1 | g)", df, family="bernoulli")
    rows = model.separation().query("kind == 'group'")
    assert len(rows) == 1 and rows.iloc[0]["what"] == "g"
    assert rows.iloc[0]["detail"].startswith("2 of 12 levels have all outcomes equal (e.g. 3, 7)")
