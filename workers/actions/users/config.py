"""The ``[users]`` section: the channels and templates of the pack's messages, the
lifetimes of its tokens, codes and sessions, the confirmation's timeout, the login
rate limits, the password hash's cost and an OpenID Connect provider, checked as a
whole.

Every error names the key at fault (``users.confirm_timeout``) and what was expected.
The section, as TOML::

    [users]
    email_channel = "email"           # the messaging pack's channels the pack sends
    sms_channel = "sms"               # through ([messaging.channels.*])
    confirm_template = "users_confirm"   # the messaging pack's templates: each is given
    reset_template = "users_reset"       # {email, token, link} (phone_template and
    reset_sms_template = "users_reset_sms"  # reset_sms_template: {code} or {token})
    phone_template = "users_phone"
    link_base = "http://127.0.0.1:8000"  # what a mail's link starts with: the link is
                                      # <link_base>/users/confirm?token=... or
                                      # <link_base>/users/reset?token=...
    confirm_timeout = 259200.0        # seconds a sign-up waits for its confirmation
                                      # (3 days); then the unconfirmed user is removed
    reset_lifetime = 3600.0           # seconds a password reset's token is good for
    code_lifetime = 600.0             # seconds a phone code is good for
    session_lifetime = 43200.0        # seconds a session lasts (12 hours)
    min_password = 10                 # characters a password has at least
    groups = []                       # the groups a confirmed user joins (none: no
                                      # rights over the engine's API until a policy
                                      # names the user or a group it is in)
    login_rate = 0.1                  # login attempts per second per account ...
    login_burst = 5                   # ... and at once (the engine's token buckets,
    address_rate = 1.0                # shared by every node); the same per client
    address_burst = 20                # address
    hash_time_cost = 3                # argon2id's cost (argon2-cffi's defaults, RFC
    hash_memory_cost = 65536          # 9106's second choice): iterations, KiB of
    hash_parallelism = 4              # memory, lanes

    [users.oidc]                      # login with an OpenID Connect provider (absent:
    issuer = "https://id.example.com" # none): its discovery document is
                                      # <issuer>/.well-known/openid-configuration
    client_id = ""
    client_secret = ""                # or:
    client_secret_file = ""           # a file holding it (first line)
    redirect_uri = ""                 # empty: <link_base>/auth/oidc/callback
    scope = "openid email profile"
    timeout = 10.0                    # seconds a request to the provider may take

>>> cfg = parse({"confirm_timeout": 2, "groups": ["customers"]})
>>> cfg.confirm_timeout, cfg.groups, cfg.oidc is None
(2.0, ('customers',), True)
>>> parse({"login_burst": 0})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.users.errors.UsersConfigError: users.login_burst: expected a whole number >= 1...
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from workers.limits import RateLimit

from .errors import UsersConfigError

__all__ = ["OidcSpec", "UsersConfig", "parse"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_SECONDS = 10 * 365 * 86400.0  # what a credential may live at most
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcSpec:
    """An OpenID Connect provider to log in with."""

    issuer: str
    client_id: str
    client_secret: str = ""
    redirect_uri: str = ""
    scope: str = "openid email profile"
    timeout: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UsersConfig:
    """The checked ``[users]`` section (see the module docstring)."""

    email_channel: str = "email"
    sms_channel: str = "sms"
    confirm_template: str = "users_confirm"
    reset_template: str = "users_reset"
    reset_sms_template: str = "users_reset_sms"
    phone_template: str = "users_phone"
    link_base: str = "http://127.0.0.1:8000"
    confirm_timeout: float = 3 * 86400.0
    reset_lifetime: float = 3600.0
    code_lifetime: float = 600.0
    session_lifetime: float = 12 * 3600.0
    min_password: int = 10
    groups: tuple[str, ...] = ()
    login_rate: float = 0.1
    login_burst: int = 5
    address_rate: float = 1.0
    address_burst: int = 20
    hash_time_cost: int = 3
    hash_memory_cost: int = 65536
    hash_parallelism: int = 4
    oidc: OidcSpec | None = None

    @property
    def account_limit(self) -> RateLimit:
        return RateLimit(rate=self.login_rate, burst=self.login_burst)

    @property
    def address_limit(self) -> RateLimit:
        return RateLimit(rate=self.address_rate, burst=self.address_burst)

    @property
    def redirect_uri(self) -> str:
        if self.oidc is not None and self.oidc.redirect_uri:
            return self.oidc.redirect_uri
        return self.link_base.rstrip("/") + "/auth/oidc/callback"


def _number(value: Any, key: str, *, whole: bool = False, low: float = 0.0,
            strict: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int if whole else int | float) \
        and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        what = "a whole number" if whole else "a number"
        sign = ">" if strict else ">="
        raise UsersConfigError(f"users.{key}: expected {what} {sign} {low:g}, got "
                               f"{value!r:.60}")
    return float(value)


def _text(value: Any, key: str, *, pattern: re.Pattern[str] | None = None,
          empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty) or \
            (pattern is not None and value and not pattern.match(value)):
        raise UsersConfigError(f"users.{key}: expected "
                               f"{'a name (letters, digits, _ . -)' if pattern else 'a text'}"
                               f", got {value!r:.60}")
    return value


def _url(value: Any, key: str) -> str:
    text = _text(value, key)
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", text):
        raise UsersConfigError(f"users.{key}: expected an http(s) URL, got {text!r:.80}")
    return text


def _oidc(value: Any) -> OidcSpec:
    if not isinstance(value, Mapping):
        raise UsersConfigError(f"users.oidc: expected a table ([users.oidc]), got "
                               f"{value!r:.60}")
    known = {"issuer", "client_id", "client_secret", "client_secret_file", "redirect_uri",
             "scope", "timeout"}
    for key in value:
        if key not in known:
            raise UsersConfigError(f"users.oidc.{key}: not a setting; [users.oidc] has "
                                   f"{', '.join(sorted(known))}")
    secret = value.get("client_secret", "")
    if value.get("client_secret_file"):
        if secret:
            raise UsersConfigError("users.oidc.client_secret_file: give client_secret or "
                                   "client_secret_file, not both")
        path = _text(value["client_secret_file"], "oidc.client_secret_file")
        try:
            secret = Path(path).read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise UsersConfigError(f"users.oidc.client_secret_file: cannot read a secret "
                                   f"from {path!r}") from None
    scope = _text(value.get("scope", "openid email profile"), "oidc.scope")
    if "openid" not in scope.split():
        raise UsersConfigError(f"users.oidc.scope: must include 'openid', got {scope!r}")
    return OidcSpec(issuer=_url(value.get("issuer"), "oidc.issuer").rstrip("/"),
                    client_id=_text(value.get("client_id"), "oidc.client_id"),
                    client_secret=_text(secret, "oidc.client_secret", empty=True),
                    redirect_uri=_url(value["redirect_uri"], "oidc.redirect_uri")
                    if value.get("redirect_uri") else "",
                    scope=scope,
                    timeout=_number(value.get("timeout", 10.0), "oidc.timeout"))


_CHANNELS = ("email_channel", "sms_channel", "confirm_template", "reset_template",
             "reset_sms_template", "phone_template")
_SECONDS = ("confirm_timeout", "reset_lifetime", "code_lifetime", "session_lifetime",
            "login_rate", "address_rate")
_WHOLE = ("min_password", "login_burst", "address_burst", "hash_time_cost",
          "hash_memory_cost", "hash_parallelism")


def parse(section: Mapping[str, Any] | None) -> UsersConfig:
    """The ``[users]`` section checked (None or empty: every default)."""
    if section is None:
        return UsersConfig()
    if not isinstance(section, Mapping):
        raise UsersConfigError(f"users: expected a section ([users]), got {section!r:.60}")
    known = {f.name for f in fields(UsersConfig)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in known:
            raise UsersConfigError(f"users.{key}: not a setting; [users] has "
                                   f"{', '.join(sorted(known))}")
        if key in _CHANNELS:
            values[key] = _text(value, key, pattern=_NAME)
        elif key == "link_base":
            values[key] = _url(value, key).rstrip("/")
        elif key in _SECONDS:
            values[key] = _number(value, key)
        elif key in _WHOLE:
            values[key] = int(_number(value, key, whole=True, low=1, strict=False))
        elif key == "groups":
            if not isinstance(value, list | tuple) or not all(
                    isinstance(g, str) and _GROUP.match(g) for g in value):
                raise UsersConfigError(f"users.groups: expected a list of group names, got "
                                       f"{value!r:.60}")
            values[key] = tuple(value)
        elif key == "oidc":
            values[key] = _oidc(value)
    for key in ("confirm_timeout", "reset_lifetime", "code_lifetime", "session_lifetime"):
        if values.get(key, 0) > _MAX_SECONDS:
            raise UsersConfigError(f"users.{key}: expected at most 10 years of seconds, "
                                   f"got {values[key]!r}")
    if values.get("hash_memory_cost", 65536) < 8 * values.get("hash_parallelism", 4):
        raise UsersConfigError("users.hash_memory_cost: argon2 needs at least 8 KiB per "
                               "lane (hash_parallelism)")
    return UsersConfig(**values)
