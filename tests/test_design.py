"""Stage 2: design arrays (no sampling)."""

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm.design import build_design
from bayesglmm.formula import parse_formula


def design(formula, data, **kw):
    return build_design(parse_formula(formula), data, **kw)


def test_contraception_labels_and_block():
    df = bg.datasets.load("contraception")
    d = design("use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)", df)
    assert d.fixed.labels == ("Intercept", "age", "I(age ** 2)", "urban[Y]", "livch[1]", "livch[2]", "livch[3+]")
    assert set(np.unique(d.y)) == {0.0, 1.0}
    (block,) = d.blocks
    assert block.terms == ("Intercept", "urban[Y]") and block.correlated
    assert block.Z.shape == (d.n, 2) and block.idx.shape == (d.n,)
    assert len(block.levels) == 60 and block.idx.max() == 59
    assert block.levels[:3] == ("1", "2", "3")  # categorical order, not lexicographic


def test_internal_standardisation_is_exact(sim_gaussian):
    d = design("y ~ x + I(x**2 + 100) + (1 | g)", sim_gaussian)
    Xs = d.fixed.standardized(d.fixed.X)
    assert np.allclose(Xs.mean(axis=0), 0) and np.allclose(Xs.std(axis=0), 1)
    assert d.fixed.center[0] == 0 and d.fixed.scale[0] == 1  # intercept untouched


def test_uncorrelated_nested_crossed(sim_gaussian):
    d = design("y ~ x + (1 + x || g) + (1 | h/g)", sim_gaussian)
    names = [b.name for b in d.blocks]
    assert names == ["g", "h", "h:g"]
    assert not d.blocks[0].correlated and d.blocks[0].terms == ("Intercept", "x")
    assert d.blocks[2].levels[0] == "0:g00"
    # group codes reproduce the labels
    labels = (sim_gaussian["h"].astype(str) + ":" + sim_gaussian["g"]).to_numpy()
    assert np.array_equal(np.array(d.blocks[2].levels)[d.blocks[2].idx], labels)


def test_same_group_two_blocks_get_distinct_names(sim_gaussian):
    d = design("y ~ x + (1 | g) + (0 + x | g)", sim_gaussian)
    assert [b.name for b in d.blocks] == ["g_1", "g_2"]
    assert d.blocks[1].terms == ("x",)


def test_offset_and_trials(sim_binary):
    d = design("p(k, n) ~ x + offset(np.log(n)) + (1 | g)", sim_binary)
    assert np.allclose(d.offset, np.log(5)) and np.all(d.trials == 5)
    assert d.fixed.labels == ("Intercept", "x")


def test_factor_slopes_and_cross_level_interaction(sim_gaussian):
    df = sim_gaussian.assign(gm=sim_gaussian.groupby("g")["x"].transform("mean"))
    d = design("y ~ x * gm + f + (1 + f | g)", df)
    assert "x:gm" in d.fixed.labels and "f[b]" in d.fixed.labels
    assert d.blocks[0].terms == ("Intercept", "f[b]", "f[c]")


def test_user_data_not_modified(sim_gaussian):
    df = sim_gaussian.copy()
    df.loc[0, "x"] = np.nan
    before = df.copy()
    design("y ~ x + (1 | g)", df, na_action="drop")
    pd.testing.assert_frame_equal(df, before)


def test_new_data_uses_fitted_encoding(sim_gaussian):
    d = design("y ~ x + f + (1 | g)", sim_gaussian)
    new = pd.DataFrame({"x": [0.0, 1.0], "f": ["c", "a"], "g": ["g03", "zz"]})
    nd = d.new_data(new)
    assert nd.X.tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]
    assert nd.new_level[0].tolist() == [False, True]
    assert nd.idx[0][0] == 3


def test_nullable_columns_read_as_numpy(sim_binary):
    """pandas' nullable and pyarrow numbers and booleans give the design of their numpy
    counterparts (formulae cannot read them as a response); NA counts as missing."""
    nullable = sim_binary.astype({"y": "Int64", "x": "Float64"}).assign(
        flag=pd.array(sim_binary["y"] == 1, dtype="boolean"), xa=pd.array(sim_binary["x"], dtype="float64[pyarrow]")
    )
    before = nullable.copy()
    plain = sim_binary.assign(flag=sim_binary["y"] == 1, xa=sim_binary["x"])
    for formula in ("y ~ x + (1 | g)", "flag ~ xa + (1 | g)"):
        a = bg.GLMM(formula, nullable, family="bernoulli").design
        b = bg.GLMM(formula, plain, family="bernoulli").design
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.fixed.X, b.fixed.X)
    pd.testing.assert_frame_equal(nullable, before)
    nullable.loc[3, "y"] = pd.NA
    with pytest.raises(bg.MissingDataError, match="'y' \\(1\\)"):
        bg.GLMM("y ~ x + (1 | g)", nullable, family="bernoulli")


def test_repeated_index_labels(sim_binary):
    """Rows are matched by position: a repeated index (e.g. after pd.concat) keeps every row once,
    also where the response's labels are kept (ordinal) and rows are dropped."""
    df = sim_binary.assign(yo=pd.Categorical(np.where(sim_binary["y"] == 1, "hi", "lo"), ["lo", "hi"], ordered=True))
    df = df.set_axis(np.arange(len(df)) % 50)
    df.loc[df.index[0], "x"] = np.nan  # labels 0 repeat: .loc would pick every row labelled 0
    df.iloc[1, df.columns.get_loc("x")] = np.nan
    with pytest.warns(bg.DataWarning, match="dropped 7 of 300"):
        m = bg.GLMM("yo ~ x + (1 | g)", df, family="cumulative", na_action="drop")
    complete = df["x"].notna().to_numpy()
    assert m.design.n == len(m.design.data) == complete.sum()
    assert list(m.design.data["yo"]) == list(df["yo"][complete])


def test_whole_float_group_labels_are_integers(sim_gaussian):
    """Group 1 is group 1 whether the column holds 1 or 1.0 (an int column with gaps turns float)."""
    df = sim_gaussian.assign(k=np.repeat(np.arange(1, 13), 10))
    as_int = bg.GLMM("y ~ x + (1 | k)", df).design
    as_float = bg.GLMM("y ~ x + (1 | k)", df.astype({"k": float})).design
    assert as_int.blocks[0].levels == as_float.blocks[0].levels == tuple(str(i) for i in range(1, 13))
    new = df.head(3).astype({"k": float})
    np.testing.assert_array_equal(as_int.new_data(new).idx[0], as_int.blocks[0].idx[:3])
    mixed = bg.GLMM("y ~ x + (1 | k)", df.assign(k=np.where(df["k"] < 6, df["k"], df["k"] + 0.5))).design
    assert mixed.blocks[0].levels[:2] == ("1", "2") and "6.5" in mixed.blocks[0].levels
