"""Stage 3 — priors: weakly informative defaults scaled to the data, user overrides.

Default rules (in the spirit of rstanarm's autoscaling; ``s_y`` is ``sd(y)``
for a gaussian response and 1 otherwise, ``sd(x_j)`` the standard deviation
of fixed-effect column j, ``sd(z_t)`` that of random-effect column t, 1 for an
intercept):

============  ======================================================
class         default prior
============  ======================================================
Intercept     normal(m, 2.5·s_y) on the intercept *with all predictors
              centred*; m = mean(y) (identity link), log mean(y) (log
              link), 0 otherwise
b             normal(0, 2.5·s_y / sd(x_j)) per coefficient
sd            exponential with mean s_y / sd(z_t), per term and group
cor           lkj(eta=1) per correlated block (uniform over
              correlation matrices); one ``LKJCholeskyCov`` per block
sigma         exponential with mean sd(y) (gaussian residual SD)
============  ======================================================

Overrides are a dict passed as ``GLMM(..., priors=...)``.  Keys are a class
(``"b"``, ``"Intercept"``, ``"sd"``, ``"cor"``, a family parameter such as
``"sigma"``), or a tuple narrowing it: ``("b", "age")``,
``("sd", "district")``, ``("sd", "district", "urban[Y]")``,
``("cor", "district")``.  The most specific key wins.  Values are made with
:func:`normal`, :func:`student_t`, :func:`exponential`, :func:`half_normal`,
:func:`half_student_t`, :func:`gamma` and :func:`lkj`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pymc as pm

from .errors import PriorError

if TYPE_CHECKING:  # pragma: no cover
    from .design import Design
    from .families import Family, Link

_PARAMS: dict[str, tuple[str, ...]] = {
    "normal": ("mu", "sigma"),
    "student_t": ("nu", "mu", "sigma"),
    "exponential": ("lam",),
    "half_normal": ("sigma",),
    "half_student_t": ("nu", "sigma"),
    "gamma": ("alpha", "beta"),
    "lkj": ("eta",),
}
_PYMC = {
    "normal": pm.Normal,
    "student_t": pm.StudentT,
    "exponential": pm.Exponential,
    "half_normal": pm.HalfNormal,
    "half_student_t": pm.HalfStudentT,
    "gamma": pm.Gamma,
}
_POSITIVE = {"sigma", "lam", "nu", "alpha", "beta", "eta"}
LOCATION = ("normal", "student_t")
SCALE = ("exponential", "half_normal", "half_student_t", "gamma")


@dataclass(frozen=True)
class Prior:
    """A prior distribution: a name and its parameters (PyMC's names)."""

    dist: str
    params: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if self.dist not in _PARAMS:
            raise PriorError(f"unknown prior distribution {self.dist!r}; choose from {sorted(_PARAMS)}")
        for key, value in self.params:
            if not np.isfinite(value):
                raise PriorError(f"prior {self.dist}: parameter {key} must be finite, got {value!r}")
            if key in _POSITIVE and value <= 0:
                raise PriorError(f"prior {self.dist}: parameter {key} must be positive, got {value!r}")

    @property
    def kwargs(self) -> dict[str, float]:
        """Parameters as keyword arguments."""
        return dict(self.params)

    def __str__(self) -> str:
        return f"{self.dist}(" + ", ".join(f"{k}={v:.4g}" for k, v in self.params) + ")"


def _make(dist: str, **params: float) -> Prior:
    values = []
    for key in _PARAMS[dist]:
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise PriorError(f"prior {dist}: parameter {key} must be a number, got {value!r}")
        values.append((key, float(value)))
    return Prior(dist, tuple(values))


def normal(mu: float = 0.0, sigma: float = 1.0) -> Prior:
    """Normal prior (location class: ``b``, ``Intercept``)."""
    return _make("normal", mu=mu, sigma=sigma)


def student_t(nu: float = 3.0, mu: float = 0.0, sigma: float = 1.0) -> Prior:
    """Student-t prior (location class: ``b``, ``Intercept``)."""
    return _make("student_t", nu=nu, mu=mu, sigma=sigma)


def exponential(lam: float = 1.0) -> Prior:
    """Exponential prior with rate ``lam`` (scale class: ``sd``, ``sigma``)."""
    return _make("exponential", lam=lam)


def half_normal(sigma: float = 1.0) -> Prior:
    """Half-normal prior (scale class: ``sd``, ``sigma``)."""
    return _make("half_normal", sigma=sigma)


def half_student_t(nu: float = 3.0, sigma: float = 1.0) -> Prior:
    """Half-Student-t prior (scale class: ``sd``, ``sigma``)."""
    return _make("half_student_t", nu=nu, sigma=sigma)


def gamma(alpha: float = 2.0, beta: float = 1.0) -> Prior:
    """Gamma prior (scale class: ``sd``, ``sigma``)."""
    return _make("gamma", alpha=alpha, beta=beta)


def lkj(eta: float = 1.0) -> Prior:
    """LKJ prior on a correlation matrix (class ``cor``); eta=1 is uniform."""
    return _make("lkj", eta=eta)


def stack(priors: list[Prior], what: str) -> tuple[str, dict[str, np.ndarray]]:
    """Vectorise priors of one distribution into array parameters."""
    dists = {p.dist for p in priors}
    if len(dists) != 1:
        raise PriorError(f"priors of {what} must share one distribution, got {sorted(dists)}")
    dist = dists.pop()
    return dist, {k: np.array([p.kwargs[k] for p in priors]) for k in _PARAMS[dist]}


def to_rv(name: str, dist: str, params: Mapping[str, Any], **kwargs: Any):
    """Create the PyMC random variable ``name`` of ``dist`` (array parameters allowed)."""
    return _PYMC[dist](name, **params, **kwargs)


def to_pymc(name: str, prior: Prior, **kwargs: Any):
    """Create the PyMC random variable ``name`` with this prior."""
    return to_rv(name, prior.dist, prior.kwargs, **kwargs)


def to_dist(dist: str, params: Mapping[str, Any], **kwargs: Any):
    """An unnamed PyMC distribution (e.g. the ``sd_dist`` of LKJCholeskyCov)."""
    return _PYMC[dist].dist(**params, **kwargs)


@dataclass(frozen=True)
class PriorSet:
    """Every prior of a model, resolved; ``source`` says default or user."""

    intercept: Prior | None
    b: tuple[Prior, ...]
    sd: Mapping[str, tuple[Prior, ...]]
    cor: Mapping[str, Prior]
    aux: Mapping[str, Prior]
    source: Mapping[tuple[str, ...], str] = field(default_factory=dict)


def _defaults(design: Design, family: Family, link: Link) -> dict[tuple[str, ...], Prior]:
    s_y = family.response_scale(design.y)
    out: dict[tuple[str, ...], Prior] = {}
    fixed = design.fixed
    if fixed.has_intercept:
        loc = family.intercept_location(design.y, design.trials, link)
        out[("Intercept",)] = normal(loc, 2.5 * s_y)
    for j in fixed.slope_columns:
        out[("b", fixed.labels[j])] = normal(0.0, 2.5 * s_y / fixed.scale[j])
    for block in design.blocks:
        for term, zs in zip(block.terms, block.z_scale):
            out[("sd", block.group, term)] = exponential(float(zs) / s_y)
        if block.correlated:
            out[("cor", block.group)] = lkj(1.0)
    for name, prior in family.default_aux_priors(design.y).items():
        out[(name,)] = prior
    return out


def _matches(target: tuple[str, ...], key: tuple[str, ...]) -> bool:
    return target[: len(key)] == key


def _normalise_key(key: Any) -> tuple[str, ...]:
    if isinstance(key, str):
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(k, str) for k in key):
        return key
    raise PriorError(f"prior key {key!r} must be a class name or a tuple such as ('b', 'age')")


def _check_class(key: tuple[str, ...], prior: Any) -> None:
    if not isinstance(prior, Prior):
        raise PriorError(f"prior for {key} must be made with bg.normal(), bg.exponential(), ...; got {prior!r}")
    cls = key[0]
    allowed = {"b": LOCATION, "Intercept": LOCATION, "cutpoints": LOCATION, "cor": ("lkj",)}.get(cls, SCALE)
    if prior.dist not in allowed:
        raise PriorError(f"prior {prior} cannot be used for class {cls!r}; use one of {list(allowed)}")


def resolve(design: Design, family: Family, link: Link, user: Mapping[Any, Prior] | None) -> PriorSet:
    """Combine default priors with user overrides, most specific key winning."""
    table = _defaults(design, family, link)
    source = {k: "default" for k in table}
    if user is not None and not isinstance(user, Mapping):
        raise PriorError(f"priors must be a dict, got {type(user).__name__}")
    for raw in sorted(user or {}, key=lambda k: len(_normalise_key(k))):
        key = _normalise_key(raw)
        _check_class(key, user[raw])
        hits = [t for t in table if _matches(t, key)]
        if not hits:
            known = sorted({" ".join(t[:2]) for t in table} | {t[0] for t in table})
            raise PriorError(f"prior key {raw!r} matches no parameter of this model; targets are {known}")
        for target in hits:
            table[target], source[target] = user[raw], "user"
    fixed = design.fixed
    return PriorSet(
        intercept=table.get(("Intercept",)),
        b=tuple(table[("b", fixed.labels[j])] for j in fixed.slope_columns),
        sd={b.name: tuple(table[("sd", b.group, t)] for t in b.terms) for b in design.blocks},
        cor={b.name: table[("cor", b.group)] for b in design.blocks if b.correlated},
        aux={name: table[(name,)] for name in family.aux},
        source=source,
    )


def prior_table(priors: PriorSet, design: Design) -> pd.DataFrame:
    """Readable table of every prior (class, coef, group, prior, source)."""
    rows = []
    if priors.intercept is not None:
        rows.append(("Intercept", "", "", f"{priors.intercept} (predictors centred)", ("Intercept",)))
    for j, prior in zip(design.fixed.slope_columns, priors.b):
        rows.append(("b", design.fixed.labels[j], "", str(prior), ("b", design.fixed.labels[j])))
    for block in design.blocks:
        for term, prior in zip(block.terms, priors.sd[block.name]):
            rows.append(("sd", term, block.group, str(prior), ("sd", block.group, term)))
        if block.correlated:
            rows.append(("cor", "", block.group, str(priors.cor[block.name]), ("cor", block.group)))
    for name, prior in priors.aux.items():
        rows.append((name, "", "", str(prior), (name,)))
    return pd.DataFrame(
        [(c, k, g, p, priors.source.get(key, "default")) for c, k, g, p, key in rows],
        columns=["class", "coef", "group", "prior", "source"],
    )
