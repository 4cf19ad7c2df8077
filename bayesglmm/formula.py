"""Stage 1 — formula: split an lme4-style formula into its parts.

``formulae`` evaluates the fixed part and the left-hand side of every random
term, but it splits ``(1 + x | g)`` into separate terms and knows neither
``||`` nor nesting.  This module therefore parses the random-effect terms
itself and hands formulae only plain (common-effects) formulas:

* ``(1 + x | g)``  -> one correlated block (intercept and slope of ``x``)
* ``(1 + x || g)`` -> one block with independent standard deviations
* ``(1 | a/b)``    -> ``(1 | a) + (1 | a:b)``
* ``(1 | a) + (1 | b)`` -> two (crossed or nested) blocks

It also reads the R spellings that formulae does not (:func:`translate_r`):
lme4's binomial response ``cbind(successes, failures)``, brms's
``successes | trials(n)``, and ``^`` for a power (``I(x^2)``, ``(a + b)^2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FormulaError

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class RandomTerm:
    """One random-effect block as written by the user.

    Attributes
    ----------
    expr : str
        Left-hand side of the bar, e.g. ``"1 + x"``.
    factors : tuple of str
        Columns whose interaction defines the groups, e.g. ``("a", "b")``
        for ``a:b``.
    correlated : bool
        False for ``||`` (independent standard deviations).
    """

    expr: str
    factors: tuple[str, ...]
    correlated: bool

    @property
    def group(self) -> str:
        """Name of the grouping factor (``"a:b"`` for an interaction)."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and random blocks."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]

    @property
    def fixed_formula(self) -> str:
        """The common-effects formula handed to formulae."""
        return f"{self.response} ~ {self.fixed}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it appears outside any brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula part {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in formula part {text!r}")
    parts.append(text[start:])
    return parts


def _bare_group(piece: str) -> str | None:
    """Return the inside of ``piece`` if it is one bare parenthesised group."""
    piece = piece.strip()
    if not (piece.startswith("(") and piece.endswith(")")):
        return None
    depth = 0
    for i, ch in enumerate(piece):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i != len(piece) - 1:
            return None
    return piece[1:-1]


def _has_bar(text: str) -> bool:
    return len(_split_top(text, "|")) > 1


def _parse_factor(text: str) -> list[tuple[str, ...]]:
    """Parse a grouping expression: ``g``, ``a:b`` or nested ``a/b/c``."""
    text = text.strip()
    inner = _bare_group(text)
    if inner is not None:
        text = inner.strip()
    if not text:
        raise FormulaError("a random-effect term has no grouping factor after '|'")
    levels = [p.strip() for p in text.split("/")]
    nested: list[tuple[str, ...]] = []
    prefix: tuple[str, ...] = ()
    for level in levels:
        names = tuple(n.strip() for n in level.split(":"))
        for name in names:
            if not _NAME.match(name):
                raise FormulaError(
                    f"grouping factor {name!r} in {text!r} is not a column name; "
                    "compute the grouping column in the data frame first"
                )
        prefix = prefix + names
        nested.append(prefix)
    return nested


def _parse_random(inner: str) -> list[RandomTerm]:
    """Parse the inside of ``(expr | group)`` or ``(expr || group)``."""
    double = _split_top(inner, "||")
    if len(double) == 2:
        expr, group, correlated = double[0], double[1], False
    elif len(double) == 1:
        single = _split_top(inner, "|")
        if len(single) != 2:
            raise FormulaError(f"random-effect term ({inner}) must have exactly one '|'")
        expr, group, correlated = single[0], single[1], True
    else:
        raise FormulaError(f"random-effect term ({inner}) has more than one '||'")
    expr = expr.strip()
    if not expr:
        raise FormulaError(f"random-effect term ({inner}) has nothing before the bar; write (1 | g)")
    return [RandomTerm(expr, factors, correlated) for factors in _parse_factor(group)]


def _power(text: str) -> str:
    """``text`` with R's ``^`` written as ``**``, outside quotes and square brackets.

    In R, ``^`` is the arithmetic power inside ``I()`` and the interaction power
    outside it; ``**`` means the same in formulae, which rejects ``^``.
    Quoted strings and level names (``y[a^b]``) are left as written.
    """
    out, quote, square = [], None, 0
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[]":
            square += 1 if ch == "[" else -1
        elif ch == "^" and square == 0:
            ch = "**"
        out.append(ch)
    return "".join(out)


def _call_args(text: str, name: str) -> list[str] | None:
    """The top-level arguments of ``text`` if it is one call ``name(...)``, else None."""
    text = text.strip()
    if not text.startswith(name) or _bare_group(text[len(name) :]) is None:
        return None
    return [a.strip() for a in _split_top(text[len(name) + 1 : -1], ",")]


def _operand(expr: str) -> str:
    """``expr`` as an argument of formulae's ``p()``: a column name as it is, else in ``I()``."""
    return expr if _NAME.match(expr) else f"I({expr})"


def _brms_response(response: str) -> str:
    """brms's ``y | trials(n)`` as ``p(y, n)``; any other addition term is an error."""
    variable, *additions = (p.strip() for p in _split_top(response, "|"))
    calls = [(t.strip(), _call_args(t, "trials")) for a in additions for t in _split_top(a, "+")]
    trials = [args for _, args in calls if args is not None]
    other = [t for t, args in calls if args is None]
    if other:
        raise FormulaError(
            f"response {response!r}: the brms addition term(s) {other} are not supported; "
            "only trials(n) is (a binomial response, also written p(successes, n))"
        )
    if len(trials) != 1 or len(trials[0]) != 1 or not trials[0][0]:
        raise FormulaError(f"response {response!r}: write one trials(n), with the number of trials n")
    return f"p({_operand(variable)}, {_operand(trials[0][0])})"


def translate_r(response: str) -> str:
    """A response written in lme4's or brms's syntax, as formulae writes it.

    ``cbind(s, f)`` (successes and failures) becomes ``p(s, I((s) + (f)))``
    and ``s | trials(n)`` becomes ``p(s, n)``: binomial responses with their
    numbers of trials.  Anything else is returned as it is.
    """
    args = _call_args(response, "cbind")
    if args is not None:
        if len(args) != 2 or not all(args):
            raise FormulaError(
                f"response {response!r}: cbind() takes two columns, the successes and the failures "
                "(lme4's binomial response)"
            )
        return f"p({_operand(args[0])}, I(({args[0]}) + ({args[1]})))"
    if _has_bar(response):
        return _brms_response(response)
    return response


def parse_formula(formula: str) -> ParsedFormula:
    """Split ``formula`` into response, fixed part and random-effect blocks.

    Parameters
    ----------
    formula : str
        An lme4-style formula such as ``"y ~ x + (1 + x | g)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        If the formula has no ``~``, no response, unbalanced brackets, or a
        random-effect term that cannot be parsed.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    sides = _split_top(_power(formula), "~")
    if len(sides) != 2:
        raise FormulaError(f"formula {formula!r} must contain exactly one '~' (response ~ predictors)")
    response, rhs = sides[0].strip(), sides[1].strip()
    if not response:
        raise FormulaError(f"formula {formula!r} has no response on the left of '~'")
    response = translate_r(response)
    if not rhs:
        raise FormulaError(f"formula {formula!r} has nothing on the right of '~'; write '~ 1'")
    fixed, random = [], []
    for piece in _split_top(rhs, "+"):
        if not piece.strip():
            raise FormulaError(f"formula {formula!r} has an empty term (two '+' in a row?)")
        inner = _bare_group(piece)
        if inner is not None and _has_bar(inner):
            random.extend(_parse_random(inner))
        elif "|" in piece and _bare_group(piece) is None and _has_bar(piece):
            raise FormulaError(f"random-effect term {piece.strip()!r} must be wrapped in parentheses")
        else:
            fixed.append(piece.strip())
    _check_duplicate_blocks(random)
    return ParsedFormula(formula, response, " + ".join(fixed) if fixed else "1", tuple(random))


def _check_duplicate_blocks(random: list[RandomTerm]) -> None:
    seen: set[tuple[str, str]] = set()
    for term in random:
        key = (term.group, term.expr.replace(" ", ""))
        if key in seen:
            raise FormulaError(f"random-effect term ({term.expr} | {term.group}) appears twice")
        seen.add(key)
