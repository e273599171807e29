"""The ``[users]`` section: every default, the settings checked with errors naming the
key, registered with the server's config so a typo in the file is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphql_api.config import ConfigError, documented, load
from workers.actions.users import UsersConfigError, parse


def test_defaults_and_settings() -> None:
    cfg = parse(None)
    assert (cfg.confirm_timeout, cfg.session_lifetime, cfg.groups, cfg.oidc) == (
        3 * 86400.0, 12 * 3600.0, (), None)
    assert (cfg.hash_time_cost, cfg.hash_memory_cost, cfg.hash_parallelism) == (3, 65536, 4)
    cfg = parse({"link_base": "https://app.example.com/", "groups": ["customers"],
                 "oidc": {"issuer": "https://id.example.com/", "client_id": "app",
                          "client_secret": "s"}})
    assert cfg.link_base == "https://app.example.com"
    assert cfg.oidc is not None and cfg.oidc.issuer == "https://id.example.com"
    assert cfg.redirect_uri == "https://app.example.com/auth/oidc/callback"
    assert cfg.account_limit.burst == 5


@pytest.mark.parametrize(("section", "says"), [
    ({"confirm_timeout": -1}, "users.confirm_timeout: expected a number > 0"),
    ({"confirm_timeout": "soon"}, "users.confirm_timeout: expected a number > 0"),
    ({"login_burst": 1.5}, "users.login_burst: expected a whole number >= 1"),
    ({"email_channel": "no spaces"}, "users.email_channel: expected a name"),
    ({"link_base": "ftp://x"}, "users.link_base: expected an http(s) URL"),
    ({"groups": "admins"}, "users.groups: expected a list of group names"),
    ({"confirm_timout": 2}, "users.confirm_timout: not a setting"),
    ({"oidc": {"issuer": "https://id.example.com"}}, "users.oidc.client_id: expected a text"),
    ({"oidc": {"issuer": "https://id.example.com", "client_id": "a", "scope": "email"}},
     "users.oidc.scope: must include 'openid'"),
    ({"oidc": {"issuer": "https://id.example.com", "client_id": "a", "secret": "s"}},
     "users.oidc.secret: not a setting"),
    ({"hash_memory_cost": 8, "hash_parallelism": 4}, "users.hash_memory_cost: argon2 needs"),
])
def test_a_bad_setting_is_named(section: dict[str, object], says: str) -> None:
    with pytest.raises(UsersConfigError) as refused:
        parse(section)
    assert str(refused.value).startswith(says), str(refused.value)


def test_the_server_config_checks_and_documents_the_section(tmp_path: Path) -> None:
    path = tmp_path / "stepsaga.toml"
    path.write_text("[users]\nconfirm_timeout = 5\n[users.oidc]\nissuer = \"https://i.example\""
                    "\nclient_id = \"app\"\nclient_secret_file = \"/nonexistent/secret\"\n")
    with pytest.raises(ConfigError) as refused:
        load(path, {})
    assert "users.oidc.client_secret_file: cannot read a secret" in str(refused.value)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    path.write_text(f"[users]\nconfirm_timeout = 5\n[users.oidc]\nissuer = \"https://i.example\""
                    f"\nclient_id = \"app\"\nclient_secret_file = \"{secret}\"\n")
    loaded = load(path, {})
    assert loaded["users"]["confirm_timeout"] == 5
    assert parse(loaded["users"]).oidc.client_secret == "s3cret"  # type: ignore[union-attr]
    assert "[users]" in documented() and "confirm_timeout" in documented()


def test_the_mails_templates_are_needed_at_start() -> None:
    from workers.actions.messaging import MessagingPack
    from workers.actions.messaging import parse as messaging_parse
    from workers.actions.users import UsersPack

    with pytest.raises(UsersConfigError) as refused:
        UsersPack(parse({}), MessagingPack(messaging_parse({"templates": {
            "users_confirm": {"subject": "Confirm", "text": "{{ link }}"}}})))
    assert str(refused.value).startswith("users.reset_template: the messaging pack has no "
                                         "template 'users_reset.txt'")
