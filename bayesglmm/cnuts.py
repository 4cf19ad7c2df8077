"""nutpie's NUTS on PyTensor's C functions, the chains spread over forked processes.

The ``"nutpie-c"`` sampler.  PyMC's own NUTS spends, per leapfrog step, more time
in Python than a small model's log-density takes in C (cbpp: 25 µs of C against
about 30 µs of Python per step, and its worker processes wait on the main one
after every draw); nutpie's NUTS runs in compiled code but compiles the model
with numba, 10-25 s before the first draw.  Here nutpie drives the log-density
and gradient that PyTensor compiles to C (a second or two, cached on disk), and
each of ``cores`` processes, forked after compilation, runs its share of the
chains one after the other.  A Python call costs a few µs per gradient, so the
gain is for small models; large ones go to nutpie's numba back end
(:func:`bayesglmm.fit.choose_sampler`).  nutpie calls Python from a thread of
its own, which would get a new Python thread state at every call; each chain's
thread keeps one instead (:mod:`bayesglmm._threadstate`), 10-12 µs less per
gradient.

Each chain is one ``nutpie.sample`` call with its own seed from
``SeedSequence([random_seed, chain])``, so the draws do not depend on how the
chains are spread over processes.  Where ``fork`` is not available (Windows)
or not safe (macOS), and in daemonic processes, the chains run one after the
other in this process.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import pickle
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.distributions.distribution import SymbolicRandomVariable
from pymc.initial_point import make_initial_point_expression
from pymc.pytensorf import compile as compile_fn
from pymc.pytensorf import join_nonshared_inputs, replace_rng_nodes
from pytensor.compile.mode import Mode, get_mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import equal_computations
from pytensor.graph.replace import clone_replace, graph_replace
from pytensor.graph.traversal import ancestors, toposort
from pytensor.tensor.random.type import RandomType
from pytensor.tensor.shape import Shape, Shape_i
from pytensor.tensor.type import TensorType
from pytensor.tensor.variable import TensorConstant

from . import _fncache
from ._threadstate import KeptThreadState
from .batch import UNREWRITTEN
from .lkj_op import model_logp
from .stats import az

if TYPE_CHECKING:
    from .fit import FitConfig


@dataclass(frozen=True)
class CFunctions:
    """A model's compiled functions of the joined, unconstrained parameter vector."""

    logp_dlogp: Callable  #: x -> (log density, gradient)
    expand: Callable  #: x -> values of the stored variables
    initial: Callable  #: seed -> jittered initial x
    names: tuple[str, ...]  #: stored variables, in the order ``expand`` returns them
    ndim: int


def _dense_float_constant(var) -> bool:
    """A constant dense array of floats (not a sparse matrix: :class:`~bayesglmm.sparse_stats.SparseResiduals`)."""
    return isinstance(var, TensorConstant) and isinstance(var.data, np.ndarray) and var.dtype in ("float32", "float64")


def _is_data_number(var) -> bool:
    """A float constant of one element that does not look structural.

    Structural: infinities and the halves and whole numbers up to 4 that
    rewrites recognise (exponents such as 2 or -0.5, factors 0 and ±1).
    """
    if not _dense_float_constant(var) or var.data.size != 1:
        return False
    value = float(var.data.ravel()[0])
    return bool(np.isfinite(value)) and not ((2.0 * value).is_integer() and abs(value) <= 4.0)


def _is_data_array(var) -> bool:
    """A float constant of several elements, not all equal: data.

    Rewrites read the values of uniform arrays only (as the number they
    repeat: a fill of ones, say), and those stay constants.
    """
    if not _dense_float_constant(var) or var.data.size < 2:
        return False
    flat = var.data.ravel()
    return not bool(np.all(flat == flat[0]))


def _lift(outputs: list, is_data: Callable) -> list:
    """``outputs`` with the constants ``is_data`` picks held in shared variables, one per distinct value
    (as PyTensor merges equal constants, so that the operations reading them still merge)."""
    found = [v for v in ancestors(outputs) if is_data(v)]
    if not found:
        return list(outputs)
    held: dict = {}
    swap = {}
    for v in found:
        value = np.asarray(v.data)
        signature = (v.type, value.tobytes())  # a constant's type holds its dtype and whole shape
        if signature not in held:
            held[signature] = pytensor.shared(value, shape=v.type.shape)
        swap[v] = held[signature]
    return list(graph_replace(list(outputs), swap, strict=False))


def lift_numbers(outputs: list) -> list:
    """``outputs`` with their data-dependent scalar constants held in shared variables.

    PyTensor writes a scalar constant into the C code of the fused elementwise
    operation that uses it, so a prior scale or a sum of squares computed from
    the data would give every new data set its own C modules to compile (about
    a second each) and grow PyTensor's module cache, whose index every new
    process loads.  As shared variables they are inputs of that code instead.
    Constants such as 0.5 or 2, which rewrites recognise, stay constants.
    """
    return _lift(outputs, _is_data_number)


def lift_arrays(outputs: list) -> list:
    """``outputs`` with their data arrays (:func:`_is_data_array`) held in shared variables.

    A stored function is found by its graph, in which the values of shared
    variables do not count (:mod:`bayesglmm._fncache`): the marginal model's
    sufficient statistics, built as constants, would otherwise tie it to one
    data set.  Parts computed from them alone are then evaluated once by
    :func:`hoist_data`, as PyTensor folded them as constants.
    """
    return _lift(outputs, _is_data_array)


def _depends(nodes: list, roots: list) -> set:
    """Variables of the graph of ``nodes`` (in topological order) that depend on ``roots`` other than through shapes."""
    dependent = set(roots)
    for node in nodes:
        if not isinstance(node.op, Shape | Shape_i) and any(i in dependent for i in node.inputs):
            dependent.update(node.outputs)
    return dependent


def _reads_data(var) -> bool:
    """Whether ``var`` is computed from data (shared variables), and from no random generator."""
    shared = [v for v in ancestors([var]) if isinstance(v, SharedVariable)]
    return bool(shared) and not any(isinstance(v.type, RandomType) for v in shared)


def hoist_data(outputs: list, joined, point: np.ndarray) -> list:
    """``outputs`` (functions of ``joined``) with the parts computed from the data alone evaluated once.

    PyTensor computes every part of a compiled function at every call; the data
    are shared variables, not constants, so no rewrite folds what depends on
    them alone.  A binomial response's ``log C(n, y)`` (three ``gammaln`` per
    row) took a fifth of Contraception's gradient (20 of 106 µs).  Each largest
    such part is computed here, at ``point`` (only shapes may depend on it), and
    enters the function as a shared variable, like the data.
    """
    nodes = list(toposort(outputs))
    dependent = _depends(nodes, [joined])
    targets: dict = {}
    for node in nodes:
        if node.outputs[0] not in dependent:
            continue
        for var in node.inputs:
            if var not in dependent and var.owner is not None and isinstance(var.type, TensorType):
                targets.setdefault(var, None)
    targets = [v for v in targets if _reads_data(v)]
    if not targets:
        return list(outputs)
    # a part built twice (once for the density, once for its gradient) gets one shared
    # variable, else the operations reading it would no longer merge and run twice
    first = [next(u for u in targets if equal_computations([u], [v])) for v in targets]
    unique = list(dict.fromkeys(first))
    values = pytensor.function([joined], unique, mode="FAST_COMPILE", on_unused_input="ignore")(point)
    held = {v: pytensor.shared(np.asarray(x, dtype=v.dtype), shape=v.type.shape) for v, x in zip(unique, values)}
    return list(clone_replace(list(outputs), replace={v: held[u] for v, u in zip(targets, first)}))


def support_point(model: pm.Model) -> dict[str, np.ndarray]:
    """``model``'s initial point before jitter, by value variable, in the unconstrained space.

    PyMC's initial point (each distribution's support point, transformed) without
    compiling PyMC's seeded function of it: its expressions are evaluated once by
    PyTensor's Python linker, without rewrites (:data:`bayesglmm.batch.UNREWRITTEN`).  Compiling that function took
    0.3-0.5 s at every fit, the largest cost of a small model's start-up after
    the log density's own compilation.
    A support point reads a random variable for its shape only (``zeros_like(rv)``
    for ``LKJCholeskyCov``); a symbolic one of static shape is replaced by zeros of
    that shape, since the Python linker would compile its inner graph to draw it
    (0.5 s).
    """
    expressions = make_initial_point_expression(
        free_rvs=model.free_RVs,
        rvs_to_transforms=model.rvs_to_transforms,
        initval_strategies=model.rvs_to_initial_values,
        jitter_rvs=set(),
        return_transformed=True,
    )
    symbolic = {
        v: pt.zeros(v.type.shape, dtype=v.dtype)
        for v in ancestors(expressions)
        if v.owner is not None
        and isinstance(v.owner.op, SymbolicRandomVariable)
        and isinstance(v.type, TensorType)
        and None not in v.type.shape
    }
    expressions = graph_replace(expressions, symbolic, strict=False) if symbolic else expressions
    values = pytensor.function([], replace_rng_nodes(expressions), mode=UNREWRITTEN)()
    return {v.name: np.asarray(x, dtype="float64") for v, x in zip(model.value_vars, values)}


def _sampling_mode() -> Mode:
    """The configured compilation mode without PyTensor's sparse ``local_usmm`` rewrite.

    Its pattern reads ``config.blas__ldflags`` at the first subtraction it
    meets, and the first reading in a process compiles a test program
    (sleepstudy's fit: 0.05-0.1 s).  The model graphs have no sparse products
    for it to rewrite.
    """
    return get_mode(None).excluding("local_usmm")


def _compiled(model: pm.Model, inputs: list, outputs: list, **options):
    """PyMC's compilation of ``outputs`` in the sampling mode, or the function an earlier process stored.

    PyMC's compile drops the parameter checks of a model with ``check_bounds=False``,
    so the model's setting is part of the key (:mod:`bayesglmm._fncache`).
    """

    def build():
        with model:
            return compile_fn(inputs, outputs, trust_input=True, mode=_sampling_mode(), **options)

    described = {"mode": "default excluding local_usmm", "trust_input": True, "check_bounds": model.check_bounds}
    return _fncache.compiled(inputs, outputs, build, described | options)


def compile_functions(model: pm.Model, names: list[str]) -> CFunctions:
    """Compile ``model``'s log density, its gradient and the stored variables ``names`` to C.

    The initial points are PyMC's: the support point plus a U(-1, 1) jitter of
    every unconstrained coordinate, here from ``numpy.random.default_rng(seed)``.
    """
    # every new graph node records the Python stack that made it (PyTensor's error
    # messages show it); of these internal graphs nobody reads it, and it took a
    # tenth of a small model's compilation
    with pytensor.config.change_flags(traceback__limit=0):
        return _compile_functions(model, names)


def _compile_functions(model: pm.Model, names: list[str]) -> CFunctions:
    values = model.value_vars
    start = support_point(model)
    x0 = np.concatenate([np.ravel(start[v.name]) for v in values])
    logp = model_logp(model)
    grad = pt.concatenate([pt.flatten(g) for g in pt.grad(logp, values)])
    stored = model.replace_rvs_by_values([model[name] for name in names])
    (logp, grad, *stored), joined = join_nonshared_inputs(start, [logp, grad, *stored], values)
    logp, grad = hoist_data(lift_arrays([logp, grad]), joined, x0)
    density, stored = lift_numbers([logp, grad]), lift_numbers(lift_arrays(stored))
    logp_dlogp = _compiled(model, [joined], density)
    expand = _compiled(model, [joined], stored, on_unused_input="ignore")

    def initial(seed: int) -> np.ndarray:
        return x0 + np.random.default_rng(seed).uniform(-1.0, 1.0, x0.size)

    return CFunctions(logp_dlogp, expand, initial, tuple(names), x0.size)


class _DrawCounter:
    """Draws done (tuning included) per chain, in memory that forked workers share with this process.

    nutpie calls ``expand`` once per draw; each call ticks the slot of the chain
    being sampled, which the worker sets before sampling it.  Each slot has one
    writer, so no lock is needed.
    """

    def __init__(self, chains: int) -> None:
        self.counts = multiprocessing.RawArray("q", chains)
        self.chain = 0

    def tick(self) -> None:
        self.counts[self.chain] += 1

    def total(self) -> int:
        return int(sum(self.counts))


def _nutpie_model(model: pm.Model, fns: CFunctions, counter: _DrawCounter, kept: KeptThreadState):
    """A nutpie model calling ``fns``.

    The compiled functions are not re-entrant, and are not copied: each
    ``nutpie.sample`` call runs one chain, in one thread, and a process runs its
    chains one after the other (copying sleepstudy's took 45 ms a chain).  That
    thread's Python state is kept from its first call to its last draw (``kept``,
    :mod:`bayesglmm._threadstate`).
    """
    from nutpie.compiled_pyfunc import from_pyfunc

    def make_logp():
        fn = fns.logp_dlogp

        def logp(x, **_):
            # Trajectories may wander where the density underflows: numpy's warnings
            # would reach the user from every such step, and a failed factorisation
            # is a point of zero density (a divergence), not an error.  The sampling
            # thread's state is kept to the chain's end, and NumPy's error settings
            # with it: set once, not by ``np.errstate`` at every call (2.6 µs).
            if kept.keep():
                np.seterr(all="ignore")
            try:
                value, grad = fn(x)
            except (ArithmeticError, np.linalg.LinAlgError):
                return -np.inf, np.zeros_like(x)
            return float(value), grad

        return logp

    def make_expand(_seed1, _seed2, _chain):
        fn = fns.expand

        def expand(x, **_):
            counter.tick()
            values = dict(zip(fns.names, fn(x)))
            kept.drawn()
            return values

        return expand

    example = fns.expand(fns.initial(0))
    dims = {name: tuple(model.named_vars_to_dims.get(name, ())) for name in fns.names}
    used = {dim for names in dims.values() for dim in names}
    coords = {dim: list(model.coords[dim]) for dim in used}
    return from_pyfunc(
        fns.ndim,
        make_logp,
        make_expand,
        [np.asarray(v).dtype for v in example],
        [np.shape(v) for v in example],
        list(fns.names),
        coords=coords,
        dims={k: v for k, v in dims.items() if v},
        make_initial_point_fn=fns.initial,
    )


def chain_seeds(random_seed: int, chains: int) -> list[int]:
    """One nutpie seed per chain, from ``SeedSequence([random_seed, chain])``."""
    return [int(np.random.SeedSequence([random_seed, chain]).generate_state(1)[0]) for chain in range(chains)]


def _fork_context():
    """The ``fork`` start method where it is available and safe, else None.

    None also inside a daemonic process (a fit in a pool's worker), which may
    not start processes of its own.
    """
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    if multiprocessing.current_process().daemon:
        return None
    return multiprocessing.get_context("fork")


def sample_chains(model: pm.Model, names: list[str], cfg: FitConfig, draw_mass: bool) -> az.InferenceData:
    """Sample ``cfg.chains`` chains of ``model`` with nutpie on C functions; store ``names``.

    ``cfg`` gives draws, tuning steps, chains, cores (processes), seed,
    ``target_accept`` and the progress bar; ``draw_mass`` adapts the mass
    matrix from the draws' variances instead of from gradients.  Returns the
    chains concatenated, numbered 0 .. chains-1.
    """
    import nutpie

    chains = cfg.chains
    counter = _DrawCounter(chains)
    kept = KeptThreadState(cfg.tune + cfg.draws)
    nmodel = _nutpie_model(model, compile_functions(model, names), counter, kept)
    seeds = chain_seeds(cfg.random_seed, chains)
    settings = {
        "draws": cfg.draws,
        "tune": cfg.tune,
        "chains": 1,
        "cores": 1,
        "target_accept": cfg.target_accept,
        "save_warmup": False,
        "progress_bar": False,
        "use_grad_based_mass_matrix": not draw_mass,
    }

    def one(chain: int) -> az.InferenceData:
        counter.chain = chain
        kept.start()
        return nutpie.sample(nmodel, seed=seeds[chain], **settings)

    ctx = _fork_context()
    processes = min(cfg.cores, chains)
    progress = _Progress(chains * (cfg.tune + cfg.draws), counter, cfg.progressbar)
    if ctx is None or processes < 2:
        traces = {}
        with progress:
            for chain in range(chains):
                traces[chain] = one(chain)
                progress.update()
    else:
        workers, pipes = _start_workers(ctx, one, chains, processes)
        with progress:  # started after the fork: no thread of it in the workers
            traces = _collect(workers, pipes, chains, progress)
    idata = az.concat([traces[c] for c in range(chains)], dim="chain")
    return idata.assign_coords(chain=np.arange(chains), groups=["posterior", "sample_stats"])


def _worker(one: Callable, chains: list[int], conn) -> None:
    """Run ``chains`` one after the other; send each trace, or the error, as it comes."""
    gc.freeze()  # the parent's objects, never collected here (see bayesglmm._heap)
    try:
        for chain in chains:
            conn.send_bytes(pickle.dumps(("chain", chain, one(chain))))
    except BaseException:  # everything, an interrupt included, goes back to the parent
        conn.send_bytes(pickle.dumps(("error", None, traceback.format_exc())))
    finally:
        conn.close()


def _start_workers(ctx, one: Callable, chains: int, processes: int) -> tuple[list, list]:
    """Fork ``processes`` workers, worker ``p`` running chains ``p, p + processes, ...``; their pipes."""
    workers, pipes = [], []
    for p in range(processes):
        receive, send = ctx.Pipe(duplex=False)
        worker = ctx.Process(target=_worker, args=(one, list(range(p, chains, processes)), send), daemon=True)
        worker.start()
        send.close()
        workers.append(worker)
        pipes.append(receive)
    return workers, pipes


def _collect(workers: list, pipes: list, chains: int, progress: _Progress) -> dict:
    """The workers' traces by chain; the first error, or a missing chain, raises."""
    traces: dict[int, az.InferenceData] = {}
    try:
        for kind, chain, payload in _all_messages(pipes):
            progress.update()
            if kind == "error":
                raise RuntimeError(f"a sampling process failed:\n{payload}")
            if kind == "chain":
                traces[chain] = payload
    finally:
        for worker in workers:
            if worker.is_alive() and len(traces) < chains:
                worker.terminate()
            worker.join()
    if len(traces) < chains:
        missing = sorted(set(range(chains)) - set(traces))
        raise RuntimeError(f"sampling processes ended without chains {missing}")
    return traces


#: Seconds between two looks at the draw counter while waiting for the workers.
POLL = 0.25


def _all_messages(pipes: list):
    """Every message of every pipe, in the order they arrive, until all are closed;
    ``("tick", None, None)`` after every ``POLL`` seconds without one."""
    open_pipes = list(pipes)
    while open_pipes:
        ready = multiprocessing.connection.wait(open_pipes, timeout=POLL)
        if not ready:
            yield ("tick", None, None)
        for receive in ready:
            try:
                yield pickle.loads(receive.recv_bytes())
            except EOFError:
                open_pipes.remove(receive)


class _Progress:
    """Draws done (tuning included) out of all chains', as a rich progress bar when asked for."""

    def __init__(self, total: int, counter: _DrawCounter, show: bool) -> None:
        self._bar, self._counter = None, counter
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("draws"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar = Progress(*columns, redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task("sampling", total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def update(self) -> None:
        """Show the draws the counter holds."""
        if self._bar is not None:
            self._bar.update(self._task, completed=self._counter.total())

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
