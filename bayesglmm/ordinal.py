"""Ordinal responses: the cumulative (proportional-odds) model.

``P(y <= k) = F(c_k - eta)`` for categories ``k = 1..K-1`` with ordered
thresholds ``c_1 < ... < c_{K-1}`` and ``F`` the logistic or standard normal
CDF: a latent response ``y* = eta + e`` is cut at the thresholds (the seed
article's ordinal model; one set of coefficients for every split, the
parallel-regression assumption).  The thresholds take the intercept's place,
so the fixed-effects design has no intercept; covariates are centred
internally (the sampled ``cutpoints_centered`` are thresholds at the mean
covariates) and the thresholds are reported at covariates 0, as
``ordinal::clmm`` and brms do.

The expected response (``predict(kind="mean")``) is one probability per
category; the latent residual variance of the ICC is π²/3 (logit) or 1
(probit).  Prior of the thresholds at the mean covariates (ordered):
``c_k ~ normal(m_k, 2.5)`` with ``m_k = F⁻¹(k/K)``, the thresholds of equal
category probabilities; a user prior ``("cutpoints": normal(mu, sigma))`` is centred on
``m_k + mu``.  (Centring on distinct values also gives the ordered
transform a valid starting point.)

The densities are PyMC's ``OrderedLogistic`` and ``OrderedProbit``, written so
that each row's thresholds are gathered with one index (PyMC's two-index
selection runs in Python at every gradient), the logit one as a sum of logs
that stays finite far in the tails (tested against PyMC's, value and gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.dist_math import log_diff_normal_cdf, normal_lccdf, normal_lcdf
from pymc.distributions.transforms import ordered
from scipy import optimize

from .errors import ResponseError
from .families import _BINARY_LINK_VARIANCE, LINKS, CategoryFamily, pick_per_row
from .priors import normal, to_rv


@dataclass(frozen=True)
class Cumulative(CategoryFamily):
    """Cumulative-link ordinal model (logit: proportional odds; probit)."""

    name: str = "cumulative"
    links: tuple[str, ...] = ("logit", "probit")
    default_link: str = "logit"
    aux: tuple[str, ...] = ("cutpoints",)
    intercept: bool = False
    noun: str = "an ordinal model"

    def prepare_response(self, data, response):
        """An ordered pandas Categorical response becomes its codes 1..K; text is refused."""
        if not isinstance(data, pd.DataFrame) or response not in data.columns:
            return data, None  # build_design reports data that is not a DataFrame
        column = data[response]
        if isinstance(column.dtype, pd.CategoricalDtype):
            if not column.cat.ordered:
                raise ResponseError(
                    f"ordinal response {response!r} is an unordered categorical; make the order explicit: "
                    "pd.Categorical(values, categories=[...], ordered=True)"
                )
            present = [c for c in column.cat.categories if (column == c).any()]
            codes = pd.Categorical(column, categories=present, ordered=True).codes.astype(float) + 1.0
            return data.assign(**{response: np.where(column.isna(), np.nan, codes)}), tuple(present)
        if not pd.api.types.is_numeric_dtype(column):
            raise ResponseError(
                f"ordinal response {response!r} holds text, whose order is not known; make it an ordered "
                "categorical: pd.Categorical(values, categories=[...], ordered=True), or numeric codes"
            )
        return data, None

    def aux_labels(self, name, size):
        cats = [f"{c:g}" if isinstance(c, float) else str(c) for c in self.categories]
        return [f"{name}[{cats[i]}|{cats[i + 1]}]" for i in range(size)]

    def default_aux_priors(self, y):
        return {"cutpoints": normal(0.0, 2.5)}

    def _equal_split(self, link) -> np.ndarray:
        k = len(self.categories)
        return link.forward_np(np.arange(1, k) / k)

    def add_parameters(self, priors, link, shift):
        prior = priors["cutpoints"]
        params = prior.kwargs
        params["mu"] = params["mu"] + self._equal_split(link)
        k = len(self.categories) - 1
        centred = to_rv("cutpoints_centered", prior.dist, params, shape=k, transform=ordered)
        pm.Deterministic("cutpoints", centred + shift)  # thresholds at covariates 0 (user's scale)
        return {"cutpoints": centred}

    def likelihood(self, name, eta, link, params, observed, trials):
        logp = _cumulative_logit_logp if link.name == "logit" else _cumulative_probit_logp
        return pm.CustomDist(
            name,
            eta,
            params["cutpoints"],
            logp=logp,
            random=_cumulative_random(link.name),
            signature="(),(k)->()",
            observed=pt.cast(observed, "int64"),
            dtype="int64",
        )

    def mean(self, eta, link, params):
        """Category probabilities, shape (row, K)."""
        below = link.inverse(params["cutpoints"][None, :] - eta[:, None])
        n = eta.shape[0]
        cdf = pt.concatenate([pt.zeros((n, 1)), below, pt.ones((n, 1))], axis=1)
        return cdf[:, 1:] - cdf[:, :-1]

    def latent_variance(self, link, params, mean=None):
        return _BINARY_LINK_VARIANCE[link.name]

    def anchor_level(self, params):
        """Minus the mean threshold: the level of eta that the thresholds carry instead of an intercept."""
        return -pt.mean(params["cutpoints"])


def _one_set(cutpoints: pt.TensorVariable) -> pt.TensorVariable:
    """The thresholds, (k,): the family passes one set, which ``CustomDist`` broadcasts to every row."""
    return cutpoints[(0,) * (cutpoints.ndim - 1)] if cutpoints.ndim > 1 else cutpoints


def _cumulative_logit_logp(value: pt.TensorVariable, eta: pt.TensorVariable, cutpoints: pt.TensorVariable):
    """``log P(y = value)`` of the cumulative logit model: PyMC's ``OrderedLogistic`` density.

    With ``u`` and ``l`` the thresholds above and below each row's category, less
    eta (±inf at the ends), ``P = σ(u) - σ(l) = σ(u) σ(-l) (1 - exp(l - u))``: a
    sum of logs that stays finite where PyMC's difference of probabilities
    rounds to 0.  The thresholds are gathered with one index; PyMC's two-index
    selection of each row's probability, and its gradient, run in Python.
    """
    cutpoints, value = _one_set(cutpoints), pt.cast(value, "int64")
    edges = pt.concatenate([pt.as_tensor([-np.inf]), cutpoints, pt.as_tensor([np.inf])])
    upper, lower = edges[value + 1] - eta, edges[value] - eta
    return -pt.softplus(-upper) - pt.softplus(lower) + pt.log1mexp(lower - upper)


def _cumulative_probit_logp(value: pt.TensorVariable, eta: pt.TensorVariable, cutpoints: pt.TensorVariable):
    """``log P(y = value)`` of the cumulative probit model: PyMC's ``OrderedProbit`` density (sigma 1).

    Every category's log probability, as PyMC computes it, then each row's
    gathered with one index (:func:`~bayesglmm.families.pick_per_row`).
    """
    cutpoints, value = _one_set(cutpoints), pt.cast(value, "int64")
    probits = eta[:, None] - cutpoints[None, :]
    log_p = pt.concatenate(
        [
            normal_lccdf(0.0, 1.0, probits[:, :1]),
            log_diff_normal_cdf(0.0, 1.0, probits[:, :-1], probits[:, 1:]),
            normal_lcdf(0.0, 1.0, probits[:, -1:]),
        ],
        axis=1,
    )
    return pick_per_row(log_p, value)


def _cumulative_random(link: str):
    """Draws 0..K-1 of the latent response ``eta + e`` cut at the thresholds (``e`` logistic or normal)."""

    def random(eta: np.ndarray, cutpoints: np.ndarray, rng=None, size=None) -> np.ndarray:
        batch = tuple(size) if size is not None else np.shape(eta)
        noise = rng.logistic(size=batch) if link == "logit" else rng.standard_normal(size=batch)
        latent = np.broadcast_to(eta, batch) + noise
        return (latent[..., None] > np.asarray(cutpoints)).sum(axis=-1)

    return random


def _thresholds(theta: np.ndarray, k: int) -> np.ndarray:
    """Ordered thresholds from ``(c_1, log(c_2 - c_1), ...)``."""
    return theta[0] + np.concatenate([[0.0], np.cumsum(np.exp(theta[1:k]))])


def _edges(c: np.ndarray) -> np.ndarray:
    """The thresholds with -inf and +inf at the ends: category k lies between edges k and k + 1."""
    return np.concatenate([[-np.inf], c, [np.inf]])


def _bounds(c: np.ndarray, y: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower thresholds of each row's category, less eta (±inf at the ends)."""
    edges = _edges(c)
    return edges[y + 1] - eta, edges[y] - eta


def ordinal_working_fit(y: np.ndarray, X: np.ndarray, categories: int, link: str) -> tuple[np.ndarray, np.ndarray]:
    """Fisher weights of eta and working residuals of the cumulative model without random effects.

    Maximum likelihood for thresholds and coefficients (``X`` without an
    intercept column; ``y`` codes 0..K-1), then per row the expected
    information ``I = Σ_k (f(c_k - η) - f(c_{k-1} - η))² / P_k`` and the
    residual ``score / I``, ``score = -(f(c_y - η) - f(c_{y-1} - η)) / P_y``
    (``F``, ``f``: the link's latent CDF and density, its inverse and ``mu.eta``),
    as for the binomial links of :mod:`bayesglmm.parameterization`.
    """
    cdf, pdf = LINKS[link].inverse_np, LINKS[link].mu_eta_np
    k = categories - 1
    share = np.clip(np.cumsum(np.bincount(y, minlength=categories))[:-1] / y.size, 1e-4, 1 - 1e-4)
    start = LINKS[link].forward_np(share)
    theta0 = np.concatenate([[start[0]], np.log(np.maximum(np.diff(start), 1e-3)), np.zeros(X.shape[1])])

    def objective(theta):
        c, beta = _thresholds(theta, k), theta[k:]
        upper, lower = _bounds(c, y, X @ beta)
        prob = np.maximum(cdf(upper) - cdf(lower), 1e-300)
        fu, fl = pdf(upper) / prob, pdf(lower) / prob
        grad_c = np.bincount(y, fl, minlength=categories)[1:] - np.bincount(y, fu, minlength=categories)[:-1]
        tail = np.cumsum(grad_c[::-1])[::-1]
        grad = np.concatenate([[tail[0]], np.exp(theta[1:k]) * tail[1:], X.T @ (fu - fl)])
        return -np.sum(np.log(prob)), grad

    theta = optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B").x
    c, eta = _thresholds(theta, k), X @ theta[k:]
    edges = _edges(c)[None, :] - eta[:, None]
    slope, probs = np.diff(pdf(edges), axis=1), np.maximum(np.diff(cdf(edges), axis=1), 1e-300)
    info = np.sum(slope**2 / probs, axis=1)
    rows = np.arange(y.size)
    score = -slope[rows, y] / probs[rows, y]
    return info, score / info
