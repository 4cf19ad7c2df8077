"""Complete and quasi-complete separation of a binary (or binomial) response.

A predictor *separates* the response when a threshold on it splits the rows
with successes from the rows with failures: the likelihood then keeps
improving as its coefficient grows without bound, and the posterior of that
coefficient is decided by the prior alone.  *Quasi-complete* separation
allows ties at the threshold (a category whose rows are all 1s, say).
Combinations of predictors can separate when no single one does; a linear
programme (Konis 2007) finds such a direction and names the columns in it.

Groups: a level whose outcomes are all equal (the seed's doctor whose few
patients were all in remission) has no within-level variability.  With a
random effect this is not fatal — its effect is shrunk towards the others —
but it is reported, since the SD may rest on such levels.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from .errors import DataWarning

if TYPE_CHECKING:  # pragma: no cover
    from .design import Design

#: Rows beyond which the joint (linear programme) check is skipped.
LP_MAX_ROWS = 200_000
COLUMNS = ["kind", "what", "detail"]


def _outcomes(design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Rows holding at least one success, and at least one failure."""
    y = design.y
    trials = np.ones_like(y) if design.trials is None else design.trials
    return y > 0, y < trials


def _univariate(design: Design, success: np.ndarray, failure: np.ndarray) -> list[tuple[str, str, str]]:
    out = []
    for j, label in enumerate(design.fixed.labels):
        if label == "Intercept":
            continue
        x = design.fixed.X[:, j]
        xs, xf = x[success], x[failure]
        for high, low, side in ((xs, xf, "successes"), (xf, xs, "failures")):
            if high.min() > low.max():
                out.append(("predictor", label, f"complete: every row with {side} has {label} > {low.max():g}"))
            elif high.min() == low.max() and np.ptp(x) > 0:
                ties = int(np.sum(x == low.max()))
                out.append(
                    (
                        "predictor",
                        label,
                        f"quasi-complete: {side} only where {label} >= {low.max():g} ({ties} tied rows)",
                    )
                )
    return out


def _joint(design: Design, success: np.ndarray, failure: np.ndarray) -> tuple[str, ...]:
    """Columns of a separating direction found by linear programming (empty if none)."""
    X = design.fixed.X
    if X.shape[0] > LP_MAX_ROWS or X.shape[1] == 0:
        return ()
    scale = np.where(np.ptp(X, axis=0) > 0, np.abs(X).max(axis=0), 1.0)
    Xs = X / scale
    only_s, only_f, mixed = success & ~failure, failure & ~success, success & failure
    # maximise sum over one-outcome rows of s_i x_i b subject to s_i x_i b >= 0, mixed rows x_i b = 0
    sign = np.where(only_s, 1.0, -1.0)[only_s | only_f]
    A = sign[:, None] * Xs[only_s | only_f]
    result = linprog(
        -A.sum(axis=0),
        A_ub=-A,
        b_ub=np.zeros(A.shape[0]),
        A_eq=Xs[mixed] if mixed.any() else None,
        b_eq=np.zeros(int(mixed.sum())) if mixed.any() else None,
        bounds=[(-1.0, 1.0)] * X.shape[1],
        method="highs",
    )
    if result.status != 0 or -result.fun < 1e-7 * A.shape[0]:
        return ()
    beta = result.x
    return tuple(lab for lab, b in zip(design.fixed.labels, beta) if abs(b) > 1e-6 and lab != "Intercept")


def _groups(design: Design, success: np.ndarray, failure: np.ndarray) -> list[tuple[str, str, str]]:
    out = []
    for block in design.blocks:
        J = len(block.levels)
        has_s = np.bincount(block.idx, weights=success, minlength=J) > 0
        has_f = np.bincount(block.idx, weights=failure, minlength=J) > 0
        same = np.flatnonzero(~(has_s & has_f))
        if same.size:
            example = ", ".join(str(block.levels[j]) for j in same[:3])
            out.append(
                (
                    "group",
                    block.group,
                    f"{same.size} of {J} levels have all outcomes equal (e.g. {example}); their effects "
                    "are identified through the random-effect distribution only",
                )
            )
    return out


def separation(design: Design) -> pd.DataFrame:
    """Every finding of separation: DataFrame with ``kind, what, detail``.

    ``kind`` is ``"predictor"`` (one column separates), ``"combination"`` (a
    linear combination of the named columns separates) or ``"group"``
    (levels of a grouping factor with all outcomes equal).
    """
    success, failure = _outcomes(design)
    rows = _univariate(design, success, failure)
    single = {what for kind, what, _ in rows}
    joint = _joint(design, success, failure)
    if joint and not set(joint) <= single:
        rows.append(("combination", " + ".join(joint), "a linear combination of these columns separates the outcomes"))
    rows += _groups(design, success, failure)
    return pd.DataFrame(rows, columns=COLUMNS)


def warn_separation(design: Design) -> pd.DataFrame:
    """Warn (:class:`DataWarning`) when predictors separate the outcomes; return all findings."""
    found = separation(design)
    fixed = found[found["kind"] != "group"]
    if len(fixed):
        what = "; ".join(f"{w} ({d})" for w, d in zip(fixed["what"], fixed["detail"]))
        warnings.warn(
            f"separation of the binary response: {what}. The likelihood does not bound these "
            "coefficients: their posterior is set by the prior. Check the coding, merge sparse "
            "categories, or state an informative prior (see model.separation())",
            DataWarning,
            stacklevel=3,
        )
    return found
