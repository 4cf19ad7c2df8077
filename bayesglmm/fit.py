"""Stage 5 — fit: run NUTS, store the pointwise log-likelihood, check the draws.

Four interchangeable NUTS back ends sample the same PyMC model: nutpie on
PyTensor's C functions (``"nutpie-c"``, :mod:`bayesglmm.cnuts`), nutpie compiled
with numba (``"nutpie"``), PyMC's own (``"pymc"``) and NumPyro/JAX
(``"numpyro"``).  The default, ``"auto"``, picks by size (:func:`choose_sampler`).  Every fit is
reproducible from its ``random_seed``; when none is given one is drawn and
recorded in ``idata.attrs["random_seed"]``.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pymc as pm
import xarray as xr
from threadpoolctl import threadpool_limits

from . import _march, batch
from .cnuts import sample_chains
from .design import Design
from .errors import ArgumentError, ConvergenceWarning, FitArgumentError, SamplerUnavailableError
from .logit import register_backend
from .marginal import complete_posterior, effect_draw_names, marginal_layout, split_blocks
from .model import OBSERVED, ON_DEMAND
from .stats import az, convergence

SAMPLERS = ("auto", "nutpie-c", "nutpie", "pymc", "numpyro")
#: The samplers that run PyTensor's C code (and so :mod:`bayesglmm.marginal_op`).
C_SAMPLERS = ("nutpie-c", "pymc")
#: ``sampler="auto"`` uses nutpie with numba from this many rows x linear-predictor
#: columns of the sampled model on, or from ``AUTO_NUTPIE_EFFECTS`` sampled random
#: effects on, and ``"nutpie-c"`` below both.  Both run nutpie's NUTS, whose leapfrog
#: steps cost no Python; ``"nutpie"`` compiles the model with numba (10-25 s warm, up
#: to a minute the first time a model is seen) and then evaluates the gradient in
#: compiled code, ``"nutpie-c"`` (:mod:`bayesglmm.cnuts`) calls PyTensor's C function
#: from Python, which starts within seconds but costs a few µs per call and PyTensor's
#: overhead per node.  Large data make each gradient dearer and many parameters make
#: the trajectories longer.  The thresholds come from single default fits of the
#: reference models, not from bench/: grouseticks (584 effects, seed 1) took 41 s with
#: nutpie and 108 s with nutpie-c, VerbAgg (7584 rows) ran faster with nutpie;
#: Contraception (1934 rows x 8 columns, seed 1) took 21.4 s with nutpie and 21.1 s
#: with nutpie-c (min bulk ESS 1285 and 1186).
AUTO_NUTPIE_WORK = 30_000
AUTO_NUTPIE_EFFECTS = 250
# Both nutpie back ends adapt the mass matrix from the draws' variances (Stan's
# scheme) rather than from gradients for models whose correlated blocks are sampled
# (not integrated out), and "nutpie-c" does so always.  The SD of a slope and the
# Cholesky factor of its block form a funnel that the gradient-based estimate adapts
# to badly.  Single default fits (target_accept 0.95), not bench/, min bulk ESS, all on
# the slope's SD: Contraception (seeds 1-4) 425 / 634 / 549 / 539 with PyMC's NUTS
# (R-hat 1.0102 at seed 1), 1285 / 1484 / 1197 / 1119 with nutpie from draws (R-hat
# <= 1.003) in the same time (22-26 s against 20-25 s); two simulated logistic
# models with a correlated slope (50 groups x 30 rows, seeds 1-3): PyMC 712 / 755 /
# 764 and 449 / 453 / 248 (R-hat 1.016), nutpie from gradients 683 / 766 / 695 and
# 419 / 318 / 393 (R-hat up to 1.013), nutpie from draws 1207 / 1051 / 1161 and
# 758 / 828 / 755 (R-hat <= 1.005).  PyMC's own draw-based adaptation is not
# enough: one of those fits stuck (ESS 13, R-hat 1.24).  "nutpie-c", min bulk ESS
# from gradients against from draws: cbpp (seeds 1-3) 2347 / 2845 / 2841 against
# 3629 / 3579 / 3434 (PyMC's NUTS 3239 / 3211 / 3025); sleepstudy, marginalised
# (seeds 1-4) 2226 / 2972 / 2625 / 2872 against 2537 / 1954 / 3074 / 3463.
#: Default NUTS target acceptance while random effects are sampled: rstanarm's for GLMMs
#: (hierarchical posteriors have funnels, and fewer divergences are worth the longer
#: trajectories).
TARGET_ACCEPT_EFFECTS = 0.95
#: ... and when none are (integrated out, or a model without them), or every effect is
#: at least half centred (``CENTRED_ENOUGH``: each level's data outweigh its prior even at
#: a low guess of the SD, so the posterior has no funnel within its range): Stan's and
#: PyMC's default.  Single fits, not bench/: sleepstudy (marginalised, seeds 1-3) 6.1
#: instead of 9.5 leapfrog steps per draw; simulated random-intercept logistic models
#: (10-40 levels, 10-50 rows each, SD 0.25 or 1; 16 fits) at 0.8: divergences (1-3)
#: only in 3 of the 7 fits whose weights were all 0, none in the 9 others.
#: A wider grid (``bench/target_accept.py``; docs/index.md, session 13), 54 designs at
#: 0.8 with PyMC's NUTS: no divergence in the 30 fits whose smallest weight was above
#: 0.5; 5 of the 24 others diverged, one of them at weight 0.28.  The same grid with
#: nutpie-c (session 14): 1 of the 31 fits above 0.5 diverged, once (weight 0.73); 3 of
#: the 23 others, 1, 1 and 53 times; none of the 54 at 0.95.
TARGET_ACCEPT_NO_EFFECTS = 0.8
#: ... and with nested random intercepts sampled through their parents' totals
#: (:func:`~bayesglmm.parameterization.nested_pairs`), whose nutpie fits adapt the mass
#: matrix from the draws' variances rather than from gradients.
#: Single fits, not bench/: grouseticks (seeds 1-3) min bulk ESS 543 / 589 / 443 with
#: gradients at 0.95, 895 / 1026 / 991 from draws at 0.95 but with 1 / 32 / 7
#: divergences, and 1057 / 1021 / 1322 from draws at 0.98 with none (R-hat <= 1.004);
#: on six simulated data sets of grouseticks' structure (direct PyMC models) min ESS
#: rose in five (294 -> 696, 170 -> 559, 141 -> 1047, 157 -> 317, 198 -> 286, the last
#: with one divergence) and fell in one (1591 -> 738).
TARGET_ACCEPT_NESTED = 0.98
CENTRED_ENOUGH = 0.5
#: ... and for a correlated block, centred whole from weights of 0.5 on
#: (:data:`~bayesglmm.parameterization.CORRELATED_CENTRED`): single fits of simulated
#: ``y ~ x + (1 + x | g)`` (40 levels) at 0.8 had no divergences where the smallest
#: weight was 0.83 or more (five poisson fits, 10-200 rows per level), nor at 0.76,
#: 0.76, 0.64 and 0.54 (bernoulli, 100-200 rows), and one at 0.55 (poisson, 10 rows),
#: which at 0.95 had none.  Too few fits to draw the line lower than 0.8.
CORRELATED_CENTRED_ENOUGH = 0.8
RHAT_MAX = 1.01
ESS_MIN = 400
#: Largest pointwise log-likelihood (draws × rows values) kept with a fit; beyond it
#: LOO computes the log-likelihood in chunks on demand (``compare.loo``).
LOGLIK_BUDGET = 50_000_000


@dataclass(frozen=True)
class FitConfig:
    """Validated sampling settings."""

    draws: int
    tune: int
    chains: int
    cores: int
    target_accept: float | None
    random_seed: int
    sampler: str
    progressbar: bool


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FitArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_config(
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    target_accept: float | None = None,
    random_seed: int | None = None,
    sampler: str = "auto",
    progressbar: bool = True,
) -> FitConfig:
    """Check the arguments of :meth:`GLMM.fit` before anything is compiled."""
    if sampler not in SAMPLERS:
        raise FitArgumentError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if target_accept is not None and (
        isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) or not (0 < target_accept < 1)
    ):
        raise FitArgumentError(f"target_accept must be None or strictly between 0 and 1, got {target_accept!r}")
    if random_seed is None:
        random_seed = int(np.random.SeedSequence().entropy % (2**31))
    seed = _positive_int("random_seed", random_seed, minimum=0)
    chains = _positive_int("chains", chains)
    cores = min(chains, os.cpu_count() or 1) if cores is None else _positive_int("cores", cores)
    return FitConfig(
        _positive_int("draws", draws),
        _positive_int("tune", tune, minimum=0),
        chains,
        cores,
        None if target_accept is None else float(target_accept),
        seed,
        sampler,
        bool(progressbar),
    )


def choose_sampler(cfg: FitConfig, rows: int, columns: int, effects: int) -> FitConfig:
    """Resolve ``sampler="auto"`` for a model of ``rows`` × ``columns`` with ``effects`` sampled random effects.

    See ``AUTO_NUTPIE_WORK``.  Without nutpie installed, PyMC's NUTS; any
    explicit choice is kept.
    """
    return _auto_sampler(cfg, large=rows * columns >= AUTO_NUTPIE_WORK or effects >= AUTO_NUTPIE_EFFECTS)


def _auto_sampler(cfg: FitConfig, large: bool) -> FitConfig:
    """Resolve ``sampler="auto"``: nutpie with numba for a ``large`` model, else nutpie-c; PyMC without nutpie."""
    if cfg.sampler != "auto":
        return cfg
    try:
        import nutpie  # noqa: F401
    except ImportError:
        return replace(cfg, sampler="pymc")
    return replace(cfg, sampler="nutpie" if large else "nutpie-c")


def choose_marginal_sampler(cfg: FitConfig, design: Design) -> FitConfig:
    """:func:`choose_sampler` for ``design``'s model with its random effects integrated out.

    The marginal likelihood sees the rows only through per-level statistics
    (:class:`~bayesglmm.marginal.Residuals`): its size is that of the levels.
    One grouping factor (one or several blocks of it) takes nutpie-c whatever its size: its likelihood is
    then one C operation (:mod:`bayesglmm.marginal_op`), which numba cannot
    run.  5000 levels of ``(1 + x | g)``, 50,000 rows, seed 1, single fits:
    22.5 s with nutpie-c against 50.1 s with nutpie's numba on the graph
    (min bulk ESS 3536 and 3635).  The ``"partial"`` layout reads sparse
    cross-products at every gradient (:mod:`bayesglmm.sparse_stats`), as many
    non-zeros as rows where the sampled and integrated factors are crossed
    (InstEval): its size is taken to be that of the data, as for a model
    that samples its effects.
    """
    if cfg.sampler != "auto":  # chosen by the caller, or already resolved
        return cfg
    layout = marginal_layout(design)
    if layout == "blocks":
        return _auto_sampler(cfg, large=False)
    columns, effects, _ = _size(design, True)
    rows = design.n if layout == "partial" else sum(len(b.levels) for b in design.blocks)
    return choose_sampler(cfg, rows, columns, effects)


def choose_target_accept(
    cfg: FitConfig,
    effects: int,
    centring: Mapping[str, np.ndarray],
    nested: bool = False,
    correlated: tuple[str, ...] = (),
) -> FitConfig:
    """Resolve ``target_accept=None`` for a model with ``effects`` sampled random effects.

    ``TARGET_ACCEPT_NESTED`` with nested pairs (``nested``); otherwise
    ``TARGET_ACCEPT_NO_EFFECTS`` when there are no effects or when every
    centring weight is at least ``CENTRED_ENOUGH`` (``CORRELATED_CENTRED_ENOUGH``
    in the ``correlated`` blocks, which are centred whole), else
    ``TARGET_ACCEPT_EFFECTS``; an explicit choice is kept.
    """
    if cfg.target_accept is not None:
        return cfg
    if nested and effects > 0:
        return replace(cfg, target_accept=TARGET_ACCEPT_NESTED)
    centred = bool(centring) and all(
        float(np.min(c)) >= (CORRELATED_CENTRED_ENOUGH if name in correlated else CENTRED_ENOUGH)
        for name, c in centring.items()
    )
    funnel = effects > 0 and not centred
    return replace(cfg, target_accept=TARGET_ACCEPT_EFFECTS if funnel else TARGET_ACCEPT_NO_EFFECTS)


def blas_threads(cores: int) -> int:
    """BLAS threads per chain when ``cores`` chains run at once: the cores left over.

    nutpie runs its chains as threads of this process; OpenBLAS would give each
    matrix product of each chain all the machine's cores, and the chains' BLAS
    threads would then wait on one another (1M rows, 2 cores: 26 ms per gradient
    with one BLAS thread per process against 31-37 ms with two, two processes at once).
    """
    return max(1, (os.cpu_count() or 1) // max(cores, 1))


def _size(design: Design | None, marginal: bool) -> tuple[int, int, tuple[str, ...]]:
    """(linear-predictor columns, sampled random effects, names of the sampled correlated blocks) of a design."""
    if design is None:
        return 1, 0, ()
    columns = design.fixed.X.shape[1] + sum(len(b.terms) for b in design.blocks)
    sampled = split_blocks(design)[1] if marginal else design.blocks
    effects = sum(len(b.levels) * len(b.terms) for b in sampled)
    return columns, effects, tuple(b.name for b in sampled if b.correlated)


def _stored_names(model: pm.Model, later: tuple[str, ...] = ()) -> list[str]:
    """Variables kept while sampling: all but ``eta``, ``mu`` and those drawn ``later``."""
    names = [v.name for v in model.free_RVs] + [v.name for v in model.deterministics]
    return [n for n in names if n not in ON_DEMAND and n not in later]


def _import_nutpie(sampler: str):
    """nutpie, or a :class:`SamplerUnavailableError` naming ``sampler``."""
    try:
        import nutpie
    except ImportError as exc:
        raise SamplerUnavailableError(f"sampler={sampler!r} needs nutpie: pip install nutpie") from exc
    return nutpie


def _sample_nutpie(model: pm.Model, cfg: FitConfig, later: tuple[str, ...] = (), draw_mass: bool = False):
    """nutpie's NUTS; ``draw_mass`` adapts the mass matrix from the draws' variances, not from gradients."""
    nutpie = _import_nutpie("nutpie")
    compiled = nutpie.compile_pymc_model(model, var_names=_stored_names(model, later))
    return nutpie.sample(
        compiled,
        draws=cfg.draws,
        tune=cfg.tune,
        chains=cfg.chains,
        cores=cfg.cores,
        seed=cfg.random_seed,
        target_accept=cfg.target_accept,
        progress_bar=cfg.progressbar,
        save_warmup=False,
        use_grad_based_mass_matrix=not draw_mass,
    )


def _sample_nutpie_c(model: pm.Model, cfg: FitConfig, later: tuple[str, ...] = (), draw_mass: bool = True):
    """nutpie's NUTS on PyTensor's C functions, chains in forked processes (:mod:`bayesglmm.cnuts`)."""
    _import_nutpie("nutpie-c")
    return sample_chains(model, _stored_names(model, later), cfg, draw_mass)


def _sample_pymc(model: pm.Model, cfg: FitConfig, later: tuple[str, ...] = ()):
    # PyMC's NUTS adapts its mass matrix from gradients as well as draws (nutpie's
    # scheme); on a simulated gamma GLMM (seeds 1, 2) R-hat 1.004 / 1.009 against
    # 1.018 / 1.014 with the default adaptation.  ESS on the reference models moved
    # both ways.
    kwargs = {"init": "jitter+adapt_diag_grad"}
    if cfg.sampler == "numpyro":
        try:
            import numpyro  # noqa: F401
        except ImportError as exc:
            raise SamplerUnavailableError(
                "sampler='numpyro' needs numpyro and jax: pip install 'bayesglmm[fast]'"
            ) from exc
        kwargs = {"nuts_sampler": "numpyro", "nuts_sampler_kwargs": {"chain_method": "parallel"}}
    return pm.sample(
        draws=cfg.draws,
        tune=cfg.tune,
        chains=cfg.chains,
        cores=cfg.cores,
        target_accept=cfg.target_accept,
        random_seed=cfg.random_seed,
        progressbar=cfg.progressbar,
        var_names=_stored_names(model, later),
        compute_convergence_checks=False,
        idata_kwargs={"log_likelihood": False},
        model=model,
        **kwargs,
    )


def _rows(model: pm.Model) -> int:
    """Number of response rows a model holds."""
    return int(model.named_vars["_y"].get_value().shape[0])


def sample(
    model: Callable[[], pm.Model],
    cfg: FitConfig,
    target: pm.Model | None = None,
    design: Design | None = None,
    centring: Mapping[str, np.ndarray] | None = None,
    nested: tuple = (),
    log_likelihood: bool = False,
) -> az.InferenceData:
    """Sample the posterior of the model ``model()`` returns; with ``log_likelihood``, add the pointwise
    log-likelihood of ``y``.

    ``model`` is called only when the model itself is needed: a marginal fit
    (``target`` the model with the random effects integrated out, which holds
    the same variables and dims) that does not store the log-likelihood never
    builds it (sleepstudy: 0.1 s of a 2.4 s fit).

    Without it (the default, as in PyMC, bambi, brms and rstanarm), LOO
    computes the log-likelihood when it is first asked for
    (:func:`store_log_likelihood`).  It is stored when it holds at most
    ``LOGLIK_BUDGET`` values (draws × rows); larger fits compute it in chunks.

    ``target`` is the model NUTS runs when it is not ``model`` itself, with the
    same posterior: the model with gaussian random effects integrated out (the
    effects are then drawn from their exact conditional posterior, see
    :func:`~bayesglmm.marginal.complete_posterior`), or the model of the
    collapsed rows (:mod:`bayesglmm.reduction`), with random effects partially
    centred (:mod:`bayesglmm.parameterization`).  Either way the posterior is
    completed to that of ``model()`` and holds exactly its variables; the
    log-likelihood is that of ``model()``, one value per original row.
    ``centring`` holds the centring weights of ``target``'s blocks, if any,
    ``nested`` its pairs of nested random intercepts
    (:class:`~bayesglmm.parameterization.NestedPair`).
    """
    start = time.perf_counter()
    target = model() if target is None else target
    marginal = OBSERVED not in target.named_vars
    later = tuple(effect_draw_names(design)) if marginal else ()
    columns, effects, correlated = _size(design, marginal)
    centring = centring or {}
    if marginal and design is not None:
        cfg = choose_marginal_sampler(cfg, design)
    else:
        cfg = choose_sampler(cfg, _rows(target), columns, effects)
    cfg = choose_target_accept(cfg, effects, centring, nested=bool(nested), correlated=correlated)
    draw_mass = cfg.sampler == "nutpie-c" or (cfg.sampler == "nutpie" and (bool(nested) or bool(correlated)))
    register_backend(cfg.sampler)
    with warnings.catch_warnings(), _march.kept():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*[Tt]he effect of Potentials.*")
        warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
        with threadpool_limits(blas_threads(cfg.cores), user_api="blas"):
            if cfg.sampler == "nutpie":
                idata = _sample_nutpie(target, cfg, later, draw_mass)
            elif cfg.sampler == "nutpie-c":
                idata = _sample_nutpie_c(target, cfg, later, draw_mass)
            else:
                idata = _sample_pymc(target, cfg, later)
        if marginal:
            seed = int(np.random.SeedSequence([cfg.random_seed, 1]).generate_state(1)[0])
            complete_posterior(idata, target, design, seed)
            collapsed = 0
        else:
            full = model()
            idata.posterior = idata.posterior[[v for v in idata.posterior.data_vars if v in full.named_vars]]
            collapsed = _rows(target) if _rows(target) < _rows(full) else 0
        seconds = time.perf_counter() - start
    idata.attrs.update(
        {
            "random_seed": cfg.random_seed,
            "sampler": cfg.sampler,
            "sampling_seconds": seconds,
            "draws": cfg.draws,
            "tune": cfg.tune,
            "chains": cfg.chains,
            "target_accept": cfg.target_accept,
            "marginalized": int(marginal),
            "log_likelihood": "on demand",
            "collapsed_rows": collapsed,
            "centred_blocks": ",".join(centring),
            "nested_pairs": ",".join(f"{pair.parent}>{pair.child}" for pair in nested),
            "mass_matrix": "draws" if draw_mass or cfg.sampler == "numpyro" else "gradients",
        }
    )
    if log_likelihood:
        store_log_likelihood(idata, model())
    return idata


def store_log_likelihood(idata: az.InferenceData, model: pm.Model) -> bool:
    """Add the pointwise log-likelihood of ``model``'s response to ``idata`` if it fits ``LOGLIK_BUDGET``.

    Returns whether ``idata`` holds it (already, or now); ``idata.attrs["log_likelihood"]``
    says ``"stored"`` or ``"on demand"`` (computed in chunks by LOO).
    """
    if "log_likelihood" in idata.groups():
        return True
    size = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"] * _rows(model)
    if size > LOGLIK_BUDGET:
        return False
    values = batch.log_likelihood(idata.posterior, model, OBSERVED)
    da = batch.draws_array(values, idata.posterior, model, OBSERVED)  # the dims PyMC's compute_log_likelihood gives
    idata.add_groups(log_likelihood=xr.Dataset({OBSERVED: da}))
    idata.attrs["log_likelihood"] = "stored"
    return True


def too_large(what: str, instead: str = "loo(), which computes it in chunks") -> ArgumentError:
    """The error of ``what`` (``waic()``, ``log_lik()``, ...) on a fit too large to store its log-likelihood."""
    return ArgumentError(
        f"{what} needs the stored pointwise log-likelihood, and this fit is too large to store it "
        f"(draws x rows > {LOGLIK_BUDGET:.0e}): use {instead}"
    )


def _tree_depth_hits(stats) -> int:
    for key in ("reached_max_treedepth", "maxdepth_reached"):
        if key in stats:
            return int(np.asarray(stats[key]).sum())
    return 0


def check_draws(idata: az.InferenceData, names: dict[str, np.ndarray]) -> dict[str, float]:
    """Warn on R-hat > 1.01, ESS < 400, divergences and saturated tree depth.

    Parameters
    ----------
    idata : InferenceData
    names : dict
        Readable parameter name -> draws of shape (chain, draw).

    Returns
    -------
    dict with ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``,
    ``divergences`` and ``max_treedepth_hits``.
    """
    labels = list(names)
    diag = convergence(np.stack([names[k] for k in labels], axis=-1))
    rhat, bulk, tail = diag["r_hat"], diag["ess_bulk"], diag["ess_tail"]
    stats = idata.sample_stats
    n_div = int(np.asarray(stats["diverging"]).sum()) if "diverging" in stats else 0
    n_depth = _tree_depth_hits(stats)
    messages = []
    if next(iter(names.values())).shape[0] < 2:
        messages.append("R-hat needs at least two chains (chains=1 was asked for): convergence is not checked")
    bad = [f"{labels[i]} ({rhat[i]:.3f})" for i in np.flatnonzero(rhat > RHAT_MAX)]
    if bad:
        messages.append(f"R-hat above {RHAT_MAX} for {', '.join(bad)}: chains disagree; run longer")
    low = [
        f"{labels[i]} (bulk {bulk[i]:.0f}, tail {tail[i]:.0f})"
        for i in np.flatnonzero((bulk < ESS_MIN) | (tail < ESS_MIN))
    ]
    if low:
        messages.append(f"effective sample size below {ESS_MIN} for {', '.join(low)}: draw more samples")
    if n_div:
        messages.append(f"{n_div} divergent transition(s): raise target_accept (e.g. 0.95 or 0.99)")
    if n_depth:
        messages.append(f"{n_depth} draw(s) hit the maximum tree depth: the posterior is hard to explore")
    for message in messages:
        warnings.warn(message, ConvergenceWarning, stacklevel=4)
    with warnings.catch_warnings():  # all-NaN statistics (one chain) are reported as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "max_rhat": float(np.nanmax(rhat)),
            "min_ess_bulk": float(np.nanmin(bulk)),
            "min_ess_tail": float(np.nanmin(tail)),
            "divergences": n_div,
            "max_treedepth_hits": n_depth,
        }
