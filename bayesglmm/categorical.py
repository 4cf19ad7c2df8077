"""Unordered responses: the categorical (multinomial, baseline-category logit) model.

For K categories with the first as reference, each other category k has its own
linear predictor ``eta_k`` (its own intercept, coefficients and random effects)
and ``P(y = k) = exp(eta_k) / (1 + Σ_j exp(eta_j))``.  The design repeats every
fixed column and random-effect term once per non-reference category
(:func:`bayesglmm.design.expand_predictors`); coefficients are labelled
``x[k]``.  ``(1 | g)`` gives every category its random intercept, correlated
across categories through one LKJ prior (``(1 || g)``: independent); the
random utilities' errors are Gumbel, so each latent difference ``eta_k`` has
residual variance π²/3, which the ICC uses (one ICC per category).

The reference category is the first: the first of a pandas Categorical's
categories, otherwise the smallest value.  Reorder the categories to change it.
``predict(kind="mean")`` gives one probability per category (they sum to one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from .errors import ResponseError
from .families import _BINARY_LINK_VARIANCE, Family
from .ordinal import MAX_CATEGORIES


@dataclass(frozen=True)
class Categorical(Family):
    """Baseline-category (multinomial) logit model with one linear predictor per non-reference category."""

    name: str = "categorical"
    links: tuple[str, ...] = ("logit",)
    default_link: str = "logit"
    #: the response's codes 0..K-1 (or its numeric values), in category order
    values: tuple = ()

    @property
    def predictor_names(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.categories[1:])

    def check_response(self, y, trials, name):
        super().check_response(y, trials, name)
        values = np.unique(y)
        if values.size < 2:
            raise ResponseError(f"response {name!r} has a single category; a categorical model has nothing to fit")
        if values.size > MAX_CATEGORIES:
            raise ResponseError(
                f"response {name!r} has {values.size} distinct values; a categorical model expects "
                f"at most {MAX_CATEGORIES} categories; is it continuous?"
            )

    def prepare_response(self, data, response):
        """Text, boolean or categorical responses become codes 0..K-1 in category order."""
        if not isinstance(data, pd.DataFrame) or response not in data.columns:
            return data, None  # build_design reports data that is not a DataFrame
        column = data[response]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            return data, None
        if isinstance(column.dtype, pd.CategoricalDtype):
            present = [c for c in column.cat.categories if (column == c).any()]
        else:
            present = sorted(column.dropna().unique().tolist())
        codes = pd.Categorical(column, categories=present).codes.astype(float)
        return data.assign(**{response: np.where(column.isna(), np.nan, codes)}), tuple(present)

    def fitted_to(self, y, labels=None):
        values = tuple(float(v) for v in np.unique(y))
        return replace(self, values=values, categories=tuple(labels) if labels else values)

    def encode(self, y):
        return np.searchsorted(np.asarray(self.values), y).astype(float)

    def decode(self, codes):
        return np.asarray(self.values)[np.asarray(codes, dtype=np.int64)]

    @staticmethod
    def _logits(eta: pt.TensorVariable) -> pt.TensorVariable:
        """Logits of every category, the reference's fixed at 0: (row, K)."""
        return pt.concatenate([pt.zeros((eta.shape[0], 1)), eta], axis=1)

    def likelihood(self, name, eta, link, params, observed, trials):
        codes = pt.cast(observed, "int64")
        return pm.Categorical(name, logit_p=self._logits(eta), observed=codes, shape=eta.shape[0])

    def mean(self, eta, link, params):
        """Category probabilities, shape (row, K)."""
        return pt.special.softmax(self._logits(eta), axis=1)

    def latent_variance(self, link, params, mean=None):
        return _BINARY_LINK_VARIANCE[link.name]
