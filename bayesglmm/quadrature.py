"""Integration over the random effects' fitted distribution.

In the non-centred parameterisation every random effect is ``u = L z`` with
``z ~ N(0, I)`` whatever the posterior draw, so one set of nodes in ``z``
space integrates over N(0, G) for every draw at once:

* one or two dimensions: Gauss–Hermite product rules (30 nodes, 12 × 12);
* three or more: 1024 scrambled Sobol points mapped through Φ⁻¹
  (randomised quasi-Monte Carlo, seeded).

``E_u[g⁻¹(η + zᵀu)] ≈ Σ_m w_m g⁻¹(η + zᵀ L t_m)``: exact to well below 1e-6
for a logistic random intercept with SD 2 with 30 nodes.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import stats
from scipy.stats import qmc

GH_POINTS = {1: 30, 2: 12}
QMC_POINTS = 1024


def normal_nodes(dim: int, random_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (M, dim) and weights (M,) integrating against the standard normal of ``dim`` dimensions."""
    if dim == 0:
        return np.zeros((1, 0)), np.ones(1)
    if dim in GH_POINTS:
        x, w = hermegauss(GH_POINTS[dim])
        w = w / w.sum()
        grids = np.meshgrid(*([x] * dim), indexing="ij")
        weights = np.prod(np.meshgrid(*([w] * dim), indexing="ij"), axis=0)
        return np.column_stack([g.ravel() for g in grids]), weights.ravel()
    sobol = qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng(random_seed))
    u = sobol.random(QMC_POINTS)
    return stats.norm.ppf(u), np.full(QMC_POINTS, 1.0 / QMC_POINTS)


def quantile_node(k: int, q: float) -> np.ndarray:
    """``z`` holding a block's first term at quantile ``q`` of its distribution.

    ``u = L z`` then puts the first term (the intercept) at its ``q``-quantile
    ``sd · Φ⁻¹(q)`` and every other term at its conditional mean given it.
    """
    z = np.zeros(k)
    z[0] = stats.norm.ppf(q)
    return z
