"""LKJCholeskyCov's sampled log density as one operation: PyMC's value and gradient, in C and in NumPy."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.graph.basic import equal_computations

from bayesglmm.lkj_op import LKJDensity, LKJDensityGrad, _backward_replacements, model_logp


def _lkj_model(k: int, eta: float, sd_prior: str) -> pm.Model:
    with pm.Model() as model:
        if sd_prior == "halfnormal":
            sd_dist = pm.HalfNormal.dist(sigma=np.arange(1.0, k + 1.0))
        elif sd_prior == "studentt":
            sd_dist = pm.HalfStudentT.dist(nu=3, sigma=2.5, shape=k)
        elif sd_prior == "hierarchical":  # the SD prior's scale is itself a model variable
            tau = pm.Exponential("tau", 1.0)
            sd_dist = pm.HalfNormal.dist(sigma=tau, shape=k)
        else:
            sd_dist = pm.Exponential.dist(1.0, shape=k)
        packed = pm.LKJCholeskyCov("chol", n=k, eta=eta, sd_dist=sd_dist, compute_corr=False)
        pm.Normal("z", packed[0], pt.exp(0.1 * packed.sum()), shape=2, observed=[0.3, -1.2])
    return model


def _density_and_gradient(model: pm.Model, logp) -> pytensor.compile.Function:
    return pytensor.function(model.value_vars, [logp, *pytensor.grad(logp, model.value_vars)])


@pytest.mark.parametrize(
    ("k", "eta", "sd_prior"),
    [
        (2, 1.0, "exponential"),
        (2, 2.5, "halfnormal"),
        (3, 1.0, "studentt"),
        (4, 4.0, "halfnormal"),
        (3, 2.0, "hierarchical"),
    ],
)
def test_model_logp_is_pymcs(k, eta, sd_prior):
    """The whole model's log density and gradient equal PyMC's at points far from the start too."""
    model = _lkj_model(k, eta, sd_prior)
    ours, theirs = _density_and_gradient(model, model_logp(model)), _density_and_gradient(model, model.logp())
    ops = [type(node.op) for node in ours.maker.fgraph.toposort()]
    assert ops.count(LKJDensity) == 1 and ops.count(LKJDensityGrad) == 1
    assert not _backward_replacements(model_logp(model), model, {model["chol"]: None})  # all through the operation
    rng = np.random.default_rng(k)
    for scale in (0.3, 1.0, 3.0):
        point = [rng.normal(0.0, scale, size=v.type.shape if v.type.ndim else ()) for v in model.value_vars]
        expected = theirs(*point)
        for got, want in zip(ours(*point), expected):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_c_code_equals_numpy_with_strided_input():
    """The C code and the NumPy fallback agree, on a strided view of a longer vector."""
    k, eta = 3, 1.7
    x = pt.dvector("x")
    u = x[::2]
    f, sd, packed = LKJDensity(k, eta)(u)
    g_f, g_sd, g_p = pt.dscalar("g_f"), pt.dvector("g_sd"), pt.dvector("g_p")
    grad = LKJDensityGrad(k, eta)(u, g_f, g_sd, g_p)
    rng = np.random.default_rng(0)
    args = (rng.normal(size=12), 0.7, rng.normal(size=k), rng.normal(size=6))
    inputs, outputs = [x, g_f, g_sd, g_p], [f, sd, packed, grad]
    c_values = pytensor.function(inputs, outputs)(*args)
    py_values = pytensor.function(inputs, outputs, mode=Mode(linker="py"))(*args)
    for c_value, py_value in zip(c_values, py_values):
        np.testing.assert_allclose(c_value, py_value, rtol=1e-13)
    rows = [args[0][::2][i * (i + 1) // 2 : (i + 1) * (i + 2) // 2] for i in range(k)]
    expected_sd = [np.sqrt((row[:-1] ** 2).sum() + np.exp(2 * row[-1])) for row in rows]
    np.testing.assert_allclose(c_values[1], expected_sd, rtol=1e-13)
    np.testing.assert_allclose(c_values[2], np.concatenate([[*row[:-1], np.exp(row[-1])] for row in rows]), rtol=1e-13)


def test_wrong_length_is_a_type_error():
    with pytest.raises(TypeError, match="vector of 6"):
        LKJDensity(3, 1.0)(pt.zeros(5))


def test_models_without_lkj_keep_pymcs_graph():
    with pm.Model() as model:
        pm.Normal("a", 0.0, 1.0)
    assert equal_computations([model_logp(model)], [model.logp()])
