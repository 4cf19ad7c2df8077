"""LOO, leave-one-group-out and compare."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg

pytestmark = pytest.mark.sampling
SHORT = {"draws": 300, "tune": 300, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 2}


@pytest.fixture(scope="module")
def fits():
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(16), 12)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(0, 1, 16)[g] + rng.normal(0, 1.0, 16)[g] * x + rng.normal(0, 0.5, g.size)
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return {
            "slope": bg.GLMM("y ~ x + (1 + x | g)", df).fit(**SHORT),
            "intercept": bg.GLMM("y ~ x + (1 | g)", df).fit(**SHORT),
        }


def test_loo_and_logo(fits):
    res = fits["slope"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto-k warnings: a short fit
        elpd = res.loo()
    # 12 rows per group: PSIS over whole groups is strained, and says so
    with pytest.warns(UserWarning, match=r"levels of 'g' have Pareto k > 0.7"):
        logo = res.loo(group="g")
    assert elpd.loo_i.shape == (res.model.design.n,)
    assert logo.loo_i.shape == (16,) and logo.pareto_k.shape == (16,)
    assert float(logo.loo_i.sum()) == pytest.approx(logo.elpd_loo)
    assert np.isfinite(res.waic().elpd_waic)
    with pytest.raises(bg.ArgumentError, match="not a grouping factor"):
        res.loo(group="school")


def test_loo_and_compare_equal_arviz_defaults(fits):
    # reff comes from bayesglmm.stats (no numba), and must be ArviZ's default
    from bayesglmm.stats import az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = {name: res.loo() for name, res in fits.items()}
        theirs = {name: az.loo(res.idata, pointwise=True) for name, res in fits.items()}
        table, reference = bg.compare(fits), az.compare({name: res.idata for name, res in fits.items()})
    for name in fits:
        assert ours[name].elpd_loo == pytest.approx(theirs[name].elpd_loo, rel=1e-9)
        assert ours[name].p_loo == pytest.approx(theirs[name].p_loo, rel=1e-9)
        np.testing.assert_allclose(ours[name].pareto_k, theirs[name].pareto_k, rtol=1e-9)
    pd.testing.assert_frame_equal(table.astype(str), reference.astype(str))
    # with one chain ArviZ takes reff = 1
    one = az.InferenceData(posterior=fits["slope"].idata.posterior.isel(chain=[0]))
    from bayesglmm.pointwise import relative_efficiency

    assert relative_efficiency(one.posterior) == 1.0


def test_compare_prefers_the_true_random_slope(fits):
    with warnings.catch_warnings(record=True) as caught:  # short fits: a few Pareto k > 0.7
        warnings.simplefilter("always")
        table = bg.compare(fits)
    messages = [str(w.message) for w in caught if "Pareto k" in str(w.message)]
    assert messages and all(re.match(r"model '(slope|intercept)': \d+ of 192 observations", m) for m in messages)
    assert all(w.filename == __file__ for w in caught if "Pareto k" in str(w.message))  # the caller's line
    assert table.index[0] == "slope"
    gap = table.loc["intercept", "elpd_diff"]
    assert gap > 2 * table.loc["intercept", "dse"]
    with pytest.raises(bg.ArgumentError, match="at least two"):
        bg.compare({"a": fits["slope"]})
    # the same rows, another response (here rescaled): densities on different scales
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        scaled = bg.GLMM("I(y * 2) ~ x + (1 | g)", fits["slope"].model.design.data).fit(**SHORT)
    with pytest.raises(bg.ArgumentError, match=r"\['scaled'\] were fitted to other observations"):
        bg.compare({"slope": fits["slope"], "scaled": scaled})


def test_compare_no_false_preference_without_slope_variance():
    # the same design, but the slopes do not vary between groups
    rng = np.random.default_rng(9)
    g = np.repeat(np.arange(16), 12)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(0, 1, 16)[g] + rng.normal(0, 0.5, g.size)
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        fits = {
            "slope": bg.GLMM("y ~ x + (1 + x | g)", df).fit(**SHORT),
            "intercept": bg.GLMM("y ~ x + (1 | g)", df).fit(**SHORT),
        }
    table = bg.compare(fits)
    # the needless random slope is not preferred beyond one LOO standard error of the difference
    if table.index[0] == "slope":
        assert table.loc["intercept", "elpd_diff"] <= table.loc["intercept", "dse"], table
    assert table.loc["slope", "p_loo"] > table.loc["intercept", "p_loo"]  # it only adds complexity


def test_logo_on_sleepstudy_gives_one_elpd_per_subject():
    from .conftest import shared_csv

    df = shared_csv("sleepstudy.csv").astype({"Subject": str})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("Reaction ~ Days + (Days | Subject)", df).fit(**SHORT)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        logo = res.loo(group="Subject")
    subjects = sorted(df["Subject"].unique())
    assert logo.loo_i.shape == (18,) and logo.pareto_k.shape == (18,)
    assert sorted(map(str, logo.loo_i["Subject"].values)) == subjects
    assert np.all(np.isfinite(logo.pareto_k.values))
    assert float(logo.loo_i.sum()) == pytest.approx(logo.elpd_loo)
