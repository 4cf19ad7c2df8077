"""Maximum-likelihood reference fits of random-intercept GLMMs, computed here.

The marginal likelihood integrates each group's intercept u ~ N(0, tau²) by
Gauss-Hermite quadrature (40 nodes, non-adaptive), the estimator that
lme4/ordinal/glmmTMB call ``nAGQ``; it is maximised with scipy's L-BFGS.
Used by the slow tests as an independent reference for families that
references.json does not cover (ordinal, negative binomial).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

NODES, WEIGHTS = np.polynomial.hermite.hermgauss(40)


def _marginal_loglik(pointwise, groups: np.ndarray, n_groups: int) -> float:
    """pointwise: (row, node) log densities at u = sqrt(2)·tau·node."""
    summed = np.zeros((n_groups, NODES.size))
    np.add.at(summed, groups, pointwise)
    return float(np.sum(special.logsumexp(summed + np.log(WEIGHTS / np.sqrt(np.pi)), axis=1)))


def fit(loglik, X: np.ndarray, groups: np.ndarray, n_aux: int, start_aux) -> dict:
    """Maximise the marginal likelihood; ``loglik(eta (row, node), aux) -> (row, node)``."""
    p = X.shape[1]
    n_groups = int(groups.max()) + 1

    def negative(theta):
        beta, tau, aux = theta[:p], np.exp(theta[p]), theta[p + 1 :]
        eta = (X @ beta)[:, None] + np.sqrt(2.0) * tau * NODES[None, :]
        return -_marginal_loglik(loglik(eta, aux), groups, n_groups)

    theta0 = np.concatenate([np.zeros(p), [np.log(0.5)], start_aux])
    out = optimize.minimize(negative, theta0, method="L-BFGS-B")
    if not out.success:
        raise RuntimeError(out.message)
    return {"beta": out.x[:p], "sd": float(np.exp(out.x[p])), "aux": out.x[p + 1 :], "loglik": -out.fun}


def negative_binomial(y: np.ndarray):
    """Log density of NB(mu = exp(eta), alpha = exp(aux[0]))."""

    def loglik(eta, aux):
        alpha, k = np.exp(aux[0]), y[:, None]
        log_total = np.logaddexp(aux[0], eta)  # log(alpha + mu)
        norm = special.gammaln(k + alpha) - special.gammaln(alpha) - special.gammaln(k + 1)
        return norm + alpha * (aux[0] - log_total) + k * (eta - log_total)

    return loglik


def cumulative_logit(codes: np.ndarray, n_categories: int):
    """Log probability of category ``codes`` (0..K-1); aux = (c_1, log gaps...)."""

    def loglik(eta, aux):
        cuts = np.concatenate([[aux[0]], aux[0] + np.cumsum(np.exp(aux[1:]))])
        cdf = special.expit(cuts[None, None, :] - eta[:, :, None])
        full = np.concatenate([np.zeros(eta.shape + (1,)), cdf, np.ones(eta.shape + (1,))], axis=2)
        rows = np.arange(codes.size)
        prob = full[rows, :, codes + 1] - full[rows, :, codes]
        return np.log(np.clip(prob, 1e-300, None))

    return loglik


def cutpoints(aux: np.ndarray) -> np.ndarray:
    return np.concatenate([[aux[0]], aux[0] + np.cumsum(np.exp(aux[1:]))])
