"""Rate limits and quotas of API clients, through a real ``stepsaga serve`` on a SQLite
file with a config file: a client over its rule's rate is refused with 429 and the
RateLimit and Retry-After headers, others are not; the config file changed on disk is
in force within the reload period, without a restart and without a refused request;
a bad change keeps the rules before. A quota of works is spent, refused with
QuotaExceeded, and refunded when an operator cancels a work; a work that failed on its
input keeps its charge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.limits import LimitsSource, parse

from ..auth import bearer
from .wire import APP, ROOT, Served

CONFIG = """
[limits]
reload = 0.2
[[limits.rule]]
name = "api"
clients = ["group:limited"]
routes = ["/graphql"]
rate = {rate}
burst = {burst}

[[limits.quota]]
name = "works"
clients = ["group:limited"]
sagas = ["gate", "fragile"]
works = 2
period = 3600
"""
CREATE = """mutation($saga: String!, $input: JSON) { createWork(saga: $saga, input: $input) {
  __typename ... on WorkCreated { work { workId } }
  ... on QuotaExceeded { message retryAfter } } }"""
STATUS = "query($id: String!) { work(workId: $id) { status } }"
POLICIES = """[{"subject": "group:limited", "actions": ["read", "write"], "sagas": ["*"]}]"""


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def served(tmp_path: Path) -> Any:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    config = tmp_path / "stepsaga.toml"
    config.write_text(CONFIG.format(rate=1, burst=3))
    _cli("migrate", "--url", store)
    policies = tmp_path / "p.json"
    policies.write_text(POLICIES)
    _cli("policy", "--store", store, "set", str(policies))
    limited = _cli("token", "--store", store, "create", "client", "--group", "limited")
    server = Served("serve", "--store", store, "--port", "0", "--app", APP, "--config",
                    str(config), "--worker", "main=4")
    told = server.ready()
    try:
        yield {"url": told["url"], "admin": told["token"], "limited": limited,
               "config": config, "server": server}
    finally:
        server.stop()


def _ask(client: httpx.Client, url: str, token: str, query: str, **variables: Any
         ) -> httpx.Response:
    return client.post(url, json={"query": query, "variables": variables},
                       headers=bearer(token))


def test_a_client_over_its_rate_is_refused_and_a_reload_takes_effect(
        served: dict[str, Any]) -> None:
    url, limited = served["url"], served["limited"]
    with httpx.Client(timeout=30) as client:
        answers = [_ask(client, url, limited, "{ allSagas { name } }") for _ in range(4)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        first = answers[0].headers
        assert first["ratelimit-policy"] == '"api";q=3;w=3'
        assert first["ratelimit"].startswith('"api";r=2;')
        refused = answers[3]
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit"].startswith('"api";r=0;')
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "rate_limited"
        assert "'client' is over 1 requests a second (rule 'api')" in error["message"]
        # the administrator is not in the group: no rule counts it
        for _ in range(5):
            free = _ask(client, url, served["admin"], "{ allSagas { name } }")
            assert free.status_code == 200 and "ratelimit" not in free.headers
        # a bad change is logged and the rules before stay: still limited
        served["config"].write_text(CONFIG.format(rate="'fast'", burst=3))
        time.sleep(0.5)
        assert _ask(client, url, limited, "{ allSagas { name } }").status_code == 429
        # the operator raises the limit: in force within the reload period, no restart
        served["config"].write_text(CONFIG.format(rate=1000, burst=1000))
        deadline = time.monotonic() + 5
        while _ask(client, url, limited, "{ allSagas { name } }").status_code == 429:
            assert time.monotonic() < deadline, "the new limit was not loaded"
            time.sleep(0.05)
        statuses = [_ask(client, url, limited, "{ allSagas { name } }").status_code
                    for _ in range(50)]
        assert statuses == [200] * 50
    _, _, err = served["server"].stop()
    assert "limits.rule[0].rate: expected a number > 0, got 'fast'" in err


def test_a_quota_is_spent_and_refunded_when_an_operator_cancels(
        served: dict[str, Any]) -> None:
    url, limited, admin = served["url"], served["limited"], served["admin"]
    served["config"].write_text(CONFIG.format(rate=1000, burst=1000))
    time.sleep(0.5)
    with httpx.Client(timeout=30) as client:
        def create(saga: str) -> dict[str, Any]:
            found: dict[str, Any] = _ask(client, url, limited, CREATE, saga=saga,
                                         input=1).json()["data"]["createWork"]
            return found

        failing = create("fragile")  # fails on its input: refused by its stage
        waiting = create("gate")  # waits for a signal
        assert failing["__typename"] == waiting["__typename"] == "WorkCreated"
        spent = _ask(client, url, limited, CREATE, saga="gate", input=1)
        answer = spent.json()["data"]["createWork"]
        assert answer["__typename"] == "QuotaExceeded", answer
        assert "quota 'works' of 'client' is spent: 2 works of saga 'gate'" in answer["message"]
        assert answer["retryAfter"] >= 1
        assert spent.headers["retry-after"] == str(int(answer["retryAfter"]))
        assert spent.headers["ratelimit"].startswith('"works";r=0;')
        # a saga no quota counts is not charged
        other = _ask(client, url, limited, CREATE, saga="slow", input=1).json()
        assert other["data"]["createWork"]["__typename"] == "WorkCreated"

        def status(work: dict[str, Any]) -> str:
            found: str = _ask(client, url, admin, STATUS, id=work["work"]["workId"]).json()[
                "data"]["work"]["status"]
            return found

        deadline = time.monotonic() + 20
        while status(failing) not in ("failed", "compensation_failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancel = _ask(client, url, admin, 'mutation($id: String!) { cancelWork(workId: $id, '
                      'reason: "operator") { __typename } }', id=waiting["work"]["workId"])
        assert cancel.json()["data"]["cancelWork"]["__typename"] == "CommandTaken"
        # refunded within a couple of seconds: one more work, and only one
        deadline = time.monotonic() + 10
        while create("gate")["__typename"] != "WorkCreated":
            assert time.monotonic() < deadline, "the cancelled work was not refunded"
            time.sleep(0.2)
        time.sleep(1.5)  # the failed work's charge is settled too, and kept
        assert create("gate")["__typename"] == "QuotaExceeded"


def test_bad_limits_are_refused_naming_the_key(tmp_path: Path) -> None:
    for section, message in [
        ({"rule": [{"name": "a", "rate": 0}]}, "limits.rule[0].rate: expected a number > 0"),
        ({"rule": [{"rate": 1}]}, "limits.rule[0].name: letters, digits"),
        ({"rule": [{"name": "a", "rate": 1, "route": ["/"]}]},
         "limits.rule[0]: no setting 'route'"),
        ({"rule": [{"name": "a", "rate": 1}, {"name": "a", "rate": 2}]},
         "limits.rule[1].name: 'a' is the name of another rule or quota"),
        ({"quota": [{"name": "q", "works": 1.5, "period": 60}]},
         "limits.quota[0].works: expected a whole number > 0"),
        ({"quota": [{"name": "q", "works": 3}]}, "limits.quota[0].period: missing"),
        ({"rule": {"name": "a"}}, "limits.rule: a list of tables"),
    ]:
        with pytest.raises(ValueError) as refused:
            parse(section)
        assert message in str(refused.value)
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ValueError, match=r"nowhere\.toml"):
        LimitsSource({"file": str(missing)})
    # rules in a file of their own, read again when it changes
    rules = tmp_path / "limits.toml"
    rules.write_text('[[rule]]\nname = "a"\nrate = 5\n')
    source = LimitsSource({"file": str(rules), "reload": 0.05})
    assert [r.limit.rate for r in source.current().rules] == [5.0]
    time.sleep(0.06)
    rules.write_text('[[rule]]\nname = "a"\nrate = 7\n[[quota]]\nname = "q"\nworks = 1\n'
                     'period = 10\n')
    os.utime(rules, (time.time() + 1, time.time() + 1))
    current = source.current()
    assert [r.limit.rate for r in current.rules] == [7.0] and len(current.quotas) == 1
