"""One grouping factor's marginal gaussian likelihood and its gradient as one compiled operation.

:mod:`bayesglmm.marginal` writes the marginal likelihood of one grouping
factor as a PyTensor graph: the k × k Cholesky factors and triangular solves
unrolled over the terms and vectorised over the levels.  Its log density and
gradient are about 100 small operations, whose calls cost more than their
arithmetic (sleepstudy: 26 µs of a 38 µs gradient, for 18 levels of 2 × 2
blocks).  :class:`BlockMarginal` computes the same value and its gradient in
one loop over the levels, in C, and the gradient of the value is read from
its other outputs.  It is used where the sampler runs PyTensor's C code
(``nutpie-c``, PyMC); numba and JAX, which cannot run it, keep the graph.

With ``A`` the sampled fixed-effects design, ``e`` the residuals of its
least-squares fit ``θ̂`` and ``d = θ - θ̂``, per level j ``g_j = Σ Z e - (Σ Z Aᵀ) d``
(k), ``K_j = Σ Z Zᵀ``, ``T_j = K_j L``, ``B_j = Lᵀ T_j``, ``M_j = I + B_j / s²``
(Cholesky ``C_j``), ``c_j = Lᵀ g_j / s²``, ``w_j = C_j⁻¹ c_j``, ``m_j = M_j⁻¹ c_j``,
``P_j = M_j⁻¹``, and ``rr = eᵀe - 2 (Aᵀe)ᵀd + dᵀ(AᵀA) d``, the value is

    V = -½ (Σ_j log det M_j + rr / s² - Σ_j w_jᵀ w_j)

(the marginal log-likelihood without ``-½ n (log 2π + log s²)``), and

    ∂V/∂L  = -(1/s²) Σ_j [T_j (P_j + m_j m_jᵀ) - g_j m_jᵀ]
    ∂V/∂s² = ½ (Σ_j tr(P_j B_j) + rr + Σ_j m_jᵀ B_j m_j) / s⁴ - Σ_j m_jᵀ c_j / s²
    ∂V/∂d  = ((Aᵀe) - (AᵀA) d - Σ_j (Σ Z Aᵀ)_jᵀ L m_j) / s².
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp

#: (name, number of dimensions) of the inputs, in order; the first three are the parameters.
INPUTS = (("d", 1), ("L", 2), ("s2", 0), ("K", 3), ("G0", 2), ("ZA", 3), ("ee", 0), ("Ate", 1), ("AtA", 2))


class BlockMarginal(COp):
    """``(V, ∂V/∂d, ∂V/∂L, ∂V/∂s²)`` of one grouping factor; see the module docstring.

    Inputs ``d (p,), L (k, k), s2 (), K (J, k, k), G0 (J, k), ZA (J, k, p),
    ee (), Ate (p,), AtA (p, p)``; only the first three are differentiable.
    """

    __props__ = ()

    def make_node(self, *inputs) -> Apply:
        if len(inputs) != len(INPUTS):
            raise TypeError(f"BlockMarginal takes {len(INPUTS)} inputs, got {len(inputs)}")
        tensors = []
        for (name, ndim), x in zip(INPUTS, inputs):
            x = pt.as_tensor_variable(x)
            if x.type.ndim != ndim:
                raise TypeError(f"BlockMarginal input {name} must have {ndim} dimensions, got {x.type.ndim}")
            tensors.append(pt.cast(x, "float64"))
        d, L = tensors[0], tensors[1]
        outputs = [
            pt.dscalar(),
            pt.tensor(dtype="float64", shape=d.type.shape),
            pt.tensor(dtype="float64", shape=L.type.shape),
            pt.dscalar(),
        ]
        return Apply(self, tensors, outputs)

    def perform(self, node, inputs, output_storage) -> None:
        for storage, value in zip(output_storage, block_marginal_numpy(*inputs)):
            storage[0] = value

    def infer_shape(self, fgraph, node, input_shapes):
        return [(), input_shapes[0], input_shapes[1], ()]

    def connection_pattern(self, node):
        return [[i < 3] * 4 for i in range(len(INPUTS))]

    def L_op(self, inputs, outputs, output_grads):  # noqa: N802 (PyTensor's name)
        g_value, *g_rest = output_grads
        if isinstance(g_value.type, DisconnectedType) or not all(isinstance(g.type, DisconnectedType) for g in g_rest):
            # only the value is differentiated; its gradient has no gradient here
            return [grad_not_implemented(self, i, x) if i < 3 else disconnected_type() for i, x in enumerate(inputs)]
        _, gd, gL, gs2 = outputs
        return [g_value * gd, g_value * gL, g_value * gs2] + [disconnected_type() for _ in inputs[3:]]

    def c_support_code(self, **kwargs) -> str:
        return _SUPPORT

    def c_code(self, node, name, inp, out, sub) -> str:
        names = dict(zip([n for n, _ in INPUTS], inp))
        names.update(zip(("value", "gd", "gL", "gs2"), out))
        return _CODE % {**names, "fail": sub["fail"]}

    def c_code_cache_version(self) -> tuple[int, ...]:
        return (1,)


block_marginal = BlockMarginal()


def block_marginal_numpy(d, L, s2, K, G0, ZA, ee, Ate, AtA) -> tuple:
    """The operation in NumPy, vectorised over the levels (Python back ends and tests)."""
    d, L, K, G0, ZA = (np.asarray(x, dtype=float) for x in (d, L, K, G0, ZA))
    s2 = float(s2)
    k = L.shape[0]
    g = G0 - ZA @ d  # (J, k)
    T = K @ L
    B = L.T @ T
    M = np.eye(k) + B / s2
    C = np.linalg.cholesky(M)
    c = g @ L / s2
    w = np.linalg.solve(C, c[..., None])[..., 0]
    m = np.linalg.solve(np.swapaxes(C, 1, 2), w[..., None])[..., 0]
    P = np.linalg.inv(M)
    rr = float(ee) - 2.0 * float(np.dot(Ate, d)) + float(d @ AtA @ d)
    logdet = 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
    value = -0.5 * (logdet + rr / s2 - float((w**2).sum()))
    mm = m[:, :, None] * m[:, None, :]
    gL = -((T @ (P + mm)).sum(0) - (g[:, :, None] * m[:, None, :]).sum(0)) / s2
    trPB = float(np.einsum("jab,jba->", P, B))
    mBm = float(np.einsum("ja,jab,jb->", m, B, m))
    gs2 = 0.5 * (trPB + rr + mBm) / s2**2 - float((m * c).sum()) / s2
    gd = (np.asarray(Ate) - np.asarray(AtA) @ d - np.einsum("jaq,ja->q", ZA, m @ L.T)) / s2
    return np.asarray(value), gd, gL, np.asarray(gs2)


_SUPPORT = r"""
#define BM1(a, i) (*(double*)(PyArray_BYTES(a) + (i) * PyArray_STRIDES(a)[0]))
#define BM2(a, i, j) (*(double*)(PyArray_BYTES(a) + (i) * PyArray_STRIDES(a)[0] + (j) * PyArray_STRIDES(a)[1]))
#define BM3(a, i, j, l) (*(double*)(PyArray_BYTES(a) + (i) * PyArray_STRIDES(a)[0] \
                                     + (j) * PyArray_STRIDES(a)[1] + (l) * PyArray_STRIDES(a)[2]))

/* An output array of the given shape, reused when it already has it. */
static int bm_output(PyArrayObject** out, int nd, npy_intp* dims)
{
    if (*out != NULL && PyArray_NDIM(*out) == nd && PyArray_ISCARRAY(*out)
        && PyArray_TYPE(*out) == NPY_FLOAT64 && PyArray_CompareLists(PyArray_DIMS(*out), dims, nd)) {
        return 0;
    }
    Py_XDECREF(*out);
    *out = (PyArrayObject*)PyArray_ZEROS(nd, dims, NPY_FLOAT64, 0);
    return *out == NULL ? -1 : 0;
}
"""

_CODE = r"""
{
    const npy_intp p = PyArray_DIMS(%(d)s)[0];
    const npy_intp k = PyArray_DIMS(%(L)s)[0];
    const npy_intp J = PyArray_DIMS(%(K)s)[0];
    if (PyArray_DIMS(%(L)s)[1] != k || PyArray_DIMS(%(K)s)[1] != k || PyArray_DIMS(%(K)s)[2] != k
        || PyArray_DIMS(%(G0)s)[0] != J || PyArray_DIMS(%(G0)s)[1] != k
        || PyArray_DIMS(%(ZA)s)[0] != J || PyArray_DIMS(%(ZA)s)[1] != k || PyArray_DIMS(%(ZA)s)[2] != p
        || PyArray_DIMS(%(Ate)s)[0] != p || PyArray_DIMS(%(AtA)s)[0] != p || PyArray_DIMS(%(AtA)s)[1] != p) {
        PyErr_SetString(PyExc_ValueError, "BlockMarginal: inconsistent input shapes");
        %(fail)s
    }
    npy_intp dims[2] = {k, k};
    npy_intp pdim[1] = {p};
    if (bm_output(&%(value)s, 0, dims) || bm_output(&%(gs2)s, 0, dims)
        || bm_output(&%(gd)s, 1, pdim) || bm_output(&%(gL)s, 2, dims)) {
        %(fail)s
    }
    double* buf = (double*)malloc(sizeof(double) * (6 * k * k + 5 * k + 1));
    if (buf == NULL) {
        PyErr_NoMemory();
        %(fail)s
    }
    double *T = buf, *B = T + k * k, *C = B + k * k, *Ci = C + k * k, *P = Ci + k * k, *GL = P + k * k;
    double *g = GL + k * k, *c = g + k, *w = c + k, *m = w + k, *Lm = m + k;
    double* gd = (double*)PyArray_DATA(%(gd)s);
    const double s2 = *(double*)PyArray_DATA(%(s2)s);
    double logdet = 0.0, ww = 0.0, trPB = 0.0, mBm = 0.0, mc = 0.0;
    int bad = 0;
    for (npy_intp a = 0; a < k * k; ++a) GL[a] = 0.0;
    for (npy_intp q = 0; q < p; ++q) gd[q] = 0.0;
    for (npy_intp j = 0; j < J && !bad; ++j) {
        for (npy_intp a = 0; a < k; ++a) {
            double s = BM2(%(G0)s, j, a);
            for (npy_intp q = 0; q < p; ++q) s -= BM3(%(ZA)s, j, a, q) * BM1(%(d)s, q);
            g[a] = s;
        }
        for (npy_intp a = 0; a < k; ++a)
            for (npy_intp b = 0; b < k; ++b) {
                double s = 0.0;
                for (npy_intp e = 0; e < k; ++e) s += BM3(%(K)s, j, a, e) * BM2(%(L)s, e, b);
                T[a * k + b] = s;
            }
        for (npy_intp a = 0; a < k; ++a)
            for (npy_intp b = 0; b < k; ++b) {
                double s = 0.0;
                for (npy_intp e = 0; e < k; ++e) s += BM2(%(L)s, e, a) * T[e * k + b];
                B[a * k + b] = s;
                C[a * k + b] = (a == b ? 1.0 : 0.0) + s / s2;
            }
        /* Cholesky factor of M, in the lower triangle of C */
        for (npy_intp b = 0; b < k && !bad; ++b) {
            double s = C[b * k + b];
            for (npy_intp e = 0; e < b; ++e) s -= C[b * k + e] * C[b * k + e];
            if (!(s > 0.0)) { bad = 1; break; }
            C[b * k + b] = sqrt(s);
            for (npy_intp a = b + 1; a < k; ++a) {
                double t = C[a * k + b];
                for (npy_intp e = 0; e < b; ++e) t -= C[a * k + e] * C[b * k + e];
                C[a * k + b] = t / C[b * k + b];
            }
        }
        if (bad) break;
        for (npy_intp a = 0; a < k; ++a) {
            double s = 0.0;
            for (npy_intp b = 0; b < k; ++b) s += BM2(%(L)s, b, a) * g[b];
            c[a] = s / s2;
        }
        for (npy_intp a = 0; a < k; ++a) {  /* w = C^-1 c */
            double s = c[a];
            for (npy_intp e = 0; e < a; ++e) s -= C[a * k + e] * w[e];
            w[a] = s / C[a * k + a];
            ww += w[a] * w[a];
            logdet += 2.0 * log(C[a * k + a]);
        }
        for (npy_intp a = k - 1; a >= 0; --a) {  /* m = C^-T w */
            double s = w[a];
            for (npy_intp e = a + 1; e < k; ++e) s -= C[e * k + a] * m[e];
            m[a] = s / C[a * k + a];
        }
        for (npy_intp b = 0; b < k; ++b)  /* Ci = C^-1, column by column */
            for (npy_intp a = 0; a < k; ++a) {
                if (a < b) { Ci[a * k + b] = 0.0; continue; }
                double s = (a == b) ? 1.0 : 0.0;
                for (npy_intp e = b; e < a; ++e) s -= C[a * k + e] * Ci[e * k + b];
                Ci[a * k + b] = s / C[a * k + a];
            }
        for (npy_intp a = 0; a < k; ++a)  /* P = Ci^T Ci = M^-1 */
            for (npy_intp b = 0; b < k; ++b) {
                double s = 0.0;
                for (npy_intp e = (a > b ? a : b); e < k; ++e) s += Ci[e * k + a] * Ci[e * k + b];
                P[a * k + b] = s;
            }
        for (npy_intp a = 0; a < k; ++a) {
            mc += m[a] * c[a];
            for (npy_intp b = 0; b < k; ++b) {
                trPB += P[a * k + b] * B[b * k + a];
                mBm += m[a] * B[a * k + b] * m[b];
                double s = -g[a] * m[b];
                for (npy_intp e = 0; e < k; ++e) s += T[a * k + e] * (P[e * k + b] + m[e] * m[b]);
                GL[a * k + b] += s;
            }
        }
        for (npy_intp a = 0; a < k; ++a) {
            double s = 0.0;
            for (npy_intp b = 0; b < k; ++b) s += BM2(%(L)s, a, b) * m[b];
            Lm[a] = s;
        }
        for (npy_intp q = 0; q < p; ++q) {
            double s = 0.0;
            for (npy_intp a = 0; a < k; ++a) s += BM3(%(ZA)s, j, a, q) * Lm[a];
            gd[q] += s;
        }
    }
    double rr = *(double*)PyArray_DATA(%(ee)s);
    for (npy_intp q = 0; q < p; ++q) {
        double s = 0.0;
        for (npy_intp r = 0; r < p; ++r) s += BM2(%(AtA)s, q, r) * BM1(%(d)s, r);
        rr += (s - 2.0 * BM1(%(Ate)s, q)) * BM1(%(d)s, q);
        gd[q] = (BM1(%(Ate)s, q) - s - gd[q]) / s2;
    }
    double* gL = (double*)PyArray_DATA(%(gL)s);
    for (npy_intp a = 0; a < k * k; ++a) gL[a] = bad ? NAN : -GL[a] / s2;
    *(double*)PyArray_DATA(%(value)s) = bad ? NAN : -0.5 * (logdet + rr / s2 - ww);
    *(double*)PyArray_DATA(%(gs2)s) = bad ? NAN : 0.5 * (trPB + rr + mBm) / (s2 * s2) - mc / s2;
    if (bad) for (npy_intp q = 0; q < p; ++q) gd[q] = NAN;
    free(buf);
}
"""
