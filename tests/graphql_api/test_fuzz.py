"""The schema fuzzed through a real ``stepsaga serve`` (an API-only node on a SQLite
file) with operations hypothesis-graphql generates from it: valid ones and, in its
negative mode, invalid ones. No answer is a 500, none carries a traceback or the
store's SQL, and a request that is refused changes nothing stored: every mutation of
a client that may only read, and every invalid operation of an administrator. Bounded
by a count of examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from graphql_api.schema import schema

from ..auth import bearer
from .wire import APP, ROOT, Served, fingerprint

SDL = schema.as_str()
JSON_VALUES = st.one_of(st.integers(-1000, 1000).map(nodes.Int),
                        st.text(max_size=12).map(nodes.String),
                        st.booleans().map(nodes.Boolean))
LEAKS = ("Traceback", 'File "', "sqlalchemy", "sqlite3", "asyncpg", "SELECT ", "INSERT ",
         str(ROOT))
EXAMPLES = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("fuzz")
    store = f"sqlite+aiosqlite:///{folder}/s.sqlite"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    cli("migrate", "--url", store)
    policies = folder / "p.json"
    policies.write_text(json.dumps([{"subject": "group:readers", "actions": ["read"]}]))
    cli("policy", "--store", store, "set", str(policies))
    reader = cli("token", "--store", store, "create", "reader", "--group", "readers")
    served = Served("serve", "--no-workers", "--store", store, "--port", "0", "--app", APP)
    told = served.ready()
    with httpx.Client(timeout=30) as client:
        # a few works to read, made before the fuzzing starts
        for saga in ("gate", "slow"):
            made = client.post(told["url"], headers=bearer(told["token"]), json={
                "query": 'mutation($s: String!) { createWork(saga: $s, input: 1, paused: '
                         'true) { __typename } }', "variables": {"s": saga}})
            assert made.json()["data"]["createWork"]["__typename"] == "WorkCreated"
        try:
            yield {"url": told["url"], "admin": told["token"], "reader": reader,
                   "path": folder / "s.sqlite", "client": client}
        finally:
            code, _, err = served.stop()
            assert code == 0, err
            assert "Traceback" not in err or "the server failed on this request" in err


def _send(server: dict[str, Any], token: str, document: str) -> httpx.Response:
    answer: httpx.Response = server["client"].post(
        server["url"], json={"query": document}, headers=bearer(token))
    assert answer.status_code != 500 and answer.status_code < 600, answer.text
    for leak in LEAKS:
        assert leak not in answer.text, (document, answer.text)
    body = answer.json()
    assert "data" in body or "errors" in body, answer.text
    for error in body.get("errors") or []:
        assert "message" in error and "traceback" not in json.dumps(error).lower()
    return answer


_FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])


@_FUZZ
@given(document=from_schema(SDL, custom_scalars={"JSON": JSON_VALUES}, allow_x00=False))
def test_a_reader_changes_nothing_and_nothing_leaks(server: dict[str, Any],
                                                    document: str) -> None:
    before = fingerprint(server["path"])
    answer = _send(server, server["reader"], document)
    assert fingerprint(server["path"]) == before, (document, answer.text)
    if document.lstrip().startswith("mutation"):  # refused whole: no field answered
        body = answer.json()
        assert body.get("errors"), (document, answer.text)
        assert not any(v is not None for v in (body.get("data") or {}).values()), answer.text


@_FUZZ
@given(document=from_schema(SDL, custom_scalars={"JSON": JSON_VALUES}, allow_x00=False,
                            mode=Mode.NEGATIVE))
def test_an_invalid_operation_is_refused_and_changes_nothing(server: dict[str, Any],
                                                             document: str) -> None:
    before = fingerprint(server["path"])
    answer = _send(server, server["admin"], document)
    body = answer.json()
    assert body.get("errors"), (document, answer.text)
    assert not body.get("data"), (document, answer.text)
    assert fingerprint(server["path"]) == before, (document, answer.text)
