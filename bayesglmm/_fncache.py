"""Compiled sampling functions, kept on disk from one process to the next.

PyTensor rewrites every graph it compiles, in every process: for sleepstudy's log
density and gradient about 1 s of a 3.5 s fit on a 2-core machine, although the C
modules themselves come from PyTensor's cache.  :func:`compiled` stores the compiled
function (PyTensor pickles a function with its rewritten graph) under a key made of
the graph before rewriting, and a later process that builds the same graph loads it
and skips the rewriting.

The key is a SHA-256 of

* the graph: every operation by class and ``__props__`` (PyTensor's own definition of
  when two operations are equal), how they connect, the types of all variables, and
  the values of the constants;
* the compile options the caller passes, PyTensor's configuration hash and the
  rewriting options below, and the versions of PyTensor, PyMC, NumPy and bayesglmm;
* the source of every module outside PyTensor that defines an operation of the graph.

The values of shared variables (the data: ``pm.Data``, the numbers and arrays
:func:`~bayesglmm.cnuts.lift_numbers` and :func:`~bayesglmm.cnuts.lift_arrays` take out
of the constants, the parts :func:`~bayesglmm.cnuts.hoist_data` computes) are not in the
key: PyTensor compiles a function for any value of their types (static shapes included),
and rewrites never read them.  A stored function is loaded with the values of the graph
at hand, matched by their order in the graph, so a model of the same form fitted to
other data (a changed response, a simulated data set, with as many levels per grouping
factor) loads it too.

A graph with an operation or a type that has no ``__props__``, or whose props hold a
value of a kind not listed in :func:`_token`, gets no key and is compiled as before.
Files live in ``bayesglmm-functions`` in PyTensor's compile directory, whose pickles
(PyTensor's own module keys) PyTensor loads too.  A file that cannot be read or
unpickled is compiled anew and replaced; the directory keeps the most recently used
files, at most ``MAX_FILES`` and ``MAX_BYTES``.  ``BAYESGLMM_FUNCTION_CACHE=0`` in the environment turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymc
import pytensor
from pytensor import config
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.op import Op
from pytensor.graph.traversal import ancestors, toposort
from pytensor.graph.type import Type

from ._atomic import write_atomically

DIRECTORY = "bayesglmm-functions"
FORMAT = 2  #: of the stored files: (function, positions of its shared inputs)
MAX_FILES = 64  #: files kept; the least recently used go first ...
MAX_BYTES = 256 * 2**20  #: ... and so many bytes in all
MAX_FILE_BYTES = 32 * 2**20  #: a larger pickled function (the data are in it) is not stored

#: Configuration that changes what PyTensor's rewriting makes of a graph, beyond
#: ``config.get_config_hash()`` (the options that enter C code).
REWRITE_OPTIONS = (
    "mode",
    "linker",
    "optimizer",
    "optimizer_including",
    "optimizer_excluding",
    "optimizer_requiring",
    "floatX",
    "cast_policy",
    "cxx",
    "gcc__cxxflags",
)


#: Packages whose versions are in the key: their functions and classes are known by name
#: (and objects of their classes by their attributes, but for ``builtins``: the last one).
TRUSTED = ("pytensor", "pymc", "numpy", "builtins")


class _UncacheableError(Exception):
    """A graph element that :func:`_token` cannot describe exactly."""


def enabled() -> bool:
    """False when ``BAYESGLMM_FUNCTION_CACHE`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get("BAYESGLMM_FUNCTION_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """Where the functions are stored: ``bayesglmm-functions`` in PyTensor's compile directory."""
    return Path(config.compiledir) / DIRECTORY


def _token(value) -> object:
    """A canonical, printable description of one operation property or constant value."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return (type(value).__name__, value)
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(_token(v) for v in value))
    if isinstance(value, frozenset | set):
        return ("set", tuple(sorted(repr(_token(v)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(_token(k)), repr(_token(v))) for k, v in value.items())))
    if isinstance(value, np.ndarray | np.generic):
        shape = np.shape(value)
        array = np.ascontiguousarray(value).reshape(-1)
        if array.dtype.hasobject:
            raise _UncacheableError("an object array")
        return ("array", array.dtype.str, shape, hashlib.sha256(array.view(np.uint8).data).hexdigest())
    if isinstance(value, slice):
        return ("slice", _token(value.start), _token(value.stop), _token(value.step))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, types.FunctionType | type):
        if value.__module__.split(".")[0] not in TRUSTED:
            raise _UncacheableError(f"the function {value.__qualname__}")
        return ("callable", value.__module__, value.__qualname__)
    if isinstance(value, Variable | Apply | FunctionGraph):  # a graph inside a property
        raise _UncacheableError(f"a property holding a {type(value).__name__}")
    if isinstance(value, Op | Type) or type(value).__module__.split(".")[0] in TRUSTED[:-1]:
        return _described(value)  # not other objects of builtin types (a bound method, say)
    raise _UncacheableError(f"a property of type {type(value).__name__}")


def _described(thing) -> tuple:
    """An operation, a type or another object by its class and ``__props__``, else by its attributes.

    Without ``__props__``, PyTensor's scalar operations compare by class and their
    ``output_types_preference``; the attributes are a superset of that.
    """
    cls = type(thing)
    props = getattr(cls, "__props__", None)
    if props is not None:
        return (cls.__module__, cls.__qualname__, tuple((p, _token(getattr(thing, p))) for p in props))
    if not hasattr(thing, "__dict__") or any(getattr(c, "__slots__", ()) for c in cls.__mro__):
        raise _UncacheableError(f"{cls.__qualname__} has no __props__")
    return (cls.__module__, cls.__qualname__, _token(vars(thing)))


def _leaf(var: Variable, inputs: list) -> tuple:
    """A variable that no operation computes: an input, a constant or a shared variable."""
    if var in inputs:
        return ("input", inputs.index(var), _described(var.type))
    if isinstance(var, Constant):
        return ("constant", _described(var.type), _token(var.data))
    if isinstance(var, SharedVariable):  # its value is set when the function is loaded
        return ("shared", _described(var.type))
    raise _UncacheableError(f"a free variable {var}")


def _module_source(cls: type) -> str:
    """Hash of the file defining ``cls`` when it is not PyTensor's or PyMC's (their versions are in the key)."""
    module = cls.__module__
    if module.split(".")[0] in TRUSTED:
        return ""
    path = getattr(sys.modules.get(module), "__file__", None)
    if path is None:
        raise _UncacheableError(f"the source of {module}")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def graph_key(inputs: list, outputs: list, options: dict) -> str | None:
    """The key of compiling ``outputs`` as a function of ``inputs`` with ``options``; None if there is none."""
    keyed = _keyed(inputs, outputs, options)
    return None if keyed is None else keyed[0]


def _keyed(inputs: list, outputs: list, options: dict) -> tuple[str, list[SharedVariable]] | None:
    """:func:`graph_key`, and the graph's shared variables in the order the key numbers them
    (the order a stored function's shared inputs are matched in); None if there is no key."""
    from . import __version__  # the package imports this module

    digest = hashlib.sha256()

    def feed(item) -> None:
        digest.update(repr(item).encode())
        digest.update(b"\n")

    settings = {name: str(getattr(config, name)) for name in REWRITE_OPTIONS}
    feed(("format", FORMAT, "versions", pytensor.__version__, pymc.__version__, np.__version__, __version__))
    feed(
        ("config", config.get_config_hash(), sorted(settings.items()), sorted((k, str(v)) for k, v in options.items()))
    )
    ids: dict = {}
    sources: set = set()
    try:
        for node in toposort(outputs):
            for var in node.inputs:
                if var not in ids:
                    if var.owner is not None:  # computed by a node toposort gave earlier
                        raise _UncacheableError("graph order")
                    ids[var] = len(ids)
                    feed(("leaf", ids[var], _leaf(var, inputs)))
            sources.update({type(node.op), *(type(out.type) for out in node.outputs)})
            feed(("node", _described(node.op), tuple(ids[v] for v in node.inputs)))
            for out in node.outputs:
                ids[out] = len(ids)
                feed(("output", ids[out], _described(out.type)))
        for var in outputs:
            if var not in ids:  # an output no operation computes
                ids[var] = len(ids)
                feed(("leaf", ids[var], _leaf(var, inputs)))
        feed(("outputs", tuple(ids[v] for v in outputs)))
        feed(("sources", sorted((f"{c.__module__}.{c.__qualname__}", _module_source(c)) for c in sources)))
    except (_UncacheableError, OSError, RecursionError):
        return None
    return digest.hexdigest(), [v for v in ids if isinstance(v, SharedVariable)]


def _shared_cells(function) -> list:
    """The storage cells of ``function``'s shared inputs, in its order of inputs."""
    return [cell.storage for cell, spec in zip(function.input_storage, function.maker.inputs) if spec.implicit]


def _positions(function, shared: list[SharedVariable]) -> list[int] | None:
    """For each shared input of ``function``, its index in ``shared``; None if one is not there."""
    index = {id(v): i for i, v in enumerate(shared)}
    positions = [index.get(id(spec.variable)) for spec in function.maker.inputs if spec.implicit]
    return None if None in positions else positions


def _bind(stored, shared: list[SharedVariable]):
    """The stored function with the values of ``shared`` (the graph at hand) as its shared inputs; None
    if the file does not hold a function whose shared inputs match."""
    try:
        function, positions = stored
        cells = _shared_cells(function)
    except Exception:  # an older format, or not a function
        return None
    if len(cells) != len(positions) or any(not 0 <= p < len(shared) for p in positions):
        return None
    for cell, p in zip(cells, positions):
        cell[0] = shared[p].get_value(borrow=True)
    return function


def _load(path: Path):
    """What is stored at ``path``, or None (missing, unreadable, or PyTensor declines to unpickle)."""
    try:
        with open(path, "rb") as handle:
            stored = pickle.load(handle)
    except Exception:  # none yet, or a damaged or outdated file: compiled anew and replaced
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used
    return stored


def _store(path: Path, function, positions: list[int]) -> None:
    """Write ``function`` and ``positions`` to ``path`` atomically, then prune the directory (:func:`_prune`)."""
    try:
        blob = pickle.dumps((function, positions), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an operation that does not pickle: nothing is stored
        return
    if len(blob) > MAX_FILE_BYTES:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if write_atomically(path, blob):
        _prune(path.parent)


def _prune(folder: Path) -> None:
    """Keep the most recently used functions of ``folder``: ``MAX_FILES`` of them, ``MAX_BYTES`` in all."""
    try:
        files = [(p, p.stat()) for p in folder.glob("*.pkl")]
    except OSError:
        return
    files.sort(key=lambda item: item[1].st_mtime, reverse=True)
    total = 0
    for rank, (path, stat) in enumerate(files):
        total += stat.st_size
        if rank >= MAX_FILES or total > MAX_BYTES:
            with contextlib.suppress(OSError):
                path.unlink()


def compiled(inputs: list, outputs: list, compile_function: Callable[[], object], options: dict):
    """``compile_function()``, which compiles ``outputs`` of ``inputs``, or the same function stored
    earlier, given the values of this graph's shared variables.

    ``options`` describe everything else ``compile_function`` depends on (the
    compile options, the mode); they enter the key with PyTensor's configuration.
    """
    keyed = _keyed(inputs, outputs, options) if enabled() else None
    if keyed is None:
        return compile_function()
    key, shared = keyed
    path = directory() / f"{key}.pkl"
    stored = _load(path)
    function = None if stored is None else _bind(stored, shared)
    if function is None:
        function = compile_function()
        positions = _positions(function, shared)
        if positions is not None and _data_bytes(outputs) <= MAX_FILE_BYTES:  # else not even pickled
            _store(path, function, positions)
    return function


def _data_bytes(outputs: list) -> int:
    """Bytes of the constants and shared variables of the graph of ``outputs``, which a stored function holds."""
    total = 0
    for var in ancestors(outputs):
        if isinstance(var, SharedVariable):
            total += np.asarray(var.get_value(borrow=True)).nbytes
        elif isinstance(var, Constant):
            total += np.asarray(var.data).nbytes
    return total
