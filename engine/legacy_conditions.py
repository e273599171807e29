"""Breakpoint conditions written before they were CEL, carried over when read back.

Until conditions were CEL, they were written in a small language of stepsaga's
own: ``and``/``or``/``not`` (``&&``/``||``/``!`` besides), ``not`` binding looser
than a comparison (``not a == b`` meant ``not (a == b)``), ``in`` and ``not in``,
``True``/``False``/``None``, the functions ``len``, ``startswith``, ``endswith``,
``glob``, ``lower``, ``upper``, ``abs``, ``min`` and ``max``, and any value's truth.
Such conditions are still stored in events (``work.breakpoint.set``, the
``breakpoints`` of ``work.created``), in snapshots and in the command inbox, all
without the ``"language": "cel"`` that breakpoints now carry.
:meth:`engine.Breakpoint.from_dict` passes them to :func:`to_cel`:

- a condition that means the same in CEL (``event.attempt >= 2``,
  ``state.stages["charge"].status == "failed" && event.attempt > 1``) is kept as
  it was written;
- one that can be rewritten mechanically is: ``and``, ``or`` to ``&&``, ``||``;
  ``not x`` to ``!(x)`` with the old binding; ``a not in b`` to ``!(a in b)``;
  ``True``, ``False``, ``None`` to ``true``, ``false``, ``null``; ``len(x)`` to
  ``size(x)``; ``startswith(s, p)``/``endswith(s, p)`` to ``s.startsWith(p)``/
  ``s.endsWith(p)``; ``glob(s, 'a*b?')`` with a literal pattern of ``*`` and ``?``
  to ``s.matches(...)``; ``x in 'text'`` to ``'text'.contains(x)``, and ``x in
  y`` with ``y`` read from the data to a choice, at run time, between
  ``y.contains(x)`` when ``y`` is a string and ``x in y``; ``a % b`` to
  ``((a % b + b) % b)``, the old (Python's) sign of a remainder; ``.in`` and other
  keys CEL reserves to ``["in"]``;
- the rest has no CEL counterpart and is refused (an
  :class:`~engine.errors.ExpressionError` saying what and where): ``/`` (the old
  language divided exactly, CEL divides integers whole), ``lower``, ``upper``,
  ``abs``, ``min``, ``max``, a glob with ``[...]`` or not written out, a negative
  index, and the truth of a value that is not a boolean (``1 and x``).

Differences stay where the old language was lenient with the data. It read a
missing key, an index out of range or an operand of the wrong type as ``null`` and
went on, it mixed integers and floats in arithmetic (``1 + 1.5``), and it took the
truth of any value read from the data (``state.output and ...``), where CEL fails
unless the value is a boolean; a breakpoint whose condition fails does not match.
An old ``state.missing == None`` matched; carried over, it does not. And it held
``true == 1``, as Python does; CEL does not.

>>> to_cel("event.attempt >= 2")
'event.attempt >= 2'
>>> to_cel('not state.status in ["failed", "cancelled"] and event.path == "charge"')
'!(state.status in ["failed", "cancelled"]) && event.path == "charge"'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import ExpressionError

__all__ = ["to_cel"]

_WHITESPACE: Final = frozenset(" \t\r\n")
_DIGITS: Final = frozenset("0123456789")
_WORD_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_PART: Final = _WORD_START | _DIGITS
_TWO_CHAR: Final = ("==", "!=", "<=", ">=", "&&", "||")
_ONE_CHAR: Final = frozenset("()[],.+-*/%<>!")
_ESCAPES: Final = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_KEYWORDS: Final = frozenset({"and", "or", "not", "in"})
_CONSTANTS: Final = {"true": ("true", "bool"), "false": ("false", "bool"),
                     "null": ("null", "null"), "True": ("true", "bool"),
                     "False": ("false", "bool"), "None": ("null", "null")}
# CEL's reserved words (the spec's): never a field name after "."
_RESERVED: Final = frozenset({
    "as", "break", "const", "continue", "else", "false", "for", "function", "if", "import",
    "in", "let", "loop", "namespace", "null", "package", "return", "true", "var", "void",
    "while"})
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_REGEX_META: Final = frozenset("\\.+*?()|[]{}^$#&-~")
_NO_COUNTERPART: Final = frozenset({"lower", "upper", "abs", "min", "max"})
_ARITY: Final = {"len": 1, "startswith": 2, "endswith": 2, "glob": 2}

# binding levels, loosest first; a text at POSTFIX takes a method call without parentheses
_COMPARE, _SUM, _PRODUCT, _UNARY, _POSTFIX = 4, 5, 6, 7, 8


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "word", "op" or "end"
    text: str
    column: int  # 1-based
    value: object = None


@dataclass(frozen=True, slots=True)
class _Cel:
    """A translated part: its CEL text, what it gives, where it began."""

    text: str
    kind: str  # "bool"; "data" (read from the variables: any type); "number", "string",
    #            "list", "null" (never a boolean)
    column: int
    level: int
    literal: object = None  # the value of a string or number written out, else None


def _refuse(problem: str, column: int) -> ExpressionError:
    return ExpressionError(f"{problem} (at column {column})")


def _cel_string(value: str) -> str:
    out = []
    for char in value:
        if char in '\\"':
            out.append("\\" + char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        char, start = source[i], i
        if char in _WHITESPACE:
            i += 1
            continue
        if char in _DIGITS:
            while i < n and source[i] in _DIGITS:
                i += 1
            is_float = False
            if i + 1 < n and source[i] == "." and source[i + 1] in _DIGITS:
                i += 1
                while i < n and source[i] in _DIGITS:
                    i += 1
                is_float = True
            if i < n and source[i] in "eE":
                j = i + 2 if i + 1 < n and source[i + 1] in "+-" else i + 1
                if j < n and source[j] in _DIGITS:
                    i = j
                    while i < n and source[i] in _DIGITS:
                        i += 1
                    is_float = True
            text = source[start:i]
            tokens.append(_Token("number", text, start + 1, float(text) if is_float else int(text)))
        elif char in _WORD_START:
            while i < n and source[i] in _WORD_PART:
                i += 1
            tokens.append(_Token("word", source[start:i], start + 1))
        elif char in "'\"":
            parts: list[str] = []
            i += 1
            while i < n and source[i] != char:
                if source[i] == "\\" and i + 1 < n and source[i + 1] in _ESCAPES:
                    parts.append(_ESCAPES[source[i + 1]])
                    i += 2
                else:
                    parts.append(source[i])
                    i += 1
            if i >= n:
                raise _refuse("unterminated string", start + 1)
            i += 1
            tokens.append(_Token("string", source[start:i], start + 1, "".join(parts)))
        elif source[i:i + 2] in _TWO_CHAR:
            tokens.append(_Token("op", source[i:i + 2], start + 1))
            i += 2
        elif char in _ONE_CHAR:
            tokens.append(_Token("op", char, start + 1))
            i += 1
        else:
            raise _refuse(f"unexpected character {char!r}", start + 1)
    tokens.append(_Token("end", "", n + 1))
    return tokens


class _Translator:
    """Precedence climbing over the old grammar, writing CEL as it goes."""

    def __init__(self, source: str) -> None:
        self._tokens = _tokenize(source)
        self._pos = 0
        self.changed = False  # whether the CEL differs from the source beyond spacing

    def translate(self) -> str:
        result = self._or()
        token = self._peek()
        if token.kind != "end":
            raise _refuse(f"unexpected {token.text!r}", token.column)
        self._truth(result)
        return result.text

    # -- helpers

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._pos + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._pos += 1
        return token

    def _at(self, kind: str, *texts: str) -> bool:
        token = self._peek()
        return token.kind == kind and token.text in texts

    def _expect(self, text: str) -> None:
        if not self._at("op", text):
            token = self._peek()
            raise _refuse(f"expected {text!r}, found {token.text or 'the end'!r}", token.column)
        self._next()

    def _truth(self, part: _Cel) -> None:
        """CEL takes the truth only of booleans; a value read from the data may be one."""
        if part.kind not in ("bool", "data"):
            raise _refuse(f"the old language took the truth of {part.text!r}, a {part.kind}, "
                          "where CEL needs a boolean", part.column)

    @staticmethod
    def _receiver(part: _Cel) -> str:
        # a number written out would read as a float's point: (1).x
        return part.text if part.level >= _POSTFIX and not part.text[0].isdigit() \
            else f"({part.text})"

    # -- grammar, loosest first

    def _or(self) -> _Cel:
        return self._chain(self._and, "or", "||")

    def _and(self) -> _Cel:
        return self._chain(self._not, "and", "&&")

    def _chain(self, operand: Callable[[], _Cel], word: str, symbol: str) -> _Cel:
        parts = [operand()]
        while self._at("word", word) or self._at("op", symbol):
            self.changed |= self._next().kind == "word"
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        for part in parts:
            self._truth(part)
        return _Cel(f" {symbol} ".join(p.text for p in parts), "bool", parts[0].column, 1)

    def _not(self) -> _Cel:
        if not (self._at("word", "not") or self._at("op", "!")):
            return self._comparison()
        token = self._next()
        operand = self._not()
        self._truth(operand)
        if operand.level >= _UNARY:
            self.changed |= token.kind == "word"
            return _Cel("!" + operand.text, "bool", token.column, _UNARY)
        self.changed = True  # the old "not" bound looser than a comparison, CEL's "!" tighter
        return _Cel(f"!({operand.text})", "bool", token.column, _UNARY)

    def _comparison(self) -> _Cel:
        left = self._sum()
        token = self._peek()
        negated = self._at("word", "not") and self._peek(1).kind == "word" \
            and self._peek(1).text == "in"
        if negated:
            self._pos += 2
            op = "in"
        elif self._at("word", "in") or (token.kind == "op" and token.text in _COMPARISONS):
            op = self._next().text
        else:
            return left
        right = self._sum()
        after = self._peek()
        if after.text in _COMPARISONS or after.text == "in" or (
                after.text == "not" and self._peek(1).text == "in"):
            raise _refuse(f"chained comparison {after.text!r}", after.column)
        if op == "in" and right.kind == "string":  # a substring, which CEL's "in" is not
            self.changed = True
            text = f"{self._receiver(right)}.contains({left.text})"
        elif op == "in" and right.kind == "data":  # a text, a list or a map: asked at run time
            self.changed = True
            text = (f"(type({right.text}) == string ? {self._receiver(right)}.contains("
                    f"{left.text}) : {left.text} in {right.text})")
        else:
            text = f"{left.text} {op} {right.text}"
        if negated:
            self.changed = True
            return _Cel(f"!({text})", "bool", left.column, _UNARY)
        return _Cel(text, "bool", left.column, _COMPARE)

    def _sum(self) -> _Cel:
        left = self._product()
        while self._at("op", "+", "-"):
            op = self._next().text
            right = self._product()
            same = left.kind if left.kind == right.kind and left.kind in ("string", "list") \
                else "number"
            left = _Cel(f"{left.text} {op} {right.text}", same, left.column, _SUM)
        return left

    def _product(self) -> _Cel:
        left = self._unary()
        while self._at("op", "*", "/", "%"):
            token = self._next()
            if token.text == "/":
                raise _refuse("'/' divided exactly in the old language, and CEL divides "
                              "integers to a whole number", token.column)
            right = self._unary()
            if token.text == "*":
                text = f"{left.text} * {right.text}"
            else:  # Python's remainder takes the divisor's sign, CEL's the dividend's
                self.changed = True
                text = f"(({left.text} % {right.text} + {right.text}) % {right.text})"
            left = _Cel(text, "number", left.column, _PRODUCT)
        return left

    def _unary(self) -> _Cel:
        token = self._peek()
        if self._at("word", "not") or self._at("op", "!"):
            raise _refuse(f"{token.text!r} cannot appear here", token.column)
        if not self._at("op", "-"):
            return self._postfix()
        self._next()
        operand = self._unary()
        literal = operand.literal
        if isinstance(literal, int | float):
            literal = -literal
        return _Cel("-" + operand.text, "number", token.column, _UNARY, literal)

    def _postfix(self) -> _Cel:
        part = self._primary()
        while True:
            if self._at("op", "."):
                self._next()
                name = self._next()
                if name.kind != "word":
                    raise _refuse("expected a field name after '.'", name.column)
                if name.text in _RESERVED:
                    self.changed = True
                    step = f"[{_cel_string(name.text)}]"
                else:
                    step = "." + name.text
            elif self._at("op", "["):
                self._next()
                index = self._or()
                self._expect("]")
                if isinstance(index.literal, int | float) and index.literal < 0:
                    raise _refuse("a negative index counted from the end, which CEL has not",
                                  index.column)
                step = f"[{index.text}]"
            else:
                return part
            part = _Cel(self._receiver(part) + step, "data", part.column, _POSTFIX)

    def _primary(self) -> _Cel:
        token = self._next()
        if token.kind == "number":
            text = token.text
            if isinstance(token.value, int) and text != str(token.value):  # 007: no octal
                self.changed = True
                text = str(token.value)
            return _Cel(text, "number", token.column, _POSTFIX, token.value)
        if token.kind == "string":
            assert isinstance(token.value, str)
            text = token.text
            if any(ord(c) < 0x20 for c in text):  # a raw newline: CEL's quotes hold none
                self.changed = True
                text = _cel_string(token.value)
            return _Cel(text, "string", token.column, _POSTFIX, token.value)
        if token.kind == "word" and token.text in _CONSTANTS:
            text, kind = _CONSTANTS[token.text]
            self.changed |= text != token.text
            return _Cel(text, kind, token.column, _POSTFIX)
        if token.kind == "word" and token.text not in _KEYWORDS:
            if self._at("op", "("):
                return self._call(token)
            return _Cel(token.text, "data", token.column, _POSTFIX)
        if token.kind == "op" and token.text == "(":
            inner = self._or()
            self._expect(")")
            return _Cel(f"({inner.text})", inner.kind, token.column, _POSTFIX, inner.literal)
        if token.kind == "op" and token.text == "[":
            items = self._items("]")
            return _Cel("[" + ", ".join(i.text for i in items) + "]", "list", token.column,
                        _POSTFIX)
        raise _refuse(f"expected a value, found {token.text or 'the end'!r}", token.column)

    def _items(self, closer: str) -> list[_Cel]:
        items: list[_Cel] = []
        if not self._at("op", closer):
            items.append(self._or())
            while self._at("op", ","):
                self._next()
                items.append(self._or())
        self._expect(closer)
        return items

    def _call(self, name: _Token) -> _Cel:
        self._next()  # "("
        args = self._items(")")
        function = name.text
        if function in _NO_COUNTERPART:
            raise _refuse(f"{function}() has no counterpart among CEL's standard functions",
                          name.column)
        if function not in _ARITY:
            raise _refuse(f"unknown function {function}()", name.column)
        if len(args) != _ARITY[function]:
            raise _refuse(f"{function}() takes {_ARITY[function]} arguments, got {len(args)}",
                          name.column)
        self.changed = True
        if function == "len":
            return _Cel(f"size({args[0].text})", "number", name.column, _POSTFIX)
        subject, other = args
        if function in ("startswith", "endswith"):
            method = "startsWith" if function == "startswith" else "endsWith"
            return _Cel(f"{self._receiver(subject)}.{method}({other.text})", "bool",
                        name.column, _POSTFIX)
        pattern = other.literal
        if not isinstance(pattern, str) or other.kind != "string" or "[" in pattern:
            raise _refuse("glob() with a pattern other than a string of '*', '?' and plain "
                          "characters has no CEL counterpart", name.column)
        regex = "".join(".*" if c == "*" else "." if c == "?" else
                        "\\" + c if c in _REGEX_META else c for c in pattern)
        return _Cel(f"{self._receiver(subject)}.matches({_cel_string(f'(?s)^{regex}$')})",
                    "bool", name.column, _POSTFIX)


def to_cel(source: str) -> str:
    """The CEL for ``source``, a condition of the language before CEL: ``source`` itself
    when it means the same in CEL, else its mechanical translation; an
    :class:`~engine.errors.ExpressionError` naming the construct and its column when
    it has no CEL counterpart.

    >>> to_cel("len(event.payload.items) > 2 or event.type == 'a'")
    "size(event.payload.items) > 2 || event.type == 'a'"
    >>> to_cel("event.attempt / 2 > 1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ExpressionError: '/' divided exactly in the old language, ... (at column 15)
    """
    if not isinstance(source, str):
        raise TypeError(f"a condition must be a str, got {type(source).__name__}")
    translator = _Translator(source)
    translated = translator.translate()
    return translated if translator.changed else source

