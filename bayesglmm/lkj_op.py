"""LKJCholeskyCov's log density on its sampling scale, as one compiled operation.

A correlated block's covariance is ``LKJCholeskyCov``'s: its value ``p``
packs the rows of the k × k Cholesky factor ``L``, and NUTS samples ``u``,
``p`` with the diagonal on the log scale (PyMC's ``CholeskyCovPacked``
transform).  PyMC writes the log density of ``u`` (the LKJ density of the
correlations, the change of variables from them and the SDs to ``L``, and the
transform's Jacobian) as some 40 small operations, and their gradient as
many again: half of the gradient of sleepstudy's marginal model, whose
likelihood is one operation (:mod:`bayesglmm.marginal_op`), and a third of
its compilation.

With ``v_i = Σ_j L_ij²`` (so that the SD of term i is ``√v_i``) the terms
collapse to

    f(u) = Σ_i [(2η - 1 + k - i) u_ii - (2η - 2 + k) ½ log v_i]

(i from 0), plus the normalising constant of the LKJ density and the SD prior
``Σ_i log p_sd(√v_i)``.  :class:`LKJDensity` computes ``f``, the SDs and
``p`` (the transform's ``backward``, which the rest of the model reads);
:class:`LKJDensityGrad` the gradient ``∂/∂u`` of ``g_f f + g_sdᵀ sd + g_pᵀ p``:
with ``w_i = -g_f (2η - 2 + k) / v_i + g_sd,i / √v_i``, it is
``w_i L_ij + g_p,ij`` off the diagonal and
``g_f (2η - 1 + k - i) + w_i L_ii² + g_p,ii L_ii`` on it.  The constant and the
SD prior stay PyMC's (:func:`model_logp`), as does everything else.  Only the
density that ``nutpie-c`` samples (:mod:`bayesglmm.cnuts`) uses the operation;
it is tested equal to PyMC's, value and gradient, for blocks of 2 to 4 terms,
several ``eta`` and SD priors (one of them with a scale that is itself a
model variable).  sleepstudy's compiled gradient: 74 operations and 35 µs
before, 36 and 14-16 µs after.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.multivariate import _lkj_normalizing_constant, _LKJCholeskyCovRV
from pymc.distributions.transforms import CholeskyCovPacked
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply, equal_computations
from pytensor.graph.replace import graph_replace
from pytensor.graph.traversal import ancestors
from pytensor.link.c.op import COp
from pytensor.tensor.variable import TensorConstant


class _LKJOp(COp):
    """Shared parts of the two operations: the block size ``k`` and the LKJ shape ``eta``."""

    __props__ = ("k", "eta")

    def __init__(self, k: int, eta: float) -> None:
        self.k = int(k)
        self.eta = float(eta)

    def _vector(self, x, size: int, what: str) -> pt.TensorVariable:
        x = pt.cast(pt.as_tensor_variable(x), "float64")
        if x.type.ndim != 1 or x.type.shape[0] not in (None, size):
            raise TypeError(f"{type(self).__name__}: {what} must be a vector of {size}, got {x.type}")
        return pt.specify_shape(x, (size,))

    def c_code_cache_version(self) -> tuple[int, ...]:
        return (2,)  # raise with every change of the C code: PyTensor reuses compiled code of the same version


class LKJDensity(_LKJOp):
    """``(f(u), sd, p)`` of a packed k × k factor ``u`` on the log-diagonal scale; see the module docstring."""

    def make_node(self, u) -> Apply:
        u = self._vector(u, self.k * (self.k + 1) // 2, "u")
        return Apply(self, [u], [pt.dscalar(), pt.tensor(dtype="float64", shape=(self.k,)), u.type()])

    def perform(self, node, inputs, output_storage) -> None:
        f, sd, packed = lkj_density_numpy(inputs[0], self.k, self.eta)
        output_storage[0][0] = np.asarray(f)
        output_storage[1][0] = sd
        output_storage[2][0] = packed

    def infer_shape(self, fgraph, node, input_shapes):
        return [(), (self.k,), input_shapes[0]]

    def L_op(self, inputs, outputs, output_grads):  # noqa: N802 (PyTensor's name)
        shapes = [(), (self.k,), (self.k * (self.k + 1) // 2,)]
        grads = [pt.zeros(n) if isinstance(g.type, DisconnectedType) else g for g, n in zip(output_grads, shapes)]
        return [LKJDensityGrad(self.k, self.eta)(inputs[0], *grads)]

    def c_code(self, node, name, inp, out, sub) -> str:
        (u,), (f, sd, packed) = inp, out
        names = {"u": u, "f": f, "sd": sd, "packed": packed}
        return _DENSITY % {**names, "k": self.k, "eta": repr(self.eta), "fail": sub["fail"]}


class LKJDensityGrad(_LKJOp):
    """``∂/∂u (g_f f(u) + g_sdᵀ sd(u) + g_pᵀ p(u))``; not differentiable itself."""

    def make_node(self, u, g_f, g_sd, g_p) -> Apply:
        u = self._vector(u, self.k * (self.k + 1) // 2, "u")
        g_f = pt.cast(pt.as_tensor_variable(g_f), "float64")
        if g_f.type.ndim != 0:
            raise TypeError(f"LKJDensityGrad: g_f must be a scalar, got {g_f.type}")
        g_sd = self._vector(g_sd, self.k, "g_sd")
        g_p = self._vector(g_p, self.k * (self.k + 1) // 2, "g_p")
        return Apply(self, [u, g_f, g_sd, g_p], [u.type()])

    def perform(self, node, inputs, output_storage) -> None:
        output_storage[0][0] = lkj_density_grad_numpy(*inputs, self.k, self.eta)

    def infer_shape(self, fgraph, node, input_shapes):
        return [input_shapes[0]]

    def L_op(self, inputs, outputs, output_grads):  # noqa: N802 (PyTensor's name)
        return [grad_not_implemented(self, i, x) for i, x in enumerate(inputs)]

    def c_code(self, node, name, inp, out, sub) -> str:
        (u, g_f, g_sd, g_p), (g_u,) = inp, out
        names = {"u": u, "g_f": g_f, "g_sd": g_sd, "g_p": g_p, "g_u": g_u}
        return _GRADIENT % {**names, "k": self.k, "eta": repr(self.eta), "fail": sub["fail"]}


def _rows(u: np.ndarray, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The rows of ``L`` (diagonal exponentiated) and their squared norms ``v``."""
    u = np.asarray(u, dtype=float)
    rows = []
    for i in range(k):
        row = u[i * (i + 1) // 2 : (i + 1) * (i + 2) // 2].copy()
        row[-1] = np.exp(row[-1])
        rows.append(row)
    return rows, np.array([float(row @ row) for row in rows])


def lkj_density_numpy(u: np.ndarray, k: int, eta: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(f(u), sd, p)`` in NumPy (Python back ends and tests)."""
    rows, v = _rows(u, k)
    diag = np.asarray(u, dtype=float)[np.cumsum(np.arange(1, k + 1)) - 1]
    f = float(((2 * eta - 1 + k - np.arange(k)) * diag).sum() - (2 * eta - 2 + k) * 0.5 * np.log(v).sum())
    return f, np.sqrt(v), np.concatenate(rows)


def lkj_density_grad_numpy(u: np.ndarray, g_f, g_sd: np.ndarray, g_p: np.ndarray, k: int, eta: float) -> np.ndarray:
    """``∂/∂u (g_f f + g_sdᵀ sd + g_pᵀ p)`` in NumPy."""
    rows, v = _rows(u, k)
    g_f, g_sd = float(g_f), np.asarray(g_sd, dtype=float)
    g_p = np.asarray(g_p, dtype=float)
    w = -g_f * (2 * eta - 2 + k) / v + g_sd / np.sqrt(v)
    out = []
    for i, row in enumerate(rows):
        grad = w[i] * row + g_p[i * (i + 1) // 2 : (i + 1) * (i + 2) // 2]
        grad[-1] = g_f * (2 * eta - 1 + k - i) + w[i] * row[-1] ** 2 + g_p[(i + 1) * (i + 2) // 2 - 1] * row[-1]
        out.append(grad)
    return np.concatenate(out)


_DENSITY = r"""
{
    const int k = %(k)s;
    const double eta = %(eta)s;
    if (PyArray_DIMS(%(u)s)[0] != k * (k + 1) / 2) {
        PyErr_SetString(PyExc_ValueError, "LKJDensity: u has the wrong length");
        %(fail)s
    }
    npy_intp kdim[1] = {k};
    if (%(f)s == NULL || PyArray_NDIM(%(f)s) != 0) {
        Py_XDECREF(%(f)s);
        %(f)s = (PyArrayObject*)PyArray_ZEROS(0, kdim, NPY_FLOAT64, 0);
    }
    if (%(sd)s == NULL || PyArray_NDIM(%(sd)s) != 1 || PyArray_DIMS(%(sd)s)[0] != k || !PyArray_ISCARRAY(%(sd)s)) {
        Py_XDECREF(%(sd)s);
        %(sd)s = (PyArrayObject*)PyArray_ZEROS(1, kdim, NPY_FLOAT64, 0);
    }
    npy_intp mdim[1] = {k * (k + 1) / 2};
    if (%(packed)s == NULL || PyArray_NDIM(%(packed)s) != 1 || PyArray_DIMS(%(packed)s)[0] != mdim[0]
        || !PyArray_ISCARRAY(%(packed)s)) {
        Py_XDECREF(%(packed)s);
        %(packed)s = (PyArrayObject*)PyArray_ZEROS(1, mdim, NPY_FLOAT64, 0);
    }
    if (%(f)s == NULL || %(sd)s == NULL || %(packed)s == NULL) {
        %(fail)s
    }
    double* p = (double*)PyArray_DATA(%(packed)s);
    const char* base = PyArray_BYTES(%(u)s);
    const npy_intp stride = PyArray_STRIDES(%(u)s)[0];
    double* sd = (double*)PyArray_DATA(%(sd)s);
    double f = 0.0;
    for (int i = 0; i < k; ++i) {
        const int r = i * (i + 1) / 2;
        const double d = *(const double*)(base + (r + i) * stride);
        p[r + i] = exp(d);
        double v = p[r + i] * p[r + i];
        for (int j = 0; j < i; ++j) {
            const double x = *(const double*)(base + (r + j) * stride);
            p[r + j] = x;
            v += x * x;
        }
        f += (2.0 * eta - 1.0 + k - i) * d - (2.0 * eta - 2.0 + k) * 0.5 * log(v);
        sd[i] = sqrt(v);
    }
    *(double*)PyArray_DATA(%(f)s) = f;
}
"""

_GRADIENT = r"""
{
    const int k = %(k)s;
    const double eta = %(eta)s;
    const npy_intp m = k * (k + 1) / 2;
    if (PyArray_DIMS(%(u)s)[0] != m || PyArray_DIMS(%(g_sd)s)[0] != k || PyArray_DIMS(%(g_p)s)[0] != m) {
        PyErr_SetString(PyExc_ValueError, "LKJDensityGrad: inputs of the wrong length");
        %(fail)s
    }
    if (%(g_u)s == NULL || PyArray_NDIM(%(g_u)s) != 1 || PyArray_DIMS(%(g_u)s)[0] != m || !PyArray_ISCARRAY(%(g_u)s)) {
        Py_XDECREF(%(g_u)s);
        npy_intp mdim[1] = {m};
        %(g_u)s = (PyArrayObject*)PyArray_ZEROS(1, mdim, NPY_FLOAT64, 0);
        if (%(g_u)s == NULL) {
            %(fail)s
        }
    }
    const char* base = PyArray_BYTES(%(u)s);
    const npy_intp stride = PyArray_STRIDES(%(u)s)[0];
    const char* gbase = PyArray_BYTES(%(g_sd)s);
    const npy_intp gstride = PyArray_STRIDES(%(g_sd)s)[0];
    const char* pbase = PyArray_BYTES(%(g_p)s);
    const npy_intp pstride = PyArray_STRIDES(%(g_p)s)[0];
    const double g_f = *(const double*)PyArray_DATA(%(g_f)s);
    double* g = (double*)PyArray_DATA(%(g_u)s);
    for (int i = 0; i < k; ++i) {
        const int r = i * (i + 1) / 2;
        const double lii = exp(*(const double*)(base + (r + i) * stride));
        double v = lii * lii;
        for (int j = 0; j < i; ++j) {
            const double x = *(const double*)(base + (r + j) * stride);
            v += x * x;
        }
        const double w = -g_f * (2.0 * eta - 2.0 + k) / v + *(const double*)(gbase + i * gstride) / sqrt(v);
        for (int j = 0; j < i; ++j)
            g[r + j] = w * *(const double*)(base + (r + j) * stride) + *(const double*)(pbase + (r + j) * pstride);
        g[r + i] = g_f * (2.0 * eta - 1.0 + k - i) + w * lii * lii + *(const double*)(pbase + (r + i) * pstride) * lii;
    }
}
"""


def _constant(x) -> float | None:
    """The value of a scalar constant input, else None."""
    return float(x.data) if isinstance(x, TensorConstant) and x.data.size == 1 else None


def _fused(model: pm.Model, rv) -> tuple[pt.TensorVariable, pt.TensorVariable] | None:
    """``rv``'s log density and its packed factor ``p``, both through :class:`LKJDensity`; None where it does not apply.

    It applies to a vector ``LKJCholeskyCov`` with its default transform and
    constant ``n`` and ``eta``.
    """
    if not isinstance(rv.owner.op, _LKJCholeskyCovRV) or rv.type.ndim != 1:
        return None
    if not isinstance(model.rvs_to_transforms.get(rv), CholeskyCovPacked):
        return None
    _, n, eta, sd_dist = rv.owner.inputs
    n, eta = _constant(n), _constant(eta)
    if n is None or eta is None or n != int(n) or sd_dist.type.ndim > 1:
        return None
    f, sd, packed = LKJDensity(int(n), eta)(model.rvs_to_values[rv])
    # the SD prior's parameters could be model variables: replaced by their values on
    # a stand-in for ``sd``, which cloning would otherwise copy with its operation
    stand_in = sd.type()
    (sd_logp,) = model.replace_rvs_by_values([pm.logp(sd_dist, stand_in).sum()])
    term = f + _lkj_normalizing_constant(eta, int(n)) + graph_replace(sd_logp, {stand_in: sd}, strict=False)
    return term, packed


def _backward_replacements(graph: pt.TensorVariable, model: pm.Model, packed: dict) -> dict:
    """The variables of ``graph`` computing a fused block's ``p`` from its value, mapped to the operation's ``p``.

    They are found by comparison with the transform's own ``backward`` of the
    value: where PyMC writes it otherwise, nothing is replaced, and the
    density is PyMC's all the same.
    """
    expected = {}
    for rv, p in packed.items():
        value = model.rvs_to_values[rv]
        expected[value] = (model.rvs_to_transforms[rv].backward(value, *rv.owner.inputs), p)
    swap = {}
    for var in ancestors([graph]):
        if var.owner is None:
            continue
        for value, (backward, p) in expected.items():
            if value in var.owner.inputs and equal_computations([var], [backward]):
                swap[var] = p
    return swap


def model_logp(model: pm.Model) -> pt.TensorVariable:
    """``model.logp()``, with each ``LKJCholeskyCov``'s term and packed factor computed by :class:`LKJDensity`."""
    fused = {rv: both for rv in model.free_RVs if (both := _fused(model, rv)) is not None}
    if not fused:
        return model.logp()
    rest = [rv for rv in model.free_RVs if rv not in fused] + model.observed_RVs + model.potentials
    terms = []
    if rest:
        others = model.logp(vars=rest)
        swap = _backward_replacements(others, model, {rv: p for rv, (_, p) in fused.items()})
        terms.append(graph_replace(others, swap, strict=False) if swap else others)
    return pt.add(*terms, *(term for term, _ in fused.values()))
