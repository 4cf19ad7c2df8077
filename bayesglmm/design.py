"""Stage 2 — design: turn a parsed formula and a data frame into arrays.

The fixed effects become a dense matrix ``X`` (n × p) with formulae's column
labels; every random-effect block becomes an integer group index (n,) and a
small matrix ``Z`` (n × k) of its k terms — never a dense n × (J·k) matrix.

The fixed design also carries the centring and scaling the model uses
internally (so that unscaled covariates such as ``age**2`` sample well); all
results are reported back on the user's scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import formulae as fm
import numpy as np
import pandas as pd
import scipy.linalg
from formulae.environment import Environment

from . import _data
from .errors import DataError, FormulaError, ResponseError
from .formula import ParsedFormula, RandomTerm
from .transforms import NAMESPACE

#: What R users write for which formulae has another spelling.
_R_HINTS = {
    "as.factor": "C(x) or factor(x)",
    "as.numeric": "the column itself",
    "relevel": "C(x, levels=lv), the list lv defined beforehand",
}


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class FixedDesign:
    """Fixed-effects design on the user's scale plus its internal standardisation.

    ``center`` and ``scale`` hold, per column, the shift and divisor used
    internally (0 and 1 for the intercept column).
    """

    X: np.ndarray
    labels: tuple[str, ...]
    has_intercept: bool
    center: np.ndarray
    scale: np.ndarray
    #: per column, the linear predictor it enters (empty: one predictor)
    predictor: tuple[int, ...] = ()
    #: per column, formulae's label before expansion over predictors (empty: ``labels``)
    base: tuple[str, ...] = ()

    @property
    def base_labels(self) -> tuple[str, ...]:
        """formulae's label of every column (without the predictor suffix)."""
        return self.base or self.labels

    @property
    def intercept_columns(self) -> np.ndarray:
        """Indices of the intercept columns (one per linear predictor)."""
        return np.array([i for i, lab in enumerate(self.base_labels) if lab == "Intercept"], dtype=int)

    @property
    def slope_columns(self) -> np.ndarray:
        """Indices of the non-intercept columns."""
        return np.array([i for i, lab in enumerate(self.base_labels) if lab != "Intercept"], dtype=int)

    def standardized(self, X: np.ndarray) -> np.ndarray:
        """Centred and scaled non-intercept columns of ``X`` (any rows)."""
        cols = self.slope_columns
        return (X[:, cols] - self.center[cols]) / self.scale[cols]


@dataclass(frozen=True)
class GroupBlock:
    """One random-effect block: k terms varying over the J levels of a factor."""

    name: str
    group: str
    factors: tuple[str, ...]
    expr: str
    terms: tuple[str, ...]
    correlated: bool
    Z: np.ndarray
    idx: np.ndarray
    levels: tuple[str, ...]
    z_scale: np.ndarray
    #: per term, the linear predictor it enters (empty: one predictor)
    predictor: tuple[int, ...] = ()
    #: per term, formulae's label before expansion over predictors (empty: ``terms``)
    base: tuple[str, ...] = ()

    @property
    def base_terms(self) -> tuple[str, ...]:
        """formulae's label of every term (without the predictor suffix)."""
        return self.base or self.terms

    @property
    def intercept_only(self) -> bool:
        """True when the block holds random intercepts only (one per linear predictor)."""
        return set(self.base_terms) == {"Intercept"}


@dataclass(frozen=True)
class NewData:
    """Arrays for evaluating the fitted model's linear predictor on new rows."""

    X: np.ndarray
    offset: np.ndarray
    trials: np.ndarray | None
    Z: tuple[np.ndarray, ...]
    idx: tuple[np.ndarray, ...]
    new_level: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Design:
    """Everything the model builder needs, computed once from formula and data."""

    parsed: ParsedFormula
    data: pd.DataFrame
    y: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray | None
    fixed: FixedDesign
    blocks: tuple[GroupBlock, ...]
    _fixed_dm: Any = field(repr=False, compare=False)
    _block_dms: tuple[Any, ...] = field(repr=False, compare=False)
    #: columns of formulae's fixed design that are kept (all unless the family drops the intercept)
    _fixed_keep: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    #: names of the linear predictors when the family has several (categorical), else empty
    predictors: tuple[str, ...] = ()

    @property
    def n_predictors(self) -> int:
        """Number of linear predictors (1 except for families with one per category)."""
        return len(self.predictors) or 1

    @property
    def groups(self) -> tuple[str, ...]:
        """The grouping factors, each once (several blocks may share one)."""
        return tuple(dict.fromkeys(b.group for b in self.blocks))

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.y.shape[0])

    @property
    def response_name(self) -> str:
        """The response as written in the formula."""
        return self.parsed.response

    def new_rows(self, newdata: pd.DataFrame) -> pd.DataFrame:
        """The columns of ``newdata`` the model uses (a copy); missing values there are an error."""
        needed = [c for c in self.data.columns if c != self.parsed.response and c in newdata.columns]
        return _data.handle_missing(newdata, needed, "error", new=True)

    def new_data(self, newdata: pd.DataFrame, with_trials: bool = False, skip: frozenset[str] = frozenset()) -> NewData:
        """Evaluate the fitted design on ``newdata`` (same encodings and levels).

        Group levels unseen when fitting get index ``-1`` and are flagged in
        ``new_level``; the caller decides whether that is allowed.  Blocks
        named in ``skip`` (random effects set to zero or integrated out) need
        no grouping column: their rows get index 0.
        """
        frame = self.new_rows(newdata)
        columns = tuple(self.data.columns)
        X, offset = _fixed_arrays(self._fixed_dm.common, frame, new=True, columns=columns)
        if self._fixed_keep is not None:
            X = X[:, list(self._fixed_keep)]
        Zs, idxs, news = [], [], []
        for block, dm in zip(self.blocks, self._block_dms):
            Zs.append(_evaluate(dm, frame, new=True, columns=columns)[0])
            if block.name in skip:
                idxs.append(np.zeros(len(frame), dtype=np.int64))
                news.append(np.zeros(len(frame), dtype=bool))
                continue
            absent = [f for f in block.factors if f not in frame.columns]
            if absent:
                raise DataError(
                    f"new data lacks grouping column(s) {absent} of ({block.expr} | {block.group}); "
                    "add it, or leave the term out with re_formula (or use marginal=True)"
                )
            codes = _data.level_codes(frame, block.factors, block.levels)
            news.append(codes < 0)
            idxs.append(np.where(codes < 0, 0, codes))
        trials = None
        if with_trials and self.trials is not None:
            trials = np.ones(len(frame), dtype=np.int64)
        if self.predictors:  # the same columns, once per linear predictor
            X, Zs = np.tile(X, self.n_predictors), [np.tile(Z, self.n_predictors) for Z in Zs]
        return NewData(X, offset, trials, tuple(Zs), tuple(idxs), tuple(news))


def _evaluate(matrix: Any, frame: pd.DataFrame, new: bool, columns: tuple[str, ...] = ()) -> tuple[np.ndarray, Any]:
    """Design matrix of a formulae common-effects object, on new rows if asked.

    ``columns``: the columns of the fitting data.  A term's other names (a list
    of levels defined in the user's code, the empty name formulae gives a
    number in ``I(x**2)``) are not looked for in ``frame``.
    """
    if not new:
        return np.asarray(matrix).astype(float), matrix
    names = {v for t in matrix.terms.values() for v in getattr(t, "var_names", ())}
    missing = [v for v in names if v in columns and v not in frame.columns]
    if missing:
        raise DataError(f"new data lacks column(s) {sorted(set(missing))} used by the model")
    try:
        evaluated = matrix.evaluate_new_data(frame)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot evaluate the model's design on new data: {exc}") from exc
    return np.asarray(evaluated).astype(float), evaluated


def _fixed_arrays(
    common: Any, frame: pd.DataFrame, new: bool, columns: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Split a formulae common matrix into (X without offsets, summed offset)."""
    n = len(frame)
    if common is None:
        return np.zeros((n, 0)), np.zeros(n)
    M, evaluated = _evaluate(common, frame, new, columns)
    keep, offset = [], np.zeros(n)
    for name, term in evaluated.terms.items():
        cols = np.arange(M.shape[1])[evaluated.slices[name]]
        if term.kind == "offset":
            offset = offset + M[:, cols].sum(axis=1)
        else:
            keep.extend(cols)
    return M[:, keep], offset


def _fixed_labels(common: Any) -> list[str]:
    if common is None:
        return []
    return [lab for term in common.terms.values() if term.kind != "offset" for lab in term.labels]


def _unknown_name(formula: str, name: str) -> str:
    """The message for a name of ``formula`` found neither in the data nor among the functions."""
    dotted = re.search(rf"(?<![\w.]){re.escape(name)}\.(\w+)\s*\(", formula)  # R's as.factor(x)
    if dotted:
        name = f"{name}.{dotted.group(1)}"
    if dotted or re.search(rf"(?<![\w.]){re.escape(name)}\s*\(", formula):
        hint = f"; write {_R_HINTS[name]}" if name in _R_HINTS else ""
        return (
            f"formula {formula!r} calls {name}(), which is not a function known to the formula: define or "
            f"import it before building the model (the formula sees the caller's names){hint}"
        )
    return f"formula {formula!r} uses {name!r}, which is not a column of data"


def _design_matrices(formula: str, frame: pd.DataFrame, env: Environment | None = None) -> Any:
    """formulae's design matrices of ``formula``, its functions looked up in ``env``, then :data:`NAMESPACE`."""
    env = env if env is not None else Environment([{}])
    try:
        with np.errstate(all="ignore"):  # non-finite results are reported by check_finite
            return fm.design_matrices(formula, frame, na_action="error", env=env, extra_namespace=NAMESPACE)
    except KeyError as exc:
        name = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise DataError(_unknown_name(formula, name)) from exc
    except ValueError as exc:
        if "successes" in str(exc) or "trials" in str(exc):
            raise ResponseError(f"response of {formula!r}: {exc} (more successes than trials?)") from exc
        raise FormulaError(f"cannot build the design for {formula!r}: {exc}") from exc
    except Exception as exc:  # formulae raises ParseError, ScanError, ...
        raise FormulaError(f"cannot build the design for {formula!r}: {exc}") from exc


def _response(dm: Any, parsed: ParsedFormula) -> tuple[np.ndarray, np.ndarray | None]:
    """Response values (and binomial trials for ``p(successes, trials)``)."""
    resp = dm.response
    if resp is None:
        raise FormulaError(f"formula {parsed.formula!r} has no response")
    values = np.asarray(resp)
    if resp.kind == "proportion":
        return values[:, 0].astype(float), values[:, 1].astype(float)
    if resp.kind == "categoric":
        if values.ndim == 2:
            levels = list(getattr(resp, "levels", []) or [])
            raise ResponseError(
                f"response {parsed.response!r} is not numeric (levels {levels}); model the probability of one "
                f"level by writing e.g. '{parsed.response}[{levels[-1] if levels else 'level'}] ~ ...'"
            )
        return values.astype(float), None
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ResponseError(f"response {parsed.response!r} is not numeric (dtype {values.dtype})")
    return values.astype(float).reshape(-1), None


def _standardization(X: np.ndarray, labels: list[str], centre: bool) -> tuple[np.ndarray, np.ndarray]:
    has_intercept = centre
    center, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    for j, lab in enumerate(labels):
        if lab == "Intercept":
            continue
        col = X[:, j]
        if has_intercept:
            center[j] = col.mean()
            sd = col.std()
        else:
            sd = np.sqrt(np.mean(col**2))
        scale[j] = sd if sd > 0 else 1.0
    return center, scale


def _check_rank(X: np.ndarray, labels: list[str], center: np.ndarray, scale: np.ndarray) -> None:
    if X.shape[1] == 0:
        return
    Xs = (X - center) / scale
    if "Intercept" in labels:
        Xs[:, labels.index("Intercept")] = 1.0
    if X.shape[0] < X.shape[1]:
        raise DataError(f"{X.shape[0]} rows cannot identify {X.shape[1]} fixed-effect coefficients")
    _, R, piv = scipy.linalg.qr(Xs, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > diag[0] * max(X.shape) * np.finfo(float).eps * 100))
    if rank < X.shape[1]:
        dropped = [labels[i] for i in piv[rank:]]
        raise DataError(
            f"the fixed-effects design is rank deficient: {dropped} "
            f"{'is a linear combination' if len(dropped) == 1 else 'are linear combinations'} of other "
            "columns (a constant column, a duplicated predictor, or a level never observed?); remove it"
        )


def _block(term: RandomTerm, name: str, frame: pd.DataFrame, env: Environment | None) -> tuple[GroupBlock, Any]:
    dm = _design_matrices(term.expr, frame, env)
    if dm.common is None:
        raise FormulaError(f"random-effect term ({term.expr} | {term.group}) has no terms")
    if any(t.kind == "offset" for t in dm.common.terms.values()):
        raise FormulaError(f"offset() is not allowed inside a random-effect term ({term.expr} | {term.group})")
    Z = np.asarray(dm.common).astype(float)
    _data.check_finite(Z, f"random-effect term ({term.expr} | {term.group})")
    labels = tuple(_fixed_labels(dm.common))
    codes, levels = _data.group_codes(frame, term.factors)
    _data.check_group_sizes(term.group, levels)
    sd = Z.std(axis=0)
    z_scale = np.where((sd > 0) & (np.array(labels) != "Intercept"), sd, 1.0)
    block = GroupBlock(
        name,
        term.group,
        term.factors,
        term.expr,
        labels,
        term.correlated and len(labels) > 1,
        _frozen(Z),
        _frozen(codes),
        levels,
        _frozen(z_scale),
    )
    return block, dm.common


def _block_names(terms: tuple[RandomTerm, ...]) -> list[str]:
    groups = [t.group for t in terms]
    names, counter = [], {}
    for g in groups:
        counter[g] = counter.get(g, 0) + 1
        names.append(g if groups.count(g) == 1 else f"{g}_{counter[g]}")
    return names


def build_design(
    parsed: ParsedFormula,
    data: pd.DataFrame,
    na_action: str = "error",
    intercept: bool = True,
    env: Environment | None = None,
) -> Design:
    """Check ``data`` against ``parsed`` and build the design arrays.

    Parameters
    ----------
    parsed : ParsedFormula
    data : pandas.DataFrame
        Never modified.
    na_action : {"error", "drop"}
        What to do with rows holding missing values in used columns.
    intercept : bool
        False for families whose thresholds take the intercept's place
        (ordinal): the intercept column is dropped after coding, so factors
        keep their reduced-rank (treatment) coding; covariates are still
        centred internally, the thresholds absorbing the shift.
    env : formulae.environment.Environment, optional
        Where the formula's functions are looked up before :data:`NAMESPACE`
        (numpy, R's names, ``gmean``, ``gcenter``).
    """
    _data.check_data(data)
    frame = _data.handle_missing(data, _data.used_columns(parsed, data, env), na_action)
    dm = _design_matrices(parsed.fixed_formula, frame, env)
    y, trials = _response(dm, parsed)
    _data.check_finite(y, f"response {parsed.response!r}")
    X, offset = _fixed_arrays(dm.common, frame, new=False)
    labels = _fixed_labels(dm.common)
    keep = None
    if not intercept and "Intercept" in labels:
        keep = tuple(j for j, lab in enumerate(labels) if lab != "Intercept")
        X, labels = X[:, list(keep)], [labels[j] for j in keep]
    _data.check_finite(X, "the fixed-effects design")
    _data.check_finite(offset, "the offset")
    # centre when an intercept, or the thresholds that replace it, absorb the shift
    center, scale = _standardization(X, labels, centre="Intercept" in labels or keep is not None)
    _check_rank(X, labels, center, scale)
    fixed = FixedDesign(_frozen(X), tuple(labels), "Intercept" in labels, _frozen(center), _frozen(scale))
    built = [_block(t, name, frame, env) for t, name in zip(parsed.random, _block_names(parsed.random))]
    _check_block_terms([b for b, _ in built])
    has_offset = any(t.kind == "offset" for t in (dm.common.terms.values() if dm.common is not None else []))
    return Design(
        parsed=parsed,
        data=frame,
        y=_frozen(y),
        trials=None if trials is None else _frozen(trials),
        offset=_frozen(offset) if has_offset else None,
        fixed=fixed,
        blocks=tuple(b for b, _ in built),
        _fixed_dm=dm,
        _block_dms=tuple(m for _, m in built),
        _fixed_keep=keep,
    )


def expand_predictors(design: Design, names: tuple[str, ...]) -> Design:
    """The design of a family with one linear predictor per name (categorical).

    Every fixed column and random-effect term is repeated once per predictor,
    labelled ``label[name]``; a block declared correlated (``|``) becomes one
    correlated block over all its repeated terms (e.g. the random intercepts of
    every category, correlated across categories), ``||`` keeps them
    independent.  Centring and scaling are those of the original column.
    """
    if design.offset is not None:
        raise FormulaError("offset() is not supported for families with several linear predictors")
    m = len(names)
    fixed = design.fixed
    labels = tuple(f"{lab}[{name}]" for name in names for lab in fixed.labels)
    expanded = replace(
        fixed,
        X=_frozen(np.tile(fixed.X, m)),
        labels=labels,
        center=_frozen(np.tile(fixed.center, m)),
        scale=_frozen(np.tile(fixed.scale, m)),
        predictor=tuple(np.repeat(np.arange(m), len(fixed.labels)).tolist()),
        base=fixed.labels * m,
    )
    blocks = []
    for block, term in zip(design.blocks, design.parsed.random):
        blocks.append(
            replace(
                block,
                terms=tuple(f"{t}[{name}]" for name in names for t in block.terms),
                correlated=term.correlated and len(block.terms) * m > 1,
                Z=_frozen(np.tile(block.Z, m)),
                z_scale=_frozen(np.tile(block.z_scale, m)),
                predictor=tuple(np.repeat(np.arange(m), len(block.terms)).tolist()),
                base=block.terms * m,
            )
        )
    return replace(design, fixed=expanded, blocks=tuple(blocks), predictors=tuple(names))


def _check_block_terms(blocks: list[GroupBlock]) -> None:
    """The same term may vary only once over the same grouping factor."""
    seen: dict[tuple[str, str], str] = {}
    for block in blocks:
        for term in block.terms:
            key = (block.group, term)
            if key in seen:
                raise FormulaError(
                    f"term {term!r} varies over {block.group!r} in two random-effect blocks "
                    f"(({seen[key]} | {block.group}) and ({block.expr} | {block.group})); keep one"
                )
            seen[key] = block.expr
