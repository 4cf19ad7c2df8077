"""Exact data reduction for sampling: identical rows of binary and count data collapse.

Rows of a bernoulli, binomial or poisson model that share every covariate value,
offset and group level have the same mean, and their joint likelihood depends on
the data only through the summed response:

* bernoulli / binomial: ``∏ p^y (1-p)^(n-y) ∝ Binomial(Σy | Σn, p)``;
* poisson: ``∏ Pois(y | μ) ∝ Pois(Σy | m μ)``, i.e. an offset ``log m``.

The factors dropped are constants, so the posterior is the same.  NUTS samples the
collapsed model (same parameters, same priors, same internal centring); the
pointwise log-likelihood, predictions and every result use the model of the
original rows, so LOO stays per original observation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .design import Design, _frozen
from .families import FAMILIES, Family

#: Collapse only when it removes at least this share of the rows.
MIN_SAVING = 0.2


@dataclass(frozen=True)
class Reduction:
    """Collapsed rows: the ``first`` original row of each, its ``counts``, and the
    collapsed row of every original row (``inverse``)."""

    first: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray


def find(design: Design, family: Family) -> Reduction | None:
    """Identical rows of a reducible model, or None when collapsing saves little."""
    if family.name not in ("bernoulli", "binomial", "poisson"):
        return None
    parts = [design.fixed.X]
    if design.offset is not None:
        parts.append(design.offset[:, None])
    for block in design.blocks:
        parts += [np.asarray(block.idx, dtype=float)[:, None], block.Z]
    keys = np.column_stack(parts)
    _, first, inverse, counts = np.unique(keys, axis=0, return_index=True, return_inverse=True, return_counts=True)
    if first.size > (1.0 - MIN_SAVING) * design.n:
        return None
    return Reduction(first=first, counts=counts, inverse=inverse.reshape(-1))


def collapse(design: Design, family: Family) -> tuple[Design, Family] | None:
    """The collapsed design and its family, or None if the model is not reduced."""
    reduction = find(design, family)
    if reduction is None:
        return None
    rows, inverse = reduction.first, reduction.inverse
    y = np.bincount(inverse, weights=design.y, minlength=rows.size)
    trials = design.trials if design.trials is not None else np.ones(design.n)
    offset = None if design.offset is None else design.offset[rows]
    if family.name == "poisson":
        log_m = np.log(reduction.counts.astype(float))
        offset = log_m if offset is None else offset + log_m
        new_family, new_trials = family, None
    else:
        new_family = FAMILIES["binomial"]
        new_trials = _frozen(np.bincount(inverse, weights=trials, minlength=rows.size).round().astype(np.int64))
    blocks = tuple(replace(b, Z=_frozen(b.Z[rows]), idx=_frozen(np.asarray(b.idx)[rows])) for b in design.blocks)
    fixed = replace(design.fixed, X=_frozen(design.fixed.X[rows]))
    collapsed = replace(
        design,
        y=_frozen(y),
        trials=new_trials,
        offset=None if offset is None else _frozen(offset),
        fixed=fixed,
        blocks=blocks,
        data=design.data.iloc[rows],
    )
    return collapsed, new_family
