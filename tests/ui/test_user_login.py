"""Signing in on the UI's login page as a user of the users pack, in a real Chromium: a
``stepsaga serve --app workers.actions.users:app`` mailing the loopback SMTP server
this test reads; a person signed up and confirmed through the API, given a policy to
read, signs in with their email and password (a wrong one refused on the page), and
the page goes on to where it was asked from, signed in as that person."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from playwright.sync_api import expect

from tests.workers.messaging.servers import MailServer, ProviderServer
from tests.workers.users.conftest import mailed_token
from tests.workers.users.test_api import CONFIRM, SIGN_UP, toml

from .conftest import TIMEOUT_MS, Server, ask, serving, shot

EMAIL, PASSWORD = "ada@example.com", "correct horse battery"


@pytest.fixture(scope="module")
def mail() -> Iterator[MailServer]:
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def users_server(tmp_path_factory: pytest.TempPathFactory, mail: MailServer
                 ) -> Iterator[Server]:
    sms = ProviderServer().start()
    folder = tmp_path_factory.mktemp("users")
    config = folder / "stepsaga.toml"
    config.write_text(toml(mail, sms))
    try:
        with serving(folder / "s.sqlite", app="workers.actions.users:app",
                     config=config) as served:
            yield served
    finally:
        sms.stop()


def graphql(url: str, query: str, **variables: Any) -> dict[str, Any]:
    with httpx.Client(timeout=30) as anonymous:
        answer: dict[str, Any] = anonymous.post(url, json={
            "query": query, "variables": variables}).json()
    assert "errors" not in answer, answer
    return answer["data"]


def test_a_user_signs_in_with_email_and_password(browser: Any, users_server: Server,
                                                 mail: MailServer, tmp_path: Path) -> None:
    server = users_server
    assert httpx.get(f"{server.origin}/auth/ways", timeout=30).json() == {
        "ways": ["token", "password"]}  # no [users.oidc] in its config
    made = graphql(server.url, SIGN_UP, e=EMAIL, p=PASSWORD)["signUp"]
    assert made["__typename"] == "SignedUp", made
    with ThreadPoolExecutor(1) as aside:  # playwright's loop runs in this thread
        token = aside.submit(anyio.run, mailed_token, mail, EMAIL).result()
    assert graphql(server.url, CONFIRM, t=token)["confirmSignUp"]["state"] == "active"
    policies = [{"subject": f"principal:{EMAIL}", "actions": ["read"], "sagas": ["*"]}]
    done = ask(server, 'mutation($p: JSON!) { setPolicies(policies: $p, reason: "ui test")'
                       ' { __typename ... on InvalidInput { message } } }', p=policies)
    assert done["setPolicies"]["__typename"] == "PolicySet", json.dumps(done)

    context = browser.new_context()  # nobody signed in
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.goto(f"{server.origin}/?catalog")
        expect(page).to_have_url(f"{server.origin}/login?next=/%3Fcatalog", timeout=TIMEOUT_MS)
        # the server takes passwords: the page asks for them (and still for a token)
        expect(page.get_by_label("email")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_label("token")).to_be_visible()
        page.get_by_label("email").fill(EMAIL)
        page.get_by_label("password").fill("not the password")
        page.get_by_role("button", name="sign in with your email").click()
        expect(page.locator(".problem")).to_contain_text("the email or the password is wrong",
                                                         timeout=TIMEOUT_MS)
        assert not [c for c in context.cookies() if c["name"] == "stepsaga_session"]
        shot(page, "login-password-refused")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="sign in with your email").click()
        expect(page).to_have_url(f"{server.origin}/?catalog", timeout=TIMEOUT_MS)
        who = page.evaluate("() => fetch('/auth/whoami').then((r) => r.json())")
        assert who == {"signedIn": True, "name": EMAIL}
        session = [c for c in context.cookies() if c["name"] == "stepsaga_session"]
        assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] in (
            "Lax", "Strict")
        # the catalog the policy lets this person read is on the page
        expect(page.locator('section[data-saga="users.sign_up"]')).to_be_visible(
            timeout=TIMEOUT_MS)
        assert errors == []
    finally:
        context.close()


def test_the_page_offers_only_what_the_server_takes(browser: Any, server: Server) -> None:
    ways = httpx.get(f"{server.origin}/auth/ways", timeout=30).json()
    assert ways == {"ways": ["token"]}  # no users pack on the module's server
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.origin}/login")
        expect(page.get_by_label("token")).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_load_state("networkidle")  # its ask for /auth/ways answered
        expect(page.get_by_label("email")).to_have_count(0)
    finally:
        context.close()
