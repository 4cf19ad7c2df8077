"""The fused marginal likelihood of one grouping factor: C code, NumPy, finite differences, the graph."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pymc.pytensorf import join_nonshared_inputs

import bayesglmm as bg
from bayesglmm.marginal_op import BlockMarginal, block_marginal, block_marginal_numpy


def _inputs(J: int, k: int, p: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    Zs = [rng.normal(size=(rng.integers(2, 8), k)) for _ in range(J)]
    X = rng.normal(size=(30, p))
    L = np.tril(rng.normal(size=(k, k)))
    L[np.diag_indices(k)] = np.abs(np.diag(L)) + 0.5
    data = (np.stack([Z.T @ Z for Z in Zs]), rng.normal(size=(J, k)), rng.normal(size=(J, k, p)))
    return rng.normal(size=p), L, 1.7, *data, 60.0, rng.normal(size=p), X.T @ X


def _direct(d, L, s2, K, G0, ZA, ee, Ate, AtA) -> float:
    """The value level by level, with dense solves: -½ (Σ log det M_j + rᵀr/s² - Σ c_jᵀ M_j⁻¹ c_j)."""
    total = ee - 2.0 * Ate @ d + d @ AtA @ d
    total /= s2
    for j in range(K.shape[0]):
        M = np.eye(L.shape[0]) + L.T @ K[j] @ L / s2
        c = L.T @ (G0[j] - ZA[j] @ d) / s2
        total += np.linalg.slogdet(M)[1] - c @ np.linalg.solve(M, c)
    return -0.5 * total


def _compiled():
    d, L, s2 = pt.dvector("d"), pt.dmatrix("L"), pt.dscalar("s2")
    data = [pt.dtensor3("K"), pt.dmatrix("G0"), pt.dtensor3("ZA")]
    data += [pt.dscalar("ee"), pt.dvector("Ate"), pt.dmatrix("AtA")]
    outputs = block_marginal(d, L, s2, *data)
    fn = pytensor.function([d, L, s2, *data], outputs, mode="FAST_RUN")
    assert any(isinstance(node.op, BlockMarginal) for node in fn.maker.fgraph.apply_nodes)
    return fn


def _numeric_gradient(args: tuple, position: int, eps: float = 1e-6) -> np.ndarray:
    x = np.asarray(args[position], dtype=float)
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        step = np.zeros(x.shape)
        step[index] = eps
        up = list(args)
        down = list(args)
        up[position], down[position] = x + step, x - step
        out[index] = (_direct(*up) - _direct(*down)) / (2 * eps)
    return out


@pytest.mark.parametrize(("J", "k", "p"), [(18, 2, 2), (5, 1, 3), (7, 3, 0), (4, 4, 5)])
def test_value_and_gradient_against_direct_algebra(J, k, p):
    """C code and NumPy give the dense-algebra value to 1e-12 and its central differences to 1e-6."""
    args = _inputs(J, k, p)
    c_out = _compiled()(*args)
    np_out = block_marginal_numpy(*args)
    expected = _direct(*args)
    gradients = [_numeric_gradient(args, i) for i in range(3)]
    for out in (c_out, np_out):
        assert float(out[0]) == pytest.approx(expected, rel=1e-12, abs=1e-10)
        for got, numeric in zip(out[1:], gradients):
            np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-6)
    for got, other in zip(c_out, np_out):
        np.testing.assert_allclose(got, other, rtol=1e-11, atol=1e-11)


def test_strided_parameters():
    """Transposed and sliced parameters (non-contiguous arrays) read correctly in C."""
    args = _inputs(6, 3, 4, seed=2)
    d, L, s2 = pt.dvector(), pt.dmatrix(), pt.dscalar()
    value = block_marginal(d[::2], L.T, s2, *args[3:])[0]
    fn = pytensor.function([d, L, s2], value)
    wide = np.zeros(8)
    wide[::2] = args[0]
    assert float(fn(wide, np.ascontiguousarray(args[1].T), args[2])) == pytest.approx(_direct(*args), rel=1e-12)


def test_gradient_through_pytensor_uses_the_outputs():
    """``pt.grad`` of the value is the operation's own gradient outputs (no second operation)."""
    args = _inputs(5, 2, 3, seed=1)
    d, L, s2 = pt.dvector(), pt.dmatrix(), pt.dscalar()
    value = block_marginal(d, L, s2, *args[3:])[0]
    grads = pt.grad(3.0 * value, [d, L, s2])
    fn = pytensor.function([d, L, s2], grads)
    ops = [node.op for node in fn.maker.fgraph.apply_nodes if isinstance(node.op, BlockMarginal)]
    assert len(ops) == 1
    expected = block_marginal_numpy(*args)[1:]
    for got, want in zip(fn(*args[:3]), expected):
        np.testing.assert_allclose(got, 3.0 * np.asarray(want), rtol=1e-12)


def test_non_positive_variance_gives_nan_not_an_error():
    """A point where M is not positive definite (s² ≤ 0, NaN) is a point of no density for NUTS."""
    args = list(_inputs(4, 2, 2))
    fn = _compiled()
    for s2 in (-1e-3, np.nan):
        args[2] = s2
        assert all(np.isnan(np.asarray(x)).all() for x in fn(*args))


def test_wrong_dimensions_named():
    args = list(_inputs(3, 2, 2))
    args[6] = np.array([60.0])
    with pytest.raises(TypeError, match="input ee must have 0 dimensions"):
        block_marginal(*args)


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | g)", "y ~ x + f + (1 + x || g)", "y ~ 0 + (1 | g)"])
def test_fused_model_has_the_graphs_density_and_gradient(sim_gaussian, formula):
    """The fused marginal model's log density and gradient equal the graph's at random points."""
    m = bg.GLMM(formula, sim_gaussian)
    fns = []
    for fused in (False, True):
        model = m.marginal_model(fused=fused)
        logp = model.logp()
        grad = pt.concatenate([pt.flatten(g) for g in pt.grad(logp, model.value_vars)])
        start = model.initial_point()
        (logp, grad), joined = join_nonshared_inputs(start, [logp, grad], model.value_vars)
        fns.append(pytensor.function([joined], [logp, grad]))
        kinds = {type(node.op) for node in fns[-1].maker.fgraph.apply_nodes}
        assert (BlockMarginal in kinds) is fused
    rng = np.random.default_rng(1)
    size = len(np.concatenate([np.ravel(v) for v in start.values()]))
    for _ in range(5):
        x = rng.normal(0, 0.5, size)
        (lp_graph, g_graph), (lp_fused, g_fused) = (fn(x) for fn in fns)
        assert lp_fused == pytest.approx(lp_graph, rel=1e-10)
        np.testing.assert_allclose(g_fused, g_graph, rtol=1e-8, atol=1e-8)
