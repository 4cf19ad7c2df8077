"""Compiled sampling functions kept on disk: keyed by the graph and its constants, loaded for the same
graph whatever the values of its shared variables (the data), which the loaded function then reads."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

import bayesglmm as bg
from bayesglmm import _fncache, cnuts

from .test_fit import _sim


def _graph(data, constant=2.0, op=pt.exp, dtype="float64"):
    """A density-like graph of an input vector, a shared data vector and a constant: inputs, outputs."""
    x = pt.vector("x", dtype=dtype)
    y = pytensor.shared(np.asarray(data, dtype="float64"), name="y")
    out = pt.sum((y - x[0]) ** 2) * op(x[1]) + pt.sum(constant)
    return [x], [out, pt.grad(out, x)]


def _key(*args, options=None, **kwargs):
    return _fncache.graph_key(*_graph(*args, **kwargs), options or {"mode": "test"})


def test_key_is_the_graph_not_its_objects():
    """New variables, other names, the same graph, other values of the shared data: one key.
    Any change of constant, operation, type, input order or option: another."""
    data = [1.0, 2.0, 3.5]
    key = _key(data)
    assert key is not None and key == _key(list(data)) == _key([1.0, 2.0, 3.5000001]) == _key([4.0, 5.0])
    changed = [
        _key(data, constant=2.5000001),
        _key(data, constant=np.array([2.0, 3.0])),
        _key(data, constant=np.array([2.0, 3.0000001])),
        _key(data, op=pt.log),
        _key(data, dtype="float32"),
        _key(data, options={"mode": "other"}),
        _key(data, options={"mode": "test", "on_unused_input": "ignore"}),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    (x,), outputs = _graph(data)
    z = pt.vector("z")
    assert _fncache.graph_key([z, x], outputs, {}) != _fncache.graph_key([x, z], outputs, {})


class _Scaled(Op):
    """An operation whose property is a function of this test module: it cannot be described by name."""

    __props__ = ("scale",)

    def __init__(self, scale):
        self.scale = scale

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = self.scale(inputs[0])


def test_values_are_told_apart_by_type_and_shape():
    tokens = [_fncache._token(v) for v in (1, 1.0, True, "1", np.float64(1.0), np.array([1.0]), np.array([[1.0]]))]
    assert len({repr(t) for t in tokens}) == len(tokens)
    assert _fncache._token(np.arange(6.0)[::2]) == _fncache._token(np.array([0.0, 2.0, 4.0]))  # strides do not count


def test_graphs_that_cannot_be_described_have_no_key():
    x = pt.vector("x")
    assert _fncache.graph_key([x], [_Scaled(np.negative)(x)], {}) is not None  # NumPy's, known by name
    assert _fncache.graph_key([x], [_Scaled(lambda v: -v)(x)], {}) is None
    assert _fncache.graph_key([x], [_Scaled(np.random.default_rng(0).normal)(x)], {}) is None  # a bound method
    assert _fncache.graph_key([x], [_Scaled(_Scaled(np.negative).perform)(x)], {}) is None
    free = pt.vector("free")
    assert _fncache.graph_key([x], [x + free], {}) is None  # an input that is not given


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(_fncache, "directory", lambda: tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def target():
    return bg.GLMM("y ~ x + (1 + x | school)", _sim(), family="bernoulli").sampling_model()


def test_a_stored_function_is_loaded_and_computes_the_same(folder, target, monkeypatch):
    first = cnuts.compile_functions(target, ["fixef"])
    assert len(list(folder.glob("*.pkl"))) == 2  # density and gradient; the stored variables
    monkeypatch.setattr(cnuts, "compile_fn", _refuse)
    second = cnuts.compile_functions(target, ["fixef"])
    for seed in range(3):
        x = first.initial(seed)
        (a, da), (b, db) = first.logp_dlogp(x), second.logp_dlogp(x)
        assert float(a) == float(b)
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(first.expand(x)[0], second.expand(x)[0])


def _refuse(*_args, **_kwargs):
    raise AssertionError("compiled, although the function was stored")


def test_a_loaded_function_reads_the_data_of_the_graph_at_hand(folder):
    """Stored for one data vector, loaded for another (of another length too): the new data's values."""
    (x,), outputs = _graph([1.0, 2.0, 3.5])
    _fncache.compiled([x], outputs, lambda: pytensor.function([x], outputs), {})
    for data in ([1.0, 2.0, 3.5], [-4.0, 0.25, 9.0], [7.0, 8.0]):
        (x,), outputs = _graph(data)
        loaded = _fncache.compiled([x], outputs, _refuse, {})
        point = np.array([0.3, -0.2])
        fresh = pytensor.function([x], outputs)(point)
        for a, b in zip(loaded(point), fresh):
            np.testing.assert_array_equal(a, b)
    assert len(list(folder.glob("*.pkl"))) == 1


def test_data_arrays_are_lifted_into_shared_variables():
    """Float arrays become shared variables, one per distinct value; uniform arrays and integers
    (which rewrites read) stay constants; the graph computes the same."""
    x = pt.vector("x")
    data = np.array([1.0, 2.0, 4.0])
    out = pt.sum(x * pt.as_tensor(data)) + pt.sum(x * pt.as_tensor(data.copy()))
    out = out + pt.sum(x * pt.as_tensor(np.ones(3))) + x[pt.as_tensor(np.array([0, 2]))].sum()
    (lifted,) = cnuts.lift_arrays([out])
    leaves = [v for v in pytensor.graph.traversal.ancestors([lifted]) if v.owner is None and v is not x]
    shared = [v for v in leaves if isinstance(v, pytensor.compile.sharedvalue.SharedVariable)]
    assert len(shared) == 1 and np.array_equal(shared[0].get_value(), data)
    assert any(getattr(v, "data", None) is not None and np.array_equal(v.data, np.ones(3)) for v in leaves)
    point = np.array([0.5, -1.0, 2.0])
    assert pytensor.function([x], lifted)(point) == pytensor.function([x], out)(point)


@pytest.mark.parametrize(
    ("formula", "family"), [("y ~ x + (1 + x | g)", "gaussian"), ("y ~ x + (1 + x | g)", "poisson")]
)
def test_a_model_of_the_same_form_loads_the_functions_of_other_data(folder, sim_gaussian, formula, family, monkeypatch):
    """Same formula, other response values (a marginal gaussian model's sufficient statistics,
    a poisson model's rows): the stored functions are loaded and compute the new data's density."""

    def functions(df):
        m = bg.GLMM(formula, df, family=family)
        target = m.marginal_model(fused=True) if family == "gaussian" else m.sampling_model()
        return cnuts.compile_functions(target, ["fixef", "sigma"] if family == "gaussian" else ["fixef"])

    first = sim_gaussian.assign(y=np.round(np.abs(sim_gaussian["y"]) * 3))
    second = first.assign(y=first["y"].to_numpy()[::-1])
    functions(first)
    stored = sorted(folder.glob("*.pkl"))
    monkeypatch.setenv("BAYESGLMM_FUNCTION_CACHE", "0")
    fresh = functions(second)
    monkeypatch.setenv("BAYESGLMM_FUNCTION_CACHE", "1")
    monkeypatch.setattr(cnuts, "compile_fn", _refuse)
    loaded = functions(second)
    assert sorted(folder.glob("*.pkl")) == stored and len(stored) == 2
    for seed in range(3):
        x = fresh.initial(seed)
        (a, da), (b, db) = fresh.logp_dlogp(x), loaded.logp_dlogp(x)
        assert float(a) == float(b) and float(a) != float(functions(first).logp_dlogp(x)[0])
        np.testing.assert_array_equal(da, db)
        for u, v in zip(fresh.expand(x), loaded.expand(x)):
            np.testing.assert_array_equal(u, v)


def test_a_damaged_file_is_compiled_anew_and_replaced(folder, target):
    cnuts.compile_functions(target, ["fixef"])
    files = sorted(folder.glob("*.pkl"))
    for path in files:
        path.write_bytes(b"not a pickle")
    fns = cnuts.compile_functions(target, ["fixef"])
    assert np.isfinite(float(fns.logp_dlogp(fns.initial(0))[0]))
    assert sorted(folder.glob("*.pkl")) == files and all(p.stat().st_size > 100 for p in files)


def test_switched_off_nothing_is_stored(folder, target, monkeypatch):
    monkeypatch.setenv("BAYESGLMM_FUNCTION_CACHE", "0")
    assert not _fncache.enabled()
    cnuts.compile_functions(target, ["fixef"])
    assert not list(folder.glob("*.pkl"))


def test_only_the_most_recently_used_files_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(_fncache, "MAX_FILES", 3)
    for i in range(5):
        path = tmp_path / f"{i}.pkl"
        path.write_bytes(b"x" * 10)
        os.utime(path, (1000 + i, 1000 + i))
    os.utime(tmp_path / "0.pkl")  # used just now
    _fncache._prune(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.pkl")) == ["0.pkl", "3.pkl", "4.pkl"]
    monkeypatch.setattr(_fncache, "MAX_BYTES", 25)
    _fncache._prune(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.pkl")) == ["0.pkl", "4.pkl"]


@pytest.mark.sampling
def test_draws_are_the_same_compiled_or_loaded(folder, monkeypatch):
    model = bg.GLMM("y ~ x + (1 | school)", _sim(), family="bernoulli")
    options = {"draws": 100, "tune": 100, "chains": 2, "cores": 1, "progressbar": False, "random_seed": 5}

    def draws():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bg.ConvergenceWarning)
            return model.fit(**options).idata.posterior["fixef"].values

    monkeypatch.setenv("BAYESGLMM_FUNCTION_CACHE", "0")
    compiled = draws()
    monkeypatch.setenv("BAYESGLMM_FUNCTION_CACHE", "1")
    stored, loaded = draws(), draws()
    assert len(list(folder.glob("*.pkl"))) == 2
    np.testing.assert_array_equal(compiled, stored)
    np.testing.assert_array_equal(compiled, loaded)


SCRIPT = """
import sys
from bayesglmm import _fncache, cnuts
from tests.test_fit import _sim
import bayesglmm as bg
keys = []
original = _fncache._keyed
def recording(*args):
    keyed = original(*args)
    keys.append(None if keyed is None else keyed[0])
    return keyed
_fncache._keyed = recording
target = bg.GLMM("y ~ x + (1 | school)", _sim(), family="poisson").sampling_model()
fns = cnuts.compile_functions(target, ["fixef"])
print("KEYS", *keys, float(fns.logp_dlogp(fns.initial(2))[0]))
"""


def test_a_new_process_builds_the_same_keys(tmp_path):
    """Keys do not depend on what a process did before (names, counters, hashing of strings)."""
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for seed in ("1", "2"):
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            env=env | {"PYTHONHASHSEED": seed},
            cwd=root,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(next(line for line in run.stdout.splitlines() if line.startswith("KEYS")))
    assert outputs[0] == outputs[1] and "None" not in outputs[0]
    assert len(list(tmp_path.glob(f"*/{_fncache.DIRECTORY}/*.pkl"))) == 2


def test_functions_holding_much_data_are_not_stored(folder, target, monkeypatch):
    monkeypatch.setattr(_fncache, "MAX_FILE_BYTES", 100)  # the data alone are larger
    cnuts.compile_functions(target, ["fixef"])
    assert not list(folder.glob("*.pkl"))
