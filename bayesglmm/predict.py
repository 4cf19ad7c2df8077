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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr
from pymc.model.fgraph import clone_model

from . import stats
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
        for t in block.terms:
            if (t == "Intercept" and ("1" in parts or "0" not in parts)) or t.split("[")[0] in parts:
                labels.add(t)
    return labels


def _free_posterior(res: GLMMResults) -> xr.Dataset:
    names = [v.name for v in res.model.pymc_model.free_RVs]
    return res.idata.posterior[names]


def _prepare(res, newdata, keep, allow_new_levels, rng):
    """Data updates, posterior (with zeroed/added effects) and dim changes."""
    design = res.model.design
    posterior = _free_posterior(res).copy()
    updates: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    Zs = [b.Z for b in design.blocks]
    if newdata is not None:
        nd = design.new_data(newdata)
        frame = newdata
        n = nd.X.shape[0]
        if design.fixed.slope_columns.size:
            updates["X"] = design.fixed.standardized(nd.X)
        if design.offset is not None:
            updates["offset"] = nd.offset
        updates["_y"] = np.zeros(n)
        if design.trials is not None:
            updates["_trials"] = np.ones(n)
        Zs = list(nd.Z)
        for i, block in enumerate(design.blocks):
            idx = nd.idx[i].copy()
            if nd.new_level[i].any():
                labels = level_labels(frame, block.factors)[nd.new_level[i]]
                new = list(dict.fromkeys(labels))
                if not allow_new_levels:
                    raise NewLevelError(
                        f"new data has {len(new)} level(s) of {block.group!r} not seen when fitting "
                        f"(e.g. {new[:3]}); pass allow_new_levels=True to draw their effects from the "
                        "fitted distribution"
                    )
                lookup = {lab: len(block.levels) + j for j, lab in enumerate(new)}
                idx[nd.new_level[i]] = [lookup[lab] for lab in labels]
                dims[block.group] = block.levels + tuple(new)
                posterior = _extend(posterior, block, new, rng)
            updates[f"idx_{block.name}"] = idx
    for i, block in enumerate(design.blocks):
        kept = keep[block.name]
        if not kept:
            posterior[f"z_{block.name}"] = posterior[f"z_{block.name}"] * 0.0
        elif len(kept) < len(block.terms):
            Z = np.array(Zs[i], dtype=float)
            Z[:, [t not in kept for t in block.terms]] = 0.0
            Zs[i] = Z
        if not block.intercept_only and (newdata is not None or len(kept) < len(block.terms)):
            updates[f"Z_{block.name}"] = np.asarray(Zs[i], dtype=float)
    return updates, posterior, dims


def _extend(posterior: xr.Dataset, block, new: list[str], rng: np.random.Generator) -> xr.Dataset:
    """Append standard-normal z draws for new levels (their effects follow N(0, G))."""
    z = posterior[f"z_{block.name}"]
    shape = (z.sizes["chain"], z.sizes["draw"], len(new), z.sizes[z.dims[-1]])
    coords = {block.group: new, z.dims[-1]: z[z.dims[-1]].values}
    extra = xr.DataArray(rng.standard_normal(shape), dims=z.dims, coords=coords)
    extended = xr.concat([z, extra], dim=block.group)
    others = posterior.drop_vars(f"z_{block.name}")
    others = others.drop_dims(block.group) if block.group in others.dims else others
    return others.assign({f"z_{block.name}": extended})


def predict_draws(res, newdata=None, kind="mean", re_formula=None, allow_new_levels=False, random_seed=None):
    """Posterior draws of the prediction, shape (chain, draw, row)."""
    if kind not in KINDS:
        raise ArgumentError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if newdata is not None and not isinstance(newdata, pd.DataFrame):
        raise ArgumentError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    rng = np.random.default_rng(random_seed)
    keep = kept_terms(res.model.design, re_formula)
    updates, posterior, dims = _prepare(res, newdata, keep, allow_new_levels, rng)
    model = clone_model(res.model.pymc_model)
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)  # silence "Sampling: [...]" for every prediction
    try:
        with model:
            for dim, values in dims.items():
                model.set_dim(dim, len(values), coord_values=values)
            if updates:
                pm.set_data(updates)
            out = pm.sample_posterior_predictive(
                posterior,
                var_names=[KINDS[kind]],
                random_seed=random_seed,
                progressbar=False,
                return_inferencedata=False,
            )
    finally:
        logger.setLevel(level)
    return np.asarray(out[KINDS[kind]])


def predict(
    res, newdata=None, kind="mean", re_formula=None, allow_new_levels=False, prob=0.94, summary=True, random_seed=None
):
    """Posterior predictions for the fitted or new rows.

    Parameters
    ----------
    res : GLMMResults
    newdata : DataFrame, optional
        Rows to predict; the fitted rows when omitted.
    kind : {"mean", "link", "response"}
        Expected response (probability for binomial), linear predictor, or
        posterior predictive draws of the response.
    re_formula : str, optional
        Which random effects to include (None: all; "~0": none).
    allow_new_levels : bool
        Allow unseen group levels (effects drawn from the fitted N(0, G)).
    prob : float
        HDI probability of the summary.
    summary : bool
        DataFrame of ``mean, sd, hdi_low, hdi_high`` per row, or the raw
        draws (chain, draw, row).
    random_seed : int, optional
        Seeds response draws and new-level effects.
    """
    prob = stats.check_prob(prob)
    draws = predict_draws(res, newdata, kind, re_formula, allow_new_levels, random_seed)
    if not summary:
        return draws
    index = (res.model.design.data if newdata is None else newdata).index
    s = stats.summarize(draws.astype(float), prob, diagnostics=False)
    return pd.DataFrame({k: s[k] for k in ("mean", "sd", "hdi_low", "hdi_high")}, index=index)
