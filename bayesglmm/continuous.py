"""Continuous families beyond the gaussian: gamma, beta and Student-t.

Each is a :class:`~bayesglmm.families.Family` subclass: its links, response
check, dispersion parameter with its default prior, likelihood, variance
function (Bayes R²) and, where one is defined, the latent residual variance
of the ICC.  Default priors follow brms: ``shape ~ gamma(0.01, 0.01)``
(gamma), ``phi ~ gamma(0.01, 0.01)`` (beta), ``nu ~ gamma(2, 0.1)`` and
``sigma ~ exponential(1 / sd(y))`` (Student-t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
from scipy import special

from .errors import FamilyError, ResponseError
from .families import Family, Gaussian
from .priors import gamma


def _check_open(y: np.ndarray, name: str, family: str, low: float, high: float, what: str) -> None:
    bad = (y <= low) | (y >= high)
    if bad.any():
        raise ResponseError(
            f"response {name!r} must be {what} for family {family!r}; found {int(bad.sum())} value(s) such as "
            f"{y[bad][0]:g}"
        )


@dataclass(frozen=True)
class GammaFamily(Family):
    """Positive continuous response: mean ``mu``, variance ``mu² / shape``."""

    name: str = "gamma"
    links: tuple[str, ...] = ("log", "identity")
    default_link: str = "log"
    aux: tuple[str, ...] = ("shape",)

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        _check_open(y, name, self.name, 0.0, np.inf, "positive")

    def intercept_location(self, y, trials, link):
        m = float(np.mean(y))
        return float(np.log(m)) if link.name == "log" else m

    def response_scale(self, y):
        return 1.0

    def default_aux_priors(self, y):
        return {"shape": gamma(0.01, 0.01)}

    def likelihood(self, name, eta, link, params, observed, trials):
        mu = link.inverse(eta)
        return pm.Gamma(name, alpha=params["shape"], beta=params["shape"] / mu, observed=observed, shape=eta.shape)

    def variance(self, mean, params, trials=None):
        return np.asarray(mean) ** 2 / np.asarray(params["shape"])[..., None]

    def latent_variance(self, link, params, mean=None):
        if link.name != "log":
            raise FamilyError("the gamma ICC is defined on the log scale; fit with link='log'")
        return special.polygamma(1, np.asarray(params["shape"]))  # Var(log y) = trigamma(shape)


@dataclass(frozen=True)
class Beta(Family):
    """Proportions in (0, 1): mean ``mu``, precision ``phi`` (variance ``mu(1-mu)/(1+phi)``)."""

    name: str = "beta"
    links: tuple[str, ...] = ("logit", "probit", "cloglog")
    default_link: str = "logit"
    aux: tuple[str, ...] = ("phi",)

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        _check_open(y, name, self.name, 0.0, 1.0, "strictly between 0 and 1 (no exact 0 or 1)")

    def intercept_location(self, y, trials, link):
        return float(link.forward_np(np.mean(y)))

    def default_aux_priors(self, y):
        return {"phi": gamma(0.01, 0.01)}

    def likelihood(self, name, eta, link, params, observed, trials):
        mu, phi = link.inverse(eta), params["phi"]
        return pm.Beta(name, alpha=mu * phi, beta=(1.0 - mu) * phi, observed=observed, shape=eta.shape)

    def variance(self, mean, params, trials=None):
        mean = np.asarray(mean)
        return mean * (1.0 - mean) / (1.0 + np.asarray(params["phi"])[..., None])


@dataclass(frozen=True)
class StudentT(Gaussian):
    """Heavy-tailed continuous response: location ``mu``, scale ``sigma``, degrees of freedom ``nu``.

    Response check, prior scaling and ``sigma``'s prior are the gaussian's.
    """

    name: str = "student_t"
    aux: tuple[str, ...] = ("sigma", "nu")

    def default_aux_priors(self, y):
        return {**super().default_aux_priors(y), "nu": gamma(2.0, 0.1)}

    def likelihood(self, name, eta, link, params, observed, trials):
        return pm.StudentT(
            name, nu=params["nu"], mu=link.inverse(eta), sigma=params["sigma"], observed=observed, shape=eta.shape
        )

    def _residual_variance(self, params):
        nu, sigma = np.asarray(params["nu"]), np.asarray(params["sigma"])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(nu > 2, sigma**2 * nu / (nu - 2), np.inf)

    def variance(self, mean, params, trials=None):
        return np.broadcast_to(self._residual_variance(params)[..., None], np.shape(mean))

    def latent_variance(self, link, params, mean=None):
        if link.name != "identity":
            raise FamilyError("the Student-t ICC is defined for the identity link")
        return self._residual_variance(params)  # infinite (ICC 0) for draws with nu <= 2
