"""Stage 1: parsing lme4-style formulas (no data involved)."""

import pytest

from bayesglmm.errors import FormulaError
from bayesglmm.formula import RandomTerm, parse_formula


def test_correlated_block_is_one_term():
    p = parse_formula("use ~ age + I(age**2) + urban + (1 + urban | district)")
    assert p.response == "use"
    assert p.fixed == "age + I(age**2) + urban"
    assert p.random == (RandomTerm("1 + urban", ("district",), True),)


def test_double_bar_is_uncorrelated():
    p = parse_formula("y ~ x + (1 + x || g)")
    assert p.random == (RandomTerm("1 + x", ("g",), False),)


def test_nested_expands_to_outer_and_interaction():
    p = parse_formula("y ~ 1 + (1 | school/class)")
    assert [t.group for t in p.random] == ["school", "school:class"]
    assert [t.factors for t in p.random] == [("school",), ("school", "class")]


def test_crossed_terms_and_random_only_formula():
    p = parse_formula("y ~ (1 | a) + (1 | b)")
    assert p.fixed == "1"
    assert [t.group for t in p.random] == ["a", "b"]


def test_functions_with_parentheses_stay_fixed():
    p = parse_formula("p(k, n) ~ np.log(x) + I(x | y) + offset(np.log(t)) + (0 + x | g)")
    assert p.response == "p(k, n)"
    assert p.fixed == "np.log(x) + I(x | y) + offset(np.log(t))"
    assert p.random[0].expr == "0 + x"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y x + (1 | g)", "exactly one '~'"),
        ("~ x", "no response"),
        ("y ~ ", "nothing on the right"),
        ("y ~ x + (1 | g", "unbalanced"),
        ("y ~ x + ( | g)", "nothing before the bar"),
        ("y ~ x + (1 | )", "no grouping factor"),
        ("y ~ x + (1 | g | h)", "exactly one '|'"),
        ("y ~ x + (1 | log(g))", "not a column name"),
        ("y ~ x + (1 | g) + (1 | g)", "appears twice"),
        ("y ~ x + + z", "empty term"),
        ("y ~ x + 1 | g", "wrapped in parentheses"),
    ],
)
def test_malformed_formulas(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_formula_must_be_string():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(None)
