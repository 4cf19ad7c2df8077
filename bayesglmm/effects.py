"""Interpretation: variance partition (ICC) and average marginal effects.

* :func:`icc` — per grouping factor, the share of the latent-scale variance
  between its levels, ``v_b / (Σ v + σ²_latent)``, per posterior draw.  The
  level-1 latent variance comes from the family: σ² (gaussian), π²/3 (logit),
  1 (probit), π²/6 (cloglog), and for log-link counts the log-normal
  approximation ``log(1 + 1/λ)`` with ``λ`` the mean count of a typical group
  averaged over the data (Nakagawa, Johnson & Schielzeth 2017).  With random
  slopes, ``v_b = zᵀ G_b z`` depends on the covariates: ``at`` sets them
  (default 0, i.e. the intercept variance).
* :func:`comparisons` and :func:`slopes` — average differences and
  derivatives of the mean response over the data (or ``newdata``), either
  conditional on the fitted random effects (``re_formula``) or
  population-averaged (``marginal=True``); on the link scale the
  population-averaged difference is the marginal (population-averaged)
  coefficient, e.g. the log odds ratio that is smaller than the conditional one.

Every prediction goes through :mod:`bayesglmm.predict`, i.e. the PyMC graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import stats
from .errors import ArgumentError
from .predict import predict_draws

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults

SUMMARY = ["mean", "sd", "hdi_low", "hdi_high"]


# ---- ICC ------------------------------------------------------------------------
def _term_vector(block, at: Mapping[str, Any]) -> np.ndarray:
    """Values of a block's terms at covariate values ``at`` (unset terms: 0)."""
    values = np.zeros(len(block.terms))
    for i, term in enumerate(block.base_terms):
        if term == "Intercept":
            values[i] = 1.0
        elif term in at:
            values[i] = float(at[term])
        elif "[" in term and term.split("[")[0] in at:
            var, level = term[:-1].split("[", 1)
            values[i] = float(str(at[var]) == level)
    return values


def _check_at(res: GLMMResults, at: Mapping[str, Any]) -> None:
    if not isinstance(at, Mapping):
        raise ArgumentError(f"at must be a dict of covariate values, got {type(at).__name__}")
    known = {t.split("[")[0] for b in res.model.design.blocks for t in b.base_terms} | {
        t for b in res.model.design.blocks for t in b.base_terms
    }
    unknown = [k for k in at if k not in known]
    if unknown:
        slopes = sorted(known - {"Intercept"})
        raise ArgumentError(f"at names {unknown}, which are not random-slope terms; the model's are {slopes or 'none'}")


def block_variances(res: GLMMResults, at: Mapping[str, Any] | None = None, predictor: int = 0) -> dict[str, np.ndarray]:
    """Latent-scale variance of every block at covariates ``at``: draws (chain, draw).

    With several linear predictors (categorical), the variance of one of them.
    """
    at = {} if at is None else at
    _check_at(res, at)
    out = {}
    for block in res.model.design.blocks:
        z = _term_vector(block, at)
        if block.predictor:
            z = np.where(np.asarray(block.predictor) == predictor, z, 0.0)
        sd = res.draws(f"sd_{block.name}")
        cor = res.draws(f"cor_{block.name}") if block.correlated else np.eye(len(block.terms))
        G = sd[..., :, None] * sd[..., None, :] * cor
        out[block.name] = np.einsum("i,...ij,j->...", z, G, z)
    return out


def latent_residual_variance(res: GLMMResults, total_re: np.ndarray) -> np.ndarray:
    """Level-1 variance on the latent scale per draw (family-specific)."""
    family, link = res.model.family, res.model.link
    params = {name: res.draws(name) for name in family.aux}
    typical = None
    if link.name == "log":  # mean count of a random group: E exp(u) = exp(v / 2)
        typical = predict_draws(res, kind="mean", re_formula="~0").mean(axis=-1) * np.exp(total_re / 2.0)
    return np.broadcast_to(family.latent_variance(link, params, typical), total_re.shape)


def icc_draws(res: GLMMResults, at: Mapping[str, Any] | None = None, predictor: int = 0) -> dict[str, np.ndarray]:
    """Latent-scale ICC of every grouping factor, draws (chain, draw); one linear predictor's.

    The blocks of one factor (``(1 | g) + (0 + x | g)``) are independent
    effects of the same levels: their variances add, as the terms of a ``||`` block's do.
    """
    variances = block_variances(res, at, predictor=predictor)
    total = sum(variances.values())
    resid = latent_residual_variance(res, total)
    groups: dict[str, np.ndarray] = {}
    for block in res.model.design.blocks:
        groups[block.group] = groups.get(block.group, 0.0) + variances[block.name]
    return {group: v / (total + resid) for group, v in groups.items()}


def icc(res: GLMMResults, at: Mapping[str, Any] | None = None, prob: float = 0.94) -> pd.DataFrame:
    """Intraclass correlation per grouping factor on the latent scale.

    Returns one row per grouping factor (``group``, ``mean, sd, hdi_low,
    hdi_high``): the share of latent variance between its levels.  Nested
    factors (``a`` and ``a:b``) each get their own share; the correlation of
    two units sharing both is the sum of the two.  Categorical models get one
    row per grouping factor and non-reference category (column ``category``):
    the ICC of that category's latent utility difference.
    """
    prob = stats.check_prob(prob)
    design = res.model.design
    if not design.blocks:
        raise ArgumentError("the model has no random effects, so no ICC")
    frames = []
    for p in range(design.n_predictors):
        shares = icc_draws(res, at, predictor=p)
        s = stats.summarize(np.stack(list(shares.values()), axis=-1), prob, diagnostics=False)
        frame = pd.DataFrame({"group": list(shares), **{k: s[k] for k in SUMMARY}})
        if design.predictors:
            frame.insert(1, "category", design.predictors[p])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ---- comparisons and slopes -------------------------------------------------------
def _frame(res: GLMMResults, newdata: pd.DataFrame | None, variable: str) -> pd.DataFrame:
    frame = res.model.design.data if newdata is None else newdata
    if not isinstance(frame, pd.DataFrame):
        raise ArgumentError(f"newdata must be a pandas DataFrame, got {type(frame).__name__}")
    if not isinstance(variable, str) or variable not in res.model.design.data.columns:
        raise ArgumentError(f"variable {variable!r} is not a column the model was fitted with")
    if variable not in frame.columns:
        raise ArgumentError(f"newdata lacks the column {variable!r}")
    if newdata is not None:
        res.model.design.new_rows(newdata)  # complete rows, checked before they are repeated
    return frame


def _contrasts(res: GLMMResults, frame: pd.DataFrame, variable: str, values) -> list[tuple[str, Any, Any]]:
    """(label, low, high) of each comparison; a value None means 'the row's own value'."""
    column = res.model.design.data[variable]
    if values is not None:
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 2:
            raise ArgumentError(f"values must be a pair (low, high), got {values!r}")
        return [(f"{values[1]} - {values[0]}", values[0], values[1])]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return [("+1", None, 1.0)]
    levels = list(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.unique())
    return [(f"{lev} - {levels[0]}", levels[0], lev) for lev in levels[1:]]


def _set(frame: pd.DataFrame, variable: str, value, shift: bool = False) -> pd.DataFrame:
    if value is None:
        return frame
    if shift:
        return frame.assign(**{variable: frame[variable] + value})
    return frame.assign(**{variable: [value] * len(frame)})


def _average(draws: np.ndarray, frame: pd.DataFrame, by: str | None):
    """Average (chain, draw, row[, category]) draws over rows, overall or per level of ``by``."""
    if by is None:
        return [((), draws.mean(axis=2))]
    if by not in frame.columns:
        raise ArgumentError(f"by={by!r} is not a column of the data")
    keys = frame[by].to_numpy()
    return [((level,), draws[:, :, keys == level].mean(axis=2)) for level in pd.unique(keys)]


def _per_category(records, categories) -> list:
    """Split records whose draws carry a category axis into one record per category."""
    out = []
    for *key, d in records:
        if d.ndim == 2:
            out.append((*key, d))
        else:
            out += [(*key, cat, d[..., k]) for k, cat in enumerate(categories)]
    return out


def _table(records, by, prob, ratio_name, categories=()) -> pd.DataFrame:
    per_category = records[0][-1].ndim > 2  # draws (chain, draw, category)
    records = _per_category(records, categories)
    draws = np.stack([d for *_, d in records], axis=-1)
    s = stats.summarize(draws, prob, diagnostics=False)
    keys = ["term", "contrast"] + ([by] if by else []) + (["category"] if per_category else [])
    out = pd.DataFrame([r[:-1] for r in records], columns=keys)
    for k in SUMMARY:
        out[k] = s[k]
    if ratio_name is not None:
        e = stats.summarize(np.exp(draws), prob, diagnostics=False)
        out["exp_mean"], out["exp_hdi_low"], out["exp_hdi_high"] = e["mean"], e["hdi_low"], e["hdi_high"]
    return out


def comparisons(
    res: GLMMResults,
    variable: str,
    values: Sequence | None = None,
    by: str | None = None,
    marginal: bool = False,
    newdata: pd.DataFrame | None = None,
    re_formula: str | None = None,
    scale: str = "response",
    prob: float = 0.94,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """Average difference in the expected response when ``variable`` changes.

    Parameters
    ----------
    variable : str
        A column of the data.  Numeric: each row's value + 1 vs its value;
        categorical: every level vs the first.  ``values=(low, high)`` sets
        both explicitly for every row.
    by : str, optional
        Average within the levels of this column instead of over all rows.
    marginal : bool
        Population-averaged: integrate the random effects over their fitted
        distribution (otherwise conditional on them, per ``re_formula``).
    scale : {"response", "link"}
        Difference of means, or difference of the link of the means (on the
        link scale with ``marginal=True``: the population-averaged
        coefficient; ``exp_*`` columns give odds or rate ratios).
    """
    prob = stats.check_prob(prob)
    if scale not in ("response", "link"):
        raise ArgumentError(f"scale must be 'response' or 'link', got {scale!r}")
    frame = _frame(res, newdata, variable)
    link = res.model.link
    if scale == "link" and res.model.family.categories:
        raise ArgumentError("scale='link' needs one mean per row; ordinal models compare category probabilities")
    records = []
    for label, low, high in _contrasts(res, frame, variable, values):
        shift = low is None
        preds = [
            predict_draws(res, _set(frame, variable, v, shift), "mean", re_formula, False, random_seed, marginal)
            for v in (low, high)
        ]
        if scale == "link":
            with np.errstate(divide="ignore"):
                preds = [link.forward_np(p) for p in preds]
        for key, diff in _average(preds[1] - preds[0], frame, by):
            records.append((variable, label, *key, diff))
    ratio = link.ratio_name if scale == "link" else None
    return _table(records, by, prob, ratio, res.model.family.categories)


def slopes(
    res: GLMMResults,
    variable: str,
    by: str | None = None,
    marginal: bool = False,
    newdata: pd.DataFrame | None = None,
    re_formula: str | None = None,
    prob: float = 0.94,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """Average derivative of the expected response with respect to a numeric ``variable``.

    Central finite differences with step ``1e-4 · sd(variable)``, through the
    model's graph (so transformations such as ``I(age**2)`` are included).
    """
    prob = stats.check_prob(prob)
    frame = _frame(res, newdata, variable)
    column = res.model.design.data[variable]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise ArgumentError(f"slopes need a numeric variable; {variable!r} is categorical: use comparisons()")
    h = 1e-4 * (float(column.std()) or 1.0)
    lo, hi = (
        predict_draws(res, _set(frame, variable, d, True), "mean", re_formula, False, random_seed, marginal)
        for d in (-h / 2, h / 2)
    )
    records = [(variable, "dY/dX", *key, d) for key, d in _average((hi - lo) / h, frame, by)]
    return _table(records, by, prob, None, res.model.family.categories)
