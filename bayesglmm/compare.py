"""Model comparison: PSIS-LOO, leave-one-group-out, WAIC and ``compare``.

The pointwise log-likelihood is stored with every fit.  Leave-one-group-out
(``loo(res, group="school")``) sums it within the levels of a grouping factor
and applies PSIS to the group sums: the question "how well does the model
predict a new school?" rather than "a new student of a known school".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from .errors import ArgumentError
from .model import OBSERVED
from .stats import az

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults

K_THRESHOLD = 0.7


def _grouped(res: GLMMResults, group: str) -> az.InferenceData:
    """InferenceData whose log-likelihood has one entry per level of ``group``."""
    blocks = [b for b in res.model.design.blocks if b.group == group]
    if not blocks:
        groups = [b.group for b in res.model.design.blocks]
        raise ArgumentError(f"group {group!r} is not a grouping factor of the model; they are {groups}")
    block = blocks[0]
    ll = res.idata.log_likelihood[OBSERVED].values
    summed = np.zeros(ll.shape[:2] + (len(block.levels),))
    np.add.at(np.moveaxis(summed, -1, 0), block.idx, np.moveaxis(ll, -1, 0))
    da = xr.DataArray(summed, dims=("chain", "draw", group), coords={group: list(block.levels)})
    return az.InferenceData(posterior=res.idata.posterior, log_likelihood=xr.Dataset({OBSERVED: da}))


def _warn_pareto(elpd, what: str) -> None:
    k = np.asarray(elpd.pareto_k)
    bad = int(np.sum(k > K_THRESHOLD))
    if bad:
        warnings.warn(
            f"{bad} of {k.size} {what} have Pareto k > {K_THRESHOLD}: PSIS-LOO is unreliable for them; "
            "use exact refits (K-fold cross-validation) or a more robust model",
            UserWarning,
            stacklevel=4,
        )


def loo(res: GLMMResults, group: str | None = None, pointwise: bool = True):
    """PSIS-LOO of the fitted model (ArviZ ``ELPDData``), per observation or per group level.

    Warns, saying how many, when Pareto k exceeds 0.7.
    """
    data = res.idata if group is None else _grouped(res, group)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Estimated shape parameter of Pareto.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        elpd = az.loo(data, pointwise=pointwise, var_name=OBSERVED)
    _warn_pareto(elpd, "observations" if group is None else f"levels of {group!r}")
    return elpd


def waic(res: GLMMResults, pointwise: bool = True):
    """WAIC of the fitted model (ArviZ ``ELPDData``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.waic(res.idata, pointwise=pointwise, var_name=OBSERVED)


def compare(models: Mapping[str, GLMMResults], ic: str = "loo", group: str | None = None) -> pd.DataFrame:
    """ArviZ comparison table (ranked by expected log predictive density).

    All models must be fitted to the same rows.  ``group`` compares them by
    leave-one-group-out.
    """
    if not isinstance(models, Mapping) or len(models) < 2:
        raise ArgumentError("compare needs a dict of at least two fitted models, name -> result")
    sizes = {name: res.model.design.n for name, res in models.items()}
    if len(set(sizes.values())) > 1:
        raise ArgumentError(f"models were fitted to different numbers of rows: {sizes}")
    if ic not in ("loo", "waic"):
        raise ArgumentError(f"ic must be 'loo' or 'waic', got {ic!r}")
    data = {name: res.idata if group is None else _grouped(res, group) for name, res in models.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(data, ic=ic, var_name=OBSERVED)
