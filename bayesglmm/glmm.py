"""The user-facing model object: formula + data + family -> a fit.

>>> import bayesglmm as bg
>>> model = bg.GLMM("y ~ x + (1 + x | g)", data=df, family="bernoulli")  # doctest: +SKIP
>>> res = model.fit(random_seed=1)                                        # doctest: +SKIP

Every check on the input happens in the constructor, before anything is
compiled or sampled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
from formulae.environment import Environment

from ._heap import frozen_heap
from .design import Design, _frozen, build_design, expand_predictors
from .errors import ArgumentError, FamilyError, FitArgumentError
from .families import Family, get_family
from .fit import C_SAMPLERS, choose_marginal_sampler, make_config, sample
from .formula import parse_formula
from .marginal import marginal_layout
from .model import build_model
from .parameterization import NestedPair, centring, nested_pairs
from .priors import Prior, prior_table, resolve
from .reduction import collapse
from .results import GLMMResults
from .separation import warn_separation
from .stats import az

BINARY = ("bernoulli", "binomial")


def _labelled(data: pd.DataFrame, coded: pd.DataFrame, used: pd.DataFrame) -> pd.DataFrame:
    """``used`` (the rows and columns of ``coded`` that were modelled) with the response as the
    user wrote it in ``data``; rows are matched by position, as the index may repeat."""
    complete = coded[list(used.columns)].notna().all(axis=1).to_numpy()
    return data.iloc[np.flatnonzero(complete)][list(used.columns)]


class GLMM:
    """A Bayesian generalized linear mixed model, specified but not yet fitted.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``"use[Y] ~ age + I(age**2) + urban + (1 + urban | district)"``.
        ``(1 + x | g)`` is one correlated block, ``(1 + x || g)`` has independent SDs,
        ``(1 | a/b)`` nests ``b`` in ``a``; ``offset(...)`` and ``p(successes, trials)``
        (binomial) are supported, and so are lme4's ``cbind(successes, failures)``,
        brms's ``successes | trials(n)`` and R's ``^``, ``log()``, ``factor()``.
    data : pandas.DataFrame
        The data; never modified.
    family : str or Family
        ``"gaussian"``, ``"bernoulli"``, ``"binomial"`` or ``"poisson"``.
    link : str, optional
        Defaults to the family's canonical link.
    priors : dict, optional
        Overrides of the default priors; see :mod:`bayesglmm.priors`.
    na_action : {"error", "drop"}
        Rows with missing values in used columns raise an error unless
        ``"drop"``, which drops them with a warning saying how many.
    eval_env : int or formulae.environment.Environment
        Where functions called in the formula are looked up: by default (0)
        the namespace of the code that builds the model, so ``y ~ f(x)``
        works with the user's own ``f``; n > 0 goes n frames further up.
        Columns of ``data`` come first; numpy (``np``) and R's ``log``,
        ``exp``, ``sqrt``, ``factor`` are always there.
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        family: str | Family = "gaussian",
        link: str | None = None,
        priors: Mapping[Any, Prior] | None = None,
        na_action: str = "error",
        eval_env: int | Environment = 0,
    ) -> None:
        if not isinstance(eval_env, Environment) and (isinstance(eval_env, bool) or not isinstance(eval_env, int)):
            raise ArgumentError(f"eval_env must be a frame depth (int) or a formulae Environment, got {eval_env!r}")
        self.eval_env = Environment.capture(eval_env, reference=1)
        parsed = parse_formula(formula)
        self.family, self.link = get_family(family, link)
        coded, labels = self.family.prepare_response(data, parsed.response)
        design = build_design(parsed, coded, na_action, intercept=self.family.intercept, env=self.eval_env)
        self.family.check_response(design.y, design.trials, parsed.response)
        self.family = self.family.fitted_to(design.y, labels)
        if self.family.predictor_names:
            design = expand_predictors(design, self.family.predictor_names)
        kept = design.data if labels is None else _labelled(data, coded, design.data)
        self.design: Design = replace(design, y=_frozen(self.family.encode(design.y)), data=kept)
        self._separation = warn_separation(self.design) if self.family.name in BINARY else None
        self.user_priors = dict(priors or {})
        self.priors = resolve(self.design, self.family, self.link, priors)
        self.formula = formula
        self.na_action = na_action
        self._pymc_model: pm.Model | None = None
        self._marginal_models: dict[bool, pm.Model] = {}
        self._sampling_models: dict[tuple[bool, bool], pm.Model] = {}
        self._centring: Mapping[str, np.ndarray] | None = None
        self._nested: tuple[NestedPair, ...] | None = None

    @property
    def pymc_model(self) -> pm.Model:
        """The PyMC model (built on first use)."""
        if self._pymc_model is None:
            self._pymc_model = build_model(self.design, self.family, self.link, self.priors)
        return self._pymc_model

    def marginal_model(self, fused: bool = False) -> pm.Model:
        """The PyMC model with gaussian random effects integrated out (built on first use).

        ``fused``: one grouping factor's likelihood is one compiled operation
        (:mod:`bayesglmm.marginal_op`), for the samplers that run PyTensor's C
        code; the posterior is the same.
        """
        if fused not in self._marginal_models:
            model = build_model(self.design, self.family, self.link, self.priors, marginal=True, fused=fused)
            self._marginal_models[fused] = model
        return self._marginal_models[fused]

    def centring(self) -> Mapping[str, np.ndarray]:
        """Per block, the (J, k) weights its effects are centred with (:mod:`~bayesglmm.parameterization`)."""
        if self._centring is None:
            self._centring = centring(self.design, self.family, self.link)
        return self._centring

    def sampling_model(self, reduce: bool = True, centre: bool = True) -> pm.Model:
        """The model NUTS samples when the random effects are not integrated out.

        It has the posterior of :attr:`pymc_model`; it may hold the collapsed
        identical rows (``reduce``, :mod:`bayesglmm.reduction`) and partially
        centred random effects (``centre``, :mod:`bayesglmm.parameterization`).
        Without either it is :attr:`pymc_model` itself.
        """
        key = (reduce, centre)
        if key not in self._sampling_models:
            found = collapse(self.design, self.family) if reduce else None
            weights, pairs = self._parameterization(centre)
            if found is None and not weights and not pairs:
                self._sampling_models[key] = self.pymc_model
            else:
                design, family = found or (self.design, self.family)
                self._sampling_models[key] = build_model(
                    design, family, self.link, self.priors, centring=weights, nested=pairs
                )
        return self._sampling_models[key]

    def nested_pairs(self) -> tuple[NestedPair, ...]:
        """Nested random intercepts sampled through their totals (:func:`.parameterization.nested_pairs`)."""
        if self._nested is None:
            self._nested = nested_pairs(self.design)
        return self._nested

    def _parameterization(self, centre: bool) -> tuple[Mapping[str, np.ndarray], tuple[NestedPair, ...]]:
        """Centring weights and nested pairs of the sampling model (none with ``centre=False``)."""
        return (self.centring(), self.nested_pairs()) if centre else ({}, ())

    def _use_marginal(self, marginalize: bool | str, centre: bool = True) -> bool:
        """Resolve ``fit(marginalize=...)``; ``centre`` as given to :meth:`fit`."""
        if marginalize not in ("auto", True, False):
            raise FitArgumentError(f"marginalize must be 'auto', True or False, got {marginalize!r}")
        gaussian = self.family.name == "gaussian" and self.link.name == "identity"
        layout = marginal_layout(self.design)
        if marginalize is True and not gaussian:
            raise FitArgumentError(
                "marginalize=True needs family='gaussian' with the identity link; "
                f"this model is {self.family.name!r} with link {self.link.name!r}"
            )
        if marginalize is True and layout is None:
            raise FitArgumentError("marginalize=True: this model has no random effects to integrate out")
        if marginalize == "auto":  # the dense layout only pays off when asked for
            return gaussian and (layout == "blocks" or (layout == "partial" and self._plain_non_centred(centre)))
        return marginalize

    def _plain_non_centred(self, centre: bool = True) -> bool:
        """Whether the sampling model would sample every effect in the plain non-centred form.

        The ``"partial"`` layout samples the factors it does not integrate out
        that way; where centring or nested pairs apply (``centre=True``), it is
        not chosen by default.
        """
        weights, pairs = self._parameterization(centre)
        return not weights and not pairs

    def prior_summary(self) -> pd.DataFrame:
        """Every prior of the model: ``class, coef, group, prior, source``."""
        return prior_table(self.priors, self.design)

    def separation(self) -> pd.DataFrame:
        """Separation of a binary response by predictors or groups; see :mod:`bayesglmm.separation`."""
        if self._separation is None:
            raise FamilyError(f"separation concerns binary responses; this model is {self.family.name!r}")
        return self._separation

    def prior_predictive(self, draws: int = 1000, random_seed: int | None = None) -> pd.DataFrame:
        """Implied prior of the ICC and of the between-group spread; see :func:`bayesglmm.checks.prior_predictive`."""
        from .checks import prior_predictive

        return prior_predictive(self, draws=draws, random_seed=random_seed)

    def sample_prior_predictive(self, draws: int = 500, random_seed: int | None = None) -> az.InferenceData:
        """Draws of every parameter and of the response from the prior."""
        cfg = make_config(draws=draws, random_seed=random_seed)
        return pm.sample_prior_predictive(draws=cfg.draws, model=self.pymc_model, random_seed=cfg.random_seed)

    def fit(
        self,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        cores: int | None = None,
        target_accept: float | None = None,
        random_seed: int | None = None,
        sampler: str = "auto",
        progressbar: bool = True,
        marginalize: bool | str = "auto",
        reduce: bool = True,
        centre: bool = True,
        log_likelihood: bool = False,
    ) -> GLMMResults:
        """Sample the posterior with NUTS.

        Parameters
        ----------
        draws, tune, chains : int
            Kept draws, tuning steps and chains.
        cores : int, optional
            Chains run in parallel on this many cores (default: ``min(chains, cpu count)``).
        target_accept : float, optional
            NUTS target acceptance.  By default 0.95 (rstanarm's default for
            GLMMs: hierarchical posteriors have funnels) when random effects
            are sampled, and 0.8 when they are integrated out
            (``marginalize``), the model has none, or every level is at least
            half centred (``centre``): without the funnel the shorter
            trajectories cost nothing in reliability.  Raise it
            (0.99) if divergences appear.  The value used is recorded in
            ``res.idata.attrs["target_accept"]``.
        random_seed : int, optional
            Makes the fit reproducible; when omitted one is drawn and stored
            in ``res.idata.attrs["random_seed"]``.
        sampler : {"auto", "nutpie-c", "nutpie", "pymc", "numpyro"}
            NUTS implementation: nutpie's on PyTensor's C code, the chains
            spread over forked processes (``"nutpie-c"``, :mod:`bayesglmm.cnuts`),
            nutpie's compiled with numba, PyMC's own, or NumPyro/JAX
            (``pip install 'bayesglmm[fast]'``).  ``"auto"`` takes nutpie-c
            for small models, where numba's 10-25 s of compilation would
            dominate, and nutpie with numba from 30,000 rows × linear-predictor
            columns or 250 sampled random effects on
            (:func:`bayesglmm.fit.choose_sampler`); a gaussian model with one
            grouping factor integrated out always takes nutpie-c, whose C code
            computes its marginal likelihood in one operation
            (:mod:`bayesglmm.marginal_op`).  nutpie-c adapts the mass
            matrix from the draws, as does nutpie for models with sampled
            correlated blocks or nested pairs.  The choice is recorded in
            ``res.idata.attrs["sampler"]``.
        progressbar : bool
        marginalize : {"auto", True, False}
            Gaussian models (identity link): integrate the random effects out
            of the likelihood exactly, sample the fixed effects, SDs,
            correlations and sigma, then draw the random effects from their
            exact conditional posterior (:mod:`bayesglmm.marginal`).  The
            posterior is the same; sampling is faster and free of the funnel.
            ``"auto"`` does so for models with one grouping factor (any
            number of levels and correlated terms, in one block or several,
            as ``(1 | g) + (0 + x | g)``); ``True`` also for several
            crossed or nested factors (up to 1000 random effects, dense
            algebra: exact, but not always faster).  With several factors
            and more random effects, one factor is integrated out (the
            largest nested in another, else the largest) and the others are
            sampled; ``"auto"`` does so too where every effect would
            otherwise be sampled non-centred, as in InstEval or with
            ``centre=False``.
        reduce : bool
            Bernoulli, binomial and poisson models: NUTS samples the model of
            the distinct rows (same covariates, offset and groups), with summed
            responses, when that removes at least 20 % of the rows
            (:mod:`bayesglmm.reduction`).  The posterior is the same; the
            log-likelihood stays one value per original row.
        centre : bool
            Sample independent random effects partially centred, each level as
            far as the data inform it, random intercepts anchored on the
            intercept (:mod:`bayesglmm.parameterization`).  The posterior is
            the same; with well-informed levels the SDs and the intercept mix
            far better.  Random intercepts nested in others (broods in
            locations) are sampled through the parents' totals
            (:func:`~bayesglmm.parameterization.nested_pairs`).  ``False``
            samples every effect in the plain non-centred form ``r = σ z``.
        log_likelihood : bool
            Store the pointwise log-likelihood in ``res.idata`` now.  By
            default (as in PyMC, bambi, brms and rstanarm) it is computed when
            first needed, by :meth:`~GLMMResults.loo`, :meth:`~GLMMResults.waic`,
            :func:`~bayesglmm.compare` or :meth:`~GLMMResults.log_lik`, and then
            kept; a fit of more than 5·10⁷ draws × rows never stores it, and
            LOO computes it in chunks.

        Returns
        -------
        GLMMResults
            Warns (:class:`~bayesglmm.errors.ConvergenceWarning`) naming the
            parameters with R-hat > 1.01 or ESS < 400, and on divergences or
            saturated tree depth.
        """
        cfg = make_config(draws, tune, chains, cores, target_accept, random_seed, sampler, progressbar)
        for name, value in (("reduce", reduce), ("centre", centre), ("log_likelihood", log_likelihood)):
            if not isinstance(value, bool):
                raise FitArgumentError(f"{name} must be True or False, got {value!r}")
        with frozen_heap():
            marginal = self._use_marginal(marginalize, centre)
            if marginal:
                cfg = choose_marginal_sampler(cfg, self.design)
                target = self.marginal_model(fused=cfg.sampler in C_SAMPLERS)
            else:
                target = self.sampling_model(reduce, centre)
            weights, pairs = ({}, ()) if marginal else self._parameterization(centre)
            idata = sample(lambda: self.pymc_model, cfg, target, self.design, weights, pairs, log_likelihood)
            return GLMMResults(self, idata)

    def __repr__(self) -> str:
        d = self.design
        blocks = " + ".join(
            f"({b.expr} {'|' if b.correlated or len(b.terms) == 1 else '||'} {b.group}) [{len(b.levels)} levels]"
            for b in d.blocks
        )
        return (
            f"GLMM({self.formula!r}, family={self.family.name!r}, link={self.link.name!r})\n"
            f"  observations: {d.n}; fixed effects: {', '.join(d.fixed.labels) or 'none'}\n"
            f"  random effects: {blocks or 'none'}"
        )
