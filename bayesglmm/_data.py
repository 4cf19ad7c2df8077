"""Boundary checks on the user's data frame, run before anything is built.

The user's DataFrame is never modified: every function here reads it and, when
rows must be dropped, returns a new frame.
"""

from __future__ import annotations

import warnings

import formulae as fm
import numpy as np
import pandas as pd
from formulae.environment import Environment

from .errors import DataError, DataWarning, FormulaError, GroupingError, MissingDataError
from .formula import ParsedFormula

NA_ACTIONS = ("error", "drop")


def _var_names(expr: str) -> set[str]:
    try:
        names = fm.model_description(expr).var_names
    except Exception as exc:  # formulae raises several parser/scanner errors
        raise FormulaError(f"cannot parse formula part {expr!r}: {exc}") from exc
    return {n for n in names if n}


def _column_like(value: object, n: int) -> bool:
    """Whether ``value`` could be read as a column of ``n`` rows."""
    return not isinstance(value, str | bytes) and hasattr(value, "__len__") and len(value) == n


def used_columns(parsed: ParsedFormula, data: pd.DataFrame, env: Environment | None = None) -> list[str]:
    """Columns of ``data`` the model uses, in a stable order.

    A name that is not a column may be one of ``env`` (the caller's), such as
    the list in ``C(x, levels=lv)`` or a constant; not an array as long as the
    data, which would silently stand in for a missing column (grouping
    factors must be columns too).

    Raises
    ------
    DataError
        If a variable named in the formula is neither a column of ``data`` nor
        a name of ``env``.
    """
    names = _var_names(parsed.fixed_formula)
    for term in parsed.random:
        names |= _var_names(term.expr)
    defined = env.namespace if env is not None else {}
    names = {n for n in names if n in data.columns or n not in defined or _column_like(defined[n], len(data))}
    names |= {f for term in parsed.random for f in term.factors}
    unknown = sorted(n for n in names if n not in data.columns)
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise DataError(f"formula uses {listed}, which {'is' if len(unknown) == 1 else 'are'} not a column of data")
    return [c for c in data.columns if c in names]


def check_data(data: object) -> pd.DataFrame:
    """Require a non-empty pandas DataFrame with unique column names."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if data.empty:
        raise DataError("data has no rows")
    if data.columns.duplicated().any():
        dup = sorted(set(data.columns[data.columns.duplicated()]))
        raise DataError(f"data has duplicated column names: {dup}")
    return data


def numpy_backed(data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with pandas' nullable numbers and booleans (``Int64``, ``Float64``, ``boolean``,
    pyarrow's) as numpy columns, which formulae reads; ``NA`` becomes ``NaN``.

    A new frame when any column changes; ``data`` itself is left as it is.
    Applied to the columns a model uses (:func:`handle_missing`).
    """
    converted = {}
    for name, dtype in data.dtypes.items():
        if not isinstance(dtype, pd.api.extensions.ExtensionDtype) or isinstance(dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            column = data[name]
            if column.isna().any():
                converted[name] = column.to_numpy(dtype="float64", na_value=np.nan)
            else:
                converted[name] = column.to_numpy(dtype=getattr(dtype, "numpy_dtype", None))
    if not converted:
        return data
    out = data.copy()
    for name, values in converted.items():
        out[name] = values
    return out


def handle_missing(data: pd.DataFrame, columns: list[str], na_action: str, new: bool = False) -> pd.DataFrame:
    """Return the rows of ``data[columns]`` to model, raising or dropping on NaN.

    The returned frame is a copy holding only ``columns``, nullable ones as
    numpy columns (:func:`numpy_backed`).  ``new``: the rows are new data to
    predict, which must be complete (``na_action="error"``).
    """
    if na_action not in NA_ACTIONS:
        raise DataError(f"na_action must be one of {NA_ACTIONS}, got {na_action!r}")
    frame = data.loc[:, columns].copy()
    missing = frame.isna()
    bad_rows = missing.any(axis=1)
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return numpy_backed(frame)
    per_col = ", ".join(f"{c!r} ({int(k)})" for c, k in missing.sum().items() if k)
    if new:
        columns_with = [c for c in frame.columns if missing[c].any()]
        raise MissingDataError(
            f"{n_bad} of {len(frame)} rows of new data have missing values in the columns the model uses: "
            f"{per_col}. Predictions need complete rows: drop or impute them first "
            f"(e.g. newdata.dropna(subset={columns_with}))."
        )
    if na_action == "error":
        raise MissingDataError(
            f"{n_bad} of {len(frame)} rows have missing values in the columns the model uses: "
            f"{per_col}. Remove or impute them, or pass na_action='drop' to drop these rows."
        )
    if n_bad == len(frame):
        raise MissingDataError(f"every row has a missing value in {per_col}; nothing is left to fit")
    warnings.warn(
        f"dropped {n_bad} of {len(frame)} rows with missing values in {per_col} (na_action='drop')",
        DataWarning,
        stacklevel=4,
    )
    return numpy_backed(frame.loc[~bad_rows])


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise if ``values`` holds NaN or infinite entries (e.g. after ``np.log(0)``)."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(
            f"{what} has {rows.size} row(s) with non-finite values (NaN or inf), "
            f"first at row position {int(rows[0])}; check transformations such as log of zero"
        )


def group_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes and level labels of the interaction of ``factors``.

    Levels are sorted (categorical columns in their category order) and only
    levels present in ``frame`` are kept.  Labels of an interaction join the
    factor levels with ``":"``.
    """
    codes = np.zeros(len(frame), dtype=np.int64)
    labels: list[str] = [""]
    for i, name in enumerate(factors):
        col_codes, uniques = pd.factorize(frame[name], sort=True)
        col_labels = list(group_labels(pd.Series(uniques, dtype=frame[name].dtype)))
        combined = codes * len(col_labels) + col_codes
        keep, codes = np.unique(combined, return_inverse=True)
        labels = [(labels[k // len(col_labels)] + ":" if i else "") + col_labels[k % len(col_labels)] for k in keep]
    return codes.astype(np.int64), tuple(labels)


def group_labels(column: pd.Series) -> np.ndarray:
    """A grouping column's values as text, whole numbers stored as floats written as integers:
    group 1 is the same group whether a column holds 1 or 1.0 (as after a merge with gaps)."""
    labels = column.astype(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=float)
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**53)
        labels[whole] = values[whole].astype(np.int64).astype(str)
    return labels


def level_labels(frame: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
    """Group label of every row (factor levels joined with ``":"``)."""
    labels = group_labels(frame[factors[0]])
    for name in factors[1:]:
        labels = labels + ":" + group_labels(frame[name])
    return labels


def level_codes(frame: pd.DataFrame, factors: tuple[str, ...], levels: tuple[str, ...]) -> np.ndarray:
    """Codes of ``frame``'s groups against the fitted ``levels``; -1 for new levels."""
    labels = level_labels(frame, factors)
    lookup = {lab: i for i, lab in enumerate(levels)}
    return np.array([lookup.get(lab, -1) for lab in labels], dtype=np.int64)


def check_group_sizes(group: str, levels: tuple[str, ...]) -> None:
    """A grouping factor needs at least two levels to have a variance."""
    if len(levels) < 2:
        raise GroupingError(
            f"grouping factor {group!r} has a single level ({levels[0]!r}); "
            "a random effect needs at least two groups — drop the term or use a fixed effect"
        )
