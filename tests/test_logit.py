"""The fused logit log-density (bayesglmm.logit) in every back end a fit may compile to."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import expit, log_expit

from bayesglmm import logit

ETA = np.array([-800.0, -40.0, -2.5, -0.3, 0.0, 0.4, 3.0, 40.0, 800.0])
Y = np.array([0, 1, 0, 1, 1, 0, 3, 7, 2])
N = np.array([1, 1, 2, 4, 1, 6, 3, 7, 2])
ORDER = np.array([3, 0, 8, 1, 5, 2, 7, 4, 6])

MODES = ["FAST_RUN", "NUMBA"] + (["JAX"] if importlib.util.find_spec("jax") else [])


def _compiled(mode: str):
    """Values and gradient of the log-density at ``eta = x[order]``.

    ``eta`` is an intermediate buffer (a gather, as in a model's ``X b + r[idx]``),
    so the compiler lets an output overwrite it in place: the other output must
    not read it afterwards.
    """
    logit.register_backend({"NUMBA": "nutpie", "JAX": "numpyro"}.get(mode, "pymc"))
    x = pt.vector("x")
    eta = x[ORDER]
    values = logit.loglik(pt.as_tensor(Y), eta, pt.as_tensor(N))
    total = values.sum()
    grad = pytensor.grad(total, x)
    return pytensor.function([x], [values, grad], mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_value_and_gradient_are_exact_in_every_backend(mode):
    values, grad = (np.asarray(a) for a in _compiled(mode)(ETA[np.argsort(ORDER)]))
    exact = Y * log_expit(ETA) + (N - Y) * log_expit(-ETA)
    np.testing.assert_allclose(values, exact, rtol=1e-13, atol=1e-300)
    exact_grad = Y * expit(-ETA) - (N - Y) * expit(ETA)  # y - n σ(η) without cancellation
    np.testing.assert_allclose(grad[ORDER], exact_grad, rtol=1e-13, atol=1e-300)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))


def test_the_gradient_reuses_the_forward_pass():
    """The compiled density-and-gradient graph has one fused loop and no separate sigmoid."""
    x = pt.vector("x")
    total = logit.loglik(pt.as_tensor(Y), x, pt.as_tensor(N)).sum()
    fn = pytensor.function([x], [total, pytensor.grad(total, x)])
    text = pytensor.printing.debugprint(fn, file="str")
    assert "sigmoid" not in text.lower() and "softplus" not in text.lower()
    assert sum(1 for node in fn.maker.fgraph.apply_nodes if "Composite" in str(node.op) or "logit" in str(node.op)) == 1


def test_second_derivative():
    x = pt.dscalar("x")
    hess = pytensor.grad(pytensor.grad(logit.loglik(1, x, 3), x), x)
    f = pytensor.function([x], hess)
    for value in (-3.0, 0.0, 0.7, 5.0):
        np.testing.assert_allclose(f(value), -3 * expit(value) * expit(-value), rtol=1e-12)


def test_gradient_with_respect_to_float_data():
    """d/dy = eta and d/dn = -log(1 + e^eta) when response and trials are not integers."""
    y, eta, n = pt.dscalar("y"), pt.dscalar("eta"), pt.dscalar("n")
    value = logit.loglik(y, eta, n)
    f = pytensor.function([y, eta, n], pytensor.grad(value, [y, n]))
    dy, dn = f(2.0, 0.3, 5.0)
    np.testing.assert_allclose([dy, dn], [0.3, -np.log1p(np.exp(0.3))], rtol=1e-12)
