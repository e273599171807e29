"""Auth on a real ``stepsaga serve``: anonymous requests reach only the health routes and
signing in; bearer tokens, sessions with their CSRF token, one-time sign-in links and the
WebSocket's Origin; revoked, malformed and foreign credentials refused saying why; auth
off only on loopback, and loudly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.auth import admin_token, bearer

from .wire import ROOT, Served

QUERY = {"query": "{ allSagas { name } }"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    server = Served("serve", "--store", f"sqlite+aiosqlite:///{tmp_path}/s.sqlite",
                    "--port", "0")
    try:
        ready = server.ready()
        ready["origin"] = ready["url"].removesuffix("/graphql")
        ready["store"] = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_anonymous_requests_reach_only_health_and_signing_in(served: dict[str, Any]) -> None:
    origin = served["origin"]
    refused = httpx.post(served["url"], json=QUERY)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["errors"][0]["extensions"]["code"] == "unauthenticated"
    page = httpx.get(origin + "/?work=w1", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/%3Fwork%3Dw1"
    assert httpx.get(origin + "/metrics").status_code == 401
    assert httpx.get(origin + "/healthz").json() == {"ok": True}
    assert httpx.get(origin + "/login").status_code == 200  # the sign-in page
    assert httpx.get(origin + "/auth/whoami").json() == {"signedIn": False, "name": None}
    # a fresh store's first start made its administrator a one-time link
    assert served["login_url"].startswith(origin + "/login?once=ss1.")


def test_tokens_are_taken_and_refused_saying_why(served: dict[str, Any]) -> None:
    url, token = served["url"], served["token"]
    ok = httpx.post(url, json=QUERY, headers=bearer(token))
    assert ok.status_code == 200 and ok.json()["data"]["allSagas"] == [{"name": "demo"}]
    _, deployment, cid, secret = token.split(".")
    for header, message in (
            (f"Basic {token}", "Authorization must be 'Bearer <token>'"),
            ("Bearer nonsense", "not a stepsaga credential"),
            (f"Bearer ss1.0000000000000000.{cid}.{secret}", "issued by another deployment"),
            (f"Bearer ss1.{deployment}.{cid}.{secret}x", "no such credential")):
        refused = httpx.post(url, json=QUERY, headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert message in refused.json()["errors"][0]["message"], header
    # revoked with the command: refused by the server within a second
    listed = [json.loads(line) for line in cli("token", "--store", served["store"], "list",
                                               "tests").stdout.splitlines()]
    assert [c["credential_id"] for c in listed] == [cid]
    assert cli("token", "--store", served["store"], "revoke", cid).returncode == 0
    revoked = time.monotonic()
    while httpx.post(url, json=QUERY, headers=bearer(token)).status_code == 200:
        assert time.monotonic() - revoked < 1.0, "a revoked token was taken after a second"
        time.sleep(0.05)
    again = httpx.post(url, json=QUERY, headers=bearer(token))
    assert "this credential was revoked" in again.json()["errors"][0]["message"]
    gone = cli("token", "--store", served["store"], "revoke", cid)
    assert gone.returncode == 1 and f"no live credential {cid!r}" in gone.stderr


def test_a_session_needs_its_csrf_token_and_its_own_origin(served: dict[str, Any]) -> None:
    origin, url = served["origin"], served["url"]
    with httpx.Client(base_url=origin) as browser:
        bad = browser.post("/auth/login", json={"token": "ss1.x.y.z"},
                           headers={"Accept": "application/json"})
        assert bad.status_code == 401 and bad.json()["errors"][0]["extensions"]["code"] \
            == "other_deployment"
        signed = browser.post("/auth/login", json={"token": served["token"], "next": "//evil"},
                              headers={"Accept": "application/json"})
        assert signed.json() == {"ok": True, "next": "/", "name": "tests"}  # never elsewhere
        cookie = signed.headers.get_list("set-cookie")
        assert any("stepsaga_session=" in c and "HttpOnly" in c and "SameSite=strict" in c
                   for c in cookie)
        csrf = browser.cookies["stepsaga_csrf"]
        assert browser.get("/auth/whoami").json() == {"signedIn": True, "name": "tests"}
        refused = browser.post("/graphql", json=QUERY)  # the cookie alone: no
        assert refused.status_code == 403
        assert "CSRF token" in refused.json()["errors"][0]["message"]
        assert browser.post("/graphql", json=QUERY, headers={"X-CSRF-Token": "wrong"}
                            ).status_code == 403
        taken = browser.post("/graphql", json=QUERY, headers={"X-CSRF-Token": csrf})
        assert taken.json()["data"]["allSagas"] == [{"name": "demo"}]
        session = browser.cookies["stepsaga_session"]
        assert browser.post("/auth/logout", headers={"X-CSRF-Token": csrf}).json() == {
            "ok": True}
    # the session is over: refused even with its CSRF token (within a second: a node
    # remembers a credential it checked for half of one)
    out = time.monotonic()
    while httpx.post(url, json=QUERY, cookies={"stepsaga_session": session},
                     headers={"X-CSRF-Token": csrf}).status_code != 401:
        assert time.monotonic() - out < 1.0, "a session signed out was taken after a second"
        time.sleep(0.05)

    async def handshake(**headers: str) -> str:
        try:
            async with websockets.connect(url.replace("http://", "ws://"),
                                          subprotocols=["graphql-transport-ws"],
                                          additional_headers=headers) as sock:
                await sock.send(json.dumps({"type": "connection_init"}))
                return str(json.loads(await sock.recv())["type"])
        except websockets.InvalidStatus as exc:
            return f"refused {exc.response.status_code}"

    import anyio

    with httpx.Client(base_url=origin) as browser:
        browser.post("/auth/login", json={"token": served["token"]},
                     headers={"Accept": "application/json"})
        cookie = f"stepsaga_session={browser.cookies['stepsaga_session']}"
    assert anyio.run(lambda: handshake(Cookie=cookie, Origin=origin)) == "connection_ack"
    assert anyio.run(lambda: handshake(Cookie=cookie, Origin="http://evil.example")) \
        == "refused 403"
    assert anyio.run(lambda: handshake()) == "refused 403"  # nobody
    assert anyio.run(lambda: handshake(Authorization=f"Bearer {served['token']}")) \
        == "connection_ack"


def test_a_one_time_link_signs_in_once(served: dict[str, Any]) -> None:
    link = served["login_url"]
    with httpx.Client() as browser:
        first = browser.get(link)
        assert first.status_code == 303 and first.headers["location"] == "/"
        assert browser.get(served["origin"] + "/auth/whoami").json() == {
            "signedIn": True, "name": "admin"}
    second = httpx.get(link)
    assert second.status_code == 401 and "used already" in second.text
    # another link for a person, made with the command
    made = cli("token", "--store", served["store"], "link", "admin", "--url",
               served["origin"])
    assert made.returncode == 0 and made.stdout.startswith(served["origin"] + "/login?once=")
    assert httpx.get(made.stdout.strip()).status_code == 303


def test_auth_off_is_for_loopback_only_and_says_so(tmp_path: Path) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    wide = cli("serve", "--store", store, "--no-auth", "--host", "0.0.0.0", "--port", "0")
    assert wide.returncode == 2
    assert "auth may be off on a loopback address only" in wide.stderr
    server = Served("serve", "--store", store, "--port", "0", "--no-auth")
    try:
        ready = server.ready()
        assert ready["auth"] is False and "login_url" not in ready
        assert httpx.post(ready["url"], json=QUERY).json()["data"]["allSagas"] == [
            {"name": "demo"}]
    finally:
        code, _, err = server.stop()
    assert code == 0 and "AUTH IS OFF" in err
    # a token made by the command works once auth is on again (and no admin is made)
    token = admin_token(store)
    server = Served("serve", "--store", store, "--port", "0")
    try:
        ready = server.ready()
        assert "login_url" not in ready  # the store has a principal: no admin made
        assert httpx.post(ready["url"], json=QUERY, headers=bearer(token)).status_code == 200
    finally:
        server.stop()


def test_the_graphql_surface_is_bounded(served: dict[str, Any]) -> None:
    url, headers = served["url"], bearer(served["token"])

    def errors(query: str) -> list[str]:
        answer = httpx.post(url, json={"query": query}, headers=headers)
        assert answer.status_code in (200, 400), answer.text
        return [e["message"] for e in answer.json().get("errors", [])]

    # security headers on every response, the API's and the pages'
    for response in (httpx.post(url, json=QUERY, headers=headers),
                     httpx.get(served["origin"] + "/login")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    # the explorer and introspection are off unless asked for
    page = httpx.get(url, headers={**headers, "Accept": "text/html"})
    assert page.status_code == 404 and "--explorer" in page.text
    assert any("introspection" in m.lower() for m in errors("{ __schema { types { name } } }"))
    # too deep, too many aliases, too large
    deep = "{ allWorks { edges { node { " + "a { " * 12 + "b" + " }" * 12 + " } } } }"
    assert any("exceeds maximum operation depth" in m for m in errors(deep))
    bomb = "{ " + " ".join(f"a{i}: allSagas {{ name }}" for i in range(31)) + " }"
    assert any("aliases found" in m for m in errors(bomb))
    huge = httpx.post(url, headers=headers, content=b'{"query": "' + b" " * (1024 * 1024)
                      + b'{ allSagas { name } }"}')
    assert huge.status_code == 413 and "bytes at most" in huge.text
    # a bad argument still says what is wrong (only what broke here is masked)
    told = errors("{ allWorks(first: -1) { totalCount } }")
    assert told and "first" in told[0] and "the server failed" not in told[0]


def test_a_websocket_is_closed_once_its_token_is_revoked(served: dict[str, Any]) -> None:
    import anyio

    url = served["url"].replace("http://", "ws://")
    token = admin_token(served["store"], "watcher")
    credential_id = token.split(".")[2]

    async def session() -> tuple[int | None, float]:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"],
                                      additional_headers=bearer(token)) as sock:
            await sock.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await sock.recv())["type"] == "connection_ack"
            await sock.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { workEvents { seq } }"}}))
            await anyio.to_thread.run_sync(
                lambda: cli("token", "--store", served["store"], "revoke", credential_id))
            revoked = time.monotonic()
            with anyio.fail_after(10):
                try:
                    while True:
                        await sock.recv()
                except websockets.ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                    return code, time.monotonic() - revoked
        raise AssertionError("unreachable")

    code, after = anyio.run(session)
    assert code == 4401 and after < 1.5, (code, after)


def test_routes_beside_graphql_are_reached_as_the_policies_give(
        served: dict[str, Any], tmp_path: Path) -> None:
    origin, store = served["origin"], served["store"]
    policies = tmp_path / "p.json"
    policies.write_text(json.dumps([
        {"subject": "group:readers", "actions": ["read"]},
        {"subject": "principal:prometheus", "routes": ["/metrics"]}]))
    assert cli("policy", "--store", store, "set", str(policies)).returncode == 0
    reader = cli("token", "--store", store, "create", "reader", "--group", "readers")
    scraper = cli("token", "--store", store, "create", "prometheus")
    nobody = cli("token", "--store", store, "create", "customer")
    tokens = {name: done.stdout.strip() for name, done in
              (("reader", reader), ("prometheus", scraper), ("customer", nobody))}
    time.sleep(0.6)  # the server's policies are read again each half second

    def status(name: str, path: str) -> int:
        return httpx.get(origin + path, headers=bearer(tokens[name])).status_code

    # /metrics: only the principal a policy gives it (and administrators)
    assert status("prometheus", "/metrics") == 200
    assert status("reader", "/metrics") == 403
    refused = httpx.get(origin + "/metrics", headers=bearer(tokens["customer"]))
    assert refused.status_code == 403
    assert refused.json()["errors"][0] == {
        "message": "forbidden: 'customer' may not reach /metrics (no policy gives it that "
                   "route)", "extensions": {"code": "forbidden"}}
    assert httpx.get(origin + "/metrics", headers=bearer(served["token"])).status_code == 200
    # the UI: any principal some policy names; a customer with none is refused
    assert status("reader", "/") == 200 and status("prometheus", "/") == 200
    assert status("customer", "/") == 403
    # /graphql takes them all: its fields check their policies
    for name in tokens:
        answer = httpx.post(served["url"], json=QUERY, headers=bearer(tokens[name]))
        assert answer.status_code == 200
    assert httpx.post(served["url"], json=QUERY, headers=bearer(tokens["reader"])).json()[
        "data"] is not None
