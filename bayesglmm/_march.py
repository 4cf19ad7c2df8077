"""PyTensor's ``-march=native`` flags, kept on disk from one process to the next.

PyTensor compiles its C code for the processor it runs on.  The first C function a
process compiles, or loads from PyTensor's cache, first asks the compiler which flags
``-march=native`` stands for (the preprocessor run twice) and then compiles and runs a
test program with them: 0.25-0.45 s of a fresh process's first fit on a 2-core machine.
:func:`load` gives PyTensor the flags it found in an earlier process on the same
processor with the same compiler; :func:`save` keeps the flags of this one.  PyTensor
then skips the detection, and builds the same module keys as with its own.

The flags are stored in PyTensor's compile directory, with a key made of the
processor's identity and flags (``/proc/cpuinfo``), the compiler's path, size and
modification time, PyTensor's ``gcc__cxxflags`` and PyTensor's version.  Any
difference, a file that cannot be read, or a system without ``/proc/cpuinfo``, leaves
the detection to PyTensor.  Only flags that passed PyTensor's own test in the process
that saved them are stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator

import pytensor
from pytensor import config
from pytensor.link.c.cmodule import GCC_compiler

from ._atomic import write_atomically

FILENAME = "bayesglmm-march-flags.json"

#: Whether this process's flags came from the file or are known to be in it.
_settled = False

#: Lines of /proc/cpuinfo's first processor that decide what -march=native means.
CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags", "cache size")


def _compiler():
    """PyTensor's C++ compiler class and its configuration, or None where it has none."""
    if not config.cxx or not hasattr(GCC_compiler, "march_flags"):
        return None
    return GCC_compiler, config


def _cpu_identity(path: str = "/proc/cpuinfo") -> str | None:
    """The fields of ``CPU_FIELDS`` of the first processor, or None if they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().split("\n\n", 1)[0]
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in CPU_FIELDS:
            fields[name.strip()] = value.strip()
    return json.dumps(fields, sort_keys=True) if "flags" in fields else None


def cache_key(settings, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Hash of everything the flags depend on; None when the processor cannot be identified."""
    cpu = _cpu_identity(cpuinfo)
    compiler = shutil.which(settings.cxx)
    if cpu is None or compiler is None:
        return None
    try:
        stat = os.stat(os.path.realpath(compiler))
    except OSError:
        return None
    parts = [cpu, os.path.realpath(compiler), str(stat.st_size), str(stat.st_mtime_ns), settings.gcc__cxxflags]
    parts.append(pytensor.__version__)  # how PyTensor turns the compiler's answer into flags
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _path(settings) -> str:
    return os.path.join(settings.compiledir, FILENAME)


def load() -> bool:
    """Give PyTensor the flags saved for this processor and compiler; True if it took them.

    Does nothing when PyTensor has already detected its flags in this process.
    """
    found = _compiler()
    if found is None or found[0].march_flags is not None:
        return False
    compiler, settings = found
    key = cache_key(settings)
    if key is None:
        return False
    try:
        with open(_path(settings), encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(stored, dict) or stored.get("key") != key:
        return False
    flags = stored.get("flags")
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return False
    global _settled
    compiler.march_flags = list(flags)
    _settled = True
    return True


def save() -> bool:
    """Store the flags PyTensor detected in this process, if it did and they are not stored yet."""
    global _settled
    found = _compiler()
    if _settled or found is None or not isinstance(found[0].march_flags, list):
        return False
    compiler, settings = found
    key = cache_key(settings)
    if key is None:
        return False
    record = {"key": key, "flags": list(compiler.march_flags)}
    path = _path(settings)
    try:
        with open(path, encoding="utf-8") as handle:
            if json.load(handle) == record:
                _settled = True
                return False
    except (OSError, ValueError):
        pass
    if not write_atomically(path, json.dumps(record).encode("utf-8"), prefix=".bayesglmm-march-"):
        return False
    _settled = True
    return True


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """:func:`load` on entry, :func:`save` on exit: around code that compiles PyTensor functions."""
    load()
    yield
    save()
