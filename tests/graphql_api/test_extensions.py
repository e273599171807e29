"""A pack's part of the API on a real ``stepsaga serve`` (two apps loaded as one with
``--app a,b``): its fields join the schema under the policies, a field that runs a saga
answers with the work's output, an anonymous client reaches the pack's anonymous
fields and nothing else, and its routes sit behind sign-in unless declared public."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Saga, Stage
from graphql_api.cli import load_app
from graphql_api.extensions import ApiPart
from tests.auth import admin_token, bearer
from workers.node import WorkerApp

from .part_app import PartQuery, shout
from .wire import ROOT, Served

APPS = "tests.graphql_api.part_app:app,tests.graphql_api.app:sagas"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    # a request over HTTP may take 2 s here (30 by default)
    server = Served("serve", "--store", store, "--port", "0", "--app", APPS,
                    env={"STEPSAGA_SERVE_QUERY_TIMEOUT": "2"})
    try:
        ready = server.ready()
        ready["origin"] = ready["url"].removesuffix("/graphql")
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def post(url: str, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    answer = httpx.post(url, json={"query": query, "variables": variables},
                        headers=bearer(token) if token else {}, timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def codes(answer: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code", e["message"]) for e in answer["errors"]]


def test_a_packs_fields_and_routes_are_served_under_the_policies(
        served: dict[str, Any], tmp_path: Path) -> None:
    url, origin, admin = served["url"], served["origin"], served["token"]
    # the pack's fields beside the core's; its saga runs and answers
    sagas = post(url, "{ allSagas { name } greeting(name: \"ada\") }", admin)["data"]
    assert {"parts.echo", "slow", "gate"} <= {s["name"] for s in sagas["allSagas"]}
    assert sagas["greeting"] == "hello ada"
    echoed = post(url, "mutation($t: String!) { echo(text: $t) { status output } }",
                  admin, t="hi")["data"]["echo"]
    assert echoed == {"status": "completed", "output": "HI"}
    failed = post(url, "mutation { echo(text: \"fail\") { status output } }", admin)
    assert failed["data"]["echo"]["status"] == "failed"
    # a reader may ask the pack's query but not run its mutation (it needs write)
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps([{"subject": "group:readers", "actions": ["read"]}]))
    assert cli("policy", "--store", served["store"], "set", str(policy)).returncode == 0
    reader = admin_token(served["store"], "reader").strip()
    made = cli("token", "--store", served["store"], "create", "viewer", "--group",
               "readers")
    assert made.returncode == 0, made.stderr
    viewer = made.stdout.strip()
    assert reader != viewer
    assert post(url, "{ greeting(name: \"x\") }", viewer)["data"]["greeting"] == "hello x"
    refused = post(url, "mutation { echo(text: \"no\") { status } }", viewer)
    assert codes(refused) == ["forbidden"] and refused["data"] is None
    works = post(url, "{ allWorks(saga: \"parts.echo\") { totalCount } }", admin)
    assert works["data"]["allWorks"]["totalCount"] == 2  # hi and fail: nothing more
    # an anonymous client: the anonymous field only
    assert post(url, "mutation { ping }")["data"] == {"ping": "pong"}
    for query in ("{ allSagas { name } }", "{ greeting(name: \"x\") }",
                  "mutation { ping echo(text: \"x\") { status } }"):
        anonymous = post(url, query)
        assert codes(anonymous) == ["unauthenticated"] and anonymous["data"] is None, query
    got = httpx.get(f"{origin}/graphql", params={"query": "{ allSagas { name } }"})
    assert codes(got.json()) == ["unauthenticated"]
    # with a session cookie but no CSRF token, /graphql is not anonymous: refused
    cookie = httpx.post(url, json={"query": "mutation { ping }"},
                        cookies={"stepsaga_session": "ss1.x.y.z"})
    assert cookie.status_code == 401
    # the pack's routes: behind sign-in unless declared public
    assert httpx.get(origin + "/parts/mine").status_code == 401
    assert httpx.get(origin + "/parts/mine", headers=bearer(viewer)).json() == {
        "name": "viewer"}
    assert httpx.get(origin + "/parts/open").json() == {"open": True}
    # a route with no bound on its body takes 3 MB; /graphql refuses as much
    body = b"x" * (3 * 1024 * 1024)
    taken = httpx.post(origin + "/parts/take", content=body, headers=bearer(admin))
    assert taken.json() == {"bytes": len(body)}
    assert httpx.post(url, content=body, headers=bearer(admin)).status_code == 413
    # a request over the server's time bound is cut with a clear error (and others go on)
    cut = httpx.post(url, json={"query": "{ slow(seconds: 10) }"}, headers=bearer(admin),
                     timeout=30)
    assert cut.status_code == 503 and cut.headers["retry-after"] == "1"
    assert codes(cut.json()) == ["timeout"] and "serve.query_timeout" in cut.text
    assert post(url, "{ slow(seconds: 0.1) }", admin)["data"] == {"slow": 0.1}


def test_apps_combine_and_clashes_are_refused_naming_them() -> None:
    app = load_app(APPS)
    assert {"parts.echo", "slow", "gate", "fragile"} == {s.name for s in app.sagas}
    assert [p.name for p in app.api] == ["parts"]
    with pytest.raises(ValueError, match=r"two apps give saga 'parts\.echo'"):
        load_app("tests.graphql_api.part_app:app,tests.graphql_api.part_app:app")
    with pytest.raises(ValueError, match="needs action 'fly'"):
        ApiPart(name="x", actions={"a": "fly"})
    with pytest.raises(ValueError, match="public path '/graphql'"):
        ApiPart(name="x", public=["/graphql"])
    # a pack's field named like the core's, or like another pack's, is refused
    import strawberry

    from graphql_api.extensions import schema_for

    @strawberry.type
    class Clash:
        @strawberry.field
        def all_sagas(self) -> str:
            return ""

    with pytest.raises(ValueError, match="Query field 'all_sagas' is in both Query and Clash"):
        schema_for((ApiPart(name="clash", query=Clash),))
    twice = (ApiPart(name="a", query=PartQuery), ApiPart(name="b", query=PartQuery))
    with pytest.raises(ValueError, match="'greeting' is in both PartQuery and PartQuery"):
        schema_for(twice)
    other = WorkerApp(sagas=[Saga(name="x", stages=[Stage(name="s", transaction=shout)])],
                      rate_limits={}, schedule_prefix="x.")
    combined = WorkerApp.combine([app, other])
    assert combined.schedule_prefix == ("x.",)
