"""The ``[messaging]`` section: senders, channels, templates and the delivery's retries
and rate limits, checked as a whole.

Every error names the key at fault (``messaging.senders.mail1.port``) and what was
expected. The section, as TOML::

    [messaging]
    templates_dir = ""         # a directory of Jinja2 templates: NAME.txt (the text),
                               # NAME.html (email's HTML part, optional), NAME.subject
                               # (email's subject); empty: the inline templates only
    attempts = 4               # tries of a message (each tries every sender once, from
                               # the one whose turn it is)
    backoff = 1.0              # seconds before the second try, doubling (with jitter)
    max_backoff = 60.0         # ... up to this
    rate = 0.0                 # messages per second of a channel without its own (0: none)
    burst = 1                  # messages a full bucket lets through at once

    [messaging.templates.welcome]   # an inline template (Jinja2), beside the directory's
    subject = "Welcome, {{ name }}"
    text = "Hello {{ name }}, confirm with {{ link }}"
    html = "<p>Hello {{ name }}, <a href='{{ link }}'>confirm</a></p>"  # autoescaped

    [messaging.senders.mail1]  # kind: smtp | twilio | telegram (workers.actions.
    kind = "smtp"              #   messaging.providers)
    host = "127.0.0.1"
    port = 25
    username = ""              # empty: no AUTH
    password = ""
    from = "noreply@example.com"  # or a name and an address: "Shop <noreply@example.com>"
    tls = "none"               # none | starttls | tls
    timeout = 30.0
    connections = 1            # connections to the server at once (a message on each)
    linger = 0.05              # seconds a connection stays open for a next message
    # twilio: url = "https://api.twilio.com", account_sid, auth_token, from (+E.164),
    #         timeout
    # telegram: url = "https://api.telegram.org", token, timeout

    [messaging.channels.email] # a channel declared here exists from the start (the API
    kind = "email"             # and Python create others); kind: email | sms | chat
    senders = ["mail1", "mail2"]  # used in turn; a failing one hands over to the next
    rate = 10.0                # this channel's rate limit (0: the section's)
    burst = 5

The credentials stay here: a channel in the store names its senders, never their
settings, so neither events nor the API ever show a password or token.

>>> cfg = parse({"senders": {"m": {"kind": "smtp", "from": "a@example.com"}},
...              "channels": {"mail": {"kind": "email", "senders": ["m"]}}})
>>> cfg.channels["mail"].senders, cfg.senders["m"].options["port"]
(('m',), 25)
>>> parse({"channels": {"mail": {"kind": "email", "senders": ["nope"]}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.messaging.errors.MessagingConfigError: messaging.channels.mail.senders[0]: ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.limits import RateLimit

from .errors import MessagingConfigError
from .providers import ADDRESSES, FROM_EXPECTED, PROVIDERS, email_sender

__all__ = ["CHANNEL_KINDS", "ChannelSpec", "MessagingConfig", "SenderSpec", "TemplateSpec",
           "check_name", "parse", "senders_of"]

CHANNEL_KINDS = tuple(ADDRESSES)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RATE_PREFIX = "messaging"  # a channel's rate-limit key is messaging:<channel>


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderSpec:
    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSpec:
    name: str
    kind: str
    senders: tuple[str, ...]
    rate: float = 0.0
    burst: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateSpec:
    name: str
    text: str
    subject: str = ""
    html: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagingConfig:
    """The checked ``[messaging]`` section (see the module docstring)."""

    senders: Mapping[str, SenderSpec] = field(default_factory=dict)
    channels: Mapping[str, ChannelSpec] = field(default_factory=dict)
    templates: Mapping[str, TemplateSpec] = field(default_factory=dict)
    templates_dir: str = ""
    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 60.0
    rate: float = 0.0
    burst: int = 1

    def rate_limits(self) -> dict[str, RateLimit]:
        """The rate limits a node's gate applies, by key: ``messaging:<channel>`` for
        a channel with its own, ``messaging`` for every other (see
        :func:`workers.limits.limit_for`)."""
        found = {f"{RATE_PREFIX}:{c.name}": RateLimit(c.rate, c.burst)
                 for c in self.channels.values() if c.rate > 0}
        if self.rate > 0:
            found[RATE_PREFIX] = RateLimit(self.rate, self.burst)
        return found


def _where(*parts: str) -> str:
    return ".".join(("messaging", *parts))


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise MessagingConfigError(f"{where}: expected a table, got {value!r:.60}")
    return dict(value)


def check_name(name: Any, where: str) -> str:
    """``name`` if it is a name for a channel, sender or template, else a
    :class:`MessagingConfigError` naming ``where``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise MessagingConfigError(f"{where}: the name {name!r:.60} must be 1 to 64 letters, "
                                   "digits, '_', '.' or '-', starting with a letter or digit")
    return name


def _text(data: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = data.pop(key, default)
    if not isinstance(value, str):
        raise MessagingConfigError(f"{where}.{key}: expected a string, got {value!r:.60}")
    return value


def _number(data: dict[str, Any], key: str, where: str, default: float, *,
            low: float = 0.0, whole: bool = False) -> Any:
    value = data.pop(key, default)
    kinds: Any = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value < low:
        what = "a whole number" if whole else "a number"
        raise MessagingConfigError(f"{where}.{key}: expected {what} >= {low:g}, "
                                   f"got {value!r:.60}")
    return value if whole else float(value)


def _done(data: dict[str, Any], where: str, allowed: str) -> None:
    if data:
        raise MessagingConfigError(f"{where}.{sorted(data)[0]} is not a setting; {where} "
                                   f"has {allowed}")


def _kind(data: dict[str, Any], where: str, kinds: tuple[str, ...]) -> str:
    kind = data.pop("kind", None)
    if kind not in kinds:
        raise MessagingConfigError(f"{where}.kind: expected one of {', '.join(kinds)}, "
                                   f"got {kind!r:.60}")
    return str(kind)


def _sender(name: str, value: Any) -> SenderSpec:
    where = _where("senders", name)
    data = _table(value, where)
    kind = _kind(data, where, tuple(PROVIDERS))
    provider = PROVIDERS[kind]
    options: dict[str, Any] = {}
    for key, default in provider.settings.items():
        if isinstance(default, str):
            options[key] = _text(data, key, where, default)
            allowed = getattr(provider, "choices", {}).get(key)
            if allowed and options[key] not in allowed:
                raise MessagingConfigError(f"{where}.{key}: expected one of "
                                           f"{', '.join(allowed)}, got {options[key]!r:.60}")
        elif isinstance(default, int):
            options[key] = _number(data, key, where, default, low=1, whole=True)
        else:  # seconds: a timeout must be some
            options[key] = _number(data, key, where, default,
                                   low=0.001 if key == "timeout" else 0.0)
    _done(data, where, ", ".join(["kind", *provider.settings]))
    for key in provider.required:
        if not options[key]:
            raise MessagingConfigError(f"{where}.{key}: a {kind} sender needs a {key}")
    if "url" in options and not re.match(r"^https?://[^/\s]+", options["url"]):
        raise MessagingConfigError(f"{where}.url: expected http(s)://host[:port], got "
                                   f"{options['url']!r:.60}")
    if kind == "twilio":
        options["from"] = _from_phone(options["from"], f"{where}.from")
    if kind == "smtp" and email_sender(options["from"]) is None:
        raise MessagingConfigError(f"{where}.from: {FROM_EXPECTED}, got "
                                   f"{options['from']!r:.60}")
    return SenderSpec(name=name, kind=kind, options=options)


def _from_phone(value: str, where: str) -> str:
    if not ADDRESSES["sms"][0].match(value):
        raise MessagingConfigError(f"{where}: expected {ADDRESSES['sms'][1]}, got "
                                   f"{value!r:.60}")
    return value


def senders_of(kind: str, senders: Any, known: Mapping[str, SenderSpec], where: str
               ) -> tuple[str, ...]:
    """A channel's list of sender names checked against the configured senders: each
    known, of a provider for ``kind``, named once, at least one. The config's channels
    and those the API creates are checked here alike; a :class:`MessagingConfigError`
    naming ``where``."""
    error = MessagingConfigError
    if not isinstance(senders, list | tuple) or not senders:
        raise error(f"{where}: expected a list of one or more sender names, "
                    f"got {senders!r:.60}")
    for i, name in enumerate(senders):
        spec = known.get(name) if isinstance(name, str) else None
        if spec is None:
            raise error(f"{where}[{i}]: unknown sender {name!r:.60} (the senders in "
                        f"[messaging.senders] are: {', '.join(sorted(known)) or 'none'})")
        if PROVIDERS[spec.kind].channel != kind:
            raise error(f"{where}[{i}]: sender {name!r} is a {spec.kind} sender, for "
                        f"{PROVIDERS[spec.kind].channel} channels, not {kind}")
    if len(set(senders)) != len(senders):
        raise error(f"{where}: a sender is named twice in {list(senders)!r:.80}")
    return tuple(senders)


def _channel(name: str, value: Any, senders: Mapping[str, SenderSpec]) -> ChannelSpec:
    where = _where("channels", name)
    data = _table(value, where)
    kind = _kind(data, where, CHANNEL_KINDS)
    names = senders_of(kind, data.pop("senders", None), senders, f"{where}.senders")
    spec = ChannelSpec(name=name, kind=kind, senders=names,
                       rate=_number(data, "rate", where, 0.0),
                       burst=_number(data, "burst", where, 1, low=1, whole=True))
    _done(data, where, "kind, senders, rate and burst")
    return spec


def _template(name: str, value: Any) -> TemplateSpec:
    where = _where("templates", name)
    data = _table(value, where)
    spec = TemplateSpec(name=name, text=_text(data, "text", where),
                        subject=_text(data, "subject", where), html=_text(data, "html", where))
    _done(data, where, "text, subject and html")
    if not spec.text:
        raise MessagingConfigError(f"{where}.text: a template needs its text")
    from .templates import check_source

    for part in ("text", "subject", "html"):
        check_source(getattr(spec, part), f"{where}.{part}")
    return spec


def parse(section: Mapping[str, Any] | None) -> MessagingConfig:
    """Check a ``[messaging]`` section (a mapping as TOML reads it) into a
    MessagingConfig."""
    data = _table(section or {}, "messaging")
    tables: dict[str, dict[str, Any]] = {}
    for part in ("senders", "channels", "templates"):
        tables[part] = _table(data.pop(part, {}), _where(part))
        for name in tables[part]:
            check_name(name, _where(part, str(name)))
    templates_dir = _text(data, "templates_dir", "messaging")
    if templates_dir and not templates_dir.startswith("/"):
        raise MessagingConfigError(f"messaging.templates_dir: expected an absolute "
                                   f"directory, got {templates_dir!r:.60}")
    attempts = _number(data, "attempts", "messaging", 4, low=1, whole=True)
    backoff = _number(data, "backoff", "messaging", 1.0)
    max_backoff = _number(data, "max_backoff", "messaging", 60.0)
    rate = _number(data, "rate", "messaging", 0.0)
    burst = _number(data, "burst", "messaging", 1, low=1, whole=True)
    _done(data, "messaging", "senders, channels, templates, templates_dir, attempts, "
                             "backoff, max_backoff, rate and burst")
    senders = {n: _sender(n, v) for n, v in tables["senders"].items()}
    return MessagingConfig(
        senders=senders,
        channels={n: _channel(n, v, senders) for n, v in tables["channels"].items()},
        templates={n: _template(n, v) for n, v in tables["templates"].items()},
        templates_dir=templates_dir, attempts=attempts, backoff=backoff,
        max_backoff=max(max_backoff, backoff), rate=rate, burst=burst)
