"""Login with an OpenID Connect provider through a real ``stepsaga serve`` against a
small real provider on loopback (discovery, authorize, token with PKCE, JWKS, an
id_token signed RS256 with a key made in the test): the person signed in with a
session and made a user on the first login; a forged id_token, a state of another
login and an unverified email refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graphql_api.wire import Served
from tests.workers.messaging.servers import MailServer, ProviderServer, free_port

from .oidc_provider import OidcProvider
from .test_api import ask, toml


@pytest.fixture
def oidc() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def served(tmp_path: Path, mail_server: MailServer, providers: ProviderServer,
           oidc: OidcProvider) -> Iterator[dict[str, Any]]:
    port = free_port()
    config = tmp_path / "stepsaga.toml"
    config.write_text(toml(mail_server, providers).replace(
        "[users]\n", f'[users]\nlink_base = "http://127.0.0.1:{port}"\n') +
        f'[users.oidc]\nissuer = "{oidc.url}"\nclient_id = "{oidc.client_id}"\n'
        f'client_secret = "{oidc.client_secret}"\n')
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    server = Served("serve", "--store", store, "--port", str(port), "--config", str(config),
                    "--app", "workers.actions.users:app")
    try:
        ready = server.ready()
        ready["base"] = f"http://127.0.0.1:{port}"
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def login_round(client: httpx.Client, base: str, *, state: str | None = None
                ) -> httpx.Response:
    """Start at the server, through the provider's authorize, back to the callback."""
    started = client.get(f"{base}/auth/oidc/start?next=/ui/", follow_redirects=False)
    assert started.status_code == 303, started.text
    authorized = client.get(started.headers["location"], follow_redirects=False)
    assert authorized.status_code == 302, authorized.text
    back = authorized.headers["location"]
    assert back.startswith(f"{base}/auth/oidc/callback?")
    if state is not None:
        back = back.split("&state=")[0] + f"&state={state}"
    return client.get(back, follow_redirects=False)


def test_login_with_an_openid_connect_provider(served: dict[str, Any],
                                               oidc: OidcProvider) -> None:
    base, url = served["base"], served["url"]
    with httpx.Client(timeout=30) as browser:
        done = login_round(browser, base)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/ui/"
        session = browser.cookies.get("stepsaga_session", "")
        csrf = browser.cookies.get("stepsaga_csrf", "")
        assert session.startswith("ss1.") and csrf
        assert any(c.startswith("stepsaga_session=") and "httponly" in c.lower()
                   and "samesite=strict" in c.lower()
                   for c in done.headers.get_list("set-cookie"))
        me = ask(browser, url, "{ me { email state } mySessions { label current } }", csrf)
        assert "errors" not in me, me
        assert me["data"] == {"me": {"email": "grace@example.com", "state": "active"},
                              "mySessions": [{"label": "oidc", "current": True}]}
        # the same person again: the same user, a second session
        browser.cookies.clear()
        again = login_round(browser, base)
        assert again.status_code == 303
        csrf = browser.cookies.get("stepsaga_csrf", "")
        sessions = ask(browser, url, "{ mySessions { label } }", csrf)["data"]["mySessions"]
        assert [s["label"] for s in sessions] == ["oidc", "oidc"]

    with httpx.Client(timeout=30) as other:  # a state not of this login
        refused = login_round(other, base, state="forged")
        assert refused.status_code == 400 and "state" in refused.text
        assert "stepsaga_session" not in other.cookies
    oidc.forge = True  # signed with a key not in the provider's JWKS
    with httpx.Client(timeout=30) as other:
        refused = login_round(other, base)
        assert refused.status_code == 401 and "id_token is refused" in refused.text
        assert "stepsaga_session" not in other.cookies
    oidc.forge, oidc.email_verified, oidc.email = False, False, "eve@example.com"
    with httpx.Client(timeout=30) as other:
        refused = login_round(other, base)
        assert refused.status_code == 401 and "not verified" in refused.text
    with httpx.Client(timeout=30) as other:  # no login under way: no cookie of one
        alone = other.get(f"{base}/auth/oidc/callback?code=x&state=y")
        assert alone.status_code == 400
