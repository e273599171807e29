"""Configuration: one TOML file, environment variables overriding it, read here and
nowhere else, checked at start with errors that name the key, the value and what was
expected.

Every setting, its section and its default::

    [store]
    url = "sqlite+aiosqlite:///stepsaga.sqlite"   # SQLite file or postgresql+asyncpg://...

    [serve]                        # stepsaga serve
    host = "127.0.0.1"             # binds to this machine only unless told otherwise
    port = 8000                    # 0: any free port (printed)
    app = "workers.actions:demo_saga"  # module:attribute: the sagas (or a WorkerApp)
    no_workers = false             # true: an API-only node
    no_auth = false                # local development only: no sign-in (loopback only)
    explorer = false               # true: GraphiQL at /graphql, and introspection
    command_timeout = 10.0         # seconds a mutation waits for the work's holder
    query_timeout = 30.0           # seconds a GraphQL request over HTTP may take (503 after)
    ssl_certfile = ""              # HTTPS and WSS: a certificate chain (PEM), with
    ssl_keyfile = ""               # its private key; cookies are Secure then

    [worker]                       # the worker node of stepsaga serve and stepsaga worker
    workers = ["main=10"]          # NAME=N or NAME=N:saga1,saga2
    lease_ttl = 10.0               # seconds a lease lasts unless renewed
    park_after = 60.0              # a work sleeping this long is handed back till due
    drain_deadline = 30.0          # on SIGTERM, seconds works get to end their step
    node_id = ""                   # empty: host:pid:random
    http = ""                      # HOST:PORT: stepsaga worker serves /metrics, /healthz
                                   # and /readyz there (port 0: any free one, printed)

    [log]                          # stepsaga serve and stepsaga worker
    format = "text"                # json: one object a line, with work id, stage, attempt
    level = "info"                 # debug, info, warning or error

    [secrets]                      # fields a schema marks "secret": true are stored
    key = ""                       # sealed with this key (64 hex digits; the same on
    key_file = ""                  # every node) or one a file holds; engine.secrets

    [limits]                       # the API clients' rate limits and quotas, reloaded
    file = ""                      # when the file changes; see graphql_api.limits; file
    reload = 1.0                   # only: [[limits.rule]] name, clients, routes, rate,
                                   # burst; [[limits.quota]] name, clients, sagas, works,
                                   # period

    [backups]                      # the backups pack (--app workers.actions.backups:app):
                                   # sources, targets, keys and jobs, nested tables,
                                   # see workers.actions.backups.config; file only

    [orders]                       # the orders pack (--app workers.actions.orders:app):
                                   # currency, catalog (a TOML file of products), ship and
                                   # confirm (module:function hooks) or confirm_saga
                                   # (messaging.send) with confirm_channel and
                                   # confirm_template, max_quantity; [orders.provider]
                                   # url, key or key_file, timeout (a Stripe-shaped
                                   # PaymentIntents and Refunds API);
                                   # [orders.products.<sku>] name, price (in the
                                   # currency's smallest unit), currency, kind (physical
                                   # or digital), stock; every setting documented in
                                   # workers.actions.orders.config; file only

    [messaging]                    # the messaging pack (--app workers.actions.messaging:app):
                                   # templates_dir, attempts, backoff, max_backoff, rate,
                                   # burst, and nested tables of senders (smtp, twilio,
                                   # telegram: endpoints, credentials), channels (email,
                                   # sms, chat: senders used in turn, a rate limit) and
                                   # inline templates; see workers.actions.messaging.config;
                                   # file only

    [retention]                    # empty (the default): none. Set, stepsaga serve and
                                   # worker run the retention saga on its schedule
                                   # (workers.retention); file only. Its settings, with
                                   # their defaults; one of directory and target:
    # directory = ""               # where the day files (works-DAY.jsonl.gz) go
    # target = ""                  # or a target of [backups.targets] (directory or s3)
    # default_days = 0             # finished works of sagas not in ages kept this long
    #                              # after they ended (0: for ever)
    # schedule = "17 3 * * *"      # cron of the sweep
    # timezone = "UTC"
    # batch = 500                  # works archived then deleted per round of the sweep
    # [retention.ages]             # days by saga, e.g. signup = 30

    [files]                        # the files pack (--app workers.actions.files:app):
                                   # staging = "" (where uploads wait for their saga),
                                   # staging_ttl = 86400 (seconds till files.sweep
                                   # removes one never taken), repositories (directory
                                   # or s3), keys (secret or ed25519) and buckets
                                   # (repository, encrypt_names, encrypt_content, sign,
                                   # sign_key), nested tables,
                                   # see workers.actions.files.config; file only

    [users]                        # the users pack (--app workers.actions.users:app):
                                   # email_channel, sms_channel and the templates of the
                                   # messaging pack it sends through, link_base,
                                   # confirm_timeout (seconds a sign-up waits for its
                                   # confirmation), reset_lifetime, code_lifetime,
                                   # session_lifetime, min_password, groups (a confirmed
                                   # user's; none: no rights), login_rate, login_burst,
                                   # address_rate, address_burst, hash_time_cost,
                                   # hash_memory_cost, hash_parallelism; [users.oidc]
                                   # issuer, client_id, client_secret or
                                   # client_secret_file, redirect_uri, scope, timeout;
                                   # see workers.actions.users.config; file only

An environment variable ``STEPSAGA_<SECTION>_<KEY>`` (``STEPSAGA_SERVE_PORT=9000``,
``STEPSAGA_STORE_URL=...``) overrides the file; a command-line flag overrides both.
``STEPSAGA_WORKER_WORKERS`` takes a comma-free list separated by spaces.

>>> settings = load(None, {"STEPSAGA_SERVE_PORT": "9000"})
>>> settings["serve"]["port"], settings["store"]["url"]
(9000, 'sqlite+aiosqlite:///stepsaga.sqlite')
>>> load(None, {"STEPSAGA_SERVE_PORT": "nine"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
graphql_api.config.ConfigError: serve.port (from STEPSAGA_SERVE_PORT): expected a whole ...
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "ConfigError", "documented", "load"]


class ConfigError(ValueError):
    """A setting that cannot be used: the message names the key, the value and what was
    expected."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _key(value: Any) -> str:
    text = _text(value)
    if text and (len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text)):
        raise TypeError("expected 64 hex digits (32 bytes: 'openssl rand -hex 32')")
    return text


def _port(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise TypeError("expected a whole number from 0 to 65535")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                    "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise TypeError("expected a number of seconds >= 0") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value < 0:
        raise TypeError("expected a number of seconds >= 0")
    return float(value)


def _positive(value: Any) -> float:
    try:
        found = _seconds(value)
    except TypeError:
        found = 0.0  # the same message as for 0
    if found <= 0:
        raise TypeError("expected a number of seconds > 0")
    return found


def http_address(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise TypeError("expected HOST:PORT, like 127.0.0.1:9100")
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise TypeError("expected HOST:PORT with a host, like 127.0.0.1:9100")
    return host, _port(port)


def _http(value: Any) -> str:
    if value != "":
        http_address(value)
    return _text(value)


def _log_format(value: Any) -> str:
    if value not in ("text", "json"):
        raise TypeError('expected "text" or "json"')
    return str(value)


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ("debug", "info", "warning",
                                                            "error"):
        raise TypeError('expected "debug", "info", "warning" or "error"')
    return value.lower()


def _workers(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise TypeError('expected a list of workers like ["main=10", "mail=5:welcome"]')
    from workers.node import WorkerSpec

    for spec in value:
        try:
            WorkerSpec.parse(spec)
        except ValueError as exc:
            raise TypeError(str(exc)) from None
    return list(value)


_CHECKS: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "store": {"url": (_text, "sqlite+aiosqlite:///stepsaga.sqlite")},
    "serve": {"host": (_text, "127.0.0.1"), "port": (_port, 8000),
              "app": (_text, "workers.actions:demo_saga"), "no_workers": (_flag, False),
              # local development only: no sign-in, every request an administrator;
              # refused on any address but loopback
              "no_auth": (_flag, False),
              # GraphiQL at /graphql and introspection (off: a client learns the schema
              # from its documentation, not from a production server)
              "explorer": (_flag, False),
              "command_timeout": (_positive, 10.0), "query_timeout": (_positive, 30.0),
              # HTTPS and WSS through uvicorn: a certificate chain and its key (PEM)
              "ssl_certfile": (_text, ""), "ssl_keyfile": (_text, "")},
    "worker": {"workers": (_workers, ["main=10"]), "lease_ttl": (_positive, 10.0),
               "park_after": (_seconds, 60.0), "drain_deadline": (_seconds, 30.0),
               "node_id": (_text, ""), "http": (_http, "")},
    "log": {"format": (_log_format, "text"), "level": (_log_level, "info")},
    # the key of the fields schemas mark secret: 64 hex digits, or a file holding them
    "secrets": {"key": (_key, ""), "key_file": (_text, "")},
}



def _checked_by(module: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """A section checked whole by ``module``'s ``parse`` (a ValueError naming the key),
    imported only when a file has that section."""
    def check(value: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        import importlib

        importlib.import_module(module).parse(value)
        return value
    return check


def _retention(value: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    from workers.retention import parse

    targets = {}
    if data.get("backups"):  # a target named is one of the backups pack's
        from workers.actions.backups.config import parse as parse_backups

        targets = dict(parse_backups(data["backups"]).targets)
    parse(value, targets)  # a ValueError naming the key
    return value


# sections of nested tables checked as a whole (from the file only; ``data``: the whole
# file, for a reference to another section): a domain pack's (its app reads them from
# the settings it is given), stepsaga serve and worker's [retention], the API clients'
# [limits]
_PACKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "retention": _retention, "limits": _checked_by("graphql_api.limits"),
    **{pack: _checked_by(f"workers.actions.{pack}.config")
       for pack in ("backups", "files", "orders", "users", "messaging")}}
# the plain keys of those sections, with their defaults (the nested tables have none)
_PACK_DEFAULTS: dict[str, dict[str, Any]] = {"limits": {"file": "", "reload": 1.0}}

DEFAULTS: dict[str, dict[str, Any]] = {
    **{section: {key: default for key, (_, default) in keys.items()}
       for section, keys in _CHECKS.items()},
    **{section: dict(_PACK_DEFAULTS.get(section, {})) for section in _PACKS}}
"""Every setting's default, by section."""


def documented() -> str:
    """Every setting as this module's docstring documents it: a TOML document of the
    defaults, commented (``stepsaga config show``)."""
    doc = __doc__ or ""
    start = doc.index("Every setting, its section and its default::") + 45
    end = doc.index("\nAn environment variable")
    return "\n".join(line[4:] for line in doc[start:end].strip("\n").splitlines())


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The settings: defaults, then the TOML file at ``path`` (if given), then the
    environment's ``STEPSAGA_<SECTION>_<KEY>`` variables. Unknown sections and keys are
    refused, so a typo is not silently ignored."""
    env = os.environ if environ is None else environ
    found = {section: dict(values) for section, values in DEFAULTS.items()}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if section not in _CHECKS and section not in _PACKS:
                raise ConfigError(f"config file {str(path)!r}: unknown section [{section}]; "
                                  f"the sections are {', '.join(sorted(DEFAULTS))}")
            if not isinstance(values, dict):
                raise ConfigError(f"config file {str(path)!r}: {section} must be a section "
                                  f"([{section}]), got {values!r:.60}")
            if section in _PACKS:
                try:
                    found[section] = _PACKS[section](values, data)
                except ValueError as exc:
                    raise ConfigError(f"config file {str(path)!r}: {exc}") from None
                continue
            for key, value in values.items():
                found[section][key] = _checked(section, key, value, f"in {str(path)!r}")
    for name, value in env.items():
        if not name.startswith("STEPSAGA_") or name in ("STEPSAGA_VENV",):
            continue
        rest = name[len("STEPSAGA_"):].lower()
        section, _, key = rest.partition("_")
        if section not in _CHECKS or not key:
            continue  # another program's variable (STEPSAGA_TEST_...): not ours to refuse
        found[section][key] = _checked(section, key, value, f"from {name}")
    return found


def _checked(section: str, key: str, value: Any, where: str) -> Any:
    keys = _CHECKS[section]
    if key not in keys:
        raise ConfigError(f"{section}.{key} ({where}) is not a setting; [{section}] has "
                          f"{', '.join(sorted(keys))}")
    check, _ = keys[key]
    try:
        return check(value)
    except TypeError as exc:
        raise ConfigError(f"{section}.{key} ({where}): {exc}, got {value!r:.80}") from None
