"""The reference models of ../shared/data/references.json, prepared as documented there."""

from __future__ import annotations

import re

import pandas as pd

from .conftest import shared_csv


def _cbpp():
    df = shared_csv("cbpp.csv").astype({"period": str, "herd": str})
    return df, "p(incidence, size) ~ period + (1 | herd)", "binomial"


def _contraception():
    df = shared_csv("Contraception.csv")
    return df, "use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)", "bernoulli"


def _sleepstudy():
    df = shared_csv("sleepstudy.csv").astype({"Subject": str})
    return df, "Reaction ~ Days + (Days | Subject)", "gaussian"


def _grouseticks():
    df = shared_csv("grouseticks.csv").astype({c: str for c in ("YEAR", "BROOD", "INDEX", "LOCATION")})
    return df, "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson"


MODELS = {"cbpp": _cbpp, "contraception": _contraception, "sleepstudy": _sleepstudy, "grouseticks": _grouseticks}


def our_label(ref_name: str) -> str:
    """Map an lme4 coefficient name (``period2``, ``urbanY``, ``age2``) to formulae's label."""
    if ref_name in ("Intercept", "Days", "age", "cHEIGHT", "(Intercept)"):
        return "Intercept" if "Intercept" in ref_name else ref_name
    if ref_name == "age2":
        return "I(age ** 2)"
    m = re.match(r"^(period|urban|livch|YEAR)(.+)$", ref_name)
    if m is None:
        raise KeyError(ref_name)
    return f"{m.group(1)}[{m.group(2)}]"


def sd_key(ref_key: str) -> tuple[str, str]:
    """``"district:urbanY"`` -> ("district", "urban[Y]"); ``"herd"`` -> ("herd", "Intercept")."""
    group, _, term = ref_key.partition(":")
    return group, our_label(term) if term else "Intercept"


def load(name: str) -> tuple[pd.DataFrame, str, str]:
    return MODELS[name]()
