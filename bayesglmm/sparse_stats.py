"""Sparse statistics of the residuals of the ``"partial"`` marginal layout.

In the partial layout (:mod:`bayesglmm.marginal`) one grouping factor is
integrated out and the others are sampled.  The residuals
``r = y - A θ`` then depend on the sampled effects, which sit in ``θ``
beside the fixed coefficients: ``A`` (n × P) holds the fixed design and,
per sampled block and term, that term's n × J indicator columns (``Z_t`` in
row i, column ``idx[i]``).  The integrated factor's marginal likelihood needs
two statistics of ``r``, ``rᵀr`` and ``Z̃ᵀr`` (``Z̃`` that factor's indicator
columns); both are quadratic or linear in ``θ`` with sparse coefficients
computed once, so a density and gradient cost a few passes over the non-zeros
of ``AᵀA`` and ``Z̃ᵀA`` instead of a gather and a scatter-add per term over
the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor.sparse as psparse
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.graph.replace import _vectorize_node
from pytensor.sparse.math import StructuredDot
from scipy import sparse

from .design import GroupBlock


class SparseProduct(StructuredDot):
    """PyTensor's ``StructuredDot`` of a constant sparse matrix and a dense one, vectorisable.

    The conditional draws of the integrated effects are computed for a
    batch of posterior draws at once by vectorising their graph
    (:func:`bayesglmm.marginal.complete_posterior`), which PyTensor cannot do
    for a sparse product; :func:`_vectorize_sparse_product`, registered with
    PyTensor's vectorisation for this class only, stacks the batch as columns
    of the dense operand.  Compiled as ``StructuredDot``
    (its C, numba and JAX implementations are found through the class).
    """


sparse_product = SparseProduct()


@_vectorize_node.register(SparseProduct)
def _vectorize_sparse_product(op, node, matrix, dense):
    """``matrix @ dense`` for ``dense`` of shape (..., P, 1): one product with the batch as columns."""
    if matrix is not node.inputs[0] or dense.type.ndim < 2 or dense.type.shape[-1] != 1:
        raise NotImplementedError("a batched product needs the constant matrix and a (..., P, 1) operand")
    batch = tuple(dense.shape[:-2])
    columns = dense.reshape((-1, dense.shape[-2])).T  # (P, B)
    product = sparse_product(matrix, columns).T  # (B, J)
    return [product.reshape((*batch, product.shape[-1], 1))]


def sparse_times(matrix: pt.TensorVariable, d: pt.TensorVariable) -> pt.TensorVariable:
    """``matrix @ d`` for a constant sparse matrix and a vector."""
    return sparse_product(matrix, d[:, None])[:, 0]


def csr_constant(matrix) -> pt.TensorVariable:
    """A sorted, duplicate-free CSR constant without explicit zeros."""
    matrix = sparse.csr_matrix(matrix, dtype="float64")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return psparse.as_sparse_variable(matrix)


def quadratic_form(H: pt.TensorVariable, d: pt.TensorVariable) -> pt.TensorVariable:
    """``dᵀ H d`` for a constant symmetric sparse ``H``, whose gradient ``2 H d`` reuses the forward product.

    Through the product itself PyTensor's gradient is ``g H d + Hᵀ (g d)``:
    two sparse products per gradient instead of one.  The graph is inlined when
    compiled, after the gradient is taken, and the two ``H d`` merge.
    """
    x = pt.vector("d", dtype=d.dtype)

    def gradient(inputs, outputs, grads):
        return [2.0 * grads[0] * sparse_times(H, inputs[0])]

    op = OpFromGraph([x], [(x * sparse_times(H, x)).sum()], lop_overrides=gradient, inline=True)
    return op(d)


def indicator(Z: np.ndarray, idx: np.ndarray, levels: int) -> sparse.csr_matrix:
    """The n × J matrix with ``Z[i]`` in row i, column ``idx[i]``: one term's columns of the design."""
    n = Z.shape[0]
    return sparse.csr_matrix((np.asarray(Z, dtype="float64"), (np.arange(n), idx)), shape=(n, levels))


@dataclass(frozen=True)
class SparseResiduals:
    """``rᵀr`` and, per level of the integrated factor, ``Σ Z_i r_i``, from sparse cross-products.

    With ``θ₀`` the fixed part's least-squares fit (effects 0),
    ``e = y - A θ₀`` and ``d = θ - θ₀`` (as in
    :class:`~bayesglmm.marginal.Residuals`, which expands around the fit to
    avoid cancellation):

        rᵀr = eᵀe - 2 (Aᵀe)ᵀd + dᵀ (AᵀA) d,
        Z̃ᵀr = Z̃ᵀe - (Z̃ᵀA) d.

    InstEval (2972 students and 14 departments sampled, 1128 lecturers
    integrated out, 73,421 rows): 0.20 ms per density and gradient with
    numba, against 0.85-0.93 ms row by row.
    """

    theta: pt.TensorVariable  #: (P,)
    theta0: np.ndarray  #: (P,)
    ee: float
    Ate: np.ndarray  #: (P,)
    AtA: pt.TensorVariable  #: sparse (P, P)
    Ze: np.ndarray  #: (k, J): Z̃ᵀe per term of the integrated factor
    ZA: pt.TensorVariable  #: sparse (k J, P)

    @classmethod
    def build(
        cls,
        fixed: tuple[np.ndarray, pt.TensorVariable],
        sampled: tuple[GroupBlock, ...],
        effects: dict[str, pt.TensorVariable],
        out: GroupBlock,
        y: np.ndarray,
    ) -> SparseResiduals:
        """Statistics of ``y - A θ``: ``fixed`` is ``(X, θ)`` of the fixed part (``X`` dense, n × p),
        ``effects`` the (J, k) effects of every block of ``sampled``, ``out`` the factor integrated out.

        ``A = [X, Z]`` with ``Z`` the sampled terms' sparse indicator columns; ``X`` enters the
        cross-products as dense blocks (``XᵀX``, ``ZᵀX``, ``Z̃ᵀX``), never as an n × p sparse matrix.
        """
        X, theta_fixed = fixed
        columns, coefs = [], [theta_fixed]
        for block in sampled:
            for t in range(len(block.terms)):
                columns.append(indicator(block.Z[:, t], block.idx, len(block.levels)))
                coefs.append(effects[block.name][:, t])
        Z = sparse.hstack(columns, format="csr")  # the sampled terms; A = [X, Z]
        p = X.shape[1]
        theta0 = np.zeros(p + Z.shape[1])
        theta0[:p] = np.linalg.lstsq(X, y, rcond=None)[0] if p else 0.0
        e = y - X @ theta0[:p]
        out_cols = [indicator(out.Z[:, t], out.idx, len(out.levels)).T.tocsr() for t in range(len(out.terms))]
        Zt = sparse.vstack(out_cols, format="csr")  # (k J, n)
        ZtX = sparse.csr_matrix(np.asarray(Z.T @ X))
        AtA = sparse.bmat([[sparse.csr_matrix(X.T @ X), ZtX.T], [ZtX, Z.T @ Z]])
        return cls(
            theta=pt.concatenate(coefs),
            theta0=theta0,
            ee=float(e @ e),
            Ate=np.concatenate([X.T @ e, Z.T @ e]),
            AtA=csr_constant(AtA),
            Ze=np.ascontiguousarray((Zt @ e).reshape(len(out.terms), -1)),
            ZA=csr_constant(sparse.hstack([sparse.csr_matrix(np.asarray(Zt @ X)), Zt @ Z])),
        )

    def _d(self) -> pt.TensorVariable:
        return self.theta - pt.as_tensor(self.theta0)

    def squares(self) -> pt.TensorVariable:
        """``rᵀr``."""
        d = self._d()
        return self.ee - 2.0 * (pt.as_tensor(self.Ate) * d).sum() + quadratic_form(self.AtA, d)

    def group_sums(self, block: GroupBlock) -> pt.TensorVariable:
        """Per level j of the integrated factor (``block``), ``Σ_{i in j} Z_i r_i``: shape (J, k)."""
        k, J = self.Ze.shape
        return (pt.as_tensor(self.Ze) - sparse_times(self.ZA, self._d()).reshape((k, J))).T
