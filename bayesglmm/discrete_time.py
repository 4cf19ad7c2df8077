"""Discrete-time durations as binary GLMMs (continuation-ratio data).

A spell that ends in period ``T`` (with an event, or censored) contributes
one row per period at risk, ``1..T``; the binary outcome is 1 only in the
last row of a spell that ends with the event.  A bernoulli GLMM of that
outcome on the period (as a factor or a smooth function) and covariates
models the discrete-time hazard: ``logit`` gives the proportional-odds
(continuation-ratio) model, ``cloglog`` the grouped-time proportional-hazards
model.  Ordinal responses analysed as "reaching the next category given
having reached this one" expand the same way.

>>> long = bg.expand_discrete_time(df, time="weeks", event="relapsed")
>>> bg.GLMM("event ~ C(period) + treatment + (1 | clinic)", long, family="bernoulli", link="cloglog")
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError


def expand_discrete_time(
    data: pd.DataFrame, time: str, event: str, period: str = "period", outcome: str = "event"
) -> pd.DataFrame:
    """Person-level durations to person-period rows.

    Parameters
    ----------
    data : DataFrame
        One row per spell; not modified.
    time : str
        Column with the last period observed (a positive integer).
    event : str
        Column that is 1 if the spell ended with the event in period ``time``
        and 0 if it was censored then.
    period, outcome : str
        Names of the new columns: the period at risk (1, 2, ...) and the
        binary outcome.

    Returns
    -------
    DataFrame with ``sum(time)`` rows (a fresh index): every original
    column repeated per period, plus ``period`` and ``outcome``.
    """
    if not isinstance(data, pd.DataFrame):
        raise ArgumentError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    for column in (time, event):
        if column not in data.columns:
            raise DataError(f"{column!r} is not a column of data")
    for name in (period, outcome):
        if name in data.columns:
            raise ArgumentError(f"data already has a column {name!r}; choose another name for it")
    t, d = data[time], data[event]
    if t.isna().any() or d.isna().any():
        raise DataError(f"{time!r} or {event!r} has missing values ({int(t.isna().sum() + d.isna().sum())})")
    t_values = pd.to_numeric(t, errors="coerce").to_numpy(dtype=float)
    if np.isnan(t_values).any() or np.any(t_values < 1) or np.any(t_values != np.round(t_values)):
        raise DataError(f"{time!r} must hold positive integers (the last period observed)")
    d_values = pd.to_numeric(d, errors="coerce").to_numpy(dtype=float)
    if not np.isin(d_values, (0, 1)).all():
        raise DataError(f"{event!r} must be 0 (censored) or 1 (event)")
    counts = t_values.astype(np.int64)
    long = data.iloc[np.repeat(np.arange(len(data)), counts)].copy()  # by position: the index may repeat
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    long[period] = within + 1
    last = long[period].to_numpy() == np.repeat(counts, counts)
    long[outcome] = (last & (np.repeat(d_values, counts) == 1)).astype(np.int64)
    return long.reset_index(drop=True)
