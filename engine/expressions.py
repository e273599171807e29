"""Breakpoint conditions: a small expression language that is parsed, never ``eval``-ed.

A condition is split into tokens by a hand-written tokenizer, parsed by precedence
climbing into a tree of small frozen dataclasses, and evaluated by walking that
tree over a mapping of variables. Python's ``eval``, ``exec``, ``compile`` and
``ast`` are never involved, and no attribute of a Python object is ever read:
``.`` and ``[]`` only look up keys of mappings and indexes of lists and tuples.

>>> condition = parse_expression('state.stages["charge"].status == "failed" and event.attempt >= 2')
>>> condition.evaluate({"state": {"stages": {"charge": {"status": "failed"}}},
...                     "event": {"attempt": 3}})
True
>>> sorted(condition.names())
['event', 'state']

Grammar, loosest binding first::

    expression := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | comparison
    comparison := sum [compare sum]                  one comparison, no chains
    compare    := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | postfix
    postfix    := primary ("." WORD | "[" expression "]")*
    primary    := NUMBER | STRING | constant | NAME | call | list | "(" expression ")"
    call       := FUNCTION "(" [expression ("," expression)*] ")"
    list       := "[" [expression ("," expression)*] "]"
    constant   := "true" | "false" | "null" | "True" | "False" | "None"
    WORD       := [A-Za-z_][A-Za-z0-9_]*             after ".", any word, keywords too
    NAME       := a WORD other than a keyword or constant
    NUMBER     := digits ["." digits] [("e" | "E") ["+" | "-"] digits]
    STRING     := '...' or "..." with the escapes \\ \' \" \n \t
    FUNCTION   := len | startswith | endswith | glob | lower | upper | abs | min | max

As in Python, ``not a == b`` means ``not (a == b)``; ``!`` is only another
spelling of ``not`` and binds the same way.

Evaluation never raises; where Python would, the result is a value instead:

- an unknown name, a missing key, an index out of range, or ``.``/``[]`` on
  anything but a mapping (key lookup) or a list/tuple (int index) give ``null``;
- a comparison Python would refuse (``null < 3``) is false, and so are ``in``
  and ``not in`` when the right side is not a string, list, tuple, set or mapping;
- arithmetic works on numbers (booleans excluded), and ``+`` also joins two
  strings or two lists; anything else, and division or modulo by zero, give ``null``;
- ``and``, ``or`` and ``not`` give booleans;
- a function given arguments of the wrong types gives ``null``.

Parse errors raise :class:`~engine.errors.ExpressionError` naming the problem,
the 1-based column and the source. Sources are limited to 2000 characters and
to 64 levels of nesting (brackets, calls, ``not`` and unary minus), so that no
input can exhaust the Python stack while being parsed or evaluated.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from .errors import ExpressionError

__all__ = ["Expression", "parse_expression"]

_MAX_LENGTH: Final = 2000
_MAX_DEPTH: Final = 64


# -- values ----------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truthy(value: object) -> bool:
    # bool() may run user code (__bool__, __len__); a condition must not blow up on it.
    try:
        return bool(value)
    except Exception:
        return False


def _lookup(container: object, key: object) -> object:
    """``container[key]`` for mappings and lists/tuples only; ``None`` when there is nothing."""
    if isinstance(container, Mapping):
        try:
            return container[key]
        except Exception:  # missing key, unhashable key, or a custom mapping that objects
            return None
    if isinstance(container, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        if -len(container) <= key < len(container):
            return container[key]
    return None


def _contains(container: object, item: object) -> bool | None:
    """``item in container``, or ``None`` when the two cannot be compared that way."""
    if isinstance(container, str):
        return item in container if isinstance(item, str) else None
    if isinstance(container, Mapping | list | tuple | set | frozenset):
        try:
            return item in container
        except Exception:  # an unhashable item in a mapping or set
            return None
    return None


_ARITHMETIC: Final[dict[str, Callable[[Any, Any], object]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}

_COMPARISONS: Final[dict[str, Callable[[Any, Any], object]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _arithmetic(op: str, left: object, right: object) -> object:
    if _is_number(left) and _is_number(right):
        try:
            return _ARITHMETIC[op](left, right)
        except Exception:  # division by zero, float overflow
            return None
    # Only joining: repetition ("a" * 10**9) would let a short condition allocate gigabytes.
    if op == "+":
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        if isinstance(left, list | tuple) and isinstance(right, list | tuple):
            return [*left, *right]
    return None


# -- functions -------------------------------------------------------------------------------


def _len(value: object) -> object:
    return len(value) if isinstance(value, str | list | tuple | Mapping) else None


def _startswith(text: object, prefix: object) -> object:
    if isinstance(text, str) and isinstance(prefix, str):
        return text.startswith(prefix)
    return None


def _endswith(text: object, suffix: object) -> object:
    if isinstance(text, str) and isinstance(suffix, str):
        return text.endswith(suffix)
    return None


def _glob(text: object, pattern: object) -> object:
    if isinstance(text, str) and isinstance(pattern, str):
        return fnmatchcase(text, pattern)
    return None


def _lower(text: object) -> object:
    return text.lower() if isinstance(text, str) else None


def _upper(text: object) -> object:
    return text.upper() if isinstance(text, str) else None


def _abs(value: object) -> object:
    return abs(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _extreme(pick: Callable[[Sequence[Any]], object], args: Sequence[object]) -> object:
    # min([3, 1]) looks inside the one list, min(3, 1) compares its arguments, like Python.
    values = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
    return pick(values) if values else None


def _min(*args: object) -> object:
    return _extreme(min, args)


def _max(*args: object) -> object:
    return _extreme(max, args)


@dataclass(frozen=True, slots=True)
class _Function:
    call: Callable[..., object]
    min_args: int
    max_args: int | None  # None: any number


_FUNCTIONS: Final[dict[str, _Function]] = {
    "len": _Function(_len, 1, 1),
    "startswith": _Function(_startswith, 2, 2),
    "endswith": _Function(_endswith, 2, 2),
    "glob": _Function(_glob, 2, 2),
    "lower": _Function(_lower, 1, 1),
    "upper": _Function(_upper, 1, 1),
    "abs": _Function(_abs, 1, 1),
    "min": _Function(_min, 1, None),
    "max": _Function(_max, 1, None),
}


# -- tree ------------------------------------------------------------------------------------
# Chains of the same operator (a + b - c, a and b and c) and of accesses (a.b[0].c) are flat
# nodes, so that the depth of the tree, and of the recursion walking it, grows only with
# nesting, which the parser bounds.


class _Node(ABC):
    __slots__ = ()

    @abstractmethod
    def evaluate(self, variables: Mapping[str, object]) -> object: ...


@dataclass(frozen=True, slots=True)
class _Literal(_Node):
    value: object

    def evaluate(self, variables: Mapping[str, object]) -> object:
        return self.value


@dataclass(frozen=True, slots=True)
class _Name(_Node):
    name: str

    def evaluate(self, variables: Mapping[str, object]) -> object:
        try:
            return variables.get(self.name)
        except Exception:
            return None


@dataclass(frozen=True, slots=True)
class _List(_Node):
    items: tuple[_Node, ...]

    def evaluate(self, variables: Mapping[str, object]) -> object:
        return [item.evaluate(variables) for item in self.items]


@dataclass(frozen=True, slots=True)
class _Access(_Node):
    base: _Node
    steps: tuple[str | _Node, ...]  # a str is a ".field", a node an "[index]"

    def evaluate(self, variables: Mapping[str, object]) -> object:
        value = self.base.evaluate(variables)
        for step in self.steps:
            key = step if isinstance(step, str) else step.evaluate(variables)
            value = _lookup(value, key)
        return value


@dataclass(frozen=True, slots=True)
class _Call(_Node):
    function: str
    args: tuple[_Node, ...]

    def evaluate(self, variables: Mapping[str, object]) -> object:
        args = [arg.evaluate(variables) for arg in self.args]
        try:
            return _FUNCTIONS[self.function].call(*args)
        except Exception:  # e.g. min() over values that do not compare
            return None


@dataclass(frozen=True, slots=True)
class _Negate(_Node):
    operand: _Node

    def evaluate(self, variables: Mapping[str, object]) -> object:
        value = self.operand.evaluate(variables)
        return -value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class _Not(_Node):
    operand: _Node

    def evaluate(self, variables: Mapping[str, object]) -> object:
        return not _truthy(self.operand.evaluate(variables))


@dataclass(frozen=True, slots=True)
class _Logical(_Node):
    op: str  # "and" or "or"
    operands: tuple[_Node, ...]

    def evaluate(self, variables: Mapping[str, object]) -> object:
        stop_on = self.op == "or"  # "or" stops at the first true operand, "and" at a false one
        for operand in self.operands:
            if _truthy(operand.evaluate(variables)) is stop_on:
                return stop_on
        return not stop_on


@dataclass(frozen=True, slots=True)
class _Arithmetic(_Node):
    first: _Node
    rest: tuple[tuple[str, _Node], ...]

    def evaluate(self, variables: Mapping[str, object]) -> object:
        value = self.first.evaluate(variables)
        for op, operand in self.rest:
            value = _arithmetic(op, value, operand.evaluate(variables))
        return value


@dataclass(frozen=True, slots=True)
class _Compare(_Node):
    op: str
    left: _Node
    right: _Node

    def evaluate(self, variables: Mapping[str, object]) -> object:
        left = self.left.evaluate(variables)
        right = self.right.evaluate(variables)
        if self.op == "in":
            return _contains(right, left) is True
        if self.op == "not in":
            return _contains(right, left) is False
        try:
            return _truthy(_COMPARISONS[self.op](left, right))
        except Exception:  # None < 3 and the like
            return False


# -- tokens ----------------------------------------------------------------------------------

_WHITESPACE: Final = frozenset(" \t\r\n")
_DIGITS: Final = frozenset("0123456789")
_WORD_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_PART: Final = _WORD_START | _DIGITS
_TWO_CHAR_OPERATORS: Final = ("==", "!=", "<=", ">=", "&&", "||")
_ONE_CHAR_OPERATORS: Final = frozenset("()[],.+-*/%<>!")
_ESCAPES: Final = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_HINTS: Final = {
    "=": " (compare with '==')",
    "&": " (use '&&' or 'and')",
    "|": " (use '||' or 'or')",
}
_CONSTANTS: Final[dict[str, object]] = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "null": None,
    "None": None,
}
_KEYWORDS: Final = frozenset({"and", "or", "not", "in"})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "word", "op" or "end"
    text: str  # as written in the source
    column: int  # 1-based
    value: object = None  # the number or the string, escapes resolved

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else repr(self.text)


def _error(source: str, problem: str, column: int) -> ExpressionError:
    shown = source if len(source) <= 80 else source[:77] + "..."
    return ExpressionError(f"{problem} at column {column} in {shown!r}")


def _skip_digits(source: str, index: int) -> int:
    while index < len(source) and source[index] in _DIGITS:
        index += 1
    return index


def _scan_number(source: str, start: int) -> tuple[_Token, int]:
    end = _skip_digits(source, start)
    is_float = False
    if end + 1 < len(source) and source[end] == "." and source[end + 1] in _DIGITS:
        end = _skip_digits(source, end + 1)
        is_float = True
    if end < len(source) and source[end] in "eE":
        digits = end + 2 if end + 1 < len(source) and source[end + 1] in "+-" else end + 1
        if digits < len(source) and source[digits] in _DIGITS:
            end = _skip_digits(source, digits)
            is_float = True
    if end < len(source) and source[end] in _WORD_PART:  # 12abc, 1e, 1.5x
        bad = end
        while bad < len(source) and source[bad] in _WORD_PART:
            bad += 1
        raise _error(source, f"malformed number {source[start:bad]!r}", start + 1)
    text = source[start:end]
    value: object = float(text) if is_float else int(text)
    return _Token("number", text, start + 1, value), end


def _scan_string(source: str, start: int) -> tuple[_Token, int]:
    quote = source[start]
    parts: list[str] = []
    index = start + 1
    while index < len(source):
        char = source[index]
        if char == quote:
            return _Token("string", source[start : index + 1], start + 1, "".join(parts)), index + 1
        if char == "\\" and index + 1 < len(source):
            escaped = source[index + 1]
            if escaped not in _ESCAPES:
                raise _error(source, f"unknown escape \\{escaped} in a string", index + 1)
            parts.append(_ESCAPES[escaped])
            index += 2
            continue
        parts.append(char)
        index += 1
    raise _error(source, "unterminated string", start + 1)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char in _WHITESPACE:
            index += 1
        elif char in _DIGITS:
            token, index = _scan_number(source, index)
            tokens.append(token)
        elif char in _WORD_START:
            end = index
            while end < len(source) and source[end] in _WORD_PART:
                end += 1
            tokens.append(_Token("word", source[index:end], index + 1))
            index = end
        elif char in "'\"":
            token, index = _scan_string(source, index)
            tokens.append(token)
        elif source[index : index + 2] in _TWO_CHAR_OPERATORS:
            tokens.append(_Token("op", source[index : index + 2], index + 1))
            index += 2
        elif char in _ONE_CHAR_OPERATORS:
            tokens.append(_Token("op", char, index + 1))
            index += 1
        else:
            hint = _HINTS.get(char, "")
            raise _error(source, f"unexpected character {char!r}{hint}", index + 1)
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


# -- parser ----------------------------------------------------------------------------------

_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY = range(1, 8)  # binding levels, loosest first

_LEVELS: Final = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("==", "!=", "<", "<=", ">", ">=", "in", "not in"), _COMPARE),
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
    "%": _PRODUCT,
}
_ALIASES: Final = {"||": "or", "&&": "and", "!": "not"}


@dataclass(frozen=True, slots=True)
class _Operator:
    name: str  # canonical spelling: "or", "and", "not in", "+", ...
    level: int
    width: int  # how many tokens it spans
    token: _Token


class _Parser:
    """Precedence climbing over the token list; one parser per source."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._tokens = _tokenize(source)
        self._pos = 0
        self._depth = 0
        self._names: set[str] = set()

    def parse(self) -> tuple[_Node, frozenset[str]]:
        if self._peek().kind == "end":
            raise self._error("empty expression", 1)
        node = self._binary(_OR)
        token = self._peek()
        if token.kind != "end":
            raise self._error(f"unexpected token {token.text!r}", token.column)
        return node, frozenset(self._names)

    # -- helpers

    def _error(self, problem: str, column: int) -> ExpressionError:
        return _error(self._source, problem, column)

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._pos + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._pos += 1
        return token

    def _is(self, token: _Token, kind: str, *texts: str) -> bool:
        return token.kind == kind and token.text in texts

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise self._error(f"nesting deeper than {_MAX_DEPTH} levels", token.column)

    def _close(self, opener: _Token, closer: str, expected: str) -> None:
        token = self._peek()
        if self._is(token, "op", closer):
            self._pos += 1
            return
        if token.kind == "end":
            raise self._error(f"unclosed {opener.text!r}", opener.column)
        raise self._error(
            f"expected {expected} for the {opener.text!r} at column {opener.column}, "
            f"found {token.describe()}",
            token.column,
        )

    def _peek_operator(self) -> _Operator | None:
        token = self._peek()
        if token.kind == "op":
            name = _ALIASES.get(token.text, token.text)
        elif token.kind == "word" and token.text in ("or", "and", "in"):
            name = token.text
        elif self._is(token, "word", "not") and self._is(self._peek(1), "word", "in"):
            return _Operator("not in", _COMPARE, 2, token)
        else:
            return None
        level = _LEVELS.get(name)
        return None if level is None else _Operator(name, level, 1, token)

    # -- grammar

    def _binary(self, min_level: int) -> _Node:
        left = self._prefix(min_level)
        while (op := self._peek_operator()) is not None and op.level >= min_level:
            level = op.level
            if level == _COMPARE:
                self._pos += op.width
                left = _Compare(op.name, left, self._binary(_COMPARE + 1))
                chained = self._peek_operator()
                if chained is not None and chained.level == _COMPARE:
                    raise self._error(
                        f"chained comparison {chained.token.text!r} (join comparisons with 'and')",
                        chained.token.column,
                    )
                continue
            operands = [left]
            names: list[str] = []
            while op is not None and op.level == level:
                self._pos += op.width
                names.append(op.name)
                operands.append(self._binary(level + 1))
                op = self._peek_operator()
            if level in (_OR, _AND):
                left = _Logical(names[0], tuple(operands))
            else:
                left = _Arithmetic(operands[0], tuple(zip(names, operands[1:], strict=True)))
        return left

    def _prefix(self, min_level: int) -> _Node:
        token = self._peek()
        if self._is(token, "word", "not") or self._is(token, "op", "!"):
            if min_level > _NOT:  # a == not b is a syntax error in Python too
                raise self._error(
                    f"{token.text!r} cannot appear here (put the negation in parentheses)",
                    token.column,
                )
            self._next()
            self._enter(token)
            operand = self._binary(_NOT)
            self._depth -= 1
            return _Not(operand)
        if self._is(token, "op", "-"):
            self._next()
            self._enter(token)
            operand = self._prefix(_UNARY)
            self._depth -= 1
            if isinstance(operand, _Literal):
                value = operand.value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return _Literal(-value)  # -5 is a number, not an operation on one
            return _Negate(operand)
        return self._postfix()

    def _postfix(self) -> _Node:
        base = self._primary()
        steps: list[str | _Node] = []
        while True:
            token = self._peek()
            if self._is(token, "op", "."):
                self._next()
                name = self._peek()
                if name.kind != "word":
                    raise self._error(
                        f"expected a field name after '.', found {name.describe()}", name.column
                    )
                self._next()
                steps.append(name.text)
            elif self._is(token, "op", "["):
                self._next()
                self._enter(token)
                steps.append(self._binary(_OR))
                self._close(token, "]", "']'")
                self._depth -= 1
            else:
                return _Access(base, tuple(steps)) if steps else base

    def _primary(self) -> _Node:
        token = self._peek()
        if token.kind in ("number", "string"):
            self._next()
            return _Literal(token.value)
        if token.kind == "word" and token.text in _CONSTANTS:
            self._next()
            return _Literal(_CONSTANTS[token.text])
        if token.kind == "word" and token.text not in _KEYWORDS:
            self._next()
            if self._is(self._peek(), "op", "("):
                return self._call(token)
            self._names.add(token.text)
            return _Name(token.text)
        if self._is(token, "op", "("):
            self._next()
            self._enter(token)
            node = self._binary(_OR)
            self._close(token, ")", "')'")
            self._depth -= 1
            return node
        if self._is(token, "op", "["):
            self._next()
            return _List(self._items(token, "]"))
        raise self._error(f"expected a value, found {token.describe()}", token.column)

    def _call(self, name: _Token) -> _Node:
        function = _FUNCTIONS.get(name.text)
        if function is None:
            known = ", ".join(sorted(_FUNCTIONS))
            raise self._error(f"unknown function {name.text!r} (known: {known})", name.column)
        args = self._items(self._next(), ")")
        low, high = function.min_args, function.max_args
        if len(args) < low or (high is not None and len(args) > high):
            wanted = f"{low}" if low == high else f"at least {low}"
            plural = "" if low == 1 else "s"
            raise self._error(
                f"{name.text}() takes {wanted} argument{plural}, got {len(args)}", name.column
            )
        return _Call(name.text, args)

    def _items(self, opener: _Token, closer: str) -> tuple[_Node, ...]:
        """Comma-separated expressions up to ``closer``; ``opener`` was just consumed."""
        self._enter(opener)
        items: list[_Node] = []
        if not self._is(self._peek(), "op", closer):
            items.append(self._binary(_OR))
            while self._is(self._peek(), "op", ","):
                self._next()
                items.append(self._binary(_OR))
        self._close(opener, closer, f"',' or {closer!r}")
        self._depth -= 1
        return tuple(items)


# -- public API ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed condition; construct it with :func:`parse_expression` (or ``Expression(text)``).

    Two expressions are equal when their sources are.

    >>> expression = parse_expression("len(event.payload.items) > 2 or event.type in ['a', 'b']")
    >>> expression.evaluate({"event": {"type": "b", "payload": {}}})
    True
    >>> sorted(expression.names())
    ['event']
    """

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise TypeError(f"an expression source must be a str, got {type(self.source).__name__}")
        if len(self.source) > _MAX_LENGTH:
            raise _error(
                self.source,
                f"expression is {len(self.source)} characters long, more than {_MAX_LENGTH}",
                _MAX_LENGTH + 1,
            )
        root, names = _Parser(self.source).parse()
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_names", names)

    def evaluate(self, variables: Mapping[str, object]) -> object:
        """The value of the expression with ``variables`` bound; never raises on data.

        Missing names, keys and indexes read as ``None``; see the module docstring for
        what incompatible operands give.
        """
        if not isinstance(variables, Mapping):
            raise TypeError(f"variables must be a mapping, got {type(variables).__name__}")
        return self._root.evaluate(variables)

    def names(self) -> frozenset[str]:
        """The variable names the expression reads (``state`` for ``state.stages["x"]``)."""
        return self._names


def parse_expression(text: str) -> Expression:
    """Parse ``text``; raise :class:`~engine.errors.ExpressionError` if it is malformed.

    >>> parse_expression("event.attempt >= 2").evaluate({"event": {"attempt": 2}})
    True
    >>> parse_expression("a == (1))")
    Traceback (most recent call last):
    ...
    engine.errors.ExpressionError: unexpected token ')' at column 9 in 'a == (1))'
    """
    return Expression(text)
