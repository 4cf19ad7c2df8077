"""Stage 6 — results: tables from the posterior, on the user's scale.

Names follow lme4/brms: :meth:`GLMMResults.fixef`, :meth:`~GLMMResults.ranef`,
:meth:`~GLMMResults.coef`, :meth:`~GLMMResults.varcorr`, plus
:meth:`~GLMMResults.summary` which stacks fixed effects, random-effect SDs and
correlations and family parameters in one table.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import stats
from .fit import check_draws, store_log_likelihood, too_large
from .model import OBSERVED

if TYPE_CHECKING:  # pragma: no cover
    from .glmm import GLMM
    from .stats import az

SUMMARY_COLUMNS = ["mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat"]
EXP_COLUMNS = ["exp_mean", "exp_hdi_low", "exp_hdi_high"]
VARCORR_COLUMNS = ["group", "term1", "term2", "mean", "sd", "hdi_low", "hdi_high"]
RANEF_COLUMNS = ["group", "level", "term", "mean", "sd", "hdi_low", "hdi_high"]


class GLMMResults:
    """A fitted GLMM: posterior draws plus the model that produced them.

    Attributes
    ----------
    model : GLMM
        The specification (formula, family, design, priors).
    idata : arviz.InferenceData
        Posterior and sample stats; random effects ``r_<group>`` carry the
        group levels as coordinates.  The pointwise log-likelihood joins it
        when first needed (:meth:`log_lik`).
    diagnostics : dict
        Max R-hat, min bulk/tail ESS, divergences, tree-depth hits.
    """

    def __init__(self, model: GLMM, idata: az.InferenceData, warn: bool = True, check: bool = True) -> None:
        self.model = model
        self.idata = idata
        self.diagnostics: dict = {}
        if check:  # draws that are not from a sampler (prior draws) are not checked
            with warnings.catch_warnings():
                if not warn:
                    warnings.simplefilter("ignore")
                self.diagnostics = check_draws(idata, self._scalar_draws())

    # ---- draws -----------------------------------------------------------------
    def draws(self, name: str) -> np.ndarray:
        """Posterior draws of a model variable, shape (chain, draw, ...)."""
        return np.asarray(self.idata.posterior[name].values)

    def _parameter_rows(self) -> list[tuple[str, str, np.ndarray]]:
        """(kind, readable name, draws (chain, draw)) of every summary row."""
        rows = []
        design = self.model.design
        if design.fixed.labels:
            fixef = self.draws("fixef")
            rows += [("fixef", lab, fixef[..., j]) for j, lab in enumerate(design.fixed.labels)]
        for block in design.blocks:
            sd = self.draws(f"sd_{block.name}")
            rows += [("sd", f"sd({t}|{block.group})", sd[..., i]) for i, t in enumerate(block.terms)]
            if block.correlated:
                cor = self.draws(f"cor_{block.name}")
                for i, j in zip(*np.triu_indices(len(block.terms), 1)):
                    name = f"cor({block.terms[i]},{block.terms[j]}|{block.group})"
                    rows.append(("cor", name, cor[..., i, j]))
        family = self.model.family
        for name in family.aux:
            draws = self.draws(name)
            if draws.ndim == 2:
                rows.append(("aux", name, draws))
            else:  # a vector parameter (ordinal thresholds): one row per element
                labels = family.aux_labels(name, draws.shape[-1])
                rows += [("aux", label, draws[..., i]) for i, label in enumerate(labels)]
        return rows

    def _scalar_draws(self) -> dict[str, np.ndarray]:
        out = {name: d for _, name, d in self._parameter_rows()}
        for block in self.model.design.blocks:
            r = self.draws(f"r_{block.name}")
            # random effects enter the R-hat check through their worst element
            rhat = stats.rhat(r)
            if np.isnan(rhat).all():  # one chain, or effects that never move: no R-hat to rank by
                continue
            worst = np.unravel_index(np.nanargmax(rhat), rhat.shape)
            out[f"r_{block.name}[{block.levels[worst[0]]}, {block.terms[worst[1]]}]"] = r[(...,) + worst]
        return out

    # ---- tables ----------------------------------------------------------------
    def summary(self, prob: float = 0.94) -> pd.DataFrame:
        """Fixed effects, random-effect SDs and correlations, family parameters.

        Columns ``mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat``;
        under log and logit links the fixed-effect rows also have
        ``exp_mean, exp_hdi_low, exp_hdi_high`` (rate or odds ratios, computed
        from the exponentiated draws).
        """
        prob = stats.check_prob(prob)
        rows = self._parameter_rows()
        draws = np.stack([d for _, _, d in rows], axis=-1)
        table = pd.DataFrame(stats.summarize(draws, prob), index=[name for _, name, _ in rows])
        table = table[SUMMARY_COLUMNS]
        if self.model.link.ratio_name is not None:
            fixed = [i for i, (kind, _, _) in enumerate(rows) if kind == "fixef"]
            exp = np.full((len(rows), 3), np.nan)
            if fixed:
                s = stats.summarize(np.exp(draws[..., fixed]), prob, diagnostics=False)
                exp[fixed] = np.column_stack([s["mean"], s["hdi_low"], s["hdi_high"]])
            table[EXP_COLUMNS] = exp
        table.index.name = "parameter"
        return table

    def fixef(self, prob: float = 0.94) -> pd.DataFrame:
        """Fixed-effect rows of :meth:`summary`, indexed by formulae's labels."""
        table = self.summary(prob)
        return table.loc[list(self.model.design.fixed.labels)]

    def varcorr(self, prob: float = 0.94) -> pd.DataFrame:
        """Random-effect SDs and correlations (and the residual SD), long format.

        SD rows have ``term2`` missing; correlation rows name both terms; the
        gaussian residual SD is the row with group ``"Residual"``.
        """
        prob = stats.check_prob(prob)
        records: list[tuple] = []
        for block in self.model.design.blocks:
            sd = self.draws(f"sd_{block.name}")
            for i, term in enumerate(block.terms):
                records.append((block.group, term, None, sd[..., i]))
            if block.correlated:
                cor = self.draws(f"cor_{block.name}")
                for i, j in zip(*np.triu_indices(len(block.terms), 1)):
                    records.append((block.group, block.terms[i], block.terms[j], cor[..., i, j]))
        if "sigma" in self.model.family.aux:
            records.append(("Residual", None, None, self.draws("sigma")))
        return _long_table(records, prob, VARCORR_COLUMNS[:3])

    def ranef(self, prob: float = 0.94) -> pd.DataFrame:
        """Posterior random effects of every level: ``group, level, term, mean, sd, hdi_low, hdi_high``."""
        prob = stats.check_prob(prob)
        frames = [self._block_table(block, self.draws(f"r_{block.name}"), prob) for block in self.model.design.blocks]
        return _by_level(_concat(frames, RANEF_COLUMNS))

    def coef(self, prob: float = 0.94) -> pd.DataFrame:
        """Group-level coefficients: fixed effect plus random effect, per level.

        As in lme4, a term that varies over a group but has no fixed effect
        is reported as its random effect alone.
        """
        prob = stats.check_prob(prob)
        labels = self.model.design.fixed.labels
        fixef = self.draws("fixef") if labels else None
        frames = []
        for block in self.model.design.blocks:
            total = self.draws(f"r_{block.name}").copy()
            for i, term in enumerate(block.terms):
                if term in labels:
                    total[..., i] += fixef[..., labels.index(term), None]
            frames.append(self._block_table(block, total, prob))
        return _by_level(_concat(frames, RANEF_COLUMNS))

    @staticmethod
    def _block_table(block, draws: np.ndarray, prob: float) -> pd.DataFrame:
        s = stats.summarize(draws, prob, diagnostics=False)
        J, k = draws.shape[2:]
        out = pd.DataFrame(
            {
                "group": block.group,
                "level": np.repeat(np.array(block.levels, dtype=object), k),
                "term": np.tile(np.array(block.terms, dtype=object), J),
            }
        )
        for col in ("mean", "sd", "hdi_low", "hdi_high"):
            out[col] = s[col].reshape(-1)
        return out

    # ---- prediction, persistence, display ---------------------------------------
    def predict(
        self,
        newdata=None,
        kind="mean",
        re_formula=None,
        allow_new_levels=False,
        prob=0.94,
        summary=True,
        random_seed=None,
        marginal=False,
        re_quantile=None,
    ):
        """Posterior predictions; see :func:`bayesglmm.predict.predict`.

        ``marginal=True`` gives population-averaged predictions (random
        effects integrated over their fitted distribution); ``re_quantile``
        holds them at a quantile of it.
        """
        from .predict import predict

        return predict(
            self,
            newdata,
            kind=kind,
            re_formula=re_formula,
            allow_new_levels=allow_new_levels,
            prob=prob,
            summary=summary,
            random_seed=random_seed,
            marginal=marginal,
            re_quantile=re_quantile,
        )

    # ---- interpretation ------------------------------------------------------------
    def icc(self, at=None, prob: float = 0.94) -> pd.DataFrame:
        """Latent-scale ICC per grouping factor; see :func:`bayesglmm.effects.icc`."""
        from .effects import icc

        return icc(self, at=at, prob=prob)

    def comparisons(self, variable, values=None, by=None, marginal=False, **kwargs) -> pd.DataFrame:
        """Average differences of the expected response; see :func:`bayesglmm.effects.comparisons`."""
        from .effects import comparisons

        return comparisons(self, variable, values=values, by=by, marginal=marginal, **kwargs)

    def slopes(self, variable, by=None, marginal=False, **kwargs) -> pd.DataFrame:
        """Average derivatives of the expected response; see :func:`bayesglmm.effects.slopes`."""
        from .effects import slopes

        return slopes(self, variable, by=by, marginal=marginal, **kwargs)

    # ---- model checking ----------------------------------------------------------
    def log_lik(self):
        """Pointwise log-likelihood of the fitted rows, a DataArray (chain, draw, row), as brms's ``log_lik``.

        Computed on first use and kept in ``idata.log_likelihood`` (ArviZ's
        ``az.loo(res.idata)`` then works too).  A fit of more than 5·10⁷
        draws × rows is refused: :meth:`loo` computes it in chunks.
        """
        if not store_log_likelihood(self.idata, self.model.pymc_model):
            raise too_large("log_lik()")
        return self.idata.log_likelihood[OBSERVED]

    def loo(self, group: str | None = None, pointwise: bool = True):
        """PSIS-LOO, per observation or leaving out one level of ``group`` at a time."""
        from .compare import loo

        return loo(self, group=group, pointwise=pointwise)

    def waic(self, pointwise: bool = True):
        """WAIC (ArviZ)."""
        from .compare import waic

        return waic(self, pointwise=pointwise)

    def kfold(self, group: str | None = None, k: int = 10, random_seed: int | None = None, **fit_kwargs):
        """Exact (grouped) K-fold cross-validation by refits; see :func:`bayesglmm.compare.kfold`."""
        from .compare import kfold

        return kfold(self, group=group, k=k, random_seed=random_seed, **fit_kwargs)

    def ppc(self, random_seed: int | None = None):
        """Replicated data sets into ``idata.posterior_predictive``; see :func:`bayesglmm.checks.ppc`."""
        from .checks import ppc

        return ppc(self, random_seed=random_seed)

    def grouped_ppc(self, group: str, stat="mean", prob: float = 0.94, random_seed: int | None = None):
        """Observed vs replicated statistic per level of ``group``; see :func:`bayesglmm.checks.grouped_ppc`."""
        from .checks import grouped_ppc

        return grouped_ppc(self, group, stat=stat, prob=prob, random_seed=random_seed)

    def bayes_r2(self, re_formula: str | None = None, method: str = "model", prob: float = 0.94) -> pd.DataFrame:
        """Bayesian R² (Gelman et al. 2019); see :func:`bayesglmm.checks.bayes_r2`."""
        from .checks import bayes_r2

        return bayes_r2(self, re_formula=re_formula, method=method, prob=prob)

    def diagnose(self):
        """Convergence report with advice; see :func:`bayesglmm.diagnose.diagnose`."""
        from .diagnose import diagnose

        return diagnose(self)

    def save(self, path) -> None:
        """Write the fit to ``path`` (one zip file); read it back with :func:`bayesglmm.load`."""
        from .io import save

        save(self, path)

    def _header(self) -> list[str]:
        m, d = self.model, self.model.design
        a = self.idata.attrs
        levels = {b.group: len(b.levels) for b in d.blocks}  # a factor of several blocks once
        groups = ", ".join(f"{g} ({n})" for g, n in levels.items()) or "none"
        return [
            f"GLMM fit: {m.formula}",
            f"family: {m.family.name} (link: {m.link.name}); observations: {d.n}; groups: {groups}",
            f"sampler: {a.get('sampler')}, {a.get('chains')} chains x {a.get('draws')} draws "
            f"(tune {a.get('tune')}), random_seed={a.get('random_seed')}",
            f"max R-hat {self.diagnostics['max_rhat']:.3f}, min bulk ESS {self.diagnostics['min_ess_bulk']:.0f}, "
            f"divergences {self.diagnostics['divergences']}",
        ]

    def __repr__(self) -> str:
        with pd.option_context("display.width", 140, "display.max_columns", 20):
            table = self.summary().round(3).to_string()
        return "\n".join(self._header()) + "\n\n" + table

    def _repr_html_(self) -> str:
        import html

        head = "<br>".join(html.escape(line) for line in self._header())
        return f"<p>{head}</p>" + self.summary().round(3).to_html()


def _long_table(records: list[tuple], prob: float, keys: list[str]) -> pd.DataFrame:
    columns = keys + ["mean", "sd", "hdi_low", "hdi_high"]
    if not records:
        return pd.DataFrame(columns=columns)
    draws = np.stack([r[-1] for r in records], axis=-1)
    s = stats.summarize(draws, prob, diagnostics=False)
    out = pd.DataFrame([r[:-1] for r in records], columns=keys, dtype=object)
    for col in ("mean", "sd", "hdi_low", "hdi_high"):
        out[col] = s[col]
    return out


def _by_level(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the blocks of one factor (``(1 | g) + (0 + x | g)``) together per level, as a
    ``||`` block's; factors and levels keep their order."""
    if table.empty:
        return table
    group = pd.factorize(table["group"])[0]
    level = table.groupby("group", sort=False)["level"].transform(lambda s: pd.factorize(s)[0])
    order = np.lexsort((np.arange(len(table)), level.to_numpy(), group))
    return table.iloc[order].reset_index(drop=True)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
