"""PyTensor's -march=native flags kept between processes: stored once, given back only to the same machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pytensor import config
from pytensor.link.c.cmodule import GCC_compiler

from bayesglmm import _march

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
cache size\t: 512 KB
flags\t\t: fpu sse sse2 avx avx2
bogomips\t: 4000.00

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 avx avx2
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A file of flags in ``tmp_path``, a processor that never changes, and no flags detected yet."""
    path = tmp_path / _march.FILENAME
    monkeypatch.setattr(_march, "_path", lambda _config: str(path))
    monkeypatch.setattr(_march, "cache_key", lambda _config: "machine-a")
    monkeypatch.setattr(GCC_compiler, "march_flags", None)
    monkeypatch.setattr(_march, "_settled", False)
    return path


def test_key_follows_the_processor(tmp_path):
    first, second, missing = tmp_path / "a", tmp_path / "b", tmp_path / "none"
    first.write_text(CPUINFO)
    second.write_text(CPUINFO.replace("avx avx2\nbogomips", "avx avx2 avx512f\nbogomips", 1))
    key = _march.cache_key(config, str(first))
    assert key == _march.cache_key(config, str(first))
    assert key != _march.cache_key(config, str(second))
    assert _march.cache_key(config, str(missing)) is None
    (tmp_path / "noflags").write_text("processor\t: 0\nmodel name\t: x\n")
    assert _march.cache_key(config, str(tmp_path / "noflags")) is None


def test_flags_are_stored_once_and_given_back(store, monkeypatch):
    assert not _march.save()  # nothing detected: nothing stored
    assert not store.exists()
    GCC_compiler.march_flags = ["-march=znver3", "--param", "l1-cache-size=32"]
    assert _march.save()
    assert not _march.save()  # the same record is not written again
    monkeypatch.setattr(_march, "_settled", False)  # nor by another process
    assert not _march.save()
    assert json.loads(store.read_text())["flags"] == ["-march=znver3", "--param", "l1-cache-size=32"]
    GCC_compiler.march_flags = None
    assert _march.load()
    assert GCC_compiler.march_flags == ["-march=znver3", "--param", "l1-cache-size=32"]
    GCC_compiler.march_flags = ["-march=native-detected"]
    assert not _march.load()  # flags PyTensor already has are kept
    assert GCC_compiler.march_flags == ["-march=native-detected"]


@pytest.mark.parametrize(
    "content",
    ['{"key": "machine-b", "flags": ["-march=x"]}', '{"key": "machine-a", "flags": "-march=x"}', "not json", "[]"],
)
def test_other_machines_and_damaged_files_leave_detection_to_pytensor(store, content):
    store.write_text(content)
    assert not _march.load()
    assert GCC_compiler.march_flags is None


def test_kept_writes_nothing_without_a_known_processor(store, monkeypatch):
    monkeypatch.setattr(_march, "cache_key", lambda _config: None)
    with _march.kept():
        GCC_compiler.march_flags = ["-march=x"]
    assert not store.exists()


SCRIPT = """
import json, sys
import pytensor, pytensor.tensor as pt
from pytensor.link.c.cmodule import GCC_compiler
from bayesglmm import _march
loaded = _march.load()
with _march.kept():
    x = pt.dvector("x")
    pytensor.function([x], pt.exp(x) + 1.0, mode="FAST_RUN")
print("RESULT" + json.dumps({"loaded": loaded, "args": GCC_compiler.compile_args()}))
"""


def _run(compiledir) -> dict:
    env = dict(os.environ, PYTENSOR_FLAGS=f"compiledir={compiledir}")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.skipif(_march.cache_key(config) is None, reason="no /proc/cpuinfo or no C++ compiler")
def test_a_second_process_compiles_with_the_flags_the_first_detected(tmp_path):
    first = _run(tmp_path)
    assert not first["loaded"]
    assert (tmp_path / _march.FILENAME).exists()
    second = _run(tmp_path)
    assert second["loaded"]
    assert second["args"] == first["args"]  # the same flags, so the same module keys
