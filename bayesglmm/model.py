"""Stage 4 — model: build the PyMC model from design, family and priors.

Parameterisation (what makes real data sample well by default):

* fixed effects are sampled for the centred and scaled design
  ``(x_j - mean(x_j)) / sd(x_j)``; the exact user-scale coefficients are the
  deterministic ``fixef`` (priors are transformed exactly, being
  location-scale families);
* random effects are non-centred: ``r = z · diag(sd)`` or ``r = z · Lᵀ`` with
  ``L`` the Cholesky factor of one ``LKJCholeskyCov`` per correlated block;
  the model NUTS samples may centre independent blocks partially, level by
  level, as far as the data inform each level
  (:mod:`bayesglmm.parameterization`); predictions use this non-centred model;
* each block enters the linear predictor through an integer group index and
  its small ``Z`` (n × k); no dense n × (J·k) matrix is built.

The linear predictor ``eta`` and the mean ``mu`` are deterministics over
``pm.Data`` containers; predictions swap the containers with ``pm.set_data``
and reuse this graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .design import Design, FixedDesign, GroupBlock
from .families import Family, Link
from .marginal import (
    LOG_2PI,
    add_marginal_likelihood,
    add_partial_likelihood,
    forward_solve,
    gather_matrix,
    split_blocks,
)
from .parameterization import NestedPair, level_covariates
from .priors import PriorSet, stack, to_dist, to_pymc, to_rv

OBSERVED = "y"
#: Deterministics recomputed on demand, never stored in the trace.
ON_DEMAND = ("eta", "mu")


def term_dim(block: GroupBlock) -> str:
    """Name of the dimension listing a block's terms."""
    return f"{block.name}__term"


def coords_of(design: Design) -> dict[str, tuple[str, ...]]:
    """Coordinates of every named dimension of the model."""
    coords: dict[str, tuple[str, ...]] = {"fixef__term": design.fixed.labels}
    for block in design.blocks:
        coords[block.group] = block.levels
        coords[term_dim(block)] = block.terms
        coords[term_dim(block) + "_bis"] = block.terms
    return coords


#: Largest design (rows × columns) whose product with the coefficients is written as
#: an elementwise product and a sum.  PyTensor runs a matrix-vector product in Python
#: when it finds no BLAS to link to (3-4 µs each, two per gradient).  Log density and
#: gradient with nutpie-c's C functions, elementwise against product: cbpp (56 × 3)
#: 18.8 against 25.7 µs, Contraception (1547 collapsed rows × 6) 117 against 147 µs,
#: but VerbAgg (7584 × 5) 373 against 302 µs.
ELEMENTWISE_MAX = 20_000


def _combine(X, coef, predictor: tuple[int, ...], m: int) -> pt.TensorVariable:
    """``X @ coef`` per linear predictor: (n,), or (n, m) for m > 1."""
    if m == 1:
        size = np.size(X.get_value() if hasattr(X, "get_value") else X)
        return (X * coef).sum(axis=1) if size <= ELEMENTWISE_MAX else pt.dot(X, coef)
    return pt.dot(X, coef[:, None] * np.eye(m)[list(predictor)])


def _fixed_part(design: Design, priors: PriorSet) -> tuple[pt.TensorVariable, pt.TensorVariable, list]:
    """Add fixed effects; return their contribution to eta, the centring shift ``center·b``
    and ``[intercept, coefficients of the standardized slopes]`` (None where absent).

    With several linear predictors (categorical) both have one column per predictor.
    """
    fixed, m = design.fixed, design.n_predictors
    slopes = fixed.slope_columns
    slope_predictor = tuple(fixed.predictor[j] for j in slopes) if fixed.predictor else ()
    eta = 0.0
    parts, order = [], []
    internal = [None, None]
    if slopes.size:
        X = pm.Data("X", fixed.standardized(fixed.X))
        by_dist: dict[str, list[int]] = {}
        for pos, prior in enumerate(priors.b):
            by_dist.setdefault(prior.dist, []).append(pos)
        for dist, positions in by_dist.items():
            _, params = stack([priors.b[p] for p in positions], "b")
            factor = fixed.scale[slopes[positions]]
            params["mu"], params["sigma"] = params["mu"] * factor, params["sigma"] * factor
            parts.append(to_rv(f"b_{dist}_scaled", dist, params, shape=len(positions)))
            order.extend(positions)
        b_scaled = pt.concatenate(parts)[np.argsort(order)] if len(parts) > 1 else parts[0]
        eta = eta + _combine(X, b_scaled, slope_predictor, m)
        internal[1] = b_scaled
        b = b_scaled / fixed.scale[slopes]
    values = [None] * len(fixed.labels)
    for k, j in enumerate(slopes):
        values[j] = b[k]
    # eta on the user's scale = eta here + shift (the centring, absorbed by the intercept)
    shift = pt.zeros(m) if m > 1 else pt.as_tensor(0.0)
    if slopes.size:
        shift = _combine(fixed.center[slopes][None, :], b, slope_predictor, m)[0]
    if fixed.has_intercept:
        a = to_pymc("Intercept_centered", priors.intercept, **({"shape": m} if m > 1 else {}))
        eta = eta + a
        internal[0] = a
        for p, j in enumerate(fixed.intercept_columns):
            values[j] = a - shift if m == 1 else a[p] - shift[p]
    if values:
        pm.Deterministic("fixef", pt.stack(values), dims="fixef__term")
    return eta, shift, internal


def _block_scale(block: GroupBlock, priors: PriorSet) -> pt.TensorVariable:
    """Add a block's SDs (and LKJ correlation); return its scale factor ``L``.

    The block's covariance is ``L Lᵀ``: ``L`` is the k × k Cholesky factor of
    one ``LKJCholeskyCov`` for a correlated block, the vector of SDs (``L =
    diag(sd)``) otherwise.
    """
    dist, params = stack(list(priors.sd[block.name]), f"sd of group {block.group!r}")
    if block.correlated:
        k = len(block.terms)
        packed = pm.LKJCholeskyCov(
            f"chol_{block.name}",
            n=k,
            eta=priors.cor[block.name].kwargs["eta"],
            sd_dist=to_dist(dist, params),
            compute_corr=False,
        )
        chol = unpack_lower(packed, k)
        stds = pt.sqrt((chol**2).sum(axis=1))
        corr = (chol[:, None, :] * chol[None, :, :]).sum(axis=2) / (stds[:, None] * stds[None, :])
        pm.Deterministic(f"sd_{block.name}", stds, dims=term_dim(block))
        pm.Deterministic(f"cor_{block.name}", corr, dims=(term_dim(block), term_dim(block) + "_bis"))
        return chol
    return to_rv(f"sd_{block.name}", dist, params, dims=term_dim(block))


def unpack_lower(packed: pt.TensorVariable, k: int) -> pt.TensorVariable:
    """The k × k lower-triangular matrix whose rows ``packed`` holds (``LKJCholeskyCov``'s order).

    A gather from ``packed`` and a zero, not PyMC's ``expand_packed_triangular``:
    its two-index assignment, and the two-index selection of its gradient, have
    no C code and run in Python at every gradient (3.7 of sleepstudy's 42.4 µs),
    where a one-index gather and its scatter-add are compiled.
    """
    rows, cols = np.tril_indices(k)
    index = np.full((k, k), rows.size)
    index[rows, cols] = np.arange(rows.size)
    return gather_matrix(packed, index)


def _as_matrix(scale: pt.TensorVariable, k: int) -> pt.TensorVariable:
    """The k × k factor ``L`` of a block's scale (``diag(sd)`` for a vector of SDs, gathered:
    ``pt.diag`` runs in Python)."""
    if scale.ndim != 1:
        return scale
    index = np.full((k, k), k)
    index[np.arange(k), np.arange(k)] = np.arange(k)
    return gather_matrix(scale, index)


def _block_effects(
    block: GroupBlock, priors: PriorSet, centring: np.ndarray | None = None, anchor=0.0
) -> pt.TensorVariable:
    """Add one random-effect block; return its (J, k) matrix of effects ``r = z Lᵀ``.

    ``z * sd`` for independent terms, not ``z * diagonal(diag(sd))``: through
    the latter PyTensor's gradient computes each scatter-add of eta's
    gradient (``_block_eta``) twice.  With ``centring`` weights ``c`` (J, k),
    an independent block is sampled partially centred (see
    :mod:`bayesglmm.parameterization`), its random intercepts anchored on
    ``anchor`` (J, k: the intercept plus group-level covariates, 0 for
    other terms); ``z = r / sd`` is then a deterministic.  A correlated block
    with centring weights (see
    :data:`~bayesglmm.parameterization.CORRELATED_CENTRED`) is sampled centred,
    ``w ~ MvNormal(anchor, L Lᵀ)``, ``r = w - anchor``, ``z = L⁻¹ r``.
    """
    dims = (block.group, term_dim(block))
    if centring is None:
        z = pm.Normal(f"z_{block.name}", 0.0, 1.0, dims=dims)
        scale = _block_scale(block, priors)
        effects = z * scale if scale.ndim == 1 else pt.dot(z, scale.T)
        return pm.Deterministic(f"r_{block.name}", effects, dims=dims)
    scale = _block_scale(block, priors)
    if block.correlated:  # centred whole, whatever the weights: w ~ N(anchor, L Lᵀ)
        k = len(block.terms)
        anchor = pt.zeros((len(block.levels), k)) + anchor
        w = _mv_normal(f"w_{block.name}", anchor, scale, k, dims)
        effects = w - anchor
        pm.Deterministic(f"z_{block.name}", pt.stack(_whiten(scale, effects, k), axis=1), dims=dims)
        return pm.Deterministic(f"r_{block.name}", effects, dims=dims)
    anchor = centring * anchor
    w = pm.Normal(f"w_{block.name}", anchor, scale**centring, dims=dims)
    effects = (w - anchor) * scale ** (1.0 - centring)
    return _stored_effects(block, effects, scale)


def _whiten(L: pt.TensorVariable, d: pt.TensorVariable, k: int) -> list[pt.TensorVariable]:
    """The k columns of ``L⁻¹ dᵀ`` for the rows of ``d`` (J, k), by forward substitution
    (``L`` k × k, or one per row, J × k × k, as a multivariate log density receives it)."""
    return forward_solve([[L[..., i, m] for m in range(i + 1)] for i in range(k)], d, k)


def _mv_normal(name: str, mu: pt.TensorVariable, L: pt.TensorVariable, k: int, dims) -> pt.TensorVariable:
    """Rows ``w_j ~ N(mu_j, L Lᵀ)``, k-variate, with a log density written elementwise.

    PyMC's ``MvNormal`` goes through a Cholesky factorisation and triangular
    solves, operations without C code that PyTensor runs in Python, and their
    gradients likewise, at every gradient; here the k × k solve is unrolled
    over the terms and vectorised over the levels.
    """

    def logp(value, mu, L):
        u = _whiten(L, value - mu, k)
        logdet = sum((pt.log(L[..., i, i]) for i in range(k)), start=pt.zeros(()))
        return -0.5 * sum(ui**2 for ui in u) - logdet - 0.5 * k * LOG_2PI

    def random(mu, L, rng=None, size=None):
        batch = tuple(size) if size is not None else np.broadcast_shapes(np.shape(mu)[:-1], np.shape(L)[:-2])
        return mu + np.einsum("...ij,...j->...i", L, rng.normal(size=(*batch, k)))

    def support_point(rv, size, mu, L):
        return pt.broadcast_to(mu, rv.shape)

    return pm.CustomDist(
        name, mu, L, logp=logp, random=random, support_point=support_point, signature="(k),(k,k)->(k)", dims=dims
    )


def _stored_effects(block: GroupBlock, effects: pt.TensorVariable, scale) -> pt.TensorVariable:
    """Record ``z = r / sd`` and ``r`` of a reparameterised block, as the non-centred model holds them."""
    dims = (block.group, term_dim(block))
    pm.Deterministic(f"z_{block.name}", effects / scale, dims=dims)
    return pm.Deterministic(f"r_{block.name}", effects, dims=dims)


def _anchors(design: Design, centring: Mapping[str, np.ndarray], internal: list) -> dict[str, pt.TensorVariable]:
    """Per centred block, the (J, k) means its effects are anchored on.

    The intercept column gets ``α + x_j β`` (intercept plus the group-level
    covariates of :func:`~bayesglmm.parameterization.level_covariates`, on the
    internal standardized scale), the other terms 0.  In an ordinal model ``α``
    is minus the mean threshold (:meth:`~bayesglmm.families.Family.anchor_level`):
    a common shift of the thresholds and the effects then leaves the likelihood
    unchanged and moves only the anchor.  In a correlated block (centred whole)
    a slope whose covariate is also a fixed effect is anchored on that
    coefficient (user's scale, :func:`_slope_anchors`), and the intercept's
    anchor becomes the intercept at covariate 0: shifting the fixed slope and
    every level's slope together then moves only the anchors.
    """
    intercept, coef = internal
    anchors = {}
    for block in design.blocks:
        if block.name not in centring:
            continue
        slopes = _slope_anchors(block, design, coef) if block.correlated else {}
        with_intercept = intercept is not None and "Intercept" in block.terms
        if not (slopes or with_intercept):
            continue
        J = len(block.levels)
        columns = [pt.zeros(J) for _ in block.terms]
        for t, (_, value) in slopes.items():
            columns[t] = pt.ones(J) * value
        if with_intercept:
            shift = sum((value * design.fixed.center[col] for col, value in slopes.values()), start=pt.zeros(()))
            columns[block.terms.index("Intercept")] = _intercept_anchor(block, design, intercept - shift, coef)
        anchors[block.name] = pt.stack(columns, axis=1)
    return anchors


def _intercept_anchor(block: GroupBlock, design: Design, base, coef) -> pt.TensorVariable:
    """``base + x_j β`` per level: the group-level covariates' part on the standardized scale."""
    fixed, mean = design.fixed, base
    if coef is not None:
        # constancy within levels is the same on the user's scale, so only the
        # (J, p) level values are standardized, not another copy of X
        slopes = fixed.slope_columns
        cols, values = level_covariates(block, fixed.X)
        keep = np.isin(cols, slopes)
        cols, values = cols[keep], values[:, keep]
        if cols.size:
            values = (values - fixed.center[cols]) / fixed.scale[cols]
            mean = mean + pt.dot(values, _slope_coef(fixed, coef, cols))
    return pt.ones(len(block.levels)) * mean


def _slope_coef(fixed: FixedDesign, coef: pt.TensorVariable, cols: np.ndarray | int) -> pt.TensorVariable:
    """The coefficients (standardized scale) of the non-intercept fixed columns ``cols``."""
    return coef[np.searchsorted(fixed.slope_columns, cols)]


def _slope_anchors(block: GroupBlock, design: Design, coef) -> dict[int, tuple[int, pt.TensorVariable]]:
    """``{term: (fixed column, its coefficient on the user's scale)}`` for the block's slopes
    whose covariate is also a fixed effect (same label, same values)."""
    fixed = design.fixed
    if coef is None:
        return {}
    labels, slopes = list(fixed.labels), fixed.slope_columns
    out = {}
    for t, term in enumerate(block.terms):
        col = labels.index(term) if term in labels and term != "Intercept" else -1
        if col in slopes and np.array_equal(block.Z[:, t], fixed.X[:, col]):
            out[t] = (col, _slope_coef(fixed, coef, col) / fixed.scale[col])
    return out


def _nested_effects(
    pair: NestedPair, parent: GroupBlock, child: GroupBlock, priors: PriorSet
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Add a nested pair of random intercepts through their totals; return both (J, 1) effects.

    See :func:`bayesglmm.parameterization.nested_pairs`: ``t_<parent>`` and
    ``d_<child>`` are sampled, ``z`` and ``r`` of both blocks are deterministics.
    """
    scale_p, scale_c = _block_scale(parent, priors), _block_scale(child, priors)
    sd_p, sd_c = scale_p[0], scale_c[0]  # one term each
    t = pm.Normal(f"t_{parent.name}", 0.0, 1.0, dims=(parent.group, term_dim(parent)))
    d = pm.Normal(f"d_{child.name}", 0.0, 1.0, dims=(child.group, term_dim(child)))
    # one term: the algebra runs on vectors, whose scatter-adds (d's sum over each parent's
    # children, and the gradients of the gathers) compile to a fast path that the (J, 1)
    # columns miss (grouseticks: three 3.2-us scatter-adds per gradient)
    k = np.bincount(pair.parent_of, minlength=len(parent.levels)).astype(float)
    d1 = d[:, 0]
    d_mean = pt.inc_subtensor(pt.zeros(len(parent.levels))[pair.parent_of], d1) / k
    var = sd_p**2 + sd_c**2 / k
    s = pt.sqrt(var)
    total = s * t[:, 0]
    u = sd_p**2 / var * total + sd_p * sd_c / s * d_mean
    v = sd_c * (d1 - d_mean[pair.parent_of]) + (total - u)[pair.parent_of]
    return _stored_effects(parent, u[:, None], scale_p), _stored_effects(child, v[:, None], scale_c)


def _random_effects(
    design: Design,
    priors: PriorSet,
    centring: Mapping[str, np.ndarray],
    anchors: Mapping[str, pt.TensorVariable],
    nested: tuple[NestedPair, ...] = (),
) -> dict[str, pt.TensorVariable]:
    """Add every random-effect block; return each block's (J, k) effects, in the design's order."""
    blocks = {block.name: block for block in design.blocks}
    effects = {}
    for pair in nested:
        effects[pair.parent], effects[pair.child] = _nested_effects(
            pair, blocks[pair.parent], blocks[pair.child], priors
        )
    for block in design.blocks:
        if block.name not in effects:
            effects[block.name] = _block_effects(block, priors, centring.get(block.name), anchors.get(block.name, 0.0))
    return {name: effects[name] for name in blocks}


def _random_eta(design: Design, effects: Mapping[str, pt.TensorVariable]) -> pt.TensorVariable:
    """The random effects' contribution to eta."""
    eta = 0.0
    for block in design.blocks:
        idx = pm.Data(f"idx_{block.name}", block.idx)
        Z = None if block.intercept_only else pm.Data(f"Z_{block.name}", block.Z)
        eta = eta + _block_eta(block, effects[block.name], idx, Z, design.n_predictors)
    return eta


def _block_eta(block: GroupBlock, effects, idx, Z, m: int) -> pt.TensorVariable:
    """A block's contribution to eta: (n,), or (n, m) with m linear predictors.

    Effects are gathered one term (column) at a time, ``effects[:, t][idx]``,
    whose gradient is a one-dimensional scatter-add: in the compiled back ends
    it is several times faster than gathering rows, ``effects[idx]``.  The
    gradients of ``z`` and the SDs then follow at the level of groups, not
    rows.  ``Z`` is None for a block of intercepts.
    """
    cols = [effects[:, t][idx] if Z is None else effects[:, t][idx] * Z[:, t] for t in range(len(block.terms))]
    if m == 1:
        return sum(cols[1:], cols[0])
    return pt.stack([sum(c for c, p in zip(cols, block.predictor) if p == q) for q in range(m)], axis=1)


def _fixed_affine(model: pm.Model, design: Design, internal: list) -> tuple[np.ndarray, pt.TensorVariable]:
    """``(A, θ)`` with ``A θ`` the fixed part of eta as :func:`_fixed_part` builds it (one predictor):
    the model's own standardized design ``X`` (and a column of ones for the intercept)."""
    columns, coefs = [], []
    if internal[0] is not None:
        columns.append(np.ones((design.n, 1)))
        coefs.append(pt.atleast_1d(internal[0]))
    if internal[1] is not None:
        columns.append(model["X"].get_value())
        coefs.append(internal[1])
    if not columns:
        return np.zeros((design.n, 0)), pt.zeros(0)
    return np.ascontiguousarray(np.hstack(columns), dtype="float64"), pt.concatenate(coefs)


def _add_marginal(
    design: Design,
    family: Family,
    link: Link,
    priors: PriorSet,
    model: pm.Model,
    shift: pt.TensorVariable,
    internal: list,
    fused: bool,
) -> None:
    """The marginal likelihood of :func:`build_model` with ``marginal=True``.

    It reads ``y - offset`` and the fixed-effects design through statistics
    computed once, not eta; in the ``"partial"`` layout the sampled factors'
    effects join the fixed coefficients in those statistics
    (:func:`~bayesglmm.marginal.add_partial_likelihood`).
    """
    out, sampled = split_blocks(design)
    scales = {b.name: _as_matrix(_block_scale(b, priors), len(b.terms)) for b in out}
    params = family.add_parameters(priors.aux, link, shift)
    y = design.y - (0.0 if design.offset is None else design.offset)
    y = np.asarray(y, dtype="float64")
    A, theta = _fixed_affine(model, design, internal)
    if sampled:
        part = dataclasses.replace(design, blocks=sampled)
        linear = (A, theta, sampled, _random_effects(part, priors, {}, {}))
        add_partial_likelihood(dataclasses.replace(design, blocks=out), linear, y, scales, params["sigma"])
        return
    add_marginal_likelihood(design, A, theta, y, scales, params["sigma"], fused=fused)


def build_model(
    design: Design,
    family: Family,
    link: Link,
    priors: PriorSet,
    marginal: bool = False,
    centring: Mapping[str, np.ndarray] | None = None,
    nested: tuple[NestedPair, ...] = (),
    fused: bool = False,
) -> pm.Model:
    """The PyMC model of a GLMM.

    Named variables: ``fixef`` (user scale), per block ``sd_<block>``,
    ``cor_<block>`` (correlated blocks), ``r_<block>`` (effects of every
    level), the family's parameters, deterministics ``eta`` and ``mu``, and
    the observed ``y``.

    With ``marginal=True`` (gaussian, identity link) the random effects are
    integrated out of the likelihood exactly (see :mod:`bayesglmm.marginal`):
    the model has the same fixed effects, SDs, correlations and ``sigma``, a
    ``Potential`` for the marginal likelihood and no ``y``, ``eta`` or ``mu``;
    ``fused`` computes that likelihood of one grouping factor with one
    compiled operation (:mod:`bayesglmm.marginal_op`; PyTensor's C back end only).

    ``centring`` maps blocks to their centring weights
    (:mod:`bayesglmm.parameterization`); a block not in it is non-centred,
    with ``z_<block>`` the sampled standard-normal draws.  ``nested`` pairs
    of random intercepts are sampled through their totals
    (:func:`~bayesglmm.parameterization.nested_pairs`).
    """
    with pm.Model(coords=coords_of(design), check_bounds=False) as model:
        observed = pm.Data("_y", design.y)
        trials = None if design.trials is None else pm.Data("_trials", np.asarray(design.trials, dtype=np.int64))
        fixed_eta, shift, internal = _fixed_part(design, priors)
        m = design.n_predictors
        if marginal:
            _add_marginal(design, family, link, priors, model, shift, internal, fused)
            return model
        eta = (pt.zeros(observed.shape[0]) if m == 1 else pt.zeros((observed.shape[0], m))) + fixed_eta
        if design.offset is not None:
            eta = eta + pm.Data("offset", design.offset)
        params = None
        if centring and m == 1 and internal[0] is None:  # the thresholds anchor the effects
            params = family.add_parameters(priors.aux, link, shift)
            internal = [family.anchor_level(params), internal[1]]
        anchors = _anchors(design, centring or {}, internal) if m == 1 else {}
        effects = _random_effects(design, priors, centring or {}, anchors, nested)
        eta = pm.Deterministic("eta", eta + _random_eta(design, effects))
        params = family.add_parameters(priors.aux, link, shift) if params is None else params
        pm.Deterministic("mu", family.mean(eta, link, params))
        family.likelihood(OBSERVED, eta, link, params, observed, trials)
    return model
