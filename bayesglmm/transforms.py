"""Formula helpers for contextual effects: cluster means and within-cluster centring.

``gmean(x, g)`` is the mean of ``x`` in each level of ``g``; ``gcenter(x, g)``
is ``x - gmean(x, g)``.  Together they split a covariate's effect into a
between-cluster (contextual) and a within-cluster part, as in the seed
article's school-mean SES::

    y ~ gcenter(ses, school) + gmean(ses, school) + (1 | school)

Both are *stateful*, like formulae's ``center`` and ``scale``: the means are
computed once from the data used for fitting and reused unchanged for new
data (predictions, comparisons).  A level of ``g`` not seen in fitting gets
the mean of its own rows in the new data (its cluster mean, as it would have
been computed had it been there).

Formulas also know numpy (``np.log(x)``) and R's names for common functions
(``log``, ``exp``, ``sqrt``, ``factor``; :data:`R_FUNCTIONS`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulae.transforms import C

from ._data import group_labels


def _labels(g) -> pd.Series:
    """Group labels as the model's grouping factors make them (:func:`bayesglmm._data.level_labels`)."""
    return pd.Series(group_labels(pd.Series(np.asarray(g))))


class GroupMean:
    """``gmean(x, g)``: stateful cluster mean of ``x`` over the levels of ``g``."""

    __stateful_transform__ = True

    def __init__(self) -> None:
        self.means: dict[str, float] | None = None

    def __call__(self, x, g) -> np.ndarray:
        values = np.asarray(x, dtype=float)
        labels = _labels(g)
        if values.shape != labels.shape:
            raise ValueError("gmean(x, g): x and g must have the same length")
        own = pd.Series(values).groupby(labels.values).transform("mean").to_numpy()
        if self.means is None:
            self.means = pd.Series(values).groupby(labels.values).mean().to_dict()
            return own
        stored = labels.map(self.means).to_numpy(dtype=float)
        return np.where(np.isnan(stored), own, stored)


class GroupCenter(GroupMean):
    """``gcenter(x, g)``: ``x`` minus its (stateful) cluster mean."""

    def __call__(self, x, g) -> np.ndarray:
        return np.asarray(x, dtype=float) - super().__call__(x, g)


#: R's names of functions that R users write in formulas (``factor(x)`` is formulae's ``C(x)``).
R_FUNCTIONS = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "factor": C,
}

#: Names available inside every formula, after the user's own (see ``GLMM(eval_env=...)``).
NAMESPACE = {"np": np, "numpy": np, **R_FUNCTIONS, "gmean": GroupMean, "gcenter": GroupCenter}
