"""The "nutpie-c" sampler: nutpie's NUTS on PyTensor's C functions, chains in forked processes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm import cnuts

from .test_fit import _sim


@pytest.fixture(scope="module")
def model():
    return bg.GLMM("y ~ x + (1 + x | school)", _sim(), family="bernoulli")


def _point(target, x: np.ndarray) -> dict[str, np.ndarray]:
    """The joined parameter vector ``x`` split into ``target``'s value variables, by name."""
    shapes = {name: np.shape(value) for name, value in target.initial_point().items()}
    point, start = {}, 0
    for v in target.value_vars:
        size = int(np.prod(shapes[v.name]))
        point[v.name] = x[start : start + size].reshape(shapes[v.name])
        start += size
    assert start == x.size
    return point


def _target(formula: str, family: str, layout: str):
    """The model nutpie-c samples for ``formula`` on the simulated data, the response recoded for ``family``."""
    df = _sim()
    df["x2"], df["h"] = df["x"] ** 2, np.arange(len(df)) % 4
    if family == "gaussian":
        df["y"] = 250.0 + 10.0 * df["x"] + df["y"]
    elif family == "poisson" or family == "negativebinomial":
        df["y"] = df["y"] * 3
    elif family == "cumulative":
        df["y"] = pd.Categorical(np.where(df["x"] > 0.5, "c", np.where(df["y"] > 0, "b", "a")), ordered=True)
    glmm = bg.GLMM(formula, df, family=family)
    return glmm.marginal_model(fused=True) if layout == "marginal" else glmm.sampling_model()


def test_functions_match_pymc(model):
    """The joined log density and gradient are PyMC's, and expand gives the stored variables."""
    target = model.sampling_model()
    fns = cnuts.compile_functions(target, ["fixef", "r_school"])
    x = fns.initial(3)
    point = _point(target, x)
    assert fns.ndim == x.size
    logp, grad = fns.logp_dlogp(x)
    assert float(logp) == pytest.approx(float(target.compile_logp()(point)), rel=1e-10)
    np.testing.assert_allclose(grad, target.compile_dlogp()(point), rtol=1e-8, atol=1e-10)
    fixef, r = fns.expand(x)
    outs = target.replace_rvs_by_values([target["fixef"], target["r_school"]])
    expected = target.compile_fn(outs, inputs=target.value_vars, on_unused_input="ignore")(point)
    np.testing.assert_allclose(fixef, expected[0])
    np.testing.assert_allclose(r, expected[1])
    assert not np.array_equal(fns.initial(3), fns.initial(4))  # jittered per seed


@pytest.mark.parametrize(
    ("formula", "family", "layout"),
    [
        ("y ~ x + (1 + x | school)", "bernoulli", "sampled"),
        ("y ~ x + (1 + x || school)", "poisson", "sampled"),
        ("y ~ x + (1 | school)", "negativebinomial", "sampled"),
        ("y ~ x + (1 + x | school)", "gaussian", "marginal"),
        ("y ~ x + (1 | school)", "cumulative", "sampled"),
    ],
)
def test_support_point_is_pymcs_initial_point(formula, family, layout):
    """The point the chains start from (before the jitter) is PyMC's, LKJ factors and cutpoints included."""
    target = _target(formula, family, layout)
    start = cnuts.support_point(target)
    expected = target.initial_point()
    assert list(start) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(start[name], value, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("formula", "family", "layout"),
    [
        ("y ~ x + (1 + x | school)", "gaussian", "marginal"),
        ("y ~ x + (1 + x + x2 | school)", "poisson", "sampled"),
        ("y ~ x + (1 + x | school) + (1 | h)", "cumulative", "sampled"),
    ],
)
def test_density_with_lkj_operation_is_pymcs(formula, family, layout):
    """With each correlated block's LKJ term one operation (bayesglmm.lkj_op), the compiled density
    and gradient are still PyMC's, for blocks of 2 and 3 terms, beside other factors."""
    target = _target(formula, family, layout)
    fns = cnuts.compile_functions(target, ["fixef"])
    ops = [type(node.op).__name__ for node in fns.logp_dlogp.maker.fgraph.toposort()]
    assert "LKJDensity" in ops and "LKJDensityGrad" in ops
    for seed in (1, 2):
        x = fns.initial(seed) * 1.5
        point = _point(target, x)
        logp, grad = fns.logp_dlogp(x)
        assert float(logp) == pytest.approx(float(target.compile_logp()(point)), rel=1e-10)
        np.testing.assert_allclose(grad, target.compile_dlogp()(point), rtol=1e-8, atol=1e-10)


def _c_code(target) -> list[str]:
    """The operations of the compiled functions, fused elementwise code included."""
    fns = cnuts.compile_functions(target, ["fixef"])
    return [str(node.op) for fn in (fns.logp_dlogp, fns.expand) for node in fn.maker.fgraph.toposort()]


@pytest.mark.parametrize("family", ["gaussian", "bernoulli"])
def test_new_data_compile_to_the_same_code(family):
    """Numbers computed from the data (prior scales, sums of squares, n) are inputs of the C code,
    not written into it: a second data set of the same shape compiles nothing new."""
    first, second = _sim(seed=1), _sim(seed=2)
    if family == "gaussian":
        first["y"], second["y"] = 100.0 + 9.0 * first["x"], 300.0 + 2.0 * second["x"] ** 2
        first["x"], second["x"] = 3.0 * first["x"], first["x"] + 1.5
    models = [bg.GLMM("y ~ x + (1 + x | school)", data, family=family) for data in (first, second)]
    targets = [m.marginal_model() if family == "gaussian" else m.sampling_model() for m in models]
    assert _c_code(targets[0]) == _c_code(targets[1])


def test_structural_numbers_stay_constants():
    """Exponents and factors that rewrites recognise are not lifted; other float scalars are."""
    import pytensor.tensor as pt

    lifted = {v: cnuts._is_data_number(pt.constant(v)) for v in (0.0, 0.5, -1.0, 2.0, 4.0, np.inf, 2.5)}
    assert not any(lifted.values())
    assert all(cnuts._is_data_number(pt.constant(v)) for v in (0.4, 180.0, -4.93e-5, 4.5))
    assert not cnuts._is_data_number(pt.constant(180))  # integers index and shape: never lifted
    assert not cnuts._is_data_number(pt.constant([0.4, 0.3]))  # arrays are inputs of the code already


@pytest.mark.sampling
@pytest.mark.parametrize("cores", [1, 2])
def test_progress_counts_every_draw(model, monkeypatch, cores):
    """The bar follows the draws (tuning included) of all chains, also across forked workers."""
    seen = []

    class Recorder(cnuts._Progress):
        def update(self) -> None:
            seen.append(self._counter.total())

    monkeypatch.setattr(cnuts, "_Progress", Recorder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        model.fit(draws=30, tune=40, chains=3, cores=cores, random_seed=1, progressbar=False, sampler="nutpie-c")
    assert seen == sorted(seen) and seen[-1] == 3 * 70


def test_chain_seeds_are_fixed_and_distinct():
    assert cnuts.chain_seeds(7, 4) == cnuts.chain_seeds(7, 4)
    assert len(set(cnuts.chain_seeds(7, 4))) == 4
    assert cnuts.chain_seeds(7, 4)[:2] == cnuts.chain_seeds(7, 2)
    assert cnuts.chain_seeds(7, 2) != cnuts.chain_seeds(8, 2)


@pytest.mark.sampling
def test_draws_do_not_depend_on_the_processes(model):
    """Each chain has its own seed: one process or two give the same draws, chains numbered 0..n-1."""
    options = {"draws": 60, "tune": 60, "chains": 3, "random_seed": 5, "progressbar": False, "sampler": "nutpie-c"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        one = model.fit(cores=1, **options)
        two = model.fit(cores=2, **options)
    assert one.idata.attrs["sampler"] == "nutpie-c" and one.idata.attrs["mass_matrix"] == "draws"
    assert list(one.idata.posterior.chain.values) == [0, 1, 2]
    for name in ("fixef", "r_school", "sd_school"):
        np.testing.assert_array_equal(one.idata.posterior[name].values, two.idata.posterior[name].values)
    assert one.idata.posterior["r_school"].dims == ("chain", "draw", "school", "school__term")
    assert (one.idata.sample_stats["diverging"].shape) == (3, 60)


def _failing(chain: int):
    if chain == 1:
        raise ValueError("boom in chain 1")
    return chain


def _dying(chain: int):
    os._exit(3)


@pytest.mark.skipif(cnuts._fork_context() is None, reason="needs fork")
def test_a_failing_chain_raises_with_its_traceback():
    with pytest.raises(RuntimeError, match=r"(?s)a sampling process failed.*boom in chain 1"):
        cnuts._collect(
            *cnuts._start_workers(cnuts._fork_context(), _failing, 2, 2),
            2,
            cnuts._Progress(2, cnuts._DrawCounter(2), False),
        )


@pytest.mark.skipif(cnuts._fork_context() is None, reason="needs fork")
def test_a_dead_process_raises_naming_the_missing_chains():
    with pytest.raises(RuntimeError, match=r"without chains \[0, 1\]"):
        cnuts._collect(
            *cnuts._start_workers(cnuts._fork_context(), _dying, 2, 2),
            2,
            cnuts._Progress(2, cnuts._DrawCounter(2), False),
        )


def _report_fork_context(queue) -> None:
    queue.put(cnuts._fork_context() is None)


@pytest.mark.skipif(cnuts._fork_context() is None, reason="needs fork")
def test_no_forking_inside_a_daemonic_process():
    """A fit inside a pool's worker runs its chains in that process (daemons may not have children)."""
    ctx = cnuts._fork_context()
    queue = ctx.Queue()
    worker = ctx.Process(target=_report_fork_context, args=(queue,), daemon=True)
    worker.start()
    assert queue.get(timeout=60) is True
    worker.join()


def test_small_designs_need_no_matrix_vector_product():
    """X·β of a small design is an elementwise product and a sum: PyTensor runs Gemv in Python
    when it links no BLAS (model.ELEMENTWISE_MAX)."""
    model = bg.GLMM("y ~ x + I(x**2) + (1 | school)", _sim(), family="bernoulli")
    fns = cnuts.compile_functions(model.sampling_model(), ["fixef"])
    ops = {type(node.op).__name__ for node in fns.logp_dlogp.maker.fgraph.apply_nodes}
    assert not ops & {"Gemv", "Dot22", "Dot", "Gemm", "Dot22Scalar", "CGemv"}, ops


@pytest.mark.parametrize("family", ["bernoulli", "gaussian"])
def test_correlated_blocks_run_no_python_in_the_gradient(family):
    """Every operation of the compiled log density and gradient has C code: a correlated
    block's factor L is gathered from LKJCholeskyCov's packed rows (model.unpack_lower),
    not expanded by a two-index assignment, which PyTensor runs in Python."""
    from pytensor.link.c.interface import CLinkerOp

    data = _sim()
    model = bg.GLMM("y ~ x + (1 + x | school)", data, family=family)
    target = model.marginal_model() if family == "gaussian" else model.sampling_model()
    fns = cnuts.compile_functions(target, ["fixef"])
    python = {str(node.op) for node in fns.logp_dlogp.maker.fgraph.apply_nodes if not isinstance(node.op, CLinkerOp)}
    assert not python, python


def test_compiled_without_parameter_checks(caplog):
    """The model has check_bounds=False (every parameter is constrained by its transform), and
    nutpie-c's functions are compiled as PyMC compiles them for it: without the checks.  With
    them, a partially centred gamma model tripped a PyTensor rewrite on ``sd**c > 0``, which
    logged an error and its traceback at every fit."""
    import logging

    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 10)
    x = rng.normal(size=g.size)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.5, 12)[g]
    df = pd.DataFrame({"x": x, "g": [f"g{i}" for i in g], "y": np.exp(eta + rng.normal(0, 0.3, g.size))})
    model = bg.GLMM("y ~ x + (1 | g)", df, family="gamma")
    assert model.centring()  # the partially centred form, Normal(w | anchor, sd**c)
    with caplog.at_level(logging.ERROR, logger="pytensor"):
        fns = cnuts.compile_functions(model.sampling_model(), ["fixef"])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    ops = {str(node.op) for node in fns.logp_dlogp.maker.fgraph.apply_nodes}
    assert not any("CheckParameterValue" in op for op in ops)


def _counts_frame(seed=4):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(10), 12)
    x = rng.normal(size=g.size)
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.6, 10)[g]
    return pd.DataFrame(
        {
            "x": x,
            "g": [f"g{i}" for i in g],
            "s": rng.binomial(8, 1 / (1 + np.exp(-eta))),
            "n": 8,
            "c": rng.poisson(np.exp(eta)),
            "pos": np.exp(eta + rng.normal(0, 0.3, g.size)),
        }
    )


@pytest.mark.parametrize(
    ("formula", "family"),
    [
        ("p(s, n) ~ x + (1 | g)", "binomial"),
        ("c ~ x + (1 + x | g)", "poisson"),
        ("c ~ x + (1 | g)", "negativebinomial"),
        ("pos ~ x + (1 | g)", "gamma"),
    ],
)
def test_density_and_gradient_are_pymcs_with_data_parts_computed_once(formula, family):
    """The parts of the density computed from the data alone (a binomial's log C(n, y), a
    count's log y!) are evaluated once before compiling (cnuts.hoist_data): the compiled
    function holds no gammaln of the data, and its density and gradient are PyMC's."""
    model = bg.GLMM(formula, _counts_frame(), family=family)
    target = model.sampling_model()
    fns = cnuts.compile_functions(target, ["fixef"])
    x = fns.initial(2)
    point, start = {}, 0
    for name, value in target.initial_point().items():
        point[name] = x[start : start + np.size(value)].reshape(np.shape(value))
        start += np.size(value)
    logp, grad = fns.logp_dlogp(x)
    assert float(logp) == pytest.approx(float(target.compile_logp()(point)), rel=1e-12)
    np.testing.assert_allclose(grad, target.compile_dlogp()(point), rtol=1e-10, atol=1e-12)
    if family in ("binomial", "poisson"):
        scalar_ops = [
            str(op)
            for node in fns.logp_dlogp.maker.fgraph.apply_nodes
            if hasattr(node.op, "scalar_op")
            for op in (
                [n.op for n in node.op.scalar_op.fgraph.apply_nodes]
                if hasattr(node.op.scalar_op, "fgraph")
                else [node.op.scalar_op]
            )
        ]
        assert not [op for op in scalar_ops if "gammaln" in op.lower()], scalar_ops


def _families_frame(seed=3):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), 10)
    h = np.tile(np.arange(5), 24)
    x = rng.normal(size=g.size)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.5, 12)[g]
    order = ["low", "mid", "high", "top"]
    levels = np.take(order, np.digitize(eta + rng.logistic(size=g.size), [-0.5, 0.5, 1.5]))
    return pd.DataFrame(
        {
            "x": x,
            "g": [f"g{i}" for i in g],
            "h": [f"h{i}" for i in h],
            "yg": eta + rng.normal(size=g.size),
            "yb": rng.binomial(1, 1 / (1 + np.exp(-eta))),
            "yp": rng.poisson(np.exp(eta)),
            "unit": 1 / (1 + np.exp(-(eta + rng.normal(0, 0.3, g.size)))),
            "yo": pd.Categorical(levels, order, ordered=True),
            "yc": rng.choice(["a", "b", "c"], g.size),
        }
    )


@pytest.mark.parametrize(
    ("formula", "family", "marginal"),
    [
        ("yg ~ x + (1 + x | g)", "gaussian", False),
        ("yg ~ x + (1 | g)", "student_t", False),
        ("yb ~ x + (1 + x || g)", "bernoulli", False),
        ("yp ~ x + (1 | g/h)", "poisson", False),
        ("yp ~ x + (1 | g)", "negativebinomial", False),
        ("unit ~ x + (1 | g)", "beta", False),
        ("yc ~ x + (1 | g)", "categorical", False),
        ("yo ~ x + (1 | g)", "ordinal", False),
        ("yo ~ x + (1 | g)", ("ordinal", "probit"), False),
        ("yg ~ x + (1 + x | g)", "gaussian", True),
        ("yg ~ x + (1 | g) + (0 + x | g)", "gaussian", True),
        ("yg ~ x + (1 + x || g)", "gaussian", True),
    ],
)
def test_gradients_run_no_python(formula, family, marginal):
    """Every operation of nutpie-c's compiled density and gradient has C code, across families
    and random-effect structures (PyTensor runs an operation without C code in Python)."""
    from pytensor.link.c.interface import CLinkerOp

    family, link = family if isinstance(family, tuple) else (family, None)
    model = bg.GLMM(formula, _families_frame(), family=family, link=link)
    target = model.marginal_model(fused=True) if marginal else model.sampling_model()
    fns = cnuts.compile_functions(target, ["fixef"])
    python = {str(node.op) for node in fns.logp_dlogp.maker.fgraph.apply_nodes if not isinstance(node.op, CLinkerOp)}
    assert not python, python


def _thread_states() -> int:
    """Python thread states of this interpreter (live threads, and any state left behind)."""
    import ctypes

    api = ctypes.pythonapi
    head = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyInterpreterState_Head", api))
    first = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(("PyInterpreterState_ThreadHead", api))
    following = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(("PyThreadState_Next", api))
    count, state = 0, first(head())
    while state:
        count, state = count + 1, following(state)
    return count


@pytest.mark.sampling
def test_sampling_threads_states_are_kept_then_let_go(model, monkeypatch):
    """Each chain's thread holds its Python state from its first gradient to its last draw, then lets go:
    no state is left behind, none stays held, and the draws are those of a run without keeping."""
    kept = []
    original = cnuts.KeptThreadState

    class Recorder(original):
        def __init__(self, draws):
            super().__init__(draws)
            kept.append(self)

    monkeypatch.setattr(cnuts, "KeptThreadState", Recorder)
    options = {"draws": 30, "tune": 40, "chains": 3, "cores": 1, "random_seed": 2, "progressbar": False}
    before = _thread_states()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        fit = model.fit(sampler="nutpie-c", **options)
        assert _thread_states() == before
        assert kept[0].held == {} and kept[0].seen == 70
        monkeypatch.setattr(original, "keep", lambda self: None)
        plain = model.fit(sampler="nutpie-c", **options)
    np.testing.assert_array_equal(fit.idata.posterior["fixef"].values, plain.idata.posterior["fixef"].values)


def test_a_kept_state_is_let_go_at_the_last_draw_only():
    from bayesglmm._threadstate import KeptThreadState

    kept = KeptThreadState(draws=2)
    assert kept.keep()  # the first call holds: settings made now last
    assert not kept.keep()
    assert len(kept.held) == 1
    kept.drawn()
    assert len(kept.held) == 1
    kept.drawn()
    assert kept.held == {}
    assert not kept.keep()  # after the last draw: nothing more is held
    assert kept.held == {}
    kept.held[12345] = 1  # a thread of a chain that stopped early
    kept.start()  # forgotten: a release belongs to the thread that held
    assert kept.held == {} and kept.seen == 0


@pytest.mark.sampling
def test_numpy_errors_are_ignored_in_the_sampling_threads_only(model, monkeypatch):
    """Every log-density call runs with NumPy's floating-point errors ignored, set once per
    chain in the sampling thread; the caller's own settings are untouched."""
    settings = []
    original = cnuts.compile_functions

    def recording(target, names):
        fns = original(target, names)

        def logp_dlogp(x):
            settings.append(np.geterr()["invalid"])
            return fns.logp_dlogp(x)

        return cnuts.CFunctions(logp_dlogp, fns.expand, fns.initial, fns.names, fns.ndim)

    monkeypatch.setattr(cnuts, "compile_functions", recording)
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        model.fit(sampler="nutpie-c", draws=20, tune=20, chains=2, cores=1, random_seed=1, progressbar=False)
    assert np.geterr() == before and before["invalid"] != "ignore"
    assert len(settings) > 80 and set(settings) == {"ignore"}
