"""Small helpers around PyMC calls made on the user's behalf."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_forward_sampling() -> Iterator[None]:
    """Silence PyMC's "Sampling: [...]" log line (and its other INFO lines) for the duration.

    Drawing the random effects after a marginalised fit or evaluating a
    prediction is not the user's own call to ``pm.sample_posterior_predictive``.
    """
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
