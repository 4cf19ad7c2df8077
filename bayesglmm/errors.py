"""One error hierarchy for everything a user can get wrong.

Every check on user input raises a subclass of :class:`BayesGLMMError` with a
message that names the offending formula term, column, value or argument.
Warnings about a finished fit are :class:`ConvergenceWarning`.
"""

from __future__ import annotations


class BayesGLMMError(Exception):
    """Base class of every error raised by bayesglmm on bad input."""


class FormulaError(BayesGLMMError, ValueError):
    """The model formula is malformed or asks for something unsupported."""


class DataError(BayesGLMMError, ValueError):
    """The data cannot be used as given (unknown or missing columns, NaN, ...)."""


class MissingDataError(DataError):
    """Columns used by the model hold missing values."""


class ResponseError(DataError):
    """The response is outside the support of the chosen family."""


class GroupingError(DataError):
    """A grouping factor cannot define random effects (e.g. a single level)."""


class NewLevelError(DataError):
    """New data holds group levels not seen when fitting."""


class FamilyError(BayesGLMMError, ValueError):
    """Unknown family or link, or a link the family does not allow."""


class PriorError(BayesGLMMError, ValueError):
    """A prior specification is unknown, malformed, or targets nothing."""


class ArgumentError(BayesGLMMError, ValueError):
    """An argument of a method has an invalid value (e.g. ``prob=1.5``)."""


class FitArgumentError(ArgumentError):
    """An argument to ``fit`` (draws, chains, sampler, ...) is invalid."""


class SamplerUnavailableError(BayesGLMMError, ImportError):
    """The requested sampler backend is not installed."""


class ConvergenceWarning(UserWarning):
    """A finished fit shows signs that its posterior draws are not trustworthy."""


class DataWarning(UserWarning):
    """Rows were dropped or data were adjusted at the user's request."""
