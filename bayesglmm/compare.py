"""Model comparison: PSIS-LOO, leave-one-group-out, WAIC and ``compare``.

The pointwise log-likelihood is computed when first needed and kept with the
fit (in chunks, not kept, beyond ``fit.LOGLIK_BUDGET``).  Leave-one-group-out
(``loo(res, group="school")``) sums it within the levels of a grouping factor
and applies PSIS to the group sums: the question "how well does the model
predict a new school?" rather than "a new student of a known school".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from .errors import ArgumentError, ConvergenceWarning
from .fit import store_log_likelihood, too_large
from .model import OBSERVED
from .pointwise import loo_elpd, relative_efficiency
from .predict import log_likelihood_draws
from .stats import az, group_sums

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults

K_THRESHOLD = 0.7


def _block_of(res: GLMMResults, group: str):
    blocks = [b for b in res.model.design.blocks if b.group == group]
    if not blocks:
        groups = list(res.model.design.groups)
        raise ArgumentError(f"group {group!r} is not a grouping factor of the model; they are {groups}")
    return blocks[0]


def _stored(res: GLMMResults) -> bool:
    """Whether ``res.idata`` holds the pointwise log-likelihood, computing it first if it fits the budget."""
    return store_log_likelihood(res.idata, res.model.pymc_model)


def _grouped(res: GLMMResults, group: str) -> az.InferenceData:
    """InferenceData whose log-likelihood has one entry per level of ``group``."""
    block = _block_of(res, group)
    summed = group_sums(res.idata.log_likelihood[OBSERVED].values, block.idx, len(block.levels))
    da = xr.DataArray(summed, dims=("chain", "draw", group), coords={group: list(block.levels)})
    return az.InferenceData(posterior=res.idata.posterior, log_likelihood=xr.Dataset({OBSERVED: da}))


def _warn_pareto(elpd, what: str) -> None:
    k = np.asarray(elpd.pareto_k)
    bad = int(np.sum(k > K_THRESHOLD))
    if bad:
        warnings.warn(
            f"{bad} of {k.size} {what} have Pareto k > {K_THRESHOLD}: PSIS-LOO is unreliable for them; "
            "use exact refits, res.kfold(group=..., k=10), or a more robust model",
            UserWarning,
            stacklevel=4,
        )


def loo(res: GLMMResults, group: str | None = None, pointwise: bool = True):
    """PSIS-LOO of the fitted model (ArviZ ``ELPDData``), per observation or per group level.

    Warns, saying how many, when Pareto k exceeds 0.7.  A fit too large to
    store its log-likelihood has it computed in chunks (:mod:`bayesglmm.pointwise`).
    """
    if not _stored(res):
        elpd = loo_elpd(res, None if group is None else _block_of(res, group))
    else:
        data = res.idata if group is None else _grouped(res, group)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Estimated shape parameter of Pareto.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            elpd = az.loo(data, pointwise=True, var_name=OBSERVED, reff=relative_efficiency(data.posterior))
    _warn_pareto(elpd, "observations" if group is None else f"levels of {group!r}")
    if not pointwise:  # the totals only (the Pareto k were needed for the warning)
        elpd = type(elpd)(elpd.drop(labels=["loo_i", "pareto_k"]))
    return elpd


def waic(res: GLMMResults, pointwise: bool = True):
    """WAIC of the fitted model (ArviZ ``ELPDData``)."""
    if not _stored(res):
        raise too_large("waic()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.waic(res.idata, pointwise=pointwise, var_name=OBSERVED)


def _observations(res: GLMMResults) -> np.ndarray:
    """The modelled response per row, as labels for categories (whose codes depend on the family)."""
    y = np.asarray(res.model.design.y, dtype=float)
    categories = res.model.family.categories
    return np.asarray(categories, dtype=object)[y.astype(np.int64)] if categories else y


def _named_loo(name: str, res: GLMMResults, group: str | None):
    """``loo(res, group)``, its warnings saying which model they are about."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        elpd = loo(res, group)
    for w in caught:
        warnings.warn(f"model {name!r}: {w.message}", w.category, stacklevel=3)
    return elpd


def compare(models: Mapping[str, GLMMResults], ic: str = "loo", group: str | None = None) -> pd.DataFrame:
    """ArviZ comparison table (ranked by expected log predictive density).

    All models must be fitted to the same observations of the same response
    (checked).  ``group`` compares them by leave-one-group-out.
    """
    if not isinstance(models, Mapping) or len(models) < 2:
        raise ArgumentError("compare needs a dict of at least two fitted models, name -> result")
    sizes = {name: res.model.design.n for name, res in models.items()}
    if len(set(sizes.values())) > 1:
        raise ArgumentError(f"models were fitted to different numbers of rows: {sizes}")
    (first, reference), *others = ((name, _observations(res)) for name, res in models.items())
    differ = [name for name, values in others if not np.array_equal(values, reference)]
    if differ:
        raise ArgumentError(
            f"models {differ} were fitted to other observations than {first!r} (another response, a "
            "transformed one, or other rows): their log predictive densities cannot be compared"
        )
    if ic not in ("loo", "waic"):
        raise ArgumentError(f"ic must be 'loo' or 'waic', got {ic!r}")
    if ic == "waic" and not all(_stored(res) for res in models.values()):
        raise too_large("compare(ic='waic')", "ic='loo'")
    if ic == "loo":  # each model's PSIS-LOO as loo() gives it, with its reff and its Pareto-k warning
        data = {}
        for name, res in models.items():  # a loop, not a comprehension: the warnings' stacklevel
            data[name] = _named_loo(name, res, group)
    else:
        data = {name: res.idata if group is None else _grouped(res, group) for name, res in models.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(data, ic=ic, var_name=OBSERVED)


# ---- exact K-fold cross-validation --------------------------------------------------
@dataclass(frozen=True)
class KFold:
    """Expected log predictive density from K refits.

    ``pointwise`` has one row per held-out unit (a row, or a level of
    ``group``) with its fold and ``elpd``; ``elpd`` is their sum and ``se``
    its standard error, ``sqrt(n · var(pointwise))``.
    """

    elpd: float
    se: float
    k: int
    group: str | None
    pointwise: pd.DataFrame

    def __repr__(self) -> str:
        unit = "rows" if self.group is None else f"levels of {self.group!r}"
        return (
            f"{self.k}-fold cross-validation over {len(self.pointwise)} {unit}: elpd {self.elpd:.1f} (SE {self.se:.1f})"
        )


def _folds(
    res: GLMMResults, group: str | None, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list]:
    """Fold of every unit, unit of every row, and the unit labels."""
    design = res.model.design
    if group is None:
        units, labels = np.arange(design.n), list(range(design.n))
    else:
        block = next((b for b in design.blocks if b.group == group), None)
        if block is None:
            raise ArgumentError(f"group {group!r} is not a grouping factor; they are {list(design.groups)}")
        units, labels = np.asarray(block.idx), list(block.levels)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= len(labels):
        raise ArgumentError(f"k must be an integer between 2 and the number of units ({len(labels)}), got {k!r}")
    return rng.permutation(np.arange(len(labels)) % k), units, labels


def kfold(
    res: GLMMResults,
    group: str | None = None,
    k: int = 10,
    random_seed: int | None = None,
    new_level_draws: int = 20,
    **fit_kwargs,
) -> KFold:
    """Exact K-fold cross-validation by refitting the model K times.

    Parameters
    ----------
    group : str, optional
        Hold out whole levels of this grouping factor (grouped K-fold, the
        exact counterpart of ``loo(group=...)``); rows otherwise.
    k : int
        Number of folds; units are assigned at random (seeded).
    random_seed : int, optional
        Seeds the fold assignment, the refits and the new-level effects.
    new_level_draws : int
        Held-out levels are new to the refit: their effects are integrated
        over the fitted N(0, G) with this many Monte Carlo draws per
        posterior draw.
    **fit_kwargs
        Passed to :meth:`GLMM.fit` (``draws``, ``tune``, ``chains``, ``sampler``, ...); the
        refits show no progress bar unless ``progressbar=True``.
    """
    from .glmm import GLMM

    model, design = res.model, res.model.design
    rng = np.random.default_rng(random_seed)
    fold_of_unit, units, labels = _folds(res, group, k, rng)
    fold = fold_of_unit[units]
    seeds = rng.integers(0, 2**31 - 1, size=(k, 2))
    elpd, unconverged = np.zeros(len(labels)), []
    for f in range(k):
        test = np.flatnonzero(fold == f)
        train = design.data.iloc[np.flatnonzero(fold != f)]
        refit = GLMM(
            model.formula,
            train,
            family=model.family,
            link=model.link.name,
            priors=model.user_priors,
            na_action=model.na_action,
            eval_env=model.eval_env,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            fitted = refit.fit(random_seed=int(seeds[f, 0]), **({"progressbar": False} | fit_kwargs))
        for w in caught:  # convergence is summarised below; anything else passes through
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn(w.message, w.category, stacklevel=3)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.append(f)
        trials = None if design.trials is None else design.trials[test]
        held_out = design.data.iloc[test]
        repeats = (
            max(1, int(new_level_draws)) if any(np.any(n) for n in refit.design.new_data(held_out).new_level) else 1
        )
        ll = log_likelihood_draws(fitted, held_out, design.y[test], trials, True, int(seeds[f, 1]), repeats)
        ll = ll.reshape((-1, test.size))  # (chain × repeats × draw, row)
        held = np.unique(units[test])
        summed = group_sums(ll, units[test], len(labels))[:, held]
        elpd[held] = logsumexp(summed, axis=0) - np.log(summed.shape[0])  # log of the mean density
    if unconverged:
        warnings.warn(
            f"the refits of fold(s) {unconverged} raised convergence warnings; their elpd is less "
            "certain: pass more draws/tune to kfold(...)",
            ConvergenceWarning,
            stacklevel=3,
        )
    table = pd.DataFrame({"unit": labels, "fold": fold_of_unit, "elpd": elpd})
    return KFold(float(elpd.sum()), float(np.sqrt(len(elpd) * elpd.var(ddof=1))), k, group, table)
