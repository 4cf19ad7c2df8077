"""Nested random intercepts sampled through their totals: the pairs, the same posterior."""

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm.parameterization import nested_pairs

from .conftest import short_fit


def _frame(seed: int = 5, schools: int = 30) -> pd.DataFrame:
    """Pupils in classes in schools: 1-3 classes per school, 1-8 pupils per class."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(1, 4, schools)
    school_of_class = np.repeat(np.arange(schools), classes)
    sizes = rng.integers(1, 9, school_of_class.size)
    cls = np.repeat(np.arange(school_of_class.size), sizes)
    school = school_of_class[cls]
    x = rng.normal(size=cls.size)
    eta = 0.5 + 0.4 * x + rng.normal(0, 0.5, schools)[school] + rng.normal(0, 0.7, school_of_class.size)[cls]
    return pd.DataFrame(
        {
            "count": rng.poisson(np.exp(eta)),
            "x": x,
            "school": school.astype(str),
            "class": cls.astype(str),
            "pupil": np.arange(cls.size).astype(str),
            "rater": rng.integers(0, 6, cls.size).astype(str),
        }
    )


def test_pairs_are_nested_random_intercepts_from_the_coarsest_factor():
    df = _frame()
    model = bg.GLMM("count ~ x + (1 | school/class)", df, family="poisson")
    (pair,) = nested_pairs(model.design)
    blocks = {b.name: b for b in model.design.blocks}
    parent, child = blocks[pair.parent], blocks[pair.child]
    assert (parent.group, child.group) == ("school", "school:class")
    # every child level's parent is the school of its rows
    np.testing.assert_array_equal(pair.parent_of[child.idx], parent.idx)
    # three levels: school > class is paired, the pupils (nested in both) stay non-centred
    three = bg.GLMM("count ~ x + (1 | school) + (1 | class) + (1 | pupil)", df, family="poisson")
    assert [(p.parent, p.child) for p in nested_pairs(three.design)] == [("school", "class")]


def test_parents_with_many_children_are_not_paired():
    """80 lecturers per department (InstEval): the parent's effect is its total already."""
    rng = np.random.default_rng(0)
    dept = np.repeat(np.arange(4), 10 * 3)  # 10 lecturers of 3 ratings in each of 4 departments
    df = pd.DataFrame({"y": rng.normal(size=dept.size), "dept": dept.astype(str)})
    df["d"] = (np.arange(dept.size) // 3).astype(str)
    model = bg.GLMM("y ~ 1 + (1 | dept) + (1 | d)", df)
    assert nested_pairs(model.design) == ()
    few = df[df["d"].astype(int) % 10 < 9]  # 9 lecturers per department
    assert len(nested_pairs(bg.GLMM("y ~ 1 + (1 | dept) + (1 | d)", few).design)) == 1


@pytest.mark.parametrize(
    "formula",
    [
        "count ~ x + (1 | school) + (1 | rater)",  # crossed
        "count ~ x + (1 + x | school) + (1 | class)",  # the parent has a slope
        "count ~ x + (1 | school) + (1 + x || class)",  # the child has a slope
    ],
)
def test_crossed_factors_and_slopes_are_not_paired(formula):
    model = bg.GLMM(formula, _frame(), family="poisson")
    assert nested_pairs(model.design) == ()


def test_sampling_model_has_the_same_posterior():
    """The map (t, d) -> (z_parent, z_child) is orthogonal, so the log density is unchanged."""
    model = bg.GLMM("count ~ x + (1 | school/class)", _frame(), family="poisson")
    full, target = model.pymc_model, model.sampling_model(reduce=False)
    (pair,) = model.nested_pairs()
    free = {v.name for v in target.free_RVs}
    assert {f"t_{pair.parent}", f"d_{pair.child}"} <= free and not any(n.startswith("z_") for n in free)
    z_names = [f"z_{pair.parent}", f"z_{pair.child}"]
    z_graphs = target.replace_rvs_by_values([target[name] for name in z_names])
    z_of = target.compile_fn(z_graphs, inputs=target.value_vars, on_unused_input="ignore")
    logp_full, logp_target = full.compile_logp(), target.compile_logp()
    rng = np.random.default_rng(0)
    for _ in range(4):
        point = {k: v + rng.normal(0, 0.7, np.shape(v)) for k, v in target.initial_point().items()}
        full_point = {k: v for k, v in point.items() if not k.startswith(("t_", "d_"))}
        full_point.update(zip(z_names, z_of(point)))
        np.testing.assert_allclose(logp_target(point), logp_full(full_point), rtol=1e-10)


def test_pair_has_the_prior_covariance_of_the_effects():
    """Given the SDs the effects are a linear map A of (t, d) with A Aᵀ = diag(σ_p², σ_c²)."""
    model = bg.GLMM("count ~ x + (1 | school/class)", _frame(), family="poisson")
    target = model.sampling_model(reduce=False)
    (pair,) = model.nested_pairs()
    r_graphs = target.replace_rvs_by_values([target[f"r_{pair.parent}"], target[f"r_{pair.child}"]])
    r_of = target.compile_fn(r_graphs, inputs=target.value_vars, on_unused_input="ignore")
    point = target.initial_point()
    sd = {pair.parent: 0.3, pair.child: 1.7}
    for name, value in sd.items():
        point[f"sd_{name}_log__"] = np.log([value])
    t, d = point[f"t_{pair.parent}"], point[f"d_{pair.child}"]
    columns = []
    for k in range(t.size + d.size):
        unit = np.zeros(t.size + d.size)
        unit[k] = 1.0
        point[f"t_{pair.parent}"], point[f"d_{pair.child}"] = unit[: t.size, None], unit[t.size :, None]
        columns.append(np.concatenate([np.ravel(r) for r in r_of(point)]))
    A = np.column_stack(columns)
    expected = np.diag(np.r_[np.full(t.size, sd[pair.parent] ** 2), np.full(d.size, sd[pair.child] ** 2)])
    np.testing.assert_allclose(A @ A.T, expected, atol=1e-12)


@pytest.mark.sampling
def test_nested_fit_stores_the_non_centred_variables():
    df = _frame()
    model = bg.GLMM("count ~ x + (1 | school/class)", df, family="poisson")
    res = short_fit(model, random_seed=3)
    plain = short_fit(model, random_seed=3, centre=False)
    (pair,) = model.nested_pairs()
    post = res.idata.posterior
    assert res.idata.attrs["nested_pairs"] == f"{pair.parent}>{pair.child}"
    assert plain.idata.attrs["nested_pairs"] == ""
    assert res.idata.attrs["target_accept"] == 0.98 and plain.idata.attrs["target_accept"] == 0.95
    assert set(post.data_vars) == set(plain.idata.posterior.data_vars)
    for name in (pair.parent, pair.child):
        np.testing.assert_allclose(post[f"z_{name}"] * post[f"sd_{name}"], post[f"r_{name}"], rtol=1e-10)
    assert res.predict().shape[0] == len(df)
