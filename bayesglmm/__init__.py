"""bayesglmm — Bayesian generalized linear mixed models on PyMC.

The pipeline, one module per stage: :mod:`~bayesglmm.formula` ->
:mod:`~bayesglmm.design` -> :mod:`~bayesglmm.priors` -> :mod:`~bayesglmm.model`
-> :mod:`~bayesglmm.fit` -> :mod:`~bayesglmm.results`.
"""

from . import datasets, effects, plots, simulate
from .compare import compare
from .discrete_time import expand_discrete_time
from .errors import (
    ArgumentError,
    BayesGLMMError,
    ConvergenceWarning,
    DataError,
    DataWarning,
    FamilyError,
    FitArgumentError,
    FormulaError,
    GroupingError,
    MissingDataError,
    NewLevelError,
    PriorError,
    ResponseError,
    SamplerUnavailableError,
)
from .glmm import GLMM
from .io import load
from .priors import exponential, gamma, half_normal, half_student_t, lkj, normal, student_t
from .results import GLMMResults

__version__ = "0.1.0"

__all__ = [
    "GLMM",
    "ArgumentError",
    "BayesGLMMError",
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "FamilyError",
    "FitArgumentError",
    "FormulaError",
    "GLMMResults",
    "GroupingError",
    "MissingDataError",
    "NewLevelError",
    "PriorError",
    "ResponseError",
    "SamplerUnavailableError",
    "compare",
    "datasets",
    "effects",
    "expand_discrete_time",
    "exponential",
    "gamma",
    "half_normal",
    "half_student_t",
    "lkj",
    "load",
    "normal",
    "plots",
    "simulate",
    "student_t",
]
