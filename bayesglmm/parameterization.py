"""Stage 3b — parameterization: how much to centre each random effect for NUTS.

Every parameterization below has the same posterior; they differ in how easy it
is for NUTS to explore.  A random effect ``r_j ~ N(0, σ²)`` of level ``j`` is
sampled as

    w_j ~ N(c_j · m_j, σ^(2 c_j)),      r_j = σ^(1 - c_j) · (w_j - c_j · m_j),

with ``c_j`` in [0, 1] and the anchor ``m_j = α + x_j β`` for a random intercept
(the model's internally centred intercept plus the covariates constant within the
level, :func:`level_covariates`), else 0.  ``c = 0`` is the non-centred form
(``r = σ z``), best when the data say little about each level; ``c = 1`` the
centred form (``r_j + m_j ~ N(m_j, σ²)``), best when they say much; in between is
the partially non-centred form of Papaspiliopoulos, Roberts & Sköld (2007).
With a Gaussian approximation to the likelihood of level ``j`` with precision
``I_j``, ``w_j`` is a posteriori uncorrelated with ``σ`` for

    c_j = ρ_j / (1 + ρ_j),      ρ_j = I_j · σ²,

the rule used here (Gorinova, Moore & Hoffman 2020 learn the same weights by
variational inference).  ``I_j = Σ_i w_i Z_ij²`` sums the working (Fisher) weights
of the level's rows in the GLM without random effects (a few IRLS steps,
:func:`working_fit`): ``n p(1 - p)`` for a logit-link binomial or bernoulli
(``n μ'(η)² / (μ(1 - μ))`` with the probit and complementary log-log links), ``μ``
for a log-link poisson, ``μ / (1 + μ/α)`` for a log-link negative binomial, the
shape ``α`` for a log-link gamma, ``φ² (ψ'(μφ) + ψ'((1 - μ)φ)) μ'(η)²`` for a beta of
precision ``φ``, ``1 / s²`` for a gaussian or Student's t, and for the cumulative
(ordinal) model the expected information of ``η`` at the thresholds' and
coefficients' maximum-likelihood fit (:func:`~bayesglmm.ordinal.ordinal_working_fit`).
``σ`` is a deliberately low guess from the data (:func:`level_sd`): the moment
estimate of the SD from the levels' one-step estimates ``Σ w Z r / I_j`` (working residuals ``r``), less two
of its standard errors.  Erring low matters: where ``σ`` is small (few levels, or
a small SD) the posterior reaches SDs at which a centred effect has a funnel.
Taking ``σ`` from the SD's prior mean (1 on the logit scale), as an earlier
version did, centred simulated data with SD 0.25 at ``c ≈ 0.9`` and NUTS failed
(R-hat up to 1.16, dozens of divergences, seeds 1-2, 10-40 levels); with the data's
guess every such fit had R-hat ≤ 1.010 and, at the default ``target_accept``, no
divergences.  Anchoring the random intercepts on
``m_j`` matters as much: with thousands of groups, ``α`` and the mean of the
effects are otherwise almost collinear, and NUTS with a diagonal mass matrix
mixes the intercept slowly.  An ordinal model has no intercept: its thresholds
and the mean of the effects are collinear in the same way, and minus the mean
threshold takes the intercept's place in the anchor.

The rule applies to a model only when it applies to every block; otherwise all
blocks stay non-centred (``c = 0``, the form of earlier versions).  A correlated
block is centred whole (``c = 1``, ``w_j ~ MvNormal(m_j, L Lᵀ)``, its slopes
anchored on the fixed slopes) when the rule gives every level and term at least
``CORRELATED_CENTRED``, else it keeps the model non-centred.  The rule does not
apply to other families and links, models with several linear
predictors, or factors nested in (or containing, or equal to) another grouping
factor of the model: there a level's information passes through the other
factor's effects, which ``I_j`` ignores.  Mixing the forms was measured once and
hurt: on InstEval (students centred; lecturers and departments, nested, not) the
intercept's ESS fell to 72 anchored, and sd(dept)'s to 166 (R-hat 1.024)
unanchored, against 333 (R-hat 1.009) all non-centred.

Nested random intercepts with few children per parent are instead sampled
through the parents' totals (:func:`nested_pairs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import special

from .design import Design, GroupBlock
from .families import Family, Link
from .ordinal import ordinal_working_fit

#: (family, link) pairs the rule knows the working weights of.
SUPPORTED = {
    ("gaussian", "identity"),
    ("student_t", "identity"),
    ("bernoulli", "logit"),
    ("bernoulli", "probit"),
    ("bernoulli", "cloglog"),
    ("binomial", "logit"),
    ("binomial", "probit"),
    ("binomial", "cloglog"),
    ("poisson", "log"),
    ("negativebinomial", "log"),
    ("gamma", "log"),
    ("beta", "logit"),
    ("beta", "probit"),
    ("beta", "cloglog"),
    ("cumulative", "logit"),
    ("cumulative", "probit"),
}
#: Families whose supported link is the log: the offset enters ``eta``, the working
#: residual is ``(y - μ) / μ``.
LOG_FAMILIES = ("poisson", "negativebinomial", "gamma")


def _irls_start(design: Design, family: Family, link: Link) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, trials or exposure offset, starting eta) of the fixed-effects-only GLM."""
    y = np.asarray(design.y, dtype=float)
    if family.name in LOG_FAMILIES:
        offset = np.zeros_like(y) if design.offset is None else np.asarray(design.offset, dtype=float)
        return y, offset, np.log(y if family.name == "gamma" else y + 0.5) - offset
    n = np.ones_like(y) if design.trials is None else np.asarray(design.trials, dtype=float)
    if family.name == "beta":
        return y, n, link.forward_np(y)
    return y, n, link.forward_np((y + 0.5) / (n + 1.0))


#: The range of η the working fit of a probability link keeps to (beyond it μ is
#: within about 1e-7 of 0 or 1 and the weights vanish).
ETA_RANGE = {"logit": (-15.0, 15.0), "probit": (-5.5, 5.5), "cloglog": (-15.0, 2.8)}


def _working(
    family: Family, link: Link, y: np.ndarray, aux: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fisher weights of eta and working residuals (score / weight: one scoring step in eta) at ``eta``.

    Log links: ``(y - μ) / μ``.  Binary links: ``w = n μ'(η)² / (μ (1 - μ))``, residual ``(y/n - μ) / μ'(η)``
    (``n p (1 - p)`` and ``(y - n p) / w`` for the logit).
    """
    if family.name in LOG_FAMILIES:
        mu = np.exp(np.clip(eta + aux, -30.0, 30.0))
        return _log_link_weights(family, y, mu), (y - mu) / mu
    eta = np.clip(eta, *ETA_RANGE[link.name])
    p, dp = link.inverse_np(eta), link.mu_eta_np(eta)
    if family.name == "beta":
        return _beta_working(y, p, dp)
    w = aux * dp**2 / (p * (1.0 - p))
    return w, (y / aux - p) / dp


def _beta_working(y: np.ndarray, mu: np.ndarray, dmu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fisher weights and working residuals of a beta response with mean ``μ`` (``dmu = μ'(η)``).

    With precision ``φ``: score ``φ (y* - μ*) μ'(η)``, ``y* = log(y / (1 - y))``,
    ``μ* = ψ(μφ) - ψ((1 - μ)φ)``; information ``φ² (ψ'(μφ) + ψ'((1 - μ)φ)) μ'(η)²``.
    ``φ`` comes from the moments (``Var y = μ(1 - μ) / (1 + φ)``) of the residuals,
    which also hold the random effects' variance: low, like the weights (see
    :func:`_log_link_weights`).
    """
    mu = np.clip(mu, 1e-9, 1 - 1e-9)
    phi = max(float(np.mean(mu * (1 - mu)) / max(float(np.mean((y - mu) ** 2)), 1e-12)) - 1.0, 1e-3)
    a, b = mu * phi, (1 - mu) * phi
    info = phi**2 * (special.polygamma(1, a) + special.polygamma(1, b)) * dmu**2
    score = phi * (np.log(y / (1 - y)) - special.digamma(a) + special.digamma(b)) * dmu
    return info, score / info


def _log_link_weights(family: Family, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Fisher weights ``μ² / Var(y)`` of a log-link family at ``μ``.

    poisson ``μ``; gamma its shape ``α`` (``Var = μ² / α``); negative binomial
    ``μ / (1 + μ / α)`` (``Var = μ + μ² / α``).  ``α`` comes from the moments of
    the residuals of the GLM without random effects, which also hold the random
    effects' variance: ``α`` is underestimated, the weights too, and the
    centring errs towards the non-centred form, the safe side (see
    :func:`level_sd`).
    """
    if family.name == "poisson":
        return mu
    if family.name == "gamma":
        return np.full_like(mu, 1.0 / max(float(np.mean(((y - mu) / mu) ** 2)), 1e-12))
    inverse_alpha = max(float(np.sum((y - mu) ** 2 - mu) / np.sum(mu**2)), 0.0)
    return mu / (1.0 + mu * inverse_alpha)


def working_fit(
    design: Design, family: Family, link: Link, iterations: int = 8
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row weights and working residuals of the GLM without random effects.

    A few IRLS steps (the starting point and the clipping keep separated data
    finite); ``None`` for families and links outside ``SUPPORTED``.  The gaussian
    weight is ``1 / s²`` with ``s²`` the residual variance of least squares; so is
    Student's t's, below its Fisher information ``(ν + 1) / ((ν + 3) σ²)`` whenever
    the variance ``σ² ν / (ν - 2)`` exists, and 0 in effect when it does not (the
    safe, non-centred side).
    """
    if (family.name, link.name) not in SUPPORTED or design.n_predictors != 1:
        return None
    X = design.fixed.X
    if family.name == "cumulative":
        y = np.asarray(design.y, dtype=int)
        return ordinal_working_fit(y, design.fixed.standardized(X), len(family.values), link.name)
    if family.name in ("gaussian", "student_t"):
        y = np.asarray(design.y, dtype=float)
        resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else y - y.mean()
        return np.full(y.shape, 1.0 / max(float(np.mean(resid**2)), 1e-12)), resid
    y, aux, eta = _irls_start(design, family, link)
    for _ in range(iterations if X.shape[1] else 0):
        w, r = _working(family, link, y, aux, eta)
        root = np.sqrt(w)
        eta = X @ np.linalg.lstsq(X * root[:, None], (eta + r) * root, rcond=None)[0]
    return _working(family, link, y, aux, eta)


def level_sd(info: np.ndarray, deviation: np.ndarray) -> float:
    """A cautious (low) guess of a random effect's SD from per-level estimates.

    ``deviation`` are the levels' one-step estimates of their effects, with
    variances ``1 / info``.  The DerSimonian–Laird moment estimate ``τ`` is
    lowered by two of its approximate standard errors, ``τ (1 + 1/ρ) / sqrt(2J)``
    with ``ρ`` the median ``info · τ²``: the centred form is the worse one when
    the SD is overestimated (it then has a funnel at small SDs), so with few
    levels or little data per level the guess, and the centring, fall to zero.
    One-step estimates from the pooled fit also shrink large effects on a
    nonlinear link (SD 1 on the logit scale, 400 levels of 50 rows: 0.76), which
    errs on the same side.
    """
    J = deviation.size
    if J < 2:
        return 0.0
    total = info.sum()
    mean = np.sum(info * deviation) / total
    q = np.sum(info * (deviation - mean) ** 2)
    tau2 = max(0.0, (q - (J - 1)) / (total - np.sum(info**2) / total))
    if tau2 == 0.0:
        return 0.0
    rho = float(np.median(info)) * tau2
    return float(np.sqrt(tau2) * max(0.0, 1.0 - 2.0 * (1.0 + 1.0 / rho) / np.sqrt(2.0 * J)))


def _level_pairs(block: GroupBlock, other: GroupBlock) -> np.ndarray:
    """The distinct (level of ``block``, level of ``other``) pairs that share a row, in lexicographic order.

    Each pair is coded as one integer: ``np.unique`` of rows (``axis=0``) took
    60 ms on InstEval's 73,421 rows, against a few for the codes.
    """
    width = np.int64(len(other.levels))
    codes = np.unique(block.idx.astype(np.int64) * width + other.idx)
    return np.column_stack([codes // width, codes % width])


def _nested_with_another(block: GroupBlock, design: Design) -> bool:
    """True if ``block``'s factor nests in, contains or equals another block's factor."""
    for other in design.blocks:
        if other is block:
            continue
        pairs = _level_pairs(block, other).shape[0]
        if pairs in (len(block.levels), len(other.levels)):
            return True
    return False


def block_weights(block: GroupBlock, weights: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """The (J, k) centring weights ``c`` of one block, from the GLM's working fit."""
    J = len(block.levels)
    columns = []
    for t in range(len(block.terms)):
        z = block.Z[:, t]
        info = np.bincount(block.idx, weights=weights * z**2, minlength=J)
        score = np.bincount(block.idx, weights=weights * z * residuals, minlength=J)
        seen = info > 0
        sd = level_sd(info[seen], score[seen] / info[seen])
        columns.append(info * sd**2)
    rho = np.column_stack(columns)
    return rho / (1.0 + rho)


#: A correlated block is centred whole (``c = 1`` for every level and term) when every
#: weight the rule gives its terms is at least this, and otherwise keeps the model
#: non-centred: partial centring of a correlated block would need matrix weights.
CORRELATED_CENTRED = 0.5


def centring(design: Design, family: Family, link: Link) -> Mapping[str, np.ndarray]:
    """Centring weights ``c`` (J, k) of every block, or none when the rule misses one.

    A correlated block is in the map only when all its weights reach
    ``CORRELATED_CENTRED``; it is then sampled centred whole, whatever the values
    (which still inform the choice of ``target_accept``).
    """
    if any(_nested_with_another(block, design) for block in design.blocks):
        return {}
    fit = working_fit(design, family, link)
    if fit is None:
        return {}
    weights = {block.name: block_weights(block, *fit) for block in design.blocks}
    if any(block.correlated and np.min(weights[block.name]) < CORRELATED_CENTRED for block in design.blocks):
        return {}
    return weights


def level_covariates(block: GroupBlock, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ``X`` constant within every level of ``block`` and their (J, p) values.

    Such group-level covariates (a school's mean SES, an item's type) join the
    anchor of the block's random intercepts: ``w_j ~ N(c_j (α + x_j β), …)``.
    Otherwise their coefficients and the effects of the levels are nearly
    collinear once the effects are centred.
    """
    order = np.argsort(block.idx, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block.idx[order]) != 0])
    if X.shape[1] == 0 or starts.size != len(block.levels):
        return np.zeros(0, dtype=int), np.zeros((len(block.levels), 0))
    sorted_X = X[order]
    low, high = np.minimum.reduceat(sorted_X, starts, axis=0), np.maximum.reduceat(sorted_X, starts, axis=0)
    cols = np.flatnonzero(np.all(high - low <= 1e-12 * (1.0 + np.abs(high)), axis=0))
    return cols, low[:, cols]


#: Most children per parent (median) for which a nested pair is sampled through totals.
#: With equal SDs the children's mean then holds at least 1/(k+1) = 10 % of the prior
#: variance of the parent's total, which the data cannot attribute.  With many children
#: the parent's effect is its total and the transform gains nothing: on InstEval (65
#: lecturers per department, median) it cost the intercept a third of its ESS (333 -> 216,
#: R-hat 1.0156) and the fit 151 -> 197 s.
FEW_CHILDREN = 9


@dataclass(frozen=True)
class NestedPair:
    """Random intercepts of ``child`` levels nested in those of ``parent``.

    NUTS samples such a pair through the levels' totals (:func:`nested_pairs`);
    ``parent_of`` (J_child,) is the parent level of every child level.
    """

    parent: str
    child: str
    parent_of: np.ndarray


def parent_map(child: GroupBlock, parent: GroupBlock) -> np.ndarray | None:
    """The parent level of every ``child`` level, or None unless ``child`` nests strictly in ``parent``."""
    pairs = _level_pairs(child, parent)
    if pairs.shape[0] != len(child.levels) or len(parent.levels) >= len(child.levels):
        return None
    parent_of = np.empty(len(child.levels), dtype=np.int64)
    parent_of[pairs[:, 0]] = pairs[:, 1]
    if np.bincount(parent_of, minlength=len(parent.levels)).min() == 0:
        return None
    return parent_of


def nested_pairs(design: Design) -> tuple[NestedPair, ...]:
    """Pairs of random-intercept blocks, one nested in the other, NUTS samples jointly.

    For a parent level ``p`` with ``k`` child levels, effects ``u_p ~ N(0, σ_p²)``
    and ``v_c ~ N(0, σ_c²)``, the data inform the totals ``u_p + v_c``; with few
    children per parent (grouseticks: 1.9 broods per location) they cannot tell
    ``u_p`` from the children's mean ``v̄``, and in the non-centred form ``(z_p,
    z_c)`` each such parent is a ridge whose direction turns with ``σ_p / σ_c``.
    The pair is instead sampled as standard normals ``t_p`` and ``d_c``:

        s_p² = σ_p² + σ_c² / k,   T_p = s_p t_p           (the parent's total u_p + v̄)
        u_p = (σ_p² / s_p²) T_p + (σ_p σ_c / s_p) d̄_p,   v_c = σ_c (d_c - d̄_p) + T_p - u_p,

    with ``d̄_p`` the mean of ``d`` over the parent's children.  Given the SDs it is
    a linear map taking N(0, I) to exactly the prior of ``(u, v)`` (another square
    root of its covariance), so the posterior is unchanged; the data now see
    ``T_p`` and the within-parent deviations only, and how ``T_p`` splits into
    ``u_p`` and ``v̄`` (``d̄_p``) is left to the prior.  On grouseticks (default
    fits, seeds 1-3) the minimum bulk ESS rose from 204 / 313 / 182 to 543 / 589 / 443.

    Blocks qualify when they hold a single random intercept and the model has one
    linear predictor, and a pair when its parents have few children (median at
    most ``FEW_CHILDREN``).  Parents are taken from the coarsest factor down, each
    with its coarsest nested block; a block joins at most one pair.
    """
    if design.n_predictors != 1:
        return ()
    simple = sorted(
        (b for b in design.blocks if b.intercept_only),  # one term: one linear predictor
        key=lambda b: len(b.levels),
    )
    pairs: list[NestedPair] = []
    used: set[str] = set()
    for parent in simple:
        if parent.name in used:
            continue
        for child in simple:
            if child.name in used or child is parent:
                continue
            parent_of = parent_map(child, parent)
            if parent_of is not None and np.median(np.bincount(parent_of)) <= FEW_CHILDREN:
                pairs.append(NestedPair(parent.name, child.name, parent_of))
                used.update((parent.name, child.name))
                break
    return tuple(pairs)
