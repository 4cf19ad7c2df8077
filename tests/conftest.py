"""Shared fixtures: small simulated data and the shared reference datasets."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm import _fncache

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_csv(name: str) -> pd.DataFrame:
    """A dataset from ../shared/data (the tests' reference data)."""
    path = SHARED / name
    if not path.exists():
        pytest.fail(f"reference data {path} is missing: the repository expects ../shared/data beside it")
    return pd.read_csv(path)


def short_fit(model, **kwargs):
    """A short fit (2 chains, 150 draws, one core) with convergence warnings silenced."""
    options = {"draws": 150, "tune": 200, "chains": 2, "cores": 1, "progressbar": False} | kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        return model.fit(**options)


@pytest.fixture(scope="session")
def references() -> dict:
    with open(SHARED / "references.json") as fh:
        return json.load(fh)["models"]


@pytest.fixture
def sim_gaussian() -> pd.DataFrame:
    """Random intercepts and slopes over 12 groups, a factor and a numeric covariate."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(12), 10)
    x = rng.normal(size=g.size)
    f = rng.choice(["a", "b", "c"], size=g.size)
    u0, u1 = rng.normal(0, 1.0, 12), rng.normal(0, 0.5, 12)
    y = 1 + 0.5 * x + (f == "b") * 0.7 + u0[g] + u1[g] * x + rng.normal(0, 0.8, g.size)
    return pd.DataFrame({"y": y, "x": x, "f": f, "g": [f"g{i:02d}" for i in g], "h": g % 3})


@pytest.fixture
def sim_binary() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(20), 15)
    x = rng.normal(size=g.size)
    eta = -0.3 + 0.8 * x + rng.normal(0, 1, 20)[g]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "x": x, "g": g, "n": 5, "k": rng.binomial(5, 0.4, g.size)})


@pytest.fixture(autouse=True)
def _quiet_arviz():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@pytest.fixture(autouse=True, scope="session")
def _stored_functions(tmp_path_factory):
    """Compiled functions stored by this test session only: none of the user's, none of an earlier run's."""
    folder = tmp_path_factory.mktemp("functions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_fncache, "directory", lambda: folder)
        yield folder
