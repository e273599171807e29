"""Conditions in CEL, the Common Expression Language that Kubernetes and Envoy use.

Where a person types a condition (a breakpoint's), it is CEL, as the CEL
specification defines it (https://github.com/google/cel-spec): one language,
documented elsewhere, never ``eval``. The ``common-expression-language`` package
parses and runs it (cel-rust inside): the variables are converted to CEL values
(maps, lists, strings, numbers, booleans, null) before evaluation, so a condition
reads keys of mappings and indexes of lists and nothing else; no attribute of a
Python object is ever read and no Python code ever runs.

>>> condition = parse_expression('state.stages["charge"].status == "failed" && event.attempt >= 2')
>>> condition.evaluate({"state": {"stages": {"charge": {"status": "failed"}}},
...                     "event": {"attempt": 3}})
True
>>> sorted(condition.names())
['event', 'state']

What is checked when an expression is made, raising
:class:`~engine.errors.ExpressionError` with the source and the column: the syntax,
a length of at most 2000 characters, that every function called is one of CEL's
standard functions (:data:`FUNCTIONS`), and with ``names=``, that it reads no other
variables. The CEL parser bounds nesting (about 90 levels) so that no input
exhausts a stack.

What fails only on the data, raising :class:`~engine.errors.ExpressionError` from
:meth:`Expression.evaluate` (a breakpoint then does not match): a missing key
(``has(state.output.total)`` tests for one), operands CEL has no operator for
(``1 + 1.5``, ``null < 3``: CEL never converts between types), an index out of
range, a division by zero, an integer overflow. ``&&`` and ``||`` absorb an error
when the other side decides (``false && state.missing.x`` is ``false``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .errors import ExpressionError

if TYPE_CHECKING:
    import cel

__all__ = ["FUNCTIONS", "MAX_LENGTH", "Expression", "parse_expression"]

MAX_LENGTH: Final = 2000

FUNCTIONS: Final = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches",
    "int", "uint", "double", "string", "bytes", "type", "dyn", "timestamp", "duration",
    "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
"""CEL's standard functions that an expression may call (operators and the macros
``has``, ``all``, ``exists``, ``exists_one``, ``map`` and ``filter`` besides)."""

# Names CEL itself defines: the types, which `type(x) == int` compares against.
_TYPE_NAMES: Final = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list",
                                "map", "null_type", "type"})
# The variable a macro binds: `list.exists(p, ...)` binds p. cel reports it among the
# variables read; it is not one.
_BOUND: Final = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERROR_LINE: Final = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)$", re.M)
_UNEXPECTED: Final = re.compile(r"(?:mismatched|extraneous) input '(.*?)' expecting (.*)$")
_HINTS: Final = {"and": "write 'and' as '&&'", "or": "write 'or' as '||'",
                 "not": "write 'not' as '!'", "=": "compare with '=='",
                 "&": "write 'and' as '&&'", "|": "write 'or' as '||'",
                 "True": "write true", "False": "write false", "None": "write null"}


def _shown(source: str) -> str:
    return repr(source if len(source) <= 80 else source[:77] + "...")


def _where(source: str, line: int, column: int) -> str:
    return f"column {column}" if "\n" not in source else f"line {line}, column {column}"


def _column_of(source: str, pattern: str) -> str:
    """`` (at column N)`` for the first match of ``pattern`` in ``source``, or nothing."""
    found = re.search(pattern, source)
    if found is None:
        return ""
    line = source.count("\n", 0, found.start()) + 1
    column = found.start() - (source.rfind("\n", 0, found.start()) + 1) + 1
    return f" (at {_where(source, line, column)})"


def _token(text: str) -> str:
    return "end of expression" if text == "<EOF>" else repr(text)


def _expected(text: str) -> str:
    """The set of tokens the parser wanted, in words."""
    if "IDENTIFIER" in text:
        return "a value"
    if text == "<EOF>":
        return "the end of the expression"
    if text.startswith("{<EOF>,"):
        return "an operator or the end of the expression"
    return "one of " + text.strip("{}")


def _syntax_error(source: str, error: ValueError) -> ExpressionError:
    """cel's parse error (several ``ERROR: <input>:line:col: ...`` blocks) as ours."""
    text = str(error)
    found = list(_ERROR_LINE.finditer(text))
    # cel sometimes reports an internal failure first ("Incomplete `IndexContext`!")
    chosen = next((m for m in found if m.group(3).startswith("Syntax error")),
                  found[0] if found else None)
    if chosen is None:
        return ExpressionError(f"{_shown(source)} is not valid CEL: {text}")
    line, column = int(chosen.group(1)), int(chosen.group(2))
    problem = chosen.group(3).removeprefix("Syntax error: ")
    inner = re.search(r'msg: "([^"]*)"', problem)  # OtherError(ParseError { ... msg: "..." })
    if inner is not None:
        problem = inner.group(1)
        if problem.startswith("Recursion limit"):
            problem = f"nested too deeply ({problem[0].lower()}{problem[1:]})"
    lines = source.split("\n")
    text_line = lines[line - 1] if 0 < line <= len(lines) else ""
    at = text_line[column - 1:column] if 0 < column <= len(text_line) else ""
    if problem.startswith("token recognition error"):
        problem = "unterminated string" if at in ("'", '"') else f"unexpected character {at!r}"
    unexpected = _UNEXPECTED.match(problem)
    if unexpected is not None:
        got, wanted = unexpected.groups()
        problem = f"unexpected {_token(got)}; expected {_expected(wanted)}"
    problem = problem.replace("'<EOF>'", "the end").replace("<EOF>", "the end")
    word = re.match(r"[A-Za-z_]\w*|[&|=]+|\S", text_line[column - 1:]) if at else None
    before = re.search(r"([A-Za-z_]\w*)\s*$", text_line[:column - 1])
    hint = _HINTS.get(word.group(0)) if word is not None else None
    if hint is None and before is not None:
        hint = _HINTS.get(before.group(1))
    suffix = f" ({hint})" if hint else ""
    return ExpressionError(f"{_shown(source)} is not valid CEL at "
                           f"{_where(source, line, column)}: {problem}{suffix}")


def _evaluation_error(source: str, error: Exception) -> ExpressionError:
    if isinstance(error, KeyError) and error.args:
        problem = f"no key {error.args[0]!r}"
    else:
        # cel's messages go on with advice on CEL in general; the first sentence says it
        problem = str(error).split("\n", 1)[0].split(". ", 1)[0].rstrip(".")
    return ExpressionError(f"{_shown(source)} could not be evaluated: {problem}")


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression; make it with :func:`parse_expression` (or
    ``Expression(text)``). Two expressions are equal when their sources are.

    >>> expression = parse_expression("size(event.payload.items) > 2 || event.type in ['a', 'b']")
    >>> expression.evaluate({"event": {"type": "b", "payload": {"items": []}}})
    True
    >>> sorted(expression.names())
    ['event']
    """

    source: str
    _program: cel.Program = field(init=False, repr=False, compare=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # imported here: the package's own import pulls in its command line (typer, rich,
        # prompt_toolkit), about 0.2 s, which only a condition should pay
        import cel

        source = self.source
        if not isinstance(source, str):
            raise TypeError(f"an expression's source must be a str, got {type(source).__name__}")
        if len(source) > MAX_LENGTH:
            raise ExpressionError(f"{_shown(source)} is {len(source)} characters long; "
                                  f"at most {MAX_LENGTH} are allowed")
        if not source.strip():
            raise ExpressionError(f"{_shown(source)} is not valid CEL: the expression is empty")
        try:
            program = cel.compile(source)
        except ValueError as exc:
            raise _syntax_error(source, exc) from None
        for name in program.functions():
            # operators are reported as _+_, !_, _[_], @in...; a name of word characters
            # only (__import__ too) is a function
            if _WORD.fullmatch(name) and name not in FUNCTIONS:
                known = ", ".join(sorted(FUNCTIONS))
                at = _column_of(source, rf"(?<![\w]){re.escape(name)}\s*\(")
                raise ExpressionError(f"{_shown(source)} calls {name}(){at}, which is not one "
                                      f"of CEL's standard functions: {known}")
        bound = set(_BOUND.findall(source))
        # ".x" is CEL's x looked up from the root scope: it reads x
        names = frozenset(v.removeprefix(".") for v in program.variables()) - bound \
            - _TYPE_NAMES
        object.__setattr__(self, "_program", program)
        object.__setattr__(self, "_names", names)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Expression, (self.source,))  # the compiled program does not pickle

    def evaluate(self, variables: Mapping[str, object]) -> object:
        """The value of the expression with ``variables`` bound (converted to CEL values
        first: mappings, lists and tuples, strings, numbers, booleans, ``None``).

        Raises :class:`~engine.errors.ExpressionError` naming the source and the
        problem when CEL fails on the data (a missing key, operands of the wrong
        types, a value that is not plain data: an object, a set, a callable...).
        """
        if not isinstance(variables, Mapping):
            raise TypeError(f"variables must be a mapping, got {type(variables).__name__}")
        for name, data in variables.items():
            if callable(data):  # cel would take it for a function and call it
                raise ExpressionError(f"{_shown(self.source)} could not be evaluated: "
                                      f"variable {name!r} is {type(data).__name__} {data!r:.60}, "
                                      "not data")
        try:
            return self._program.execute(dict(variables))
        except Exception as exc:  # whatever cel raises on the data: KeyError, TypeError, ...
            raise _evaluation_error(self.source, exc) from None

    def names(self) -> frozenset[str]:
        """The variables the expression reads (``state`` for ``state.stages["x"]``), not
        those its macros bind nor CEL's type names."""
        return self._names


def parse_expression(text: str, *, names: Collection[str] | None = None) -> Expression:
    """Compile ``text``; raise :class:`~engine.errors.ExpressionError` if it is not valid
    CEL, or (given ``names``) reads a variable not among them.

    >>> parse_expression("event.attempt >= 2").evaluate({"event": {"attempt": 2}})
    True
    >>> parse_expression("a == (1))")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ExpressionError: 'a == (1))' is not valid CEL at column 9: unexpected ')'; ...
    """
    expression = Expression(text)
    if names is not None:
        for name in sorted(expression.names() - set(names)):
            allowed = " and ".join(repr(n) for n in sorted(names)) or "none"
            hint = f"; {_HINTS[name]}" if name in ("True", "False", "None") else ""
            at = _column_of(text, rf"(?<![\w.]){re.escape(name)}(?!\w)")
            raise ExpressionError(f"{_shown(text)} reads {name!r}{at}, which is not defined "
                                  f"here: it may read {allowed}{hint}")
    return expression
