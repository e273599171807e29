"""The ``[messaging]`` section: every error names the key at fault and what was expected;
a config file with one is checked when loaded; templates are strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graphql_api.config import ConfigError, load
from workers.actions.messaging import MessageInputError, MessagingConfigError, Templates, parse

GOOD: dict[str, Any] = {
    "senders": {"m": {"kind": "smtp", "from": "a@example.com"},
                "s": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t",
                      "from": "+15550001111"},
                "b": {"kind": "telegram", "token": "1:x"}},
    "channels": {"email": {"kind": "email", "senders": ["m"], "rate": 5, "burst": 2},
                 "sms": {"kind": "sms", "senders": ["s"]}},
    "templates": {"hi": {"text": "hi {{ name }}", "subject": "Hi"}}}


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the setting at ``path`` (dotted) set to ``value`` (None: removed)."""
    import copy

    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    where = data
    for part in parents:
        where = where.setdefault(part, {})
    if value is None:
        where.pop(last, None)
    else:
        where[last] = value
    return data


def test_a_good_section_is_read_with_its_defaults() -> None:
    cfg = parse(GOOD)
    assert cfg.senders["m"].options == {"host": "127.0.0.1", "port": 25, "username": "",
                                        "password": "", "from": "a@example.com",
                                        "tls": "none", "timeout": 30.0, "connections": 1,
                                        "linger": 0.05}
    assert cfg.senders["s"].options["url"] == "https://api.twilio.com"
    assert (cfg.channels["email"].rate, cfg.channels["email"].burst) == (5.0, 2)
    assert set(cfg.rate_limits()) == {"messaging:email"}
    assert (cfg.attempts, cfg.backoff) == (4, 1.0)
    assert set(parse({**GOOD, "rate": 2}).rate_limits()) == {"messaging", "messaging:email"}


@pytest.mark.parametrize(("path", "value", "message"), [
    ("senders.m.kind", "pigeon", "messaging.senders.m.kind: expected one of smtp, twilio, "
                                 "telegram"),
    ("senders.m.port", "25", "messaging.senders.m.port: expected a whole number >= 1"),
    ("senders.m.from", None, "messaging.senders.m.from: a smtp sender needs a from"),
    ("senders.m.from", "Shop <shop>", "messaging.senders.m.from: expected an e-mail "
                                      "address, or a name and one"),
    ("senders.m.from", "a@example.com, b@example.com", "messaging.senders.m.from: expected "
                                                       "an e-mail address"),
    ("senders.m.tls", "maybe", "messaging.senders.m.tls: expected one of none, starttls, tls"),
    ("senders.m.colour", "red", "messaging.senders.m.colour is not a setting"),
    ("senders.s.from", "555", "messaging.senders.s.from: expected a phone number in E.164"),
    ("senders.s.url", "ftp://x", "messaging.senders.s.url: expected http(s)://host"),
    ("senders.b.token", "", "messaging.senders.b.token: a telegram sender needs a token"),
    ("channels.email.kind", "fax", "messaging.channels.email.kind: expected one of email, "
                                   "sms, chat"),
    ("channels.email.senders", ["s"], "messaging.channels.email.senders[0]: sender 's' is "
                                      "a twilio sender, for sms channels, not email"),
    ("channels.email.senders", ["m", "m"], "messaging.channels.email.senders: a sender is "
                                           "named twice"),
    ("channels.email.senders", [], "messaging.channels.email.senders: expected a list of "
                                   "one or more"),
    ("channels.email.rate", -1, "messaging.channels.email.rate: expected a number >= 0"),
    ("channels.bad name", {"kind": "email", "senders": ["m"]},
     "messaging.channels.bad name: the name 'bad name' must be 1 to 64"),
    ("templates.hi.text", "", "messaging.templates.hi.text: a template needs its text"),
    ("templates.hi.html", "{% if %}", "messaging.templates.hi.html: line 1:"),
    ("attempts", 0, "messaging.attempts: expected a whole number >= 1"),
    ("templates_dir", "relative", "messaging.templates_dir: expected an absolute directory"),
    ("colour", "red", "messaging.colour is not a setting"),
])
def test_a_bad_setting_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(MessagingConfigError) as refused:
        parse(changed(path, value))
    assert str(refused.value).startswith(message), str(refused.value)


def test_a_config_file_with_a_bad_messaging_section_is_refused_naming_the_key(
        tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[messaging.senders.m]\nkind = "smtp"\nfrom = "a@example.com"\n'
                    '[messaging.channels.email]\nkind = "email"\nsenders = ["m"]\n')
    assert load(good, {})["messaging"]["channels"]["email"]["senders"] == ["m"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[messaging.channels.email]\nkind = "email"\nsenders = ["nope"]\n')
    with pytest.raises(ConfigError, match=r"messaging.channels.email.senders\[0\]: unknown "
                                          "sender 'nope'"):
        load(bad, {})


def test_templates_from_a_directory_render_strictly_and_escape_html(tmp_path: Path) -> None:
    (tmp_path / "order.subject").write_text("Order {{ number }}\n")
    (tmp_path / "order.txt").write_text("{% for i in items %}{{ i }}\n{% endfor %}")
    (tmp_path / "order.html").write_text("<ul>{% for i in items %}<li>{{ i }}</li>"
                                         "{% endfor %}</ul>")
    templates = Templates(parse({"templates_dir": str(tmp_path)}))
    assert templates.render("order", {"number": 7, "items": ["a&b", "c"]}, email=True) == (
        "Order 7", "a&b\nc\n", "<ul><li>a&amp;b</li><li>c</li></ul>")
    assert templates.render("order", {"number": 7, "items": []}, email=False) == ("", "", "")
    with pytest.raises(MessageInputError, match=r"template 'order' \(order.subject\): "
                                                "'number' is undefined"):
        templates.render("order", {"items": []}, email=True)
    with pytest.raises(MessageInputError, match="unknown template 'gone'"):
        templates.render("gone", {}, email=False)
    # the sandbox keeps a context's values from reaching Python's internals
    (tmp_path / "evil.txt").write_text("{{ x.__class__.__mro__ }}")
    with pytest.raises(MessageInputError, match="evil"):
        templates.render("evil", {"x": 1}, email=False)
