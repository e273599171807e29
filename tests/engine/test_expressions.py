"""Tests for the breakpoint condition language in ``engine.expressions``."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError, ExpressionError
from engine.expressions import Expression, parse_expression


def value(source: str, **variables: object) -> object:
    return parse_expression(source).evaluate(variables)


# -- literals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-7", -7),
        ("'single'", "single"),
        ('"double"', "double"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        (r"'tab\tnew\nline'", "tab\tnew\nline"),
        ("'mixed \"quotes\"'", 'mixed "quotes"'),
        ("''", ""),
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        ("null", None),
        ("None", None),
        ("[]", []),
        ('[1, 2, "a"]', [1, 2, "a"]),
        ("[1, [2, [3]], null]", [1, [2, [3]], None]),
        ("[1 + 1, x]", [2, None]),
    ],
)
def test_literals(source: str, expected: object) -> None:
    result = value(source)
    assert result == expected
    assert type(result) is type(expected)


def test_whitespace_is_insignificant() -> None:
    assert value("  1+2 *\t3\n== 7 ") is True


# -- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("8 / 4 / 2", 1.0),
        ("2 * 7 % 4", 2),
        ("7 % 4 * 2", 6),
        ("-2 * 3", -6),
        ("-(2 + 3)", -5),
        ("- - 4", 4),
        ("2 - -3", 5),
        ("1 + 2 == 3", True),
        ("3 == 1 + 2", True),
        ("1 + 1 == 2 and 3 > 2", True),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("false and true or true", True),
        ("not true or true", True),
        ("not (true or true)", False),
        ("not 1 == 2", True),
        ("not not true", True),
        ("! false && true", True),
        ("!(true || false)", False),
        ("false || true && false", False),
        ("not 2 in [1, 2] or true", True),
        ("not 2 in [1, 2]", False),
        ("1 + 2 in [3]", True),
        ("-a.b", -5),
        ("a.b * 2 + 1", 11),
    ],
)
def test_precedence(source: str, expected: object) -> None:
    result = value(source, a={"b": 5})
    assert result == expected
    assert type(result) is type(expected)


# -- operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("'a' == 'a'", True),
        ("'a' == 'b'", False),
        ("[1, 2] == [1, 2]", True),
        ("1 != 2", True),
        ("1 != 1", False),
        ("null == null", True),
        ("null != 0", True),
        ("1 < 2", True),
        ("2 < 1", False),
        ("2 <= 2", True),
        ("3 <= 2", False),
        ("3 > 2", True),
        ("2 > 3", False),
        ("2 >= 2", True),
        ("1 >= 2", False),
        ("'abc' < 'abd'", True),
        ("1 + 2", 3),
        ("1.5 + 1", 2.5),
        ("5 - 7", -2),
        ("6 * 7", 42),
        ("7 / 2", 3.5),
        ("7 % 3", 1),
        ("-7 % 3", 2),
        ("'ab' + 'cd'", "abcd"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("true and true", True),
        ("true and false", False),
        ("true && true", True),
        ("false or true", True),
        ("false or false", False),
        ("false || false", False),
        ("not false", True),
        ("!true", False),
        ("1 and 'x'", True),
        ("0 or ''", False),
        ("not []", True),
    ],
)
def test_operators(source: str, expected: object) -> None:
    result = value(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("2 in [1, 2, 3]", True),
        ("4 in [1, 2, 3]", False),
        ("4 not in [1, 2, 3]", True),
        ("2 not in [1, 2, 3]", False),
        ("'a' in ['a', 'b']", True),
        ("[1] in [[1], [2]]", True),
        ("'ell' in 'hello'", True),
        ("'xyz' in 'hello'", False),
        ("'xyz' not in 'hello'", True),
        ("'' in 'hello'", True),
        ("'k' in m", True),
        ("'v' in m", False),
        ("'v' not in m", True),
        ("3 in t", True),
        ("status in ['failed', 'compensated']", True),
        ("status not in ['failed', 'compensated']", False),
        # Incompatible operands: both `in` and `not in` are false.
        ("1 in 'abc'", False),
        ("1 not in 'abc'", False),
        ("1 in null", False),
        ("1 not in null", False),
        ("1 in 5", False),
        ("1 not in missing", False),
        ("[1] in m", False),
        ("[1] not in m", False),
    ],
)
def test_in_and_not_in(source: str, expected: bool) -> None:
    assert value(source, m={"k": "v"}, t=(1, 2, 3), status="failed") is expected


def test_and_or_short_circuit_and_give_booleans() -> None:
    assert value("x and x.y", x=None) is False
    assert value("x or x.y", x={"y": 1}) is True
    assert value("x.y or 'default'", x={}) is True


# -- names, members and indexes --------------------------------------------------------------

STATE = {
    "status": "failed",
    "stages": {
        "charge": {"status": "failed", "attempt": 3, "error": {"type": "CardDeclined"}},
        "ship/pack": {"status": "completed", "output": {"boxes": [{"id": "b1"}, {"id": "b2"}]}},
    },
}
EVENT = {"type": "stage.transaction.failed", "path": "charge", "attempt": 2, "payload": {}}


def test_spec_example_on_nested_dicts() -> None:
    source = 'state.stages["charge"].status == "failed" and event.attempt >= 2'
    expression = parse_expression(source)
    assert expression.evaluate({"state": STATE, "event": EVENT}) is True
    assert expression.evaluate({"state": STATE, "event": {**EVENT, "attempt": 1}}) is False
    assert expression.names() == frozenset({"state", "event"})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("state.status", "failed"),
        ("state['status']", "failed"),
        ('state["stages"]["charge"]["attempt"]', 3),
        ("state.stages.charge.error.type", "CardDeclined"),
        ('state.stages["ship/pack"].output.boxes[1].id', "b2"),
        ('state.stages["ship/pack"].output.boxes[0]["id"]', "b1"),
        ('state.stages["ship/pack"].output.boxes[-1].id', "b2"),
        ('state.stages["ship/pack"].output.boxes[1 - 1].id', "b1"),
        ("state.stages[event.path].attempt", 3),
        ("[10, 20, 30][1]", 20),
        ("(state).status", "failed"),
        ("lower(state.status)", "failed"),
        ("pairs[0][1]", "b"),
        ("table[1]", "one"),
        ("table[2]", None),
        ("event.payload.in", None),
        ("state.stages.charge.error.not", None),
    ],
)
def test_member_and_index_access(source: str, expected: object) -> None:
    variables = {"state": STATE, "event": EVENT, "pairs": [("a", "b")], "table": {1: "one"}}
    assert parse_expression(source).evaluate(variables) == expected


@pytest.mark.parametrize(
    "source",
    [
        "missing",
        "missing.field",
        "missing[0].field",
        "state.nope",
        "state.stages.refund",
        'state.stages["refund"].status',
        "state.stages.charge.error.type.name",
        "state.status.upper",
        "state.status[0]",
        'state.stages["ship/pack"].output.boxes[2]',
        'state.stages["ship/pack"].output.boxes[-3]',
        'state.stages["ship/pack"].output.boxes["0"]',
        'state.stages["ship/pack"].output.boxes[0.0]',
        'state.stages["ship/pack"].output.boxes[true]',
        "state[[1]]",
        "event.attempt.real",
        "(1).x",
        "len(state.missing)",
    ],
)
def test_missing_fields_are_none(source: str) -> None:
    assert value(source, state=STATE, event=EVENT) is None


@pytest.mark.parametrize(
    "source",
    [
        "state.stages.refund.status == 'failed'",
        "state.missing.attempt >= 2",
        "event.nope > 0",
        "missing",
        "missing.x in ['a']",
        "startswith(missing, 'a')",
    ],
)
def test_breakpoint_on_missing_field_does_not_match(source: str) -> None:
    assert not value(source, state=STATE, event=EVENT)


def test_missing_names_compare_equal_to_null() -> None:
    assert value("missing == null", state=STATE) is True
    assert value("state.missing == None", state=STATE) is True


def test_evaluate_does_not_mutate_variables_and_lists_are_fresh() -> None:
    items = [1, 2]
    expression = parse_expression("items + [3]")
    assert expression.evaluate({"items": items}) == [1, 2, 3]
    assert items == [1, 2]
    first = parse_expression("[1]").evaluate({})
    assert isinstance(first, list)
    first.append(2)
    assert parse_expression("[1]").evaluate({}) == [1]


# -- incompatible operands -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["null < 3", "null >= null", "3 > null", "'a' < 1", "[1] <= 'a'", "m < m", "missing > 0"],
)
def test_incomparable_orderings_are_false(source: str) -> None:
    assert value(source, m={"a": 1}) is False


@pytest.mark.parametrize(
    "source",
    [
        "'a' + 1",
        "1 + 'a'",
        "null + 1",
        "missing - 1",
        "true + 1",
        "1 * false",
        "'ab' * 3",
        "[1] * 2",
        "'a' - 'b'",
        "'%s' % 1",
        "[1] + 'a'",
        "1 / 0",
        "1.5 / 0",
        "5 % 0",
        "5 % 0.0",
        "-'a'",
        "-null",
        "-true",
        "-[1]",
    ],
)
def test_incompatible_arithmetic_is_none(source: str) -> None:
    assert value(source) is None


def test_none_propagates_through_arithmetic_chains() -> None:
    assert value("1 / 0 + 1 - 2 * 3") is None
    assert value("(1 / 0 + 1) == null") is True


def test_equality_that_raises_is_false() -> None:
    class Grumpy:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        def __ne__(self, other: object) -> bool:
            raise RuntimeError("no")

        def __bool__(self) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    grumpy = Grumpy()
    assert value("g == 1", g=grumpy) is False
    assert value("g != 1", g=grumpy) is False
    assert value("not g", g=grumpy) is True  # truthiness that raises counts as false
    assert value("g and true", g=grumpy) is False


# -- functions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("len('abc')", 3),
        ("len([1, 2])", 2),
        ("len(m)", 1),
        ("len(t)", 3),
        ("len(5)", None),
        ("len(null)", None),
        ("startswith('stage.failed', 'stage.')", True),
        ("startswith('stage.failed', 'work.')", False),
        ("startswith(5, 'a')", None),
        ("startswith('a', 5)", None),
        ("endswith('ship/pack', '/pack')", True),
        ("endswith('ship/pack', '/ship')", False),
        ("endswith(null, 'x')", None),
        ("glob('stage.transaction.failed', 'stage.*.failed')", True),
        ("glob('stage.transaction.failed', 'work.*')", False),
        ("glob('Charge', 'charge')", False),
        ("glob('ship[3]/pack', 'ship[[]*]/*')", True),
        ("glob(1, '*')", None),
        ("lower('AbC')", "abc"),
        ("upper('AbC')", "ABC"),
        ("lower(1)", None),
        ("upper(null)", None),
        ("abs(-3)", 3),
        ("abs(2.5)", 2.5),
        ("abs('x')", None),
        ("abs(true)", None),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("min([4, 5])", 4),
        ("max(t)", 3),
        ("min(7)", 7),
        ("min([])", None),
        ("max(1, 'a')", None),
        ("min(null, 1)", None),
        ("max('a', 'b')", "b"),
        ("len(lower('ABC')) + abs(-1)", 4),
    ],
)
def test_functions(source: str, expected: object) -> None:
    result = value(source, m={"k": "v"}, t=(1, 2, 3))
    assert result == expected
    assert type(result) is type(expected)


def test_function_names_are_not_variable_names() -> None:
    expression = parse_expression("len(items) > 0 and len == 3")
    assert expression.names() == frozenset({"items", "len"})
    assert expression.evaluate({"items": [1], "len": 3}) is True


# -- names() ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2", set()),
        ("a", {"a"}),
        ("a.b.c", {"a"}),
        ("a[b][c.d]", {"a", "b", "c"}),
        ("x in [y, z.w] and not v", {"x", "y", "z", "v"}),
        ("max(p, q) > r.s", {"p", "q", "r"}),
        ("'a.b' == true", set()),
    ],
)
def test_names(source: str, expected: set[str]) -> None:
    names = parse_expression(source).names()
    assert isinstance(names, frozenset)
    assert names == expected


# -- safety ----------------------------------------------------------------------------------


class Recorder:
    """Records every attribute read that goes through ``__getattr__``."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.reads.append(name)
        return "secret"


@pytest.mark.parametrize(
    "source",
    [
        "x.__class__",
        "x.__class__.__mro__",
        "x.__class__.__subclasses__",
        "x['__class__']",
        "x.__dict__",
        "x.__len__",
        "x.upper",
        "x.__globals__",
        "x.__init__.__globals__",
    ],
)
@pytest.mark.parametrize("x", ["a string", 42, 1.5, [1, 2], (1,), object(), len, None])
def test_attributes_are_never_read(source: str, x: object) -> None:
    assert value(source, x=x) is None


def test_getattr_is_never_called_on_objects() -> None:
    recorder = Recorder()
    assert value("r.anything", r=recorder) is None
    assert value("r['anything']", r=recorder) is None
    assert value("r.reads", r=recorder) is None
    assert recorder.reads == []


def test_dunder_keys_of_a_mapping_are_plain_keys() -> None:
    assert value("m.__class__", m={"__class__": "just data"}) == "just data"
    assert value("m.__class__", m={}) is None


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "eval('1')",
        "exec('x = 1')",
        "getattr(x, 'y')",
        "open('/etc/passwd')",
        "x.upper()",
        "x.__class__()",
        "(len)(x)",
    ],
)
def test_calls_outside_the_whitelist_do_not_parse(source: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(source)


def test_repetition_cannot_allocate_huge_values() -> None:
    assert value("'a' * 1000000000000") is None
    assert value("[0] * 1000000000000") is None


def test_large_numbers_stay_bounded() -> None:
    assert value("1e308 * 10 > 1e308") is True  # inf, not an exception
    assert value(" * ".join(["99999999999"] * 120) + " > 0") is True
    assert value("1" + "0" * 400 + " / 1") is None  # too large for a float


# -- parse errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("", "empty expression", 1),
        ("   ", "empty expression", 1),
        ("a == (1))", "unexpected token ')'", 9),
        ("((a == 1)", "unclosed '('", 1),
        ("(a == 1", "unclosed '('", 1),
        ("a ==", "expected a value, found end of expression", 5),
        ("a +", "expected a value, found end of expression", 4),
        ("a and", "expected a value, found end of expression", 6),
        ("not", "expected a value, found end of expression", 4),
        ("1 2", "unexpected token '2'", 3),
        ("a b", "unexpected token 'b'", 3),
        ("a not b", "unexpected token 'not'", 3),
        ("'abc", "unterminated string", 1),
        ('x == "abc', "unterminated string", 6),
        (r"'a\'", "unterminated string", 1),
        (r"'a\q'", r"unknown escape \q", 3),
        ("foo(1)", "unknown function 'foo'", 1),
        ("x and nope()", "unknown function 'nope'", 7),
        ("len(1, 2)", "len() takes 1 argument, got 2", 1),
        ("startswith('a')", "startswith() takes 2 arguments, got 1", 1),
        ("min()", "min() takes at least 1 argument, got 0", 1),
        ("len(a b)", "expected ',' or ')' for the '(' at column 4, found 'b'", 7),
        ("[1, 2", "unclosed '['", 1),
        ("[1 2]", "expected ',' or ']' for the '[' at column 1, found '2'", 4),
        ("[1, ]", "expected a value, found ']'", 5),
        ("a[1", "unclosed '['", 2),
        ("a[1 2]", "expected ']' for the '[' at column 2, found '2'", 5),
        ("a]", "unexpected token ']'", 2),
        ("a.", "expected a field name after '.', found end of expression", 3),
        ("a.1", "expected a field name after '.', found '1'", 3),
        ("a.'b'", "expected a field name after '.', found \"'b'\"", 3),
        ("x = 1", "unexpected character '=' (compare with '==')", 3),
        ("a & b", "unexpected character '&'", 3),
        ("a | b", "unexpected character '|'", 3),
        ("a @ b", "unexpected character '@'", 3),
        ("caf\u00e9", "unexpected character '\u00e9'", 4),
        ("1abc", "malformed number '1abc'", 1),
        ("x > 1e", "malformed number '1e'", 5),
        ("1 < 2 < 3", "chained comparison '<'", 7),
        ("a == b != c", "chained comparison '!='", 8),
        ("a in b in c", "chained comparison 'in'", 8),
        ("a == not b", "'not' cannot appear here", 6),
        ("-not a", "'not' cannot appear here", 2),
        ("1 + !a", "'!' cannot appear here", 5),
        ("a && || b", "expected a value, found '||'", 6),
        ("a == and", "expected a value, found 'and'", 6),
        ("in", "expected a value, found 'in'", 1),
        (")", "expected a value, found ')'", 1),
        (",", "expected a value, found ','", 1),
        ("a ,", "unexpected token ','", 3),
        ("()", "expected a value, found ')'", 2),
    ],
)
def test_parse_errors_name_the_problem_and_column(source: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(source)
    text = str(caught.value)
    assert text.startswith(message), text
    assert text.endswith(f" at column {column} in {source!r}"), text


def test_parse_error_is_a_value_error_and_an_engine_error() -> None:
    with pytest.raises(ValueError, match=re.escape("in 'a =='")):
        parse_expression("a ==")
    assert issubclass(ExpressionError, EngineError)


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opener", "closer"),
    [("(", ")"), ("[", "]"), ("x[", "]"), ("len(", ")"), ("not ", ""), ("-", ""), ("!", "")],
)
def test_nesting_is_limited_to_64_levels(opener: str, closer: str) -> None:
    ok = opener * 64 + "1" + closer * 64
    parse_expression(ok).evaluate({"x": {}})
    too_deep = opener * 65 + "1" + closer * 65
    with pytest.raises(ExpressionError, match=r"^nesting deeper than 64 levels at column \d+ in"):
        parse_expression(too_deep)


def test_nesting_limit_column_points_at_the_65th_opener() -> None:
    with pytest.raises(ExpressionError, match="at column 66 in"):
        parse_expression("x" + "[" * 65 + "1" + "]" * 65)


def test_deepest_allowed_nesting_through_every_level_evaluates() -> None:
    # Each level passes through or, and, a comparison, a sum, a product, unary minus and an
    # index, the most stack any one nesting level can take, and must still evaluate.
    source = "a or b and c == d + e * -x[(" * 21 + "1" + ")]" * 21  # 3 levels each, 63 in all
    assert len(source) <= 2000
    assert parse_expression(source).evaluate({"x": {1: 2}}) is False


def test_hostile_deep_input_raises_expression_error_not_recursion_error() -> None:
    for source in ("(" * 1999, "[" * 1999, "-" * 1999 + "1", "not " * 499 + "x", "a" + "[a" * 999):
        with pytest.raises(ExpressionError):
            parse_expression(source)


def test_long_flat_chains_are_not_nesting() -> None:
    assert value("+".join(["1"] * 1000)) == 1000
    assert value(" and ".join(["true"] * 200)) is True
    assert value(" || ".join(["x"] * 300) + " || true") is True
    assert value("a" + ".a" * 999, a={}) is None
    nested: dict[str, object] = {}
    for _ in range(600):
        nested = {"a": nested}
    assert value("a" + ".a" * 600, a=nested) == {}


def test_length_is_limited_to_2000_characters() -> None:
    longest = "1" + " " * 1999
    assert value(longest) == 1
    with pytest.raises(ExpressionError, match=r"2001 characters long, more than 2000 at column"):
        parse_expression(longest + " ")


# -- the Expression object -------------------------------------------------------------------


def test_expression_object() -> None:
    expression = parse_expression("a == 1")
    assert expression.source == "a == 1"
    assert expression == Expression("a == 1")
    assert expression != parse_expression("a==1")
    assert hash(expression) == hash(parse_expression("a == 1"))
    assert repr(expression) == "Expression(source='a == 1')"
    assert pickle.loads(pickle.dumps(expression)).evaluate({"a": 1}) is True
    with pytest.raises(AttributeError):
        expression.source = "b"  # type: ignore[misc]


def test_expression_can_be_evaluated_many_times_with_different_variables() -> None:
    expression = parse_expression("event.attempt >= 2")
    assert [expression.evaluate({"event": {"attempt": n}}) for n in range(4)] == [
        False,
        False,
        True,
        True,
    ]


def test_misuse_raises_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str, got int"):
        parse_expression(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="variables must be a mapping, got list"):
        parse_expression("a").evaluate([("a", 1)])  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------

ints = st.integers(min_value=-(10**12), max_value=10**12)


@given(a=ints, b=ints, c=ints)
def test_arithmetic_and_comparison_match_python(a: int, b: int, c: int) -> None:
    by_name = parse_expression("a + b * 2 > c").evaluate({"a": a, "b": b, "c": c})
    assert by_name is (a + b * 2 > c)
    inline = parse_expression(f"{a} + {b} * 2 > {c}").evaluate({})
    assert inline is (a + b * 2 > c)


@given(a=ints, b=ints, c=ints)
def test_arithmetic_values_match_python(a: int, b: int, c: int) -> None:
    variables = {"a": a, "b": b, "c": c}
    assert parse_expression("a - b - c * 3").evaluate(variables) == a - b - c * 3
    assert parse_expression("-(a - b) * c").evaluate(variables) == -(a - b) * c
    expected_mod = None if c == 0 else a % c
    assert parse_expression("a % c").evaluate(variables) == expected_mod
    expected_div = None if c == 0 else a / c
    assert parse_expression("a / c").evaluate(variables) == expected_div


@given(st.text(alphabet="ab1.'\"\\ ()[],+-*/%<>=!&|notandriel_", max_size=40))
def test_any_text_parses_or_raises_expression_error_and_never_raises_on_evaluate(
    source: str,
) -> None:
    try:
        expression = parse_expression(source)
    except ExpressionError as error:
        assert re.search(r" at column \d+ in ", str(error))
        return
    variables = {"a": {"b": [1, "x"]}, "b": None, "ab": "text", "n": 3, "o": 0}
    expression.evaluate(variables)
    assert all(name.isidentifier() for name in expression.names())
