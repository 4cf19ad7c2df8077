"""Posterior predictions that reuse the fitted PyMC graph.

The fitted model is cloned, its ``pm.Data`` containers are swapped for the new
rows with ``pm.set_data``, and ``eta``/``mu``/``y`` are recomputed from the
posterior draws of the *free* parameters — there is no second implementation
of the linear predictor.

* ``re_formula=None`` keeps every random effect; ``"~0"`` sets them all to
  zero (the typical cluster); a formula such as ``"~(1 | district)"`` keeps the
  listed terms only (lme4/brms semantics).
* A group level not seen in fitting raises :class:`NewLevelError` unless
  ``allow_new_levels=True``; then its effects are drawn, per posterior draw,
  from the fitted distribution N(0, G) (seeded by ``random_seed``).
* ``marginal=True`` averages the prediction over the fitted distribution of
  the random effects that ``re_formula`` leaves out (all of them by default):
  population-averaged predictions.  ``re_quantile`` holds random effects at a
  quantile of their fitted distribution instead.  Both evaluate the graph at
  chosen values of the standardised effects ``z`` (``u = L z``, ``z ~ N(0, I)``
  in the non-centred parameterisation), see :mod:`bayesglmm.quadrature`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pymc.model.fgraph import clone_model

from . import batch, quadrature, stats
from ._data import level_labels
from .errors import ArgumentError, NewLevelError
from .formula import parse_formula

if TYPE_CHECKING:  # pragma: no cover
    from .design import Design
    from .results import GLMMResults

KINDS = {"mean": "mu", "link": "eta", "response": "y"}


def kept_terms(design: Design, re_formula: str | None) -> dict[str, tuple[str, ...]]:
    """Terms of every block that ``re_formula`` keeps."""
    if re_formula is None:
        return {b.name: b.terms for b in design.blocks}
    if not isinstance(re_formula, str):
        raise ArgumentError(f"re_formula must be None or a formula string, got {re_formula!r}")
    text = re_formula.strip().lstrip("~").strip()
    if text in ("0", "-1", "NA", ""):
        return {b.name: () for b in design.blocks}
    parsed = parse_formula(f"_y ~ {text}")
    keep: dict[str, tuple[str, ...]] = {b.name: () for b in design.blocks}
    for term in parsed.random:
        matches = [b for b in design.blocks if b.group == term.group]
        if not matches:
            raise ArgumentError(
                f"re_formula term ({term.expr} | {term.group}): {term.group!r} is not a grouping factor of the model"
            )
        wanted = _expr_terms(term.expr, matches)
        for block in matches:
            keep[block.name] = tuple(t for t in block.terms if t in wanted or t in keep[block.name])
    return keep


def _expr_terms(expr: str, blocks) -> set[str]:
    """Labels named by a random-term expression, matched against fitted blocks."""
    for block in blocks:
        if block.expr.replace(" ", "") == expr.replace(" ", ""):
            return set(block.terms)
    parts = {p.strip() for p in expr.split("+")}
    labels = set()
    for block in blocks:
        for t, base in zip(block.terms, block.base_terms):
            if (base == "Intercept" and ("1" in parts or "0" not in parts)) or base.split("[")[0] in parts:
                labels.add(t)
    return labels


#: Largest number of values built at once when integrating (draws × rows stored,
#: rows × nodes per draw), and per chunk of rows of a summarised prediction.
BUDGET = 20_000_000


def _seed(random_seed: int | None) -> int:
    """An integer seed: ``random_seed``, or a fresh one."""
    return int(np.random.SeedSequence(random_seed).generate_state(1)[0])


def row_chunks(res, n_rows: int) -> list[slice]:
    """Slices of at most ``BUDGET / draws`` rows: one chunk's draws stay within the budget."""
    posterior = res.idata.posterior
    size = max(1, BUDGET // (posterior.sizes["chain"] * posterior.sizes["draw"]))
    return [slice(lo, lo + size) for lo in range(0, n_rows, size)]


def _free_posterior(res: GLMMResults) -> xr.Dataset:
    names = [v.name for v in res.model.pymc_model.free_RVs]
    return res.idata.posterior[names]


def _new_level_error(block, labels: np.ndarray) -> NewLevelError:
    new = list(dict.fromkeys(labels))
    return NewLevelError(
        f"new data has {len(new)} level(s) of {block.group!r} not seen when fitting "
        f"(e.g. {new[:3]}); pass allow_new_levels=True to draw their effects from the "
        "fitted distribution"
    )


def _prepare(res, frame, keep, pinned, allow_new_levels, seed, tile=1):
    """Data updates, posterior (zeroed/added effects) and dim changes for ``frame``.

    ``frame`` is None for the fitted rows.  Blocks in ``pinned`` are left to
    the caller (their effects are set to chosen ``z`` values).  ``tile`` > 1
    repeats the posterior draws that many times along ``draw``, each copy
    with its own draws of new-level effects.
    """
    design = res.model.design
    posterior = _free_posterior(res).copy()
    if tile > 1:
        posterior = xr.concat([posterior] * tile, dim="draw")
        posterior = posterior.assign_coords(draw=np.arange(posterior.sizes["draw"]))
    updates: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    Zs = [b.Z for b in design.blocks]
    if frame is not None:
        skip = frozenset(b.name for b in design.blocks if b.name in pinned or not keep[b.name])
        nd = design.new_data(frame, skip=skip)
        n = nd.X.shape[0]
        if design.fixed.slope_columns.size:
            updates["X"] = design.fixed.standardized(nd.X)
        if design.offset is not None:
            updates["offset"] = nd.offset
        updates["_y"] = np.zeros(n)
        if design.trials is not None:
            updates["_trials"] = np.ones(n, dtype=np.int64)
        Zs = list(nd.Z)
        for i, block in enumerate(design.blocks):
            idx = nd.idx[i].copy()
            if nd.new_level[i].any():
                labels = level_labels(frame, block.factors)[nd.new_level[i]]
                if not allow_new_levels:
                    raise _new_level_error(block, labels)
                new = list(dict.fromkeys(labels))
                lookup = {lab: len(block.levels) + j for j, lab in enumerate(new)}
                idx[nd.new_level[i]] = [lookup[lab] for lab in labels]
                dims[block.group] = block.levels + tuple(new)
            updates[f"idx_{block.name}"] = idx
        # every block of a factor with new levels shares its dimension, also one re_formula leaves out
        extended = {
            f"z_{b.name}": _extended_z(posterior[f"z_{b.name}"], b, list(dims[b.group][len(b.levels) :]), seed)
            for b in design.blocks
            if b.group in dims and b.name not in pinned
        }
        posterior = replace_effects(posterior, extended)
    for i, block in enumerate(design.blocks):
        kept = block.terms if block.name in pinned else keep[block.name]  # pinned: set by the caller
        if not kept:
            posterior[f"z_{block.name}"] = posterior[f"z_{block.name}"] * 0.0
        elif len(kept) < len(block.terms):
            Z = np.array(Zs[i], dtype=float)
            Z[:, [t not in kept for t in block.terms]] = 0.0
            Zs[i] = Z
        if not block.intercept_only and (frame is not None or len(kept) < len(block.terms)):
            updates[f"Z_{block.name}"] = np.asarray(Zs[i], dtype=float)
    return updates, posterior, dims


def _extended_z(z: xr.DataArray, block, new: list[str], seed: int) -> xr.DataArray:
    """``z`` with standard-normal draws appended for new levels (their effects follow N(0, G)).

    Each level's draws come from its own stream, seeded by ``seed`` and the
    level's label, so a level gets the same effects in every chunk of rows.
    """
    shape = (z.sizes["chain"], z.sizes["draw"], z.sizes[z.dims[-1]])
    draws = [
        np.random.default_rng([seed, zlib.crc32(f"{block.name}\x00{label}".encode())]).standard_normal(shape)
        for label in new
    ]
    coords = {block.group: new, z.dims[-1]: z[z.dims[-1]].values}
    extra = xr.DataArray(np.stack(draws, axis=2), dims=z.dims, coords=coords)
    return xr.concat([z, extra], dim=block.group)


def replace_effects(posterior: xr.Dataset, arrays: dict[str, xr.DataArray]) -> xr.Dataset:
    """``posterior`` with the variables ``arrays`` replaced, whose group dimensions may have new lengths.

    All blocks of one grouping factor share its dimension (``(1 | g) + (0 + x | g)``),
    so they are replaced together; a block left with the old length would conflict.
    """
    if not arrays:
        return posterior
    others = posterior.drop_vars(list(arrays))
    groups = {d for a in arrays.values() for d in a.dims[2:-1]}
    stale = [v for v in others.data_vars if groups & set(others[v].dims)]
    if stale:  # a caller's bug: every block of a resized group must be replaced
        raise RuntimeError(f"effects {stale} of a resized grouping factor were not replaced")
    return others.drop_dims([d for d in groups if d in others.dims]).assign(arrays)


def _clone_with(res, updates, dims) -> pm.Model:
    """The fitted model, cloned, with new data and dimension sizes."""
    model = clone_model(res.model.pymc_model)
    with model:
        for dim, values in dims.items():
            model.set_dim(dim, len(values), coord_values=values)
        if updates:
            pm.set_data(updates)
    return model


@contextmanager
def _quiet_pymc() -> Iterator[None]:
    """Silence PyMC's "Sampling: [...]" line (and its other INFO lines) for every prediction."""
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _evaluate(res, posterior, updates, dims, var, random_seed, weights=None):
    """Run the cloned graph on new data: draws (chain, draw, row) of ``var``.

    ``eta`` and ``mu``, functions of the posterior, are computed for a batch of
    draws at a time (:mod:`bayesglmm.batch`); responses ``y`` are drawn by
    PyMC's ``sample_posterior_predictive`` with ``random_seed``.  With
    ``weights`` (M,) the rows are M stacked copies of the same rows and the
    result is their weighted sum, formed inside the graph so that only
    (chain, draw, row) is ever stored.
    """
    model = _clone_with(res, updates, dims)
    if var == KINDS["response"]:
        with model, _quiet_pymc():
            out = pm.sample_posterior_predictive(
                posterior, var_names=[var], random_seed=random_seed, progressbar=False, return_inferencedata=False
            )
        return np.asarray(out[var])
    if weights is None:
        return batch.deterministic(posterior, model, model[var])
    stacked = model[var].reshape((len(weights), -1))
    return batch.deterministic(posterior, model, pt.dot(pt.as_tensor(weights), stacked), spread=len(weights))


def log_likelihood_draws(res, newdata, y, trials=None, allow_new_levels=False, random_seed=None, repeats=1):
    """Pointwise log-likelihood of responses ``y`` of new rows: (chain, repeats × draw, row).

    Effects of new levels (with ``allow_new_levels``) are drawn from the
    fitted N(0, G), seeded by ``random_seed``: ``repeats`` independent draws
    per posterior draw, evaluated in one pass through the graph.
    """
    keep = kept_terms(res.model.design, None)
    updates, posterior, dims = _prepare(res, newdata, keep, {}, allow_new_levels, _seed(random_seed), repeats)
    updates["_y"] = np.asarray(y, dtype=float)
    if trials is not None:
        updates["_trials"] = np.asarray(trials, dtype=np.int64)
    return batch.log_likelihood(posterior, _clone_with(res, updates, dims), "y")


def _pin_nodes(design, pinned: dict[str, str | float], random_seed):
    """z values (M, sum of k) of the pinned blocks, and quadrature weights (M,)."""
    integrated = [b for b in design.blocks if pinned.get(b.name) == "integrate"]
    nodes, weights = quadrature.normal_nodes(sum(len(b.terms) for b in integrated), random_seed)
    parts, start = {}, 0
    for block in integrated:
        parts[block.name] = nodes[:, start : start + len(block.terms)]
        start += len(block.terms)
    first: dict[str, str] = {}  # of several blocks of one factor, the first holds the quantile
    for block in design.blocks:
        if block.name in pinned and block.name not in parts:
            if first.setdefault(block.group, block.name) == block.name:
                fixed = quadrature.quantile_node(len(block.terms), pinned[block.name])
            else:  # independent of the first block: at its mean, as the other terms of a || block
                fixed = np.zeros(len(block.terms))
            parts[block.name] = np.broadcast_to(fixed, (len(weights), len(block.terms)))
    return parts, weights


def _pinned_draws(res, frame, keep, pinned, allow_new_levels, seed, random_seed):
    """Mean response averaged over nodes of the pinned blocks: (chain, draw, row)."""
    design = res.model.design
    parts, weights = _pin_nodes(design, pinned, random_seed)
    M, n = len(weights), len(frame)
    S = res.idata.posterior.sizes["chain"] * res.idata.posterior.sizes["draw"]
    chunk = max(1, min(BUDGET // S, BUDGET // (4 * M)))  # stored output, per-draw work
    labels = tuple(f"node{m}" for m in range(M))
    out = []
    for lo in range(0, n, chunk):
        sub = frame.iloc[lo : lo + chunk]
        tiled = sub.iloc[np.tile(np.arange(len(sub)), M)]
        updates, posterior, dims = _prepare(res, tiled, keep, pinned, allow_new_levels, seed)
        nodes = {}
        for block in design.blocks:
            if block.name not in pinned:
                continue
            updates[f"idx_{block.name}"] = np.repeat(np.arange(M), len(sub))
            dims[block.group] = labels
            z = posterior[f"z_{block.name}"]
            values = np.broadcast_to(parts[block.name], (z.sizes["chain"], z.sizes["draw"], M, len(block.terms)))
            coords = {"chain": z["chain"], "draw": z["draw"], block.group: list(labels), z.dims[-1]: z[z.dims[-1]]}
            nodes[f"z_{block.name}"] = xr.DataArray(values.copy(), dims=z.dims, coords=coords)
        posterior = replace_effects(posterior, nodes)
        mean = _evaluate(res, posterior, updates, dims, "mu", random_seed, weights)
        out.append(mean.reshape(mean.shape[:2] + (len(sub), -1)))  # (chain, draw, row, category)
    mean = np.concatenate(out, axis=2)
    return mean[..., 0] if mean.shape[-1] == 1 and not res.model.family.categories else mean


def _pinned_blocks(design, keep, marginal, re_quantile) -> dict[str, str | float]:
    """Blocks whose effects are integrated ("integrate") or held at a quantile (float)."""
    pinned: dict[str, str | float] = {}
    if re_quantile is not None:
        by_group = re_quantile if isinstance(re_quantile, dict) else {b.group: re_quantile for b in design.blocks}
        groups = {b.group for b in design.blocks}
        for group, q in by_group.items():
            if group not in groups:
                raise ArgumentError(f"re_quantile names {group!r}, which is not a grouping factor of the model")
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
                raise ArgumentError(f"re_quantile for {group!r} must be a probability in (0, 1), got {q!r}")
            pinned.update({b.name: float(q) for b in design.blocks if b.group == group})
    if marginal:
        for block in design.blocks:
            if block.name in pinned or len(keep[block.name]) == len(block.terms):
                continue
            if keep[block.name]:
                raise ArgumentError(
                    f"marginal=True cannot integrate over part of the ({block.expr} | {block.group}) block; "
                    "keep all of its terms or none in re_formula"
                )
            pinned[block.name] = "integrate"
    for block in design.blocks:
        if block.name in pinned:
            continue
        held = next((b for b in design.blocks if b.group == block.group and b.name in pinned), None)
        if held is not None:  # its blocks share the factor's levels: all are kept, or none
            raise ArgumentError(
                f"marginal=True integrates ({held.expr} | {block.group}) out while re_formula keeps "
                f"({block.expr} | {block.group}); the blocks of one grouping factor are kept or integrated together"
            )
    return pinned


def predict_draws(
    res,
    newdata=None,
    kind="mean",
    re_formula=None,
    allow_new_levels=False,
    random_seed=None,
    marginal=False,
    re_quantile=None,
):
    """Posterior draws of the prediction, shape (chain, draw, row)."""
    args = (kind, re_formula, allow_new_levels, random_seed, marginal, re_quantile)
    return _draws(res, newdata, *args, level_seed=_seed(random_seed))


def _check_newdata(newdata, design) -> None:
    """A DataFrame (or None) whose rows are complete, checked before any are repeated."""
    if newdata is not None and not isinstance(newdata, pd.DataFrame):
        raise ArgumentError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    if newdata is not None:
        design.new_rows(newdata)


def _draws(res, newdata, kind, re_formula, allow_new_levels, random_seed, marginal, re_quantile, level_seed):
    """:func:`predict_draws`, with new levels' effects seeded by ``level_seed`` and
    response draws and quadrature nodes by ``random_seed``."""
    if kind not in KINDS:
        raise ArgumentError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    _check_newdata(newdata, res.model.design)
    if not isinstance(marginal, bool):
        raise ArgumentError(f"marginal must be True or False, got {marginal!r}")
    design = res.model.design
    if marginal and re_formula is None:
        re_formula = "~0"  # population-averaged over every random effect
    keep = kept_terms(design, re_formula)
    pinned = _pinned_blocks(design, keep, marginal, re_quantile)
    if not pinned:
        updates, posterior, dims = _prepare(res, newdata, keep, pinned, allow_new_levels, level_seed)
        draws = _evaluate(res, posterior, updates, dims, KINDS[kind], random_seed)
        return res.model.family.decode(draws) if kind == "response" else draws
    if kind == "response":
        raise ArgumentError(
            "kind='response' cannot be combined with marginal=True or re_quantile; use kind='mean', "
            "or allow_new_levels=True with new group labels to draw responses for new groups"
        )
    frame = design.data if newdata is None else newdata
    mean = _pinned_draws(res, frame, keep, pinned, allow_new_levels, level_seed, random_seed)
    if kind == "link":
        if mean.ndim == 4:
            raise ArgumentError("kind='link' of averaged category probabilities is not defined; use kind='mean'")
        with np.errstate(divide="ignore"):
            return res.model.link.forward_np(mean)
    return mean


def predict(
    res,
    newdata=None,
    kind="mean",
    re_formula=None,
    allow_new_levels=False,
    prob=0.94,
    summary=True,
    random_seed=None,
    marginal=False,
    re_quantile=None,
):
    """Posterior predictions for the fitted or new rows.

    Parameters
    ----------
    res : GLMMResults
    newdata : DataFrame, optional
        Rows to predict; the fitted rows when omitted.  Grouping columns may
        be absent for blocks that ``re_formula`` leaves out or that are
        integrated out.
    kind : {"mean", "link", "response"}
        Expected response (probability for binomial), linear predictor, or
        posterior predictive draws of the response.  With ``marginal`` or
        ``re_quantile``, ``"link"`` is the link of the averaged mean.  Drawn
        categories are their values (ordinal: the numbers, or 1, ..., K for
        labels) or, unordered, codes 0, ..., K-1 in the order of
        ``res.model.family.categories``, which have no summary.
    re_formula : str, optional
        Which random effects to include (None: all; "~0": none).
    allow_new_levels : bool
        Allow unseen group levels (effects drawn from the fitted N(0, G)).
    prob : float
        HDI probability of the summary.
    summary : bool
        DataFrame of ``mean, sd, hdi_low, hdi_high`` per row, or the raw
        draws (chain, draw, row).  Ordinal models: ``kind="mean"`` gives one
        probability per category, a long table with a ``category`` column
        (draws: (chain, draw, row, category)).
    random_seed : int, optional
        Seeds response draws, new-level effects and quasi-Monte Carlo nodes.
    marginal : bool
        Population-averaged predictions: per posterior draw, average the mean
        response over the fitted N(0, G) of every random effect that
        ``re_formula`` leaves out (all of them when ``re_formula`` is None).
    re_quantile : float or dict, optional
        Hold random effects at this quantile of their fitted distribution
        (e.g. 0.2 for the 20th percentile doctor); a dict maps grouping
        factors to quantiles.  For a block with slopes the first term is set
        to its quantile and the others to their conditional mean; of several
        blocks of one factor (``(1 | g) + (0 + x | g)``) the first is held
        so, and the others at their mean, 0, as with ``(1 + x || g)``.
    """
    prob = stats.check_prob(prob)
    args = (kind, re_formula, allow_new_levels)
    if summary and kind == "response" and res.model.family.name == "categorical":
        raise ArgumentError(
            "a mean and interval of unordered category codes mean nothing; use kind='mean' for each "
            "category's probability, or summary=False for the drawn codes (0, 1, ... in the order of "
            f"res.model.family.categories: {list(res.model.family.categories)})"
        )
    if not summary:
        return predict_draws(res, newdata, *args, random_seed, marginal, re_quantile)
    _check_newdata(newdata, res.model.design)
    frame = res.model.design.data if newdata is None else newdata
    chunks = row_chunks(res, len(frame))
    if len(chunks) == 1:
        return _summary(res, predict_draws(res, newdata, *args, random_seed, marginal, re_quantile), frame, kind, prob)
    # large data: summarise chunk by chunk, never holding (draws × rows); every chunk shares
    # the seed of new levels' effects and has its own stream of response draws
    seed = _seed(random_seed)
    parts = []
    for c, rows in enumerate(chunks):
        sub = frame.iloc[rows]
        chunk_seed = int(np.random.SeedSequence([seed, c]).generate_state(1)[0])
        draw_seed = chunk_seed if kind == "response" else seed  # quadrature nodes: the same in every chunk
        draws = _draws(res, sub, *args, draw_seed, marginal, re_quantile, level_seed=seed)
        parts.append(_summary(res, draws, sub, kind, prob))
    return pd.concat(parts)


def _summary(res, draws: np.ndarray, frame: pd.DataFrame, kind: str, prob: float) -> pd.DataFrame:
    """Per row (and category) ``mean, sd, hdi_low, hdi_high`` of prediction draws."""
    index = frame.index
    s = stats.summarize(draws.astype(float), prob, diagnostics=False)
    columns = {k: s[k].reshape(-1) for k in ("mean", "sd", "hdi_low", "hdi_high")}
    if draws.ndim == 4:  # one value per category: long format, rows repeated
        family = res.model.family
        categories = family.predictor_names if kind == "link" else family.categories
        return pd.DataFrame(
            {"category": np.tile(categories, len(index)), **columns}, index=index.repeat(len(categories))
        )
    return pd.DataFrame(columns, index=index)
