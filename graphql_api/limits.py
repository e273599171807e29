"""Rate limits and quotas of the API's clients: how many requests a client may make to
a route, and how many works it may start, counted by the engine's token buckets
(:mod:`workers.limits`) in the store, so a limit holds across every API node.

The rules are the ``[limits]`` section of the config file, or a file it names (an
operator mounts one), with the same tables at its top::

    [limits]
    file = ""                    # a TOML file of [[rule]] and [[quota]] tables instead
    reload = 1.0                 # seconds between looks at the file for a change

    [[limits.rule]]              # requests: a bucket per rule and client
    name = "api"                 # names its bucket and its RateLimit header's policy
    clients = ["*"]              # principal names, group:NAME or anonymous; globs
    routes = ["/graphql"]        # path globs (default every path)
    rate = 20.0                  # requests a second, sustained
    burst = 40                   # requests at once (default: the rate, at least 1)

    [[limits.quota]]             # works: a bucket per quota and client
    name = "daily"
    clients = ["group:customers"]
    sagas = ["*"]                # the sagas whose works it counts (globs)
    works = 1000                 # works started within a period
    period = 86400.0             # seconds (the bucket refills evenly over it)

A client is its principal's name, or for a client that has not signed in
``anonymous@<its address>``: each rule and quota counts each client on its own. The
file (the config file itself, or the one ``file`` names) is read again when it changes,
without a restart; a change that does not parse is logged, naming the key, and the rules
before it stay in force, so no request is refused for an operator's typo.

A request over a rule's rate is answered 429 with ``Retry-After`` (seconds) and, as
every request a rule counted, the IETF draft's ``RateLimit-Policy: "api";q=40;w=2``
(the burst and the seconds it takes to refill) and ``RateLimit: "api";r=12;t=1`` (what
is left, and the seconds until a token is there when none is, else until the bucket is
full again), for the rule with the least left. A WebSocket counts once, when it
opens (a refused one is closed before it is accepted).

A work's quota is charged when ``createWork`` (or a pack's field, through
graphql_api.extensions.run_saga) starts it and refused with ``QuotaExceeded`` (and the
same headers) when spent. A work that then ends through no fault of its input is
refunded by :func:`settle`, which every API node runs each second: one cancelled by
anyone but the client charged (an operator), or failed on an error its stage counted
as retryable (a system's: a timeout, a connection, a crash, retried till its policy
gave up). One that completes, or fails on an error that is not retryable (its input
refused), keeps its charge.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.store import SqlStore
from engine.store.schema import quota_charges, works
from workers.limits import Drawn, RateLimit, draw, give_back_in

__all__ = ["Charge", "Limits", "LimitsSource", "Quota", "RateLimits", "Rule", "charge",
           "client_of", "headers", "keep_charges", "parse", "refund", "settle"]

_LOG = logging.getLogger("stepsaga.limits")
_ENDED = ("completed", "failed", "compensation_failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Rule:
    """Requests of a client to some routes: ``limit`` per rule and client."""

    name: str
    clients: tuple[str, ...]
    routes: tuple[str, ...]
    limit: RateLimit

    def counts(self, who: Any, path: str) -> bool:
        return _names(self.clients, who) and any(fnmatchcase(path, r) for r in self.routes)


@dataclass(frozen=True, slots=True)
class Quota:
    """Works a client may start of some sagas: ``works`` a ``period``."""

    name: str
    clients: tuple[str, ...]
    sagas: tuple[str, ...]
    works: int
    period: float

    @property
    def limit(self) -> RateLimit:
        return RateLimit(rate=self.works / self.period, burst=float(self.works))

    def counts(self, who: Any, saga: str) -> bool:
        return _names(self.clients, who) and any(fnmatchcase(saga, s) for s in self.sagas)


@dataclass(frozen=True, slots=True)
class Limits:
    rules: tuple[Rule, ...] = ()
    quotas: tuple[Quota, ...] = ()
    file: str | None = None  # where the rules are read from instead of the config file
    reload: float = 1.0


def _names(patterns: Sequence[str], who: Any) -> bool:
    anonymous = who is None or getattr(who, "kind", "") == "anonymous"
    for pattern in patterns:
        if pattern == "*":
            return True
        if pattern == "anonymous":
            if anonymous:
                return True
            continue
        kind, _, name = pattern.partition(":")
        if anonymous:
            continue
        if kind == "group" and name:
            if any(fnmatchcase(g, name) for g in who.groups):
                return True
        elif fnmatchcase(who.name, pattern):
            return True
    return False


def _globs(raw: Mapping[str, Any], key: str, where: str, default: list[str]) -> tuple[str, ...]:
    value = raw.get(key, default)
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}.{key}: a list of names or globs, got {value!r:.80}")
    return tuple(value)


def _number(raw: Mapping[str, Any], key: str, where: str, default: float | None = None,
            whole: bool = False) -> float:
    value = raw.get(key, default)
    if value is None:
        raise ValueError(f"{where}.{key}: missing (a number > 0)")
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value <= 0 or (whole and not isinstance(value, int)):
        raise ValueError(f"{where}.{key}: expected a {'whole ' if whole else ''}number > 0, "
                         f"got {value!r:.60}")
    return float(value)


def _only(raw: Any, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table, got {raw!r:.60}")
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise ValueError(f"{where}: no setting {unknown[0]!r} ({', '.join(sorted(keys))})")
    return raw


def _name(raw: Mapping[str, Any], where: str, seen: set[str]) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > 60 or \
            not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"{where}.name: letters, digits, '-', '_' or '.' (at most 60), "
                         f"got {name!r:.60}")
    if name in seen:
        raise ValueError(f"{where}.name: {name!r} is the name of another rule or quota")
    seen.add(name)
    return name


def parse(section: Mapping[str, Any], where: str = "limits") -> Limits:
    """The rules of a ``[limits]`` section (or a limits file's top), or ``ValueError``
    naming the key that is wrong."""
    _only(section, where, {"file", "reload", "rule", "quota"})
    file = section.get("file", "")
    if not isinstance(file, str):
        raise ValueError(f"{where}.file: a path, got {file!r:.60}")
    reload = _number(section, "reload", where, 1.0)
    seen: set[str] = set()
    rules = []
    for i, raw in enumerate(_list(section, "rule", where)):
        at = f"{where}.rule[{i}]"
        _only(raw, at, {"name", "clients", "routes", "rate", "burst"})
        rate = _number(raw, "rate", at)
        try:
            limit = RateLimit(rate=rate, burst=_number(raw, "burst", at, max(1.0, rate)))
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        rules.append(Rule(name=_name(raw, at, seen), clients=_globs(raw, "clients", at, ["*"]),
                          routes=_globs(raw, "routes", at, ["*"]), limit=limit))
    quotas = []
    for i, raw in enumerate(_list(section, "quota", where)):
        at = f"{where}.quota[{i}]"
        _only(raw, at, {"name", "clients", "sagas", "works", "period"})
        quotas.append(Quota(name=_name(raw, at, seen), clients=_globs(raw, "clients", at, ["*"]),
                            sagas=_globs(raw, "sagas", at, ["*"]),
                            works=int(_number(raw, "works", at, whole=True)),
                            period=_number(raw, "period", at)))
    return Limits(rules=tuple(rules), quotas=tuple(quotas), file=file or None, reload=reload)


def _list(section: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = section.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{where}.{key}: a list of tables ([[{where}.{key}]]), "
                         f"got {value!r:.60}")
    return value


class LimitsSource:
    """The rules in force: those of the config file's ``[limits]`` (``config``, the
    file's path, read again when it changes) or of the file it names, looked at no
    more often than every ``reload`` seconds."""

    def __init__(self, section: Mapping[str, Any] | None = None,
                 config: str | os.PathLike[str] | None = None) -> None:
        self.config = None if config is None else Path(config)
        self.limits = parse(section or {})
        self._stamp = self._stat()
        if self.limits.file:  # the rules live there: a missing or bad one is refused now
            self.limits = self._read(error=True) or self.limits
        self._looked = time.monotonic()

    def _path(self) -> Path | None:
        return Path(self.limits.file) if self.limits.file else self.config

    def _stat(self) -> tuple[float, int] | None:
        path = self._path()
        try:
            found = path.stat() if path is not None else None
        except OSError:
            return None
        return None if found is None else (found.st_mtime, found.st_size)

    def _read(self, error: bool = False) -> Limits | None:
        path = self._path()
        if path is None:
            return None
        try:
            data = tomllib.loads(path.read_text())
            if self.limits.file and path == Path(self.limits.file):
                data = {"file": self.limits.file, "reload": self.limits.reload, **data}
                where = f"{path}"
            else:
                data, where = data.get("limits", {}), f"{path}: limits"
            found = parse(data, where)
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
            if error:
                raise ValueError(f"limits: {exc}") from None
            _LOG.error("the limits were not reloaded, the rules before stay in force: %s",
                       exc)
            return None
        self._stamp = self._stat()
        return found

    def current(self) -> Limits:
        """The rules in force, read again first if the file changed."""
        now = time.monotonic()
        if now - self._looked >= self.limits.reload:
            self._looked = now
            if self._path() is not None and self._stat() != self._stamp:
                found = self._read()
                if found is not None:
                    if found != self.limits:
                        _LOG.info("limits reloaded from %s: %d rules, %d quotas",
                                  self._path(), len(found.rules), len(found.quotas))
                    self.limits = found
        return self.limits


def client_of(who: Any, address: str | None) -> str:
    """The client a bucket counts: the principal's name, or an anonymous client's
    address."""
    if who is None or getattr(who, "kind", "") == "anonymous":
        return f"anonymous@{address or 'unknown'}"
    return str(who.name)


def _key(kind: str, name: str, client: str) -> str:
    return f"{kind}:{name}:{client}"[:200]


def headers(name: str, limit: RateLimit, drawn: Drawn) -> dict[str, str]:
    """The RateLimit headers of one bucket, and Retry-After when nothing was taken."""
    if drawn.wait > 0:
        reset = drawn.wait
    else:
        reset = (limit.burst - drawn.left) / limit.rate
    window = math.ceil(limit.burst / limit.rate)
    found = {"RateLimit-Policy": f'"{name}";q={limit.burst:g};w={window}',
             "RateLimit": f'"{name}";r={math.floor(drawn.left)};t={math.ceil(reset)}'}
    if drawn.wait > 0:
        found["Retry-After"] = str(max(1, math.ceil(drawn.wait)))
    return found


class RateLimits:
    """ASGI middleware: each request (a WebSocket when it opens) draws from the bucket of
    every rule that counts it; refused with 429 when one is empty. Behind
    graphql_api.auth (it needs the principal)."""

    def __init__(self, app: ASGIApp, store: SqlStore, source: LimitsSource) -> None:
        self.app = app
        self.store = store
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .auth import graphql_principal

        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rules = [r for r in self.source.current().rules
                 if r.counts(graphql_principal(scope), scope["path"])]
        if not rules:
            await self.app(scope, receive, send)
            return
        client = client_of(graphql_principal(scope), (scope.get("client") or (None,))[0])
        least: tuple[Rule, Drawn] | None = None
        for rule in rules:
            drawn = await draw(self.store, _key("api", rule.name, client), rule.limit)
            if least is None or drawn.wait > least[1].wait or \
                    (least[1].wait == 0 and drawn.left < least[1].left):
                least = (rule, drawn)
        assert least is not None
        rule, drawn = least
        extra = headers(rule.name, rule.limit, drawn)
        if drawn.wait > 0:
            if scope["type"] == "websocket":
                await receive()  # the connect
                await send({"type": "websocket.close", "code": 1013,
                            "reason": f"rate limit {rule.name!r}: try again later"})
                return
            await JSONResponse({"errors": [{
                "message": f"rate limited: {client!r} is over {rule.limit.rate:g} requests a "
                           f"second (rule {rule.name!r}); try again in "
                           f"{extra['Retry-After']} s",
                "extensions": {"code": "rate_limited", "rule": rule.name,
                               "retryAfter": float(extra["Retry-After"])}}]},
                status_code=429, headers=extra)(scope, receive, send)
            return
        raw = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def headed(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *raw]
            await send(message)

        await self.app(scope, receive, headed if scope["type"] == "http" else send)


@dataclass(frozen=True, slots=True)
class Charge:
    """What starting a work cost: the quotas charged (each a bucket and its limit), or
    the one that was spent (``refused``, with its headers)."""

    client: str
    taken: tuple[tuple[str, RateLimit], ...] = ()
    refused: Quota | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""


async def charge(store: SqlStore, limits: Limits, who: Any, address: str | None,
                 saga: str) -> Charge:
    """Charge every quota counting ``who``'s works of ``saga``; when one is spent, the
    others taken are given back and the charge says which refused."""
    client = client_of(who, address)
    taken: list[tuple[str, RateLimit]] = []
    found: dict[str, str] = {}
    least = math.inf
    for quota in limits.quotas:
        if not quota.counts(who, saga):
            continue
        key, limit = _key("quota", quota.name, client), quota.limit
        drawn = await draw(store, key, limit)
        if drawn.wait > 0:
            await refund(store, Charge(client=client, taken=tuple(taken)))
            return Charge(client=client, refused=quota,
                          headers=headers(quota.name, limit, drawn),
                          message=f"quota {quota.name!r} of {client!r} is spent: "
                                  f"{quota.works} works of saga {saga!r} each "
                                  f"{quota.period:g} s; the next in {math.ceil(drawn.wait)} s")
        taken.append((key, limit))
        if drawn.left < least:
            least, found = drawn.left, headers(quota.name, limit, drawn)
    return Charge(client=client, taken=tuple(taken), headers=found)


async def refund(store: SqlStore, paid: Charge) -> None:
    """Give back what a charge took (its work was not made)."""
    if paid.taken:
        def step(conn: Any) -> None:
            for key, limit in paid.taken:
                give_back_in(conn, key, limit)
        await store.transaction(step)


async def keep_charges(store: SqlStore, work_id: str, paid: Charge) -> None:
    """Remember what starting ``work_id`` cost, till :func:`settle` sees it end."""
    if not paid.taken:
        return
    now = time.time()
    rows = [{"work_id": work_id, "key": key, "rate": limit.rate, "burst": limit.burst,
             "principal": paid.client[:200], "charged_at": now} for key, limit in paid.taken]
    await store.transaction(lambda conn: conn.execute(sa.insert(quota_charges), rows))


def _json(text: Any) -> Any:
    try:
        return json.loads(text or "null")
    except (TypeError, ValueError):
        return None


def refunded(row: Mapping[str, Any], client: str) -> bool:
    """Whether a work that ended this way gets its charge back: cancelled by anyone but
    ``client``, or failed on an error counted as retryable (no fault of its input). A
    work whose compensation failed is judged by the failure that began it."""
    if row.get("status") not in ("failed", "compensation_failed", "cancelled"):
        return False
    failure = _json(row.get("failure"))
    error = failure.get("error") if isinstance(failure, dict) else None
    if not isinstance(error, dict):
        error = _json(row.get("error"))
    if not isinstance(error, dict):
        return False
    if row.get("status") == "cancelled" or error.get("type") == "Cancelled":
        by = str(error.get("by") or "")
        return by.split(" (for ", 1)[0] != client
    return bool(error.get("retryable"))


async def settle(store: SqlStore, batch: int = 200) -> int:
    """Settle the charges of works that ended (or are gone), ``batch`` at most: refund
    those ended through no fault of their input, forget the rest. How many it settled."""
    def step(conn: Any) -> int:
        rows = conn.execute(
            sa.select(quota_charges, works.c.status, works.c.error, works.c.failure)
            .select_from(quota_charges.outerjoin(works,
                                                 works.c.work_id == quota_charges.c.work_id))
            .where(sa.or_(works.c.status.in_(_ENDED), works.c.work_id.is_(None)))
            .limit(batch)).mappings().all()
        for row in rows:
            gone = conn.execute(sa.delete(quota_charges).where(
                quota_charges.c.work_id == row["work_id"], quota_charges.c.key == row["key"]))
            if gone.rowcount != 1:  # another node settled it
                continue
            if row["status"] is not None and refunded(row, row["principal"]):
                give_back_in(conn, row["key"], RateLimit(rate=row["rate"],
                                                         burst=row["burst"]))
        return len(rows)

    return await store.transaction(step)
