"""The bad-input catalogue (issue 4): every entry raises a BayesGLMMError subclass whose
message names the problem, before anything reaches PyMC.  ``docs/errors.md`` lists the
entries; ``test_docs_list_every_entry`` keeps the two in step.

Model-level inputs are checked in ``test_errors.py`` (formula, data, family, response,
priors, fit arguments); the catalogue below adds what users do with a fitted model.
"""

import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm import errors

from .test_errors import CASES

pytestmark = pytest.mark.sampling
DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(8), 10)
    df = pd.DataFrame({"x": rng.normal(size=80), "f": rng.choice(["a", "b"], 80), "g": [f"s{i}" for i in g]})
    df["y"] = rng.binomial(1, 0.5, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("y ~ x + f + (1 + x | g)", df, family="bernoulli").fit(
            draws=100, tune=100, chains=2, cores=1, progressbar=False, random_seed=1
        )
    return res, df


def _new(df, **changes):
    out = df.head(3).copy()
    for column, value in changes.items():
        out[column] = value
    return out


# (id, what the user did, action(res, df), error class, message pattern)
FITTED = [
    (
        "predict-new-level",
        "predict for a group level not seen in fitting",
        lambda r, d: r.predict(_new(d, g="s99")),
        errors.NewLevelError,
        "level.*'g' not seen.*allow_new_levels",
    ),
    (
        "predict-missing-column",
        "newdata without a predictor column",
        lambda r, d: r.predict(d.head(3).drop(columns="x")),
        errors.DataError,
        r"lacks column\(s\) \['x'\]",
    ),
    (
        "predict-missing-group",
        "newdata without the grouping column",
        lambda r, d: r.predict(d.head(3).drop(columns="g")),
        errors.DataError,
        "lacks grouping column.*'g'",
    ),
    (
        "predict-unseen-category",
        "newdata with a category of a fixed factor not seen in fitting",
        lambda r, d: r.predict(_new(d, f="zzz")),
        errors.DataError,
        "cannot evaluate the model's design",
    ),
    (
        "predict-missing-values",
        "newdata with missing values in a used column",
        lambda r, d: r.predict(_new(d, x=np.nan)),
        errors.MissingDataError,
        r"3 of 3 rows of new data .*'x'.*dropna",
    ),
    (
        "marginal-missing-values",
        "population-averaged predictions for newdata with a missing value (counted before the rows are repeated)",
        lambda r, d: r.predict(_new(d, x=[0.0, np.nan, 1.0]), marginal=True),
        errors.MissingDataError,
        r"1 of 3 rows of new data",
    ),
    (
        "predict-not-frame",
        "newdata that is not a DataFrame",
        lambda r, d: r.predict({"x": [1.0]}),
        errors.ArgumentError,
        "must be a pandas DataFrame",
    ),
    (
        "predict-kind",
        "an unknown prediction kind",
        lambda r, d: r.predict(kind="probability"),
        errors.ArgumentError,
        "kind must be one of",
    ),
    (
        "predict-re-formula-group",
        "re_formula naming a factor that is not in the model",
        lambda r, d: r.predict(re_formula="~(1 | school)"),
        errors.ArgumentError,
        "'school' is not a grouping factor",
    ),
    (
        "predict-re-formula-type",
        "re_formula that is not a string",
        lambda r, d: r.predict(re_formula=0),
        errors.ArgumentError,
        "re_formula must be None or a formula",
    ),
    (
        "predict-quantile",
        "re_quantile outside (0, 1)",
        lambda r, d: r.predict(re_quantile=1.2),
        errors.ArgumentError,
        "must be a probability in",
    ),
    (
        "predict-quantile-group",
        "re_quantile for an unknown factor",
        lambda r, d: r.predict(re_quantile={"school": 0.2}),
        errors.ArgumentError,
        "'school'.*not a grouping factor",
    ),
    (
        "predict-marginal-type",
        "marginal that is not True/False",
        lambda r, d: r.predict(marginal="yes"),
        errors.ArgumentError,
        "marginal must be True or False",
    ),
    (
        "predict-partial-block",
        "integrating over part of a correlated block",
        lambda r, d: r.predict(re_formula="~(0 + x | g)", marginal=True),
        errors.ArgumentError,
        "part of the",
    ),
    (
        "predict-response-marginal",
        "response draws together with marginal=True",
        lambda r, d: r.predict(kind="response", marginal=True),
        errors.ArgumentError,
        "kind='response' cannot",
    ),
    (
        "summary-prob",
        "an interval probability outside (0, 1)",
        lambda r, d: r.summary(prob=1.5),
        errors.ArgumentError,
        "prob must be a number strictly between 0 and 1",
    ),
    (
        "icc-at",
        "ICC at a covariate that is not a random slope",
        lambda r, d: r.icc(at={"age": 1}),
        errors.ArgumentError,
        r"at names \['age'\]",
    ),
    (
        "comparisons-variable",
        "comparisons of a column the model does not use",
        lambda r, d: r.comparisons("age"),
        errors.ArgumentError,
        "'age' is not a column",
    ),
    (
        "comparisons-scale",
        "comparisons on an unknown scale",
        lambda r, d: r.comparisons("x", scale="odds"),
        errors.ArgumentError,
        "scale must be 'response' or 'link'",
    ),
    (
        "slopes-categorical",
        "slopes of a categorical variable",
        lambda r, d: r.slopes("f"),
        errors.ArgumentError,
        "'f' is categorical: use comparisons",
    ),
    (
        "loo-group",
        "leave-one-group-out over a factor not in the model",
        lambda r, d: r.loo(group="school"),
        errors.ArgumentError,
        "'school' is not a grouping factor",
    ),
    (
        "kfold-k",
        "K-fold with more folds than groups",
        lambda r, d: r.kfold(group="g", k=50),
        errors.ArgumentError,
        "k must be an integer between 2 and",
    ),
    (
        "compare-one",
        "compare with a single model",
        lambda r, d: bg.compare({"a": r}),
        errors.ArgumentError,
        "at least two",
    ),
    (
        "compare-ic",
        "compare with an unknown criterion",
        lambda r, d: bg.compare({"a": r, "b": r}, ic="bic"),
        errors.ArgumentError,
        "ic must be 'loo' or 'waic'",
    ),
    (
        "grouped-ppc-stat",
        "a grouped check with an unknown statistic",
        lambda r, d: r.grouped_ppc("g", stat="median"),
        errors.ArgumentError,
        "stat must be a callable or one of",
    ),
    (
        "bayes-r2-method",
        "Bayes R² with an unknown method",
        lambda r, d: r.bayes_r2(method="adjusted"),
        errors.ArgumentError,
        "method must be 'model' or 'residual'",
    ),
    (
        "load-missing",
        "loading a fit from a file that does not exist",
        lambda r, d: bg.load("/nonexistent/fit.bglmm"),
        errors.ArgumentError,
        "cannot read a bayesglmm fit",
    ),
    (
        "marginalize-binary",
        "exact marginalisation asked of a binary model",
        lambda r, d: r.model.fit(marginalize=True),
        errors.FitArgumentError,
        "marginalize=True needs family='gaussian'",
    ),
    (
        "marginalize-value",
        "marginalize set to something else than auto/True/False",
        lambda r, d: r.model.fit(marginalize="maybe"),
        errors.FitArgumentError,
        "marginalize must be",
    ),
    (
        "separation-family",
        "asking a count model for separation",
        lambda r, d: bg.GLMM("k ~ x + (1 | g)", d.assign(k=1 + np.arange(len(d)) % 3), family="poisson").separation(),
        errors.FamilyError,
        "separation concerns binary responses",
    ),
    (
        "prior-unknown-group",
        "a prior for a grouping factor not in the model",
        lambda r, d: bg.GLMM("y ~ x + (1 | g)", d, family="bernoulli", priors={("sd", "school"): bg.exponential(1)}),
        errors.PriorError,
        "matches no parameter",
    ),
    (
        "prior-lkj-eta",
        "an LKJ prior with a non-positive eta",
        lambda r, d: bg.lkj(0),
        errors.PriorError,
        "must be positive",
    ),
]


@pytest.mark.parametrize(("key", "what", "action", "cls", "pattern"), FITTED, ids=[c[0] for c in FITTED])
def test_fitted_model_catalogue(fitted, key, what, action, cls, pattern):
    res, df = fitted
    with pytest.raises(cls, match=pattern) as info:
        action(res, df)
    assert isinstance(info.value, errors.BayesGLMMError)
    # raised at the boundary: no frame of the traceback lies inside PyMC or PyTensor
    frames = [f.filename for f in traceback.extract_tb(info.tb)]
    assert not any("/pymc/" in f or "/pytensor/" in f for f in frames), frames[-1]


def test_catalogue_is_large_enough():
    # formula/data/family/response cases, the separate model-level tests of test_errors.py
    # (missing values, non-DataFrame data, 5 fit arguments, 6 priors) and the entries above
    size = len(CASES) + 1 + 1 + 5 + 6 + len(FITTED)
    assert size >= 30
    readme = (DOCS.parents[1] / "README.md").read_text()
    assert f"catalogue of {size} bad inputs" in readme, "update the catalogue's size in README.md"


def _cell(text: str) -> str:
    return text.replace("\\", "").replace("|", "\\|")


def render_docs() -> str:
    """docs/errors.md, generated from the catalogue.

    Regenerate with ``python -c "from tests.test_catalogue import render_docs; print(render_docs(), end='')"
    > docs/errors.md``.
    """
    lines = [
        "# Bad-input catalogue",
        "",
        "Every entry raises a subclass of `BayesGLMMError` whose message names the problem, before any",
        "sampling and without a traceback from inside PyMC (tests: `tests/test_errors.py` and",
        "`tests/test_catalogue.py`, which also checks that this page is generated from them).",
        "",
        "## Model specification (`bg.GLMM(formula, data, ...)`)",
        "",
        "| formula | arguments | error | message contains |",
        "|---|---|---|---|",
    ]
    for formula, _, kw, cls, pattern in CASES:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items()) or "—"
        lines.append(f"| `{_cell(formula)}` | {args} | `{cls.__name__}` | {_cell(pattern)} |")
    lines += [
        "",
        "Also in `tests/test_errors.py`: missing values (`MissingDataError`, naming the rows and columns;",
        "`na_action='drop'` drops them with a `DataWarning` giving the count), data that is not a DataFrame",
        "(`DataError`), five bad `fit()` arguments: `draws=0`, `chains=1.5`, `target_accept=1.2`,",
        "`sampler='gibbs'`, `random_seed=-1` (`FitArgumentError`, raised before the model is built), and six",
        "bad priors (`PriorError`: wrong distribution for a class, a key matching no parameter, a value that",
        "is not a prior, a key that is not a class name, a negative scale, a non-numeric parameter).",
        "",
        "## Working with a fitted model",
        "",
        "| id | what the user did | error | message contains |",
        "|---|---|---|---|",
    ]
    for key, what, _, cls, pattern in FITTED:
        lines.append(f"| `{key}` | {what} | `{cls.__name__}` | {_cell(pattern)} |")
    return "\n".join(lines) + "\n"


def test_docs_are_generated_from_the_catalogue():
    assert DOCS.read_text() == render_docs(), "regenerate docs/errors.md (see render_docs)"
