"""Small real datasets shipped with the package (see ``data/README.md``).

>>> from bayesglmm import datasets
>>> df = datasets.load("contraception")      # doctest: +SKIP
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .errors import ArgumentError

#: name -> (file, columns turned into pandas categoricals, description)
_DATASETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cbpp": (
        "cbpp.csv",
        ("herd", "period"),
        "Contagious bovine pleuropneumonia: new cases (incidence) out of herd size, 15 herds x 4 periods (lme4::cbpp).",
    ),
    "contraception": (
        "contraception.csv",
        ("district", "livch", "urban", "use"),
        "Contraceptive use of 1934 Bangladeshi women in 60 districts, 1988 Fertility Survey "
        "(mlmRev::Contraception); age is centred, not scaled.",
    ),
    "sleepstudy": (
        "sleepstudy.csv",
        ("Subject",),
        "Reaction times of 18 subjects over 10 days of sleep deprivation (lme4::sleepstudy).",
    ),
}


def names() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_DATASETS)


def describe(name: str) -> str:
    """One-line description and provenance of a bundled dataset."""
    return _entry(name)[2]


def _entry(name: str) -> tuple[str, tuple[str, ...], str]:
    if name not in _DATASETS:
        raise ArgumentError(f"unknown dataset {name!r}; bundled datasets are {names()}")
    return _DATASETS[name]


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset as a fresh DataFrame (categorical columns as such)."""
    file, categorical, _ = _entry(name)
    with resources.files("bayesglmm").joinpath("data", file).open("r") as fh:
        df = pd.read_csv(fh)
    for col in categorical:
        df[col] = pd.Categorical(df[col], categories=sorted(df[col].unique(), key=_natural))
    return df


def _natural(value: object) -> tuple:
    """Sort numbers numerically and strings alphabetically ("2" < "10")."""
    text = str(value)
    return (0, float(text), text) if text.replace(".", "", 1).lstrip("-").isdigit() else (1, 0.0, text)
