"""A diagnostics report with advice: can this fit be believed, and if not, what to do.

:func:`diagnose` groups the parameters into families (fixed effects, the SDs
and correlations of each grouping factor, the random effects of each factor,
family parameters) and reports per family the worst R-hat and the smallest
bulk and tail ESS; over the whole run the divergent transitions, tree-depth
saturation and E-BFMI per chain.  Each problem comes with concrete advice.
It also looks at the posterior of the random-effect covariance for boundary
behaviour: an SD whose mass is piled against zero, a correlation near ±1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import stats
from .fit import ESS_MIN, RHAT_MAX

if TYPE_CHECKING:  # pragma: no cover
    from .results import GLMMResults

BFMI_MIN = 0.3
#: An SD is "at the boundary" when this share of its draws lies below 5 % of its 95 % quantile.
ZERO_SHARE = 0.1
#: A correlation is "near ±1" when its posterior median exceeds this in absolute value.
COR_EDGE = 0.9


@dataclass(frozen=True)
class Diagnosis:
    """The report: a table per parameter family, run-level numbers and advice."""

    table: pd.DataFrame
    divergences: int
    treedepth_hits: int
    bfmi: tuple[float, ...]
    advice: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing calls for action."""
        return not self.advice

    def __repr__(self) -> str:
        lines = [self.table.to_string(float_format=lambda v: f"{v:.3f}"), ""]
        lines.append(
            f"divergences: {self.divergences}; max tree depth hits: {self.treedepth_hits}; "
            f"E-BFMI per chain: {', '.join(f'{b:.2f}' for b in self.bfmi) or 'n/a'}"
        )
        lines += ["", "advice:"] + [f"  - {a}" for a in self.advice] if self.advice else ["no problems found"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{a}</li>" for a in self.advice) or "<li>no problems found</li>"
        return (
            self.table.to_html(float_format=lambda v: f"{v:.3f}")
            + f"<p>divergences: {self.divergences}; max tree depth hits: {self.treedepth_hits}; E-BFMI: "
            + ", ".join(f"{b:.2f}" for b in self.bfmi)
            + f"</p><ul>{items}</ul>"
        )


def _families(res: GLMMResults) -> dict[str, np.ndarray]:
    """Parameter family -> draws (chain, draw, p)."""
    out: dict[str, list[np.ndarray]] = {}
    for kind, name, draws in res._parameter_rows():
        key = {"fixef": "fixed effects", "aux": name}.get(kind)
        if key is None:  # sd(...|g) or cor(...|g)
            key = f"{kind} | {name.rsplit('|', 1)[1].rstrip(')')}"
        out.setdefault(key, []).append(draws)
    fams = {k: np.stack(v, axis=-1) for k, v in out.items()}
    effects: dict[str, list[np.ndarray]] = {}  # the blocks of one factor together
    for block in res.model.design.blocks:
        r = res.draws(f"r_{block.name}")
        effects.setdefault(f"effects | {block.group}", []).append(r.reshape(r.shape[:2] + (-1,)))
    return fams | {key: np.concatenate(parts, axis=-1) for key, parts in effects.items()}


def _bfmi(res: GLMMResults) -> tuple[float, ...]:
    stats_ = res.idata.sample_stats
    if "energy" not in stats_:
        return ()
    energy = np.asarray(stats_["energy"].values, dtype=float)
    return tuple(float(np.sum(np.diff(e) ** 2) / np.sum((e - e.mean()) ** 2)) for e in energy)


def _boundary_advice(res: GLMMResults) -> list[str]:
    advice = []
    for block in res.model.design.blocks:
        sd = res.draws(f"sd_{block.name}")
        for t, term in enumerate(block.terms):
            d = sd[..., t].reshape(-1)
            if np.mean(d < 0.05 * np.quantile(d, 0.95)) > ZERO_SHARE:
                advice.append(
                    f"sd({term}|{block.group}): posterior mass piled near zero; the data cannot tell this "
                    "variance from 0. Consider dropping the term (compare the models with res.loo()), "
                    "or a prior that keeps it off the boundary (e.g. gamma) if it must stay"
                )
        if block.correlated:
            cor = res.draws(f"cor_{block.name}")
            for i, j in zip(*np.triu_indices(len(block.terms), 1)):
                med = float(np.median(cor[..., i, j]))
                if abs(med) > COR_EDGE:
                    advice.append(
                        f"cor({block.terms[i]},{block.terms[j]}|{block.group}) has posterior median {med:.2f}: "
                        f"the block is near-degenerate; try (... || {block.group}) or drop the slope"
                    )
    return advice


def _sampling_advice(table: pd.DataFrame, res: GLMMResults, divergences: int, hits: int, bfmi) -> list[str]:
    advice = []
    target = res.idata.attrs.get("target_accept", 0.95)
    if divergences:
        higher = 0.99 if target < 0.99 else 0.999
        advice.append(
            f"{divergences} divergent transition(s): the posterior has regions NUTS cannot follow and the "
            f"draws may be biased. Refit with target_accept={higher}; if they persist, simplify the "
            "random-effect structure or use more informative priors on the SDs"
        )
    for fam, row in table.iterrows():
        if row["max_r_hat"] > RHAT_MAX:
            group = fam.split(" | ")[-1] if " | " in fam else None
            where = f" (grouping factor {group!r})" if group else ""
            advice.append(
                f"{fam}: R-hat {row['max_r_hat']:.3f} > {RHAT_MAX}; the chains disagree{where}. Run longer "
                "(draws=2000, tune=2000) and check the trace plot (bg.plots.trace)"
            )
        elif min(row["min_ess_bulk"], row["min_ess_tail"]) < ESS_MIN:
            advice.append(
                f"{fam}: ESS {min(row['min_ess_bulk'], row['min_ess_tail']):.0f} < {ESS_MIN}; intervals are "
                "imprecise. Draw more (draws=2000) or more chains"
            )
    if hits:
        advice.append(
            f"{hits} draw(s) hit the maximum tree depth: strong posterior correlations or a funnel; "
            "check for a nearly unidentified SD (see the boundary notes) or rescale covariates"
        )
    low = [i for i, b in enumerate(bfmi) if b < BFMI_MIN]
    if low:
        advice.append(
            f"E-BFMI below {BFMI_MIN} in chain(s) {low}: the sampler explores the energy levels slowly, "
            "typical of heavy-tailed posteriors of variance parameters; tighten their priors or run longer"
        )
    return advice


def diagnose(res: GLMMResults) -> Diagnosis:
    """Convergence and geometry report of a fit, with advice."""
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: no R-hat (NaN)
        for fam, draws in _families(res).items():
            d = stats.convergence(draws)
            rows[fam] = {
                "n_params": draws.shape[-1],
                "max_r_hat": float(np.nanmax(d["r_hat"])),
                "min_ess_bulk": float(np.nanmin(d["ess_bulk"])),
                "min_ess_tail": float(np.nanmin(d["ess_tail"])),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "parameters"
    divergences = int(res.diagnostics.get("divergences", 0))
    hits = int(res.diagnostics.get("max_treedepth_hits", 0))
    bfmi = _bfmi(res)
    advice = _sampling_advice(table, res, divergences, hits, bfmi) + _boundary_advice(res)
    return Diagnosis(table, divergences, hits, bfmi, tuple(advice))
