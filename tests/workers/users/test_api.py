"""The pack's fields through a real ``stepsaga serve --app workers.actions.users:app``,
its worker node mailing the loopback SMTP server this test reads: signing up and
confirming before signing in, logging in (the session in an HttpOnly cookie, the
CSRF token in the answer), a wrong password, the user's own account and sessions
(and no rights over the engine's API), a password reset signing every session out,
logout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.graphql_api.wire import Served
from tests.workers.messaging.servers import MailServer, ProviderServer

from .conftest import CHEAP, KEY_HEX, TEMPLATES, mailed_token, messaging_section

PASSWORD = "correct horse battery"


def toml(mail: MailServer, sms: ProviderServer) -> str:
    section = messaging_section(mail, sms)
    lines = ["[secrets]", f'key = "{KEY_HEX}"', "[users]",
             *[f"{k} = {v}" for k, v in CHEAP.items()], "login_burst = 4",
             "[messaging]", "attempts = 1", "backoff = 0.01"]
    for name, parts in TEMPLATES.items():
        lines.append(f"[messaging.templates.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in parts.items()]
    for kind in ("senders", "channels"):
        for name, values in section[kind].items():
            lines.append(f"[messaging.{kind}.{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def served(tmp_path: Path, mail_server: MailServer,
           providers: ProviderServer) -> Iterator[dict[str, Any]]:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    config = tmp_path / "stepsaga.toml"
    config.write_text(toml(mail_server, providers))
    server = Served("serve", "--store", store, "--port", "0", "--config", str(config),
                    "--app", "workers.actions.users:app")
    try:
        ready = server.ready()
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def ask(client: httpx.Client, url: str, query: str, csrf: str | None = None,
        **variables: Any) -> dict[str, Any]:
    answer = client.post(url, json={"query": query, "variables": variables},
                         headers={"X-CSRF-Token": csrf} if csrf else {}, timeout=30)
    found: dict[str, Any] = answer.json()
    found["status"] = answer.status_code
    return found


def get(client: httpx.Client, url: str, **params: str) -> httpx.Response:
    return client.get(url, params=params, timeout=30)  # the server is another process


async def signed_out(client: httpx.Client, url: str, csrf: str) -> None:
    """Wait (5 s at most: the server remembers a credential for half a second) until
    the client's session is refused."""
    for _ in range(50):
        if ask(client, url, "{ me { email } }", csrf)["status"] == 401:
            return
        await anyio.sleep(0.1)
    raise AssertionError("the session is still taken after 5 s")


SIGN_UP = ("mutation($e: String!, $p: String!) { signUp(email: $e, password: $p) { "
           "__typename ... on SignedUp { workId email } ... on InvalidInput { message field }"
           " } }")
CONFIRM = ("mutation($t: String!) { confirmSignUp(token: $t) { __typename "
           "... on SignUpConfirmed { email state } ... on InvalidInput { message field } } }")
LOGIN = ("mutation($e: String!, $p: String!) { login(email: $e, password: $p) { __typename "
         "... on SignedIn { email csrfToken } ... on LoginRefused { message reason } } }")


async def test_sign_up_login_reset_and_logout_through_the_api(
        served: dict[str, Any], mail_server: MailServer) -> None:
    url = served["url"]
    with httpx.Client() as anonymous, httpx.Client() as browser, \
            httpx.Client() as second:
        made = ask(anonymous, url, SIGN_UP, e="ada@example.com", p=PASSWORD)
        assert made["data"]["signUp"]["__typename"] == "SignedUp", made
        bad = ask(anonymous, url, SIGN_UP, e="nope", p=PASSWORD)["data"]["signUp"]
        assert bad["__typename"] == "InvalidInput" and bad["field"] == "email"
        token = await mailed_token(mail_server, "ada@example.com")
        confirmed = ask(anonymous, url, CONFIRM, t=token)["data"]["confirmSignUp"]
        assert confirmed == {"__typename": "SignUpConfirmed", "email": "ada@example.com",
                             "state": "active"}
        reused = ask(anonymous, url, CONFIRM, t=token)["data"]["confirmSignUp"]
        assert reused["__typename"] == "InvalidInput" and reused["field"] == "token"
        # the mail's link confirms too (a public route)
        ask(anonymous, url, SIGN_UP, e="bob@example.com", p=PASSWORD)
        link = await mailed_token(mail_server, "bob@example.com")
        base = url.rsplit("/graphql", 1)[0]
        opened = get(anonymous, f"{base}/users/confirm", token=link)
        assert opened.status_code == 200 and opened.json() == {"confirmed": True}
        again = get(anonymous, f"{base}/users/confirm", token=link)
        assert again.status_code == 400 and again.json()["reason"] == "used"

        wrong = ask(anonymous, url, LOGIN, e="ada@example.com", p="not the password")
        unknown = ask(anonymous, url, LOGIN, e="carol@example.com", p=PASSWORD)
        assert wrong["data"]["login"] == unknown["data"]["login"] == {
            "__typename": "LoginRefused", "message": "the email or the password is wrong",
            "reason": "refused"}
        assert "stepsaga_session" not in anonymous.cookies

        signed = ask(browser, url, LOGIN, e="ada@example.com", p=PASSWORD)["data"]["login"]
        assert signed["__typename"] == "SignedIn"
        csrf = signed["csrfToken"]
        assert browser.cookies.get("stepsaga_session", "").startswith("ss1.")
        me = ask(browser, url, "{ me { email state phoneConfirmed } mySessions { current } }",
                 csrf)
        assert me["data"] == {"me": {"email": "ada@example.com", "state": "active",
                                     "phoneConfirmed": False},
                              "mySessions": [{"current": True}]}
        # a new user has no rights over the engine's API
        works = ask(browser, url, "{ allWorks(first: 1) { edges { node { id } } } }", csrf)
        assert works["errors"][0]["extensions"]["code"] == "forbidden", works
        # a mutation with the cookie needs its CSRF token
        refused = ask(browser, url, "mutation { logout { message } }")
        assert refused["status"] == 403
        other = ask(second, url, LOGIN, e="ada@example.com", p=PASSWORD)["data"]["login"]
        sessions = ask(browser, url, "{ mySessions { id current } }", csrf)["data"][
            "mySessions"]
        assert len(sessions) == 2

        # a reset by the mailed token signs every session out
        asked = ask(anonymous, url, 'mutation { requestPasswordReset(email: '
                    '"ada@example.com") { ... on Done { message } } }')
        nobody = ask(anonymous, url, 'mutation { requestPasswordReset(email: '
                     '"nobody@example.com") { ... on Done { message } } }')
        assert asked["data"] == nobody["data"]  # the same answer either way
        reset = await mailed_token(mail_server, "ada@example.com", count=2)
        done = ask(anonymous, url, "mutation($t: String!, $p: String!) { resetPassword("
                   "token: $t, password: $p) { __typename ... on Done { message } "
                   "... on InvalidInput { message field } } }", t=reset,
                   p="a brand new password")["data"]["resetPassword"]
        assert done["__typename"] == "Done", done
        for client, token_of in ((browser, csrf), (second, other["csrfToken"])):
            await signed_out(client, url, token_of)
        assert other["__typename"] == "SignedIn"

        assert "stepsaga_session" not in browser.cookies  # cleared with the refusal
        again = ask(browser, url, LOGIN, e="ada@example.com",
                    p="a brand new password")["data"]["login"]
        assert again["__typename"] == "SignedIn"
        session = browser.cookies["stepsaga_session"]
        out = ask(browser, url, "mutation { logout { message } }", again["csrfToken"])
        assert out["data"]["logout"]["message"] == "signed out"
        assert "stepsaga_session" not in browser.cookies  # the cookie is cleared ...
        second.cookies.clear()
        second.cookies.set("stepsaga_session", session)
        await signed_out(second, url, again["csrfToken"])  # ... and the session revoked


DONE = "__typename ... on Done { message } ... on InvalidInput { message field } " \
       "... on NotFound { message field }"


async def test_phone_confirmation_and_sessions_through_the_api(
        served: dict[str, Any], mail_server: MailServer, providers: ProviderServer) -> None:
    from .conftest import texted_code

    url = served["url"]
    with httpx.Client() as anonymous, httpx.Client() as browser, \
            httpx.Client() as second:
        ask(anonymous, url, SIGN_UP, e="ada@example.com", p=PASSWORD)
        ask(anonymous, url, CONFIRM, t=await mailed_token(mail_server, "ada@example.com"))
        csrf = ask(browser, url, LOGIN, e="ada@example.com",
                   p=PASSWORD)["data"]["login"]["csrfToken"]
        # a user who has not signed in cannot ask for a code
        anon = ask(anonymous, url, 'mutation { requestPhoneCode(phone: "+441632960961") '
                   '{ __typename } }')
        assert anon["errors"][0]["extensions"]["code"] == "unauthenticated"
        bad = ask(browser, url, 'mutation { requestPhoneCode(phone: "12") { ' + DONE + " } }",
                  csrf)["data"]["requestPhoneCode"]
        assert bad["__typename"] == "InvalidInput" and bad["field"] == "phone"
        sent = ask(browser, url, 'mutation { requestPhoneCode(phone: "+441632960961") { '
                   + DONE + " } }", csrf)["data"]["requestPhoneCode"]
        assert sent["__typename"] == "Done", sent
        code = await texted_code(providers, "+441632960961")
        wrong = ask(browser, url, 'mutation { confirmPhone(code: "000000x") { ' + DONE
                    + " } }", csrf)["data"]["confirmPhone"]
        assert wrong["__typename"] == "InvalidInput" and wrong["field"] == "code"
        confirmed = ask(browser, url, "mutation($c: String!) { confirmPhone(code: $c) { "
                        + DONE + " } }", csrf, c=code)["data"]["confirmPhone"]
        assert confirmed["__typename"] == "Done", confirmed
        me = ask(browser, url, "{ me { phone phoneConfirmed } }", csrf)["data"]["me"]
        assert me == {"phone": "+441632960961", "phoneConfirmed": True}

        # sessions listed and one revoked; another's id is not found
        other = ask(second, url, LOGIN, e="ada@example.com", p=PASSWORD)["data"]["login"]
        listed = ask(browser, url, "{ mySessions { id current } }", csrf)["data"]["mySessions"]
        theirs = [s["id"] for s in listed if not s["current"]]
        assert len(listed) == 2 and len(theirs) == 1
        revoked = ask(browser, url, "mutation($i: ID!) { revokeSession(id: $i) { " + DONE
                      + " } }", csrf, i=theirs[0])["data"]["revokeSession"]
        assert revoked["__typename"] == "Done"
        await signed_out(second, url, other["csrfToken"])
        missing = ask(browser, url, "mutation($i: ID!) { revokeSession(id: $i) { " + DONE
                      + " } }", csrf, i=theirs[0])["data"]["revokeSession"]
        assert missing["__typename"] == "NotFound" and missing["field"] == "id"

        # a reset by SMS, now that the phone is confirmed
        ask(anonymous, url, 'mutation { requestPasswordReset(email: "ada@example.com", '
            'via: "sms") { __typename } }')
        sms_code = await texted_code(providers, "+441632960961", count=2)
        reset = ask(anonymous, url, "mutation($c: String!) { resetPassword(email: "
                    '"ada@example.com", code: $c, password: "a password by sms") { '
                    + DONE + " } }", c=sms_code)["data"]["resetPassword"]
        assert reset["__typename"] == "Done", reset
        await signed_out(browser, url, csrf)
        relogged = ask(second, url, LOGIN, e="ada@example.com", p="a password by sms")
        assert relogged["data"]["login"]["__typename"] == "SignedIn"
