"""gmean / gcenter formula helpers and the discrete-time expansion (issue 5)."""

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg


@pytest.fixture
def schools():
    rng = np.random.default_rng(4)
    school = np.repeat([f"s{j}" for j in range(10)], 6)
    ses = rng.normal(size=school.size) + np.repeat(rng.normal(size=10), 6)
    y = rng.binomial(1, 0.5, school.size)
    return pd.DataFrame({"y": y, "ses": ses, "school": school})


def test_gmean_and_gcenter_split_a_covariate(schools):
    before = schools.copy()
    m = bg.GLMM("y ~ gcenter(ses, school) + gmean(ses, school) + (1 | school)", schools, family="bernoulli")
    pd.testing.assert_frame_equal(schools, before)  # computed, never written into the data
    X = m.design.fixed.X
    means = schools.groupby("school")["ses"].transform("mean").to_numpy()
    np.testing.assert_allclose(X[:, 2], means)
    np.testing.assert_allclose(X[:, 1] + X[:, 2], schools["ses"])
    np.testing.assert_allclose(pd.Series(X[:, 1]).groupby(schools["school"].values).mean(), 0, atol=1e-12)


def test_cluster_means_are_reused_for_new_data(schools):
    m = bg.GLMM("y ~ gcenter(ses, school) + gmean(ses, school) + (1 | school)", schools, family="bernoulli")
    s0 = schools.loc[schools["school"] == "s0", "ses"].mean()
    new = pd.DataFrame({"ses": [5.0, 7.0, 1.0], "school": ["s0", "new", "new"]})
    X = m.design.new_data(new).X
    # a fitted school keeps its fitted mean, whatever the new rows hold
    assert X[0, 2] == pytest.approx(s0) and X[0, 1] == pytest.approx(5.0 - s0)
    # an unseen school gets the mean of its own new rows
    np.testing.assert_allclose(X[1:, 2], 4.0)
    np.testing.assert_allclose(X[1:, 1], [3.0, -3.0])


def test_gcenter_as_a_random_slope(schools):
    m = bg.GLMM("y ~ gcenter(ses, school) + (1 + gcenter(ses, school) | school)", schools, family="bernoulli")
    (block,) = m.design.blocks
    assert block.terms == ("Intercept", "gcenter(ses, school)")
    np.testing.assert_allclose(block.Z[:, 1], m.design.fixed.X[:, 1])


def test_expand_discrete_time():
    df = pd.DataFrame({"id": [1, 2, 3], "weeks": [2, 3, 1], "relapse": [1, 0, 1], "x": [0.1, 0.2, 0.3]})
    before = df.copy()
    long = bg.expand_discrete_time(df, time="weeks", event="relapse")
    pd.testing.assert_frame_equal(df, before)
    assert len(long) == 6
    assert long["period"].tolist() == [1, 2, 1, 2, 3, 1]
    assert long["event"].tolist() == [0, 1, 0, 0, 0, 1]
    assert long["x"].tolist() == [0.1, 0.1, 0.2, 0.2, 0.2, 0.3]
    # rows are repeated by position: a repeated index label stays with its own row
    twice = bg.expand_discrete_time(df.set_axis([0, 0, 1]), time="weeks", event="relapse")
    pd.testing.assert_frame_equal(twice, long)


@pytest.mark.parametrize(
    ("change", "cls", "pattern"),
    [
        ({"weeks": [2, 0, 1]}, bg.DataError, "positive integers"),
        ({"weeks": [2, 1.5, 1]}, bg.DataError, "positive integers"),
        ({"relapse": [1, 2, 0]}, bg.DataError, "0 \\(censored\\) or 1"),
        ({"period": [1, 1, 1]}, bg.ArgumentError, "already has a column 'period'"),
    ],
)
def test_expand_discrete_time_bad_input(change, cls, pattern):
    df = pd.DataFrame({"id": [1, 2, 3], "weeks": [2, 3, 1], "relapse": [1, 0, 1]}).assign(**change)
    with pytest.raises(cls, match=pattern):
        bg.expand_discrete_time(df, time="weeks", event="relapse")
    with pytest.raises(bg.DataError, match="'days' is not a column"):
        bg.expand_discrete_time(df, time="days", event="relapse")
