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

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from .families import _BINARY_LINK_VARIANCE, CategoryFamily, pick_per_row


def _categorical_logp(value: pt.TensorVariable, logits: pt.TensorVariable) -> pt.TensorVariable:
    """``log p(y_i = value_i)`` of rows with logits (n, K): PyMC's ``Categorical`` density,
    each row's logit gathered with one index (:func:`~bayesglmm.families.pick_per_row`)."""
    return pick_per_row(logits, value) - pt.logsumexp(logits, axis=-1)


def _categorical_random(logits: np.ndarray, rng=None, size=None) -> np.ndarray:
    """Draws 0..K-1 with probabilities ``softmax(logits)`` (rows in the last axis)."""
    batch = tuple(size) if size is not None else np.shape(logits)[:-1]
    p = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    cumulative = np.cumsum(np.broadcast_to(p / p.sum(axis=-1, keepdims=True), (*batch, np.shape(logits)[-1])), axis=-1)
    return (rng.uniform(size=(*batch, 1)) > cumulative[..., :-1]).sum(axis=-1)


@dataclass(frozen=True)
class Categorical(CategoryFamily):
    """Baseline-category (multinomial) logit model with one linear predictor per non-reference category."""

    name: str = "categorical"
    links: tuple[str, ...] = ("logit",)
    default_link: str = "logit"
    noun: str = "a categorical model"

    @property
    def predictor_names(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.categories[1:])

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

    @staticmethod
    def _logits(eta: pt.TensorVariable) -> pt.TensorVariable:
        """Logits of every category, the reference's fixed at 0: (row, K)."""
        return pt.concatenate([pt.zeros((eta.shape[0], 1)), eta], axis=1)

    def likelihood(self, name, eta, link, params, observed, trials):
        codes = pt.cast(observed, "int64")
        return pm.CustomDist(
            name,
            self._logits(eta),
            logp=_categorical_logp,
            random=_categorical_random,
            signature="(k)->()",
            observed=codes,
            dtype="int64",
        )

    def mean(self, eta, link, params):
        """Category probabilities, shape (row, K)."""
        return pt.special.softmax(self._logits(eta), axis=1)

    def latent_variance(self, link, params, mean=None):
        return _BINARY_LINK_VARIANCE[link.name]
