"""Keep Python's cyclic garbage collector off the objects a fit finds alive.

A process that has imported PyMC holds some 400,000 objects that live as long as
it does: modules, functions, PyTensor's rewrite database.  Building and compiling
a model allocates enough to set off the collector's full passes, each of which
walks every one of them.  Measured on sleepstudy's default fit in a fresh
process: two full passes, 0.45-0.56 s of a 3.2-4.0 s fit.  :func:`frozen_heap`
moves the objects alive when a fit starts to the collector's permanent
generation (:func:`gc.freeze`) and back when it ends, so that its passes walk
only what the fit itself allocates; the objects are collected as before
afterwards.  It does nothing when the collector is disabled or when something
else has frozen objects (the freeze is not nested).

The sampling processes forked by :mod:`bayesglmm.cnuts` freeze everything they
inherit, as Python's documentation recommends with ``fork``: their collections
then neither walk the parent's objects nor write to the pages those live on,
which would copy them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Exempt the objects alive now from the collector's passes until the block ends."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
