"""Files written whole or not at all, for caches that other processes read concurrently."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, data: bytes, prefix: str = ".tmp-") -> bool:
    """Write ``data`` to ``path`` through a temporary file in its directory; False if that failed.

    A reader sees the old file or the new one, never a part; nothing is left
    behind on failure.  The directory must exist.
    """
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.fspath(path)), prefix=prefix)
    except OSError:
        return False
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    return True
