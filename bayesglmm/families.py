"""Response families and link functions.

A :class:`Family` owns everything that depends on the response distribution:
which links it allows, what responses it accepts, its extra parameters (and
their default priors), its likelihood, and the latent residual variance used
for the ICC.  The model builder only ever calls :meth:`Family.add_parameters`
and :meth:`Family.likelihood`, so ordinal (thresholds), categorical (one linear
predictor per category) or negative-binomial families are new subclasses here,
not new branches in the builder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy import special, stats

from . import logit
from .errors import FamilyError, ResponseError
from .priors import Prior, exponential, to_pymc

#: The ways to write a binomial response, for messages.
BINOMIAL_RESPONSES = "binomial responses (p(successes, trials), cbind(successes, failures), y | trials(n))"


@dataclass(frozen=True)
class Link:
    """A link function g with its inverse (PyTensor and NumPy versions)."""

    name: str
    inverse: Callable[[pt.TensorVariable], pt.TensorVariable]
    inverse_np: Callable[[np.ndarray], np.ndarray]
    forward_np: Callable[[np.ndarray], np.ndarray]
    ratio_name: str | None = None  # what exp(coefficient) means, if anything
    #: dμ/dη (R's ``mu.eta``), for the links of probabilities
    mu_eta_np: Callable[[np.ndarray], np.ndarray] | None = None


def _cloglog_inv(eta: pt.TensorVariable) -> pt.TensorVariable:
    return -pt.expm1(-pt.exp(eta))


LINKS: dict[str, Link] = {
    # a new node (not ``e`` itself): a Deterministic of an existing Deterministic
    # would collapse into one variable when the model is cloned for prediction
    "identity": Link("identity", pt.tensor_copy, lambda e: e, lambda m: m),
    "log": Link("log", pt.exp, np.exp, np.log, "rate ratio"),
    "logit": Link(
        "logit", pt.sigmoid, special.expit, special.logit, "odds ratio", lambda e: special.expit(e) * special.expit(-e)
    ),
    "probit": Link(
        "probit",
        lambda e: 0.5 * pt.erfc(-e / np.sqrt(2.0)),
        stats.norm.cdf,
        stats.norm.ppf,
        mu_eta_np=stats.norm.pdf,
    ),
    "cloglog": Link(
        "cloglog",
        _cloglog_inv,
        lambda e: -np.expm1(-np.exp(e)),
        lambda m: np.log(-np.log1p(-m)),
        mu_eta_np=lambda e: np.exp(e - np.exp(e)),
    ),
}


@dataclass(frozen=True)
class Family:
    """Base family: subclasses set the fields and override the hooks."""

    name: str = ""
    links: tuple[str, ...] = ()
    default_link: str = ""
    aux: tuple[str, ...] = ()
    needs_trials: bool = False
    #: False when thresholds take the intercept's place (ordinal families)
    intercept: bool = True
    #: response categories, for families with one mean per category (set by :meth:`fitted_to`)
    categories: tuple = ()

    @property
    def predictor_names(self) -> tuple[str, ...]:
        """Names of the linear predictors when there are several (one per non-reference category)."""
        return ()

    def prepare_response(self, data, response: str):
        """``(data, labels)``: data with the response coded for the likelihood (a copy if changed)."""
        return data, None

    def fitted_to(self, y: np.ndarray, labels=None) -> Family:
        """The family specialised to a response (e.g. its categories); most families are unchanged."""
        return self

    def encode(self, y: np.ndarray) -> np.ndarray:
        """The response as the likelihood sees it (category codes for ordinal families)."""
        return y

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`encode`, for drawn responses."""
        return codes

    def aux_labels(self, name: str, size: int) -> list[str]:
        """Row labels of a vector-valued family parameter."""
        return [f"{name}[{i}]" for i in range(size)]

    def check_response(self, y: np.ndarray, trials: np.ndarray | None, name: str) -> None:
        """Raise :class:`ResponseError` if ``y`` is outside the support."""
        if trials is not None and not self.needs_trials:
            raise ResponseError(f"{BINOMIAL_RESPONSES} need family='binomial', not {self.name!r}")

    def response_scale(self, y: np.ndarray) -> float:
        """Scale used to autoscale default priors (1 on non-identity links)."""
        return 1.0

    def intercept_location(self, y: np.ndarray, trials: np.ndarray | None, link: Link) -> float:
        """Location of the default prior on the (centred) intercept."""
        return 0.0

    def default_aux_priors(self, y: np.ndarray) -> dict[str, Prior]:
        """Default priors of the family's own parameters."""
        return {}

    def add_parameters(
        self, priors: Mapping[str, Prior], link: Link, shift: pt.TensorVariable
    ) -> dict[str, pt.TensorVariable]:
        """Create the family's own parameters inside the current model.

        ``shift`` (``center·b``) converts the internally centred linear
        predictor to the user's scale, for parameters that take the
        intercept's place (ordinal thresholds).
        """
        return {name: to_pymc(name, priors[name]) for name in self.aux}

    def likelihood(
        self,
        name: str,
        eta: pt.TensorVariable,
        link: Link,
        params: Mapping[str, pt.TensorVariable],
        observed: pt.TensorVariable,
        trials: pt.TensorVariable | None,
    ) -> pt.TensorVariable:
        """The observed random variable given the linear predictor ``eta``."""
        raise NotImplementedError

    def mean(self, eta: pt.TensorVariable, link: Link, params: Mapping[str, pt.TensorVariable]):
        """Expected response (per trial for binomial) given ``eta``."""
        return link.inverse(eta)

    def variance(
        self, mean: np.ndarray, params: Mapping[str, np.ndarray], trials: np.ndarray | None = None
    ) -> np.ndarray:
        """Variance of the response (per trial for binomial) given its mean, for Bayes R².

        ``mean`` has shape (..., row) and ``params`` hold draws of shape (...).
        """
        raise FamilyError(f"family {self.name!r} defines no variance function")

    def anchor_level(self, params: dict) -> pt.TensorVariable | None:
        """What anchors centred random intercepts in place of an intercept; None: the intercept.

        See :func:`bayesglmm.model._anchors`; families without an intercept override it.
        """
        return None

    def latent_variance(
        self, link: Link, params: Mapping[str, np.ndarray], mean: np.ndarray | None = None
    ) -> np.ndarray | float:
        """Level-1 variance on the latent (link) scale, for the ICC.

        ``mean`` (log links only) is the expected response of a typical
        group averaged over the data, per draw.
        """
        raise FamilyError(f"family {self.name!r} defines no latent residual variance, so no ICC")


#: Most categories an ordinal or categorical response may have.
MAX_CATEGORIES = 50


def pick_per_row(table: pt.TensorVariable, codes: pt.TensorVariable) -> pt.TensorVariable:
    """``table[i, codes[i]]`` for every row i of a (row, category) table.

    Gathered from the flattened table with one index (``i K + code``):
    PyTensor's two-index selection, and its gradient, have no C code and run
    in Python at every gradient.
    """
    return table.ravel()[pt.arange(codes.shape[0]) * table.shape[-1] + codes]


@dataclass(frozen=True)
class CategoryFamily(Family):
    """Base of families whose response is one of K categories (ordinal, categorical).

    The likelihood sees category codes 0..K-1 (:meth:`encode`); ``values`` are
    the response's numeric values in category order.
    """

    values: tuple = ()
    #: how messages name the model, e.g. "an ordinal model"
    noun: str = ""

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        values = np.unique(y)
        if values.size < 2:
            raise ResponseError(f"response {name!r} has a single category; {self.noun} has nothing to fit")
        if values.size > MAX_CATEGORIES:
            raise ResponseError(
                f"response {name!r} has {values.size} distinct values; {self.noun} expects at most "
                f"{MAX_CATEGORIES} categories; is it continuous?"
            )

    def fitted_to(self, y, labels=None):
        values = tuple(float(v) for v in np.unique(y))
        return replace(self, values=values, categories=tuple(labels) if labels else values)

    def encode(self, y):
        return np.searchsorted(np.asarray(self.values), y).astype(float)

    def decode(self, codes):
        return np.asarray(self.values)[np.asarray(codes, dtype=np.int64)]


def _require_integers(y: np.ndarray, name: str, family: str) -> None:
    if np.any(y < 0) or np.any(y != np.round(y)):
        bad = y[(y < 0) | (y != np.round(y))]
        raise ResponseError(
            f"response {name!r} must hold non-negative integers for family {family!r}; "
            f"found {bad.size} value(s) such as {bad[0]:g}"
        )


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response with residual standard deviation ``sigma``."""

    name: str = "gaussian"
    links: tuple[str, ...] = ("identity", "log")
    default_link: str = "identity"
    aux: tuple[str, ...] = ("sigma",)

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        if np.ptp(y) == 0:
            raise ResponseError(f"response {name!r} is constant; a {self.name} model has nothing to fit")

    def response_scale(self, y):
        return float(np.std(y))

    def intercept_location(self, y, trials, link):
        m = float(np.mean(y))
        return float(np.log(m)) if link.name == "log" and m > 0 else m

    def default_aux_priors(self, y):
        return {"sigma": exponential(1.0 / float(np.std(y)))}

    def likelihood(self, name, eta, link, params, observed, trials):
        return pm.Normal(name, mu=link.inverse(eta), sigma=params["sigma"], observed=observed, shape=eta.shape)

    def variance(self, mean, params, trials=None):
        sigma = np.asarray(params["sigma"])[..., None]
        return np.broadcast_to(sigma**2, np.shape(mean))

    def latent_variance(self, link, params, mean=None):
        sigma2 = np.asarray(params["sigma"]) ** 2
        if link.name == "log":  # log-normal approximation of the residual on the log scale
            return np.log1p(sigma2 / np.asarray(mean) ** 2)
        return sigma2


def _bernoulli_logit_logp(value, eta):
    return logit.loglik(value, eta)


def _bernoulli_logit_random(eta, rng=None, size=None):
    return rng.binomial(1, special.expit(eta), size=size)


def _binomial_logit_logp(value, eta, n):
    log_choose = pt.gammaln(n + 1) - pt.gammaln(value + 1) - pt.gammaln(n - value + 1)
    return logit.loglik(value, eta, n) + log_choose


def _binomial_logit_random(eta, n, rng=None, size=None):
    return rng.binomial(n, special.expit(eta), size=size)


def logit_likelihood(name, eta, observed, trials=None):
    """Bernoulli or binomial response on the logit scale, with a lean log-density.

    ``y η - n log(1 + e^η) (+ log C(n, y))``: the same density as PyMC's
    ``Bernoulli``/``Binomial(logit_p=η)``, without their parameter checks
    (η is unbounded, the response is checked before the model is built) and
    without forming p.  Density and gradient ``y - n σ(η)`` come from one
    fused pass with one exponential per row (:mod:`bayesglmm.logit`).
    """
    if trials is None:
        params, logp, random, signature = (eta,), _bernoulli_logit_logp, _bernoulli_logit_random, "()->()"
    else:
        params, logp, random, signature = (eta, trials), _binomial_logit_logp, _binomial_logit_random, "(),()->()"
    return pm.CustomDist(name, *params, logp=logp, random=random, signature=signature, observed=observed, dtype="int64")


_BINARY_LINK_VARIANCE = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}


@dataclass(frozen=True)
class Bernoulli(Family):
    """Binary 0/1 response."""

    name: str = "bernoulli"
    links: tuple[str, ...] = ("logit", "probit", "cloglog")
    default_link: str = "logit"

    def check_response(self, y, trials, name):
        if trials is not None:
            raise ResponseError(f"{BINOMIAL_RESPONSES} need family='binomial', not 'bernoulli'")
        bad = y[(y != 0) & (y != 1)]
        if bad.size:
            raise ResponseError(
                f"response {name!r} must be 0/1 (or boolean) for family 'bernoulli'; found {bad.size} "
                f"value(s) such as {bad[0]:g}. For counts out of n trials use family='binomial' "
                "with 'p(successes, trials) ~ ...'"
            )
        if np.all(y == y[0]):
            raise ResponseError(f"response {name!r} is always {y[0]:g}; a binary model has nothing to fit")

    def likelihood(self, name, eta, link, params, observed, trials):
        if link.name == "logit":
            return logit_likelihood(name, eta, observed)
        return pm.Bernoulli(name, p=link.inverse(eta), observed=observed, shape=eta.shape)

    def variance(self, mean, params, trials=None):
        mean = np.asarray(mean)
        return mean * (1.0 - mean) / (1.0 if trials is None else np.asarray(trials))

    def latent_variance(self, link, params, mean=None):
        return _BINARY_LINK_VARIANCE[link.name]


@dataclass(frozen=True)
class Binomial(Bernoulli):
    """Number of successes out of known trials, written ``p(successes, trials)``."""

    name: str = "binomial"
    needs_trials: bool = True

    def check_response(self, y, trials, name):
        if trials is None:
            raise ResponseError(
                "family 'binomial' needs the number of trials: write the response as "
                "p(successes, trials), e.g. 'p(incidence, size) ~ period + (1 | herd)'"
            )
        _require_integers(y, name, self.name)
        _require_integers(trials, f"trials of {name}", self.name)
        over = y > trials
        if over.any():
            raise ResponseError(
                f"response {name!r} has {int(over.sum())} row(s) with more successes than trials "
                f"(first at row position {int(np.argmax(over))})"
            )
        if np.any(trials == 0):
            raise ResponseError(f"response {name!r} has {int(np.sum(trials == 0))} row(s) with zero trials")

    def likelihood(self, name, eta, link, params, observed, trials):
        if link.name == "logit":
            return logit_likelihood(name, eta, observed, trials)
        return pm.Binomial(name, n=trials, p=link.inverse(eta), observed=observed, shape=eta.shape)


@dataclass(frozen=True)
class Poisson(Family):
    """Count response with log link."""

    name: str = "poisson"
    links: tuple[str, ...] = ("log",)
    default_link: str = "log"

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        _require_integers(y, name, self.name)

    def intercept_location(self, y, trials, link):
        return float(np.log(max(np.mean(y), 0.1)))

    def likelihood(self, name, eta, link, params, observed, trials):
        return pm.Poisson(name, mu=link.inverse(eta), observed=observed, shape=eta.shape)

    def variance(self, mean, params, trials=None):
        return np.asarray(mean)

    def latent_variance(self, link, params, mean=None):
        # log-normal approximation (Nakagawa et al. 2017): Var(log y | mean) ~ log(1 + 1/mean)
        return np.log1p(1.0 / np.asarray(mean))


@dataclass(frozen=True)
class NegativeBinomial(Poisson):
    """Overdispersed counts: variance ``mu + mu²/alpha`` (PyMC's ``NegativeBinomial(mu, alpha)``).

    Default prior ``alpha ~ exponential(1)``, rstanarm's prior on the
    reciprocal dispersion of ``neg_binomial_2``.
    """

    name: str = "negativebinomial"
    aux: tuple[str, ...] = ("alpha",)

    def default_aux_priors(self, y):
        return {"alpha": exponential(1.0)}

    def likelihood(self, name, eta, link, params, observed, trials):
        return pm.NegativeBinomial(
            name, mu=link.inverse(eta), alpha=params["alpha"], observed=observed, shape=eta.shape
        )

    def variance(self, mean, params, trials=None):
        mean = np.asarray(mean)
        return mean + mean**2 / np.asarray(params["alpha"])[..., None]

    def latent_variance(self, link, params, mean=None):
        # log-normal approximation (Nakagawa et al. 2017): log(1 + 1/mean + 1/alpha)
        return np.log1p(1.0 / np.asarray(mean) + 1.0 / np.asarray(params["alpha"]))


from .categorical import Categorical  # noqa: E402
from .continuous import Beta, GammaFamily, StudentT  # noqa: E402  (they subclass Family)
from .ordinal import Cumulative  # noqa: E402

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Gaussian(),
        Bernoulli(),
        Binomial(),
        Poisson(),
        NegativeBinomial(),
        GammaFamily(),
        Beta(),
        StudentT(),
        Cumulative(),
        Categorical(),
    )
}
ALIASES = {
    "negbinomial": "negativebinomial",
    "negative_binomial": "negativebinomial",
    "t": "student_t",
    "ordinal": "cumulative",
    "multinomial": "categorical",
}


def get_family(family: str | Family, link: str | None) -> tuple[Family, Link]:
    """Resolve a family name (or object) and a link name, with clear errors."""
    if isinstance(family, Family):
        fam = family
    elif isinstance(family, str) and ALIASES.get(family.lower(), family.lower()) in FAMILIES:
        fam = FAMILIES[ALIASES.get(family.lower(), family.lower())]
    else:
        raise FamilyError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    link_name = fam.default_link if link is None else link
    if not isinstance(link_name, str) or link_name not in LINKS:
        raise FamilyError(f"unknown link {link_name!r}; links are {sorted(LINKS)}")
    if link_name not in fam.links:
        raise FamilyError(f"family {fam.name!r} does not allow link {link_name!r}; use one of {list(fam.links)}")
    return fam, LINKS[link_name]
