"""A model's graph evaluated for a whole batch of posterior draws in one call.

PyMC evaluates a graph over a posterior one draw at a time
(``compute_log_likelihood``, ``sample_posterior_predictive``): a Python call
of some 50-70 µs per draw, after a compilation with all of PyTensor's rewrites
(sleepstudy's pointwise log-likelihood: 0.8 s for 4000 draws).  Here the same
graph is vectorised over a leading axis of draws (``vectorize_graph``), so
that each operation runs once per batch on whole arrays (the same
log-likelihood: 0.35 s, 0.17 s of it PyMC building the log-density graph).
The predictions ``eta`` and ``mu`` (:mod:`bayesglmm.predict`), the
log-likelihood and the exact draws of marginalised random effects
(:mod:`bayesglmm.marginal`) are computed this way; responses, which are
random draws, are left to PyMC.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from pymc.model.transform.conditioning import remove_value_transforms
from pytensor.compile.function.types import Function
from pytensor.compile.mode import Mode
from pytensor.graph.replace import vectorize_graph
from pytensor.graph.traversal import ancestors
from pytensor.tensor.random.type import RandomType

from . import _march

#: No rewrites, PyTensor's Python linker: for graphs of a few large operations, as the
#: exact draws of random effects.  For those of a dense crossed layout of 160 effects,
#: the FAST_COMPILE rewrites took 2.1 s and the draws then ran 2× slower than without.
#: Not for graphs of elementwise operations of more than two inputs (an ``Add`` of three
#: terms): the Python linker runs those element by element.
UNREWRITTEN = Mode(linker="py", optimizer=None)
#: Largest intermediate array (values) of one batch.
BATCH_BUDGET = 5_000_000


def batched_function(inputs: list, outputs: list, mode: Mode | None = None) -> Function:
    """``outputs`` as a function of ``inputs``, every one with a new leading axis of draws.

    ``mode`` is PyTensor's default (all rewrites, C) unless given.
    """
    batched = {v: pt.tensor(dtype=v.dtype, shape=(None, *v.type.shape), name=v.name) for v in inputs}
    with _march.kept():  # predictions in a new process, e.g. of a loaded fit
        return pytensor.function(list(batched.values()), vectorize_graph(outputs, replace=batched), mode=mode)


def reached_and_free(model: pm.Model, outputs: list) -> tuple[list, list]:
    """The variables ``outputs`` depend on up to ``model``'s free ones (in a fixed order), and those free ones."""
    free = list(model.free_RVs)
    reached = list(ancestors(outputs, blockers=free))
    seen = set(reached)
    return reached, [v for v in free if v in seen]


def flat_draws(posterior: xr.Dataset, name: str) -> np.ndarray:
    """The draws of ``name``, (chain × draw, ...)."""
    values = np.asarray(posterior[name].values)
    return values.reshape(-1, *values.shape[2:])


def draws_array(values: np.ndarray, posterior: xr.Dataset, model: pm.Model, name: str) -> xr.DataArray:
    """``values`` (chain, draw, ...) of ``model``'s ``name`` as a DataArray: the posterior's chains and
    draws, then the model's dims and coordinates for ``name`` (PyMC's ``{name}_dim_i`` and integer
    coordinates where it has none)."""
    values = np.asarray(values)
    dims = model.named_vars_to_dims.get(name) or [f"{name}_dim_{i}" for i in range(values.ndim - 2)]
    coords = {d: posterior.coords[d] for d in ("chain", "draw")}
    coords |= {
        d: np.arange(n) if model.coords.get(d) is None else list(model.coords[d])  # PyMC's tuple reads as (dims, data)
        for d, n in zip(dims, values.shape[2:])
    }
    return xr.DataArray(values, dims=("chain", "draw", *dims), coords=coords)


def _in_batches(fn: Function, posterior: xr.Dataset, names: list[str], spread: int = 1) -> np.ndarray:
    """``fn`` of the draws of ``names``, batch after batch: (chain, draw, ...).

    A batch holds at most ``BATCH_BUDGET`` values of the largest intermediate
    array, ``spread`` times as large as the output (whose size is measured on
    the first draw, computed alone).
    """
    arrays = [flat_draws(posterior, name) for name in names]
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    parts = [fn(*[a[:1] for a in arrays])[0]]
    batch = max(1, BATCH_BUDGET // max(1, spread * parts[0].size))
    parts += [fn(*[a[start : start + batch] for a in arrays])[0] for start in range(1, chains * draws, batch)]
    values = np.concatenate(parts)
    return values.reshape(chains, draws, *values.shape[1:])


def log_likelihood(posterior: xr.Dataset, model: pm.Model, name: str) -> np.ndarray:
    """Pointwise log-likelihood of ``model``'s observed ``name`` at every draw: (chain, draw, *shape).

    The values of :func:`pymc.compute_log_likelihood` (the density of the
    observed values given the untransformed parameters).  Compiled as PyMC
    compiles it, with all rewrites and C: the graph is elementwise over rows,
    of many small operations.
    """
    plain = remove_value_transforms(model)
    (logp,) = plain.logp(vars=[plain[name]], sum=False)
    reached = set(ancestors([logp]))
    inputs = [v for v in plain.value_vars if v in reached]
    return _in_batches(batched_function(inputs, [logp]), posterior, [v.name for v in inputs])


def deterministic(posterior: xr.Dataset, model: pm.Model, output, spread: int = 1) -> np.ndarray:
    """``output``, a function of ``model``'s free variables, at every draw: (chain, draw, *shape).

    What :func:`pymc.sample_posterior_predictive` gives for a deterministic
    variable, in one call per batch.  ``spread``: how many times larger than
    the output its largest intermediate array is.  An ``output`` that
    depends on random numbers other than the free variables' (a draw, not a
    function of the posterior) is refused.
    """
    reached, inputs = reached_and_free(model, [output])
    if any(isinstance(v.type, RandomType) for v in reached):
        raise RuntimeError(f"{output} depends on random draws, not only on the posterior")
    return _in_batches(batched_function(inputs, [output]), posterior, [v.name for v in inputs], spread)
