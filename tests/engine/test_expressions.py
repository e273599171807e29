"""Conditions in CEL (``engine.expressions``): the language as the ``cel`` package runs it,
what is checked when an expression is made, what fails on the data, and safety."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError, ExpressionError
from engine.expressions import FUNCTIONS, MAX_LENGTH, Expression, parse_expression


def value(source: str, **variables: object) -> object:
    return parse_expression(source).evaluate(variables)


def fails(source: str, **variables: object) -> str:
    """The message of the ExpressionError that evaluating ``source`` raises."""
    expression = parse_expression(source)
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate(variables)
    return str(caught.value)


# -- literals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("0x1F", 31),
        ("1u", 1),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("'single'", "single"),
        ('"double"', "double"),
        (r"'it\'s'", "it's"),
        (r"'tab\tnew\nline'", "tab\tnew\nline"),
        (r"'\x41\u00e9'", "A\u00e9"),
        (r"r'raw\d'", "raw\\d"),
        ("'''tri'ple'''", "tri'ple"),
        ("''", ""),
        ('b"ab"', b"ab"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ('[1, 2, "a"]', [1, 2, "a"]),
        ("[1, [2, [3]], null]", [1, [2, [3]], None]),
        ('{"a": 1, "b": [true]}', {"a": 1, "b": [True]}),
    ],
)
def test_literals(source: str, expected: object) -> None:
    result = value(source)
    assert result == expected
    assert type(result) is type(expected)


def test_whitespace_and_newlines_are_insignificant() -> None:
    assert value("  1+2 *\t3\n== 7 ") is True


# -- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 7 % 4", 2),
        ("7 % 4 * 2", 6),
        ("-2 * 3", -6),
        ("-(2 + 3)", -5),
        ("2 - -3", 5),
        ("1 + 2 == 3", True),
        ("3 == 1 + 2", True),
        ("1 + 1 == 2 && 3 > 2", True),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("false && true || true", True),
        ("!true || true", True),
        ("!(true || true)", False),
        ("!false && true", True),
        ("!!true", True),
        ("1 + 2 in [3]", True),
        ("false ? 1 : 2 + 3", 5),
        ("true ? 'a' : 'b'", "a"),
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
        ("1 == 1.0", True),  # numbers compare across int, uint and double
        ("1 == 1u", True),
        ("1 < 1.5", True),
        ("'a' == 'a'", True),
        ("'a' == 'b'", False),
        ("[1, 2] == [1, 2]", True),
        ("{'a': 1} == {'a': 1}", True),
        ("1 != 2", True),
        ("null == null", True),
        ("null != 0", True),
        ("1 == true", False),  # no coercion: other types are simply unequal
        ("'1' == 1", False),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("'abc' < 'abd'", True),
        ("1 + 2", 3),
        ("5 - 7", -2),
        ("6 * 7", 42),
        ("7 / 2", 3),  # integers divide to a whole number, toward zero
        ("-7 / 2", -3),
        ("7.0 / 2.0", 3.5),
        ("7 % 3", 1),
        ("-7 % 3", -1),  # the dividend's sign
        ("'ab' + 'cd'", "abcd"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("1e308 * 10.0", float("inf")),
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
        ("!true", False),
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
        ("!(4 in [1, 2, 3])", True),
        ("'a' in ['a', 'b']", True),
        ("[1] in [[1], [2]]", True),
        ("'k' in m", True),  # a map's keys
        ("'v' in m", False),
        ("3 in t", True),  # a tuple is a list
        ("status in ['failed', 'compensated']", True),
    ],
)
def test_in(source: str, expected: bool) -> None:
    assert value(source, m={"k": "v"}, t=(1, 2, 3), status="failed") is expected


def test_and_or_absorb_an_error_that_the_other_side_decides() -> None:
    assert value("x.nope > 0 && false", x={}) is False
    assert value("false && x.nope > 0", x={}) is False
    assert value("x.nope > 0 || true", x={}) is True
    assert value("true || x.nope", x={}) is True
    assert "no key 'nope'" in fails("x.nope > 0 && true", x={})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x.exists(n, n > 2)", True),
        ("x.all(n, n > 0)", True),
        ("x.exists_one(n, n == 2)", True),
        ("x.map(n, n * 2)", [2, 4, 6]),
        ("x.filter(n, n % 2 == 1)", [1, 3]),
        ("has(m.k)", True),
        ("has(m.z)", False),
        ("has(m.k) && m.k == 'v'", True),
    ],
)
def test_macros(source: str, expected: object) -> None:
    assert value(source, x=[1, 2, 3], m={"k": "v"}) == expected


# -- names, members and indexes --------------------------------------------------------------

STATE = {
    "status": "failed",
    "stages": {
        "charge": {"status": "failed", "attempt": 3, "error": {"type": "CardDeclined"}},
        "ship/pack": {"status": "completed", "output": {"boxes": [{"id": "b1"}, {"id": "b2"}]}},
    },
}
EVENT = {"type": "stage.transaction.failed", "path": "charge", "attempt": 2, "payload": {}}


def test_a_condition_over_nested_dicts() -> None:
    source = 'state.stages["charge"].status == "failed" && event.attempt >= 2'
    expression = parse_expression(source)
    assert expression.evaluate({"state": STATE, "event": EVENT}) is True
    assert expression.evaluate({"state": STATE, "event": {**EVENT, "attempt": 1}}) is False
    assert expression.names() == frozenset({"state", "event"})
    # a name looked up from the root scope (".state") reads the same variable
    rooted = parse_expression('.state.stages["charge"].status == "failed"')
    assert rooted.names() == frozenset({"state"})
    with pytest.raises(ExpressionError, match="reads 'state', which is not defined here"):
        parse_expression(".state.seq", names={"event"})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("state.status", "failed"),
        ("state['status']", "failed"),
        ('state["stages"]["charge"]["attempt"]', 3),
        ("state.stages.charge.error.type", "CardDeclined"),
        ('state.stages["ship/pack"].output.boxes[1].id', "b2"),
        ('state.stages["ship/pack"].output.boxes[0]["id"]', "b1"),
        ('state.stages["ship/pack"].output.boxes[1 - 1].id', "b1"),
        ("state.stages[event.path].attempt", 3),
        ("[10, 20, 30][1]", 20),
        ("(state).status", "failed"),
        ("pairs[0][1]", "b"),
        ("table[1]", "one"),
        ('event.payload["in"]', "reserved words are keys in brackets"),
    ],
)
def test_member_and_index_access(source: str, expected: object) -> None:
    event = {**EVENT, "payload": {"in": "reserved words are keys in brackets"}}
    variables = {"state": STATE, "event": event, "pairs": [("a", "b")], "table": {1: "one"}}
    assert parse_expression(source).evaluate(variables) == expected


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("missing", "Undefined variable or function: 'missing'"),
        ("state.nope", "no key 'nope'"),
        ('state.stages["refund"].status', "no key 'refund'"),
        ("state.stages.charge.error.type.name", "No such overload"),
        ('state.stages["ship/pack"].output.boxes[2]', "index out of bounds: 2"),
        ('state.stages["ship/pack"].output.boxes[-1]', "index out of bounds: -1"),
        ('state.stages["ship/pack"].output.boxes["0"]', "Unexpected type: got 'string'"),
        ("state.status[0]", "No such overload"),
        ("event.attempt + 1.5", "No such overload"),
        ("1.5 + 1", "Unsupported operation: float + int"),
        ("null < 3", "No such overload"),
        ("'ab' * 3", "Unsupported operation: string * int"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "modulo by zero"),
        ("9223372036854775807 + 1", "Arithmetic overflow in 'add'"),
        ("int('x')", "Function 'int' error"),
        ("event.type.matches('(')", "not a valid regex"),
        ("!event.attempt", "No such overload"),
        ("event.attempt && true", "No such overload"),
    ],
)
def test_what_fails_on_the_data_raises_naming_the_source_and_the_problem(
        source: str, problem: str) -> None:
    message = fails(source, state=STATE, event=EVENT)
    assert message.startswith(f"{source!r} could not be evaluated: "), message
    assert problem in message, message
    assert "\n" not in message


def test_has_and_in_guard_against_missing_keys() -> None:
    guarded = parse_expression('"refund" in state.stages && state.stages.refund.status == "x"')
    assert guarded.evaluate({"state": STATE}) is False
    assert value("has(state.stages.refund) && state.stages.refund.status == 'x'",
                 state=STATE) is False


def test_evaluate_does_not_mutate_variables_and_lists_are_fresh() -> None:
    items = [1, 2]
    expression = parse_expression("items + [3]")
    assert expression.evaluate({"items": items}) == [1, 2, 3]
    assert items == [1, 2]
    first = parse_expression("[1]").evaluate({})
    assert isinstance(first, list)
    first.append(2)
    assert parse_expression("[1]").evaluate({}) == [1]


# -- functions -------------------------------------------------------------------------------


STANDARD: list[tuple[str, object]] = [
    ("size('abc')", 3),
    ("'abc'.size()", 3),
    ("size([1, 2])", 2),
    ("size(m)", 1),
    ("'stage.failed'.startsWith('stage.')", True),
    ("'stage.failed'.startsWith('work.')", False),
    ("'ship/pack'.endsWith('/pack')", True),
    ("'hello'.contains('ell')", True),
    (r"'stage.transaction.failed'.matches('^stage\\..*\\.failed$')", True),
    ("'Charge'.matches('^charge$')", False),
    ("int('12')", 12),
    ("int(2.9)", 2),
    ("uint(3) == 3u", True),
    ("double(3)", 3.0),
    ("string(42)", "42"),
    ("bytes('a')", b"a"),
    ("type(1) == int", True),
    ("type(m) == map && type([]) == list && type(null) == null_type", True),
    ("dyn(1) == 1", True),
    ("timestamp('2024-01-02T03:04:05Z').getFullYear()", 2024),
    ("timestamp('2024-01-02T03:04:05Z').getMonth()", 0),
    ("timestamp('2024-01-02T03:04:05Z').getDate()", 2),
    ("timestamp('2024-01-02T03:04:05Z').getDayOfMonth()", 1),
    ("timestamp('2024-01-02T03:04:05Z').getDayOfYear()", 1),
    ("timestamp('2024-01-02T03:04:05Z').getDayOfWeek()", 2),
    ("timestamp('2024-01-02T03:04:05Z').getHours()", 3),
    ("timestamp('2024-01-02T03:04:05Z').getMinutes()", 4),
    ("timestamp('2024-01-02T03:04:05Z').getSeconds()", 5),
    ("timestamp('2024-01-02T03:04:05.250Z').getMilliseconds()", 250),
    ("duration('90s') > duration('1m')", True),
]


@pytest.mark.parametrize(("source", "expected"), STANDARD)
def test_standard_functions(source: str, expected: object) -> None:
    result = value(source, m={"k": "v"})
    assert result == expected
    assert type(result) is type(expected)


def test_every_allowed_function_is_one_the_package_has() -> None:
    tested = " ".join(source for source, _ in STANDARD)
    assert {name for name in FUNCTIONS if f"{name}(" not in tested} == set()


@pytest.mark.parametrize(
    ("source", "name", "column"),
    [
        ("foo(1)", "foo", 1),
        ("x && lenght(y) > 1", "lenght", 6),
        ("'a'.lowerAscii() == 'a'", "lowerAscii", 5),
        ("max(1, 2) > 1", "max", 1),
        ("math.abs(-1) == 1", "abs", 6),
    ],
)
def test_functions_outside_the_standard_library_are_refused_when_made(
        source: str, name: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(source)
    assert str(caught.value).startswith(
        f"{source!r} calls {name}() (at column {column}), which is not one of CEL's standard "
        "functions: bytes, contains, ")


# -- names() ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2", set()),
        ("a", {"a"}),
        ("a.b.c", {"a"}),
        ("a[b][c.d]", {"a", "b", "c"}),
        ("x in [y, z.w] && !v", {"x", "y", "z", "v"}),
        ("'a.b' == true", set()),
        ("items.exists(i, i > limit)", {"items", "limit"}),  # i is the macro's own
        ("type(x) == int", {"x"}),  # int is a type name
    ],
)
def test_names(source: str, expected: set[str]) -> None:
    names = parse_expression(source).names()
    assert isinstance(names, frozenset)
    assert names == expected


def test_names_limits_what_an_expression_may_read() -> None:
    allowed = ("event", "state")
    parse_expression("event.attempt > 1 && state.seq > 2", names=allowed)
    with pytest.raises(ExpressionError, match=re.escape(
            "'evnt.attempt > 1' reads 'evnt' (at column 1), which is not defined here: "
            "it may read 'event' and 'state'")):
        parse_expression("evnt.attempt > 1", names=allowed)
    with pytest.raises(ExpressionError, match=r"reads 'True' \(at column 18\).*; write true$"):
        parse_expression("event.attempt == True", names=allowed)


# -- safety ----------------------------------------------------------------------------------


class Recorder:
    """Records every attribute read that goes through ``__getattr__``."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.reads.append(name)
        return "secret"


@pytest.mark.parametrize(
    "source", ["r.anything", "r['anything']", "r.reads", "has(r.reads)", "true"])
def test_python_objects_are_never_read_only_refused(source: str) -> None:
    recorder = Recorder()
    message = fails(source, r=recorder)
    assert "could not be evaluated: Conversion Error" in message
    assert recorder.reads == []


@pytest.mark.parametrize("x", [object(), {1, 2}, 1j, {"nested": len}, [Recorder()]])
def test_values_that_are_not_plain_data_are_refused(x: object) -> None:
    assert "could not be evaluated: Conversion Error" in fails("x == 1", x=x)


@pytest.mark.parametrize("x", [len, Recorder, lambda: 1])
def test_a_callable_is_refused_rather_than_taken_for_a_function(x: object) -> None:
    message = fails("x == 1", x=x)
    assert re.search(r"could not be evaluated: variable 'x' is \w+ .*, not data$", message)


@pytest.mark.parametrize(
    "source", ["x.__class__", "x.__dict__", "x.upper", "x.__globals__"])
def test_dunder_names_are_plain_keys(source: str) -> None:
    key = source.split(".")[1]
    assert value(source, x={key: "just data"}) == "just data"
    assert "could not be evaluated: no key" in fails(source, x={})
    assert "No such overload" in fails(source, x="a string")


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
    ],
)
def test_calls_outside_the_standard_library_do_not_compile(source: str) -> None:
    with pytest.raises(ExpressionError, match="which is not one of CEL's standard functions"):
        parse_expression(source)


def test_repetition_and_large_numbers_stay_bounded() -> None:
    assert "Unsupported operation: string * int" in fails("'a' * 1000000000000")
    assert "Unsupported operation: list * int" in fails("[0] * 1000000000000")
    assert "Arithmetic overflow" in fails(" * ".join(["99999999999"] * 3) + " > 0")
    with pytest.raises(ExpressionError, match="invalid int literal"):
        parse_expression("1" + "0" * 400)


# -- errors when an expression is made -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "where", "problem"),
    [
        ("a ==", "column 5", "unexpected end of expression; expected a value"),
        ("a +", "column 4", "unexpected end of expression; expected a value"),
        ("a == (1))", "column 9",
         "unexpected ')'; expected the end of the expression"),
        ("((a == 1)", "column 10", "missing ')' at the end"),
        ("1 2", "column 3", "unexpected '2'; expected the end of the expression"),
        ("a and b", "column 3",
         "unexpected 'and'; expected an operator or the end of the expression "
         "(write 'and' as '&&')"),
        ("a or b", "column 3",
         "unexpected 'or'; expected an operator or the end of the expression "
         "(write 'or' as '||')"),
        ("not a", "column 5",
         "unexpected 'a'; expected the end of the expression (write 'not' as '!')"),
        ("x = 1", "column 3", "unexpected character '=' (compare with '==')"),
        ("a & b", "column 3", "unexpected character '&' (write 'and' as '&&')"),
        ("a @ b", "column 3", "unexpected character '@'"),
        ("caf\u00e9 == 1", "column 4", "unexpected character '\u00e9'"),
        ("'abc", "column 1", "unterminated string"),
        ('x == "abc', "column 6", "unterminated string"),
        ("a.", "column 3", "no viable alternative at input '.'"),
        ("a.b[", "column 5", "unexpected end of expression; expected a value"),
        ("a && || b", "column 6", "unexpected '||'; expected a value"),
        ("in", "column 1", "unexpected 'in'; expected a value"),
        (")", "column 1", "unexpected ')'; expected a value"),
        ("a.?b", "column 2", "unsupported syntax '.?'"),
        ("a\n  ==", "line 2, column 5", "unexpected end of expression; expected a value"),
    ],
)
def test_syntax_errors_name_the_source_the_column_and_the_problem(
        source: str, where: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(source)
    assert str(caught.value) == f"{source!r} is not valid CEL at {where}: {problem}"


@pytest.mark.parametrize("source", ["", "   ", "\n\t"])
def test_an_empty_expression_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"is not valid CEL: the expression is empty$"):
        parse_expression(source)


def test_an_error_is_a_value_error_and_an_engine_error() -> None:
    with pytest.raises(ValueError, match=re.escape("'a ==' is not valid CEL")):
        parse_expression("a ==")
    assert issubclass(ExpressionError, EngineError)


def test_long_sources_are_shortened_in_messages() -> None:
    source = "x == " + " + ".join(["1"] * 100) + " +"
    with pytest.raises(ExpressionError) as caught:
        parse_expression(source)
    assert str(caught.value).startswith(repr(source[:77] + "...") + " is not valid CEL at ")


# -- limits ----------------------------------------------------------------------------------


def test_nesting_is_bounded_by_the_parser() -> None:
    assert value("(" * 40 + "1" + ")" * 40) == 1
    with pytest.raises(ExpressionError, match=r"at column 97: nested too deeply \(recursion"):
        parse_expression("(" * 100 + "1" + ")" * 100)


def test_hostile_deep_input_raises_expression_error() -> None:
    for source in ("(" * 1999, "[" * 1999, "a" + "[a" * 999, "{" * 1999):
        with pytest.raises(ExpressionError):
            parse_expression(source)


def test_long_flat_chains_are_not_nesting() -> None:
    assert value("+".join(["1"] * 600)) == 600
    assert value(" && ".join(["true"] * 200)) is True
    nested: dict[str, object] = {}
    for _ in range(300):
        nested = {"a": nested}
    assert value("a" + ".a" * 300, a=nested) == {}


def test_length_is_limited_to_2000_characters() -> None:
    longest = "1" + " " * (MAX_LENGTH - 1)
    assert value(longest) == 1
    with pytest.raises(ExpressionError, match="is 2001 characters long; at most 2000 are allowed"):
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

ints = st.integers(min_value=-(2**31), max_value=2**31)  # products stay within int64


def truncated(a: int, b: int) -> tuple[int, int]:
    """CEL's integer division and remainder: toward zero, the remainder has a's sign."""
    quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b > 0) else -1)
    return quotient, a - b * quotient


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
    if c == 0:
        assert "by zero" in fails("a / c", **variables)
        assert "by zero" in fails("a % c", **variables)
    else:
        quotient, remainder = truncated(a, c)
        assert parse_expression("a / c").evaluate(variables) == quotient
        assert parse_expression("a % c").evaluate(variables) == remainder


@given(st.text(alphabet="ab1.'\"\\ ()[]{},:+-*/%<>=!&|?_\n", max_size=40))
def test_any_text_compiles_or_raises_expression_error_and_evaluation_raises_no_other(
        source: str) -> None:
    try:
        expression = parse_expression(source)
    except ExpressionError as error:
        assert re.search(r" is not valid CEL( at (line \d+, )?column \d+)?: ", str(error))
        return
    variables = {"a": {"b": [1, "x"]}, "b": None, "ab": "text", "n": 3, "o": 0}
    try:
        expression.evaluate(variables)
    except ExpressionError as error:
        assert " could not be evaluated: " in str(error)
    assert all(name.isidentifier() for name in expression.names())
