"""People and machines in the store: principals (a person or a service) in groups, and
the credentials they hold: API tokens, browser sessions and one-time login links.

A credential's secret is shown once, when it is issued, and kept only as its sha256
(the secrets are 256 random bits: a plain hash is enough, no key stretching needed). A
credential as given to a client names the deployment that issued it, its id and its
secret: ``ss1.<deployment>.<credential id>.<secret>``; a credential of another
deployment is refused as such, before the store is asked. Every rule about principals
and credentials lives here, once, for SQLite and PostgreSQL alike; the API and the
``stepsaga`` command both call it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .schema import credentials, group_members, principals, settings
from .sql import SqlStore

__all__ = ["ADMINS", "KINDS", "CredentialError", "Principal", "add_to_groups", "count",
           "create", "credentials_of", "csrf_hash_of", "deployment_id", "find", "hash_secret",
           "issue", "issue_token", "list_all", "parse", "remove", "remove_from_groups",
           "revoke", "set_csrf_hash", "verify"]

ADMINS = "admins"  # the group of administrators, which the first start creates
KINDS = ("person", "service")
# a token, a session or a one-time login link; and the users pack's single-use secrets
# (workers.actions.users): a sign-up's confirmation, a password reset, a phone code.
# Only tokens and sessions sign in (verify's kinds), each where it is taken.
CREDENTIALS = ("token", "session", "link", "confirm", "reset", "code")
PREFIX = "ss1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
_DEPLOYMENT_KEY = "deployment_id"


class CredentialError(ValueError):
    """A credential refused: ``reason`` is one of malformed, other_deployment, unknown,
    revoked, expired, disabled (the principal), wrong_kind."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a person or a service, with its groups."""

    principal_id: str
    name: str
    kind: str
    groups: frozenset[str]
    credential_id: str | None = None  # the credential it came with
    expires_at: float | None = None  # when that credential expires

    @property
    def admin(self) -> bool:
        return ADMINS in self.groups


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_secret(secret: str) -> str:
    """How a credential's secret is kept: its sha256, hex."""
    return _hash(secret)


def _check_name(name: Any, what: str = "a principal's name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} must be 1 to 200 letters, digits or ._@+- starting with a "
                         f"letter or digit, got {name!r:.60}")
    return name


async def deployment_id(store: SqlStore) -> str:
    """This deployment's id: made on the first call, the same ever after (on every node:
    the first writer wins)."""
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(settings.c.value).where(
            settings.c.key == _DEPLOYMENT_KEY))).scalar()
    if found is not None:
        return str(found)
    made = secrets.token_hex(8)

    def run(conn: Any) -> str:
        found = conn.execute(sa.select(settings.c.value).where(
            settings.c.key == _DEPLOYMENT_KEY)).scalar()
        if found is None:
            conn.execute(sa.insert(settings).values(key=_DEPLOYMENT_KEY, value=made))
            return made
        return str(found)

    return str(await store.transaction(run))


async def create(store: SqlStore, name: str, *, kind: str = "service",
                 groups: Iterable[str] = (), email: str | None = None) -> dict[str, Any]:
    """A new principal (``ValueError`` naming what is wrong: a bad name or kind, a name
    taken)."""
    _check_name(name)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    chosen = sorted({_check_name(g, "a group's name") for g in groups})
    row = {"principal_id": "p" + secrets.token_hex(12), "kind": kind, "name": name,
           "email": email, "created_at": time.time(), "disabled_at": None}

    def run(conn: Any) -> None:
        taken = conn.execute(sa.select(principals.c.principal_id).where(
            principals.c.name == name)).scalar()
        if taken is not None:
            raise ValueError(f"a principal named {name!r} exists already")
        conn.execute(sa.insert(principals).values(**row))
        for group in chosen:
            conn.execute(sa.insert(group_members).values(
                group_name=group, principal_id=row["principal_id"]))

    await store.transaction(run)
    return {**row, "groups": chosen}


def _groups_query(ids: Sequence[str]) -> Any:
    return sa.select(group_members.c.principal_id, group_members.c.group_name).where(
        group_members.c.principal_id.in_(list(ids)))


async def find(store: SqlStore, name: str) -> dict[str, Any] | None:
    """A principal by name, with its groups (None: no such principal)."""
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(principals).where(
            principals.c.name == name))).mappings().first()
        if row is None:
            return None
        groups = [g for _, g in (await conn.execute(_groups_query([row["principal_id"]])))]
    return {**dict(row), "groups": sorted(groups)}


async def list_all(store: SqlStore) -> list[dict[str, Any]]:
    """Every principal, by name, with its groups."""
    async with store.reader.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(
            sa.select(principals).order_by(principals.c.name))).mappings()]
        found: dict[str, list[str]] = {}
        for pid, group in await conn.execute(_groups_query([r["principal_id"] for r in rows])):
            found.setdefault(pid, []).append(group)
    return [{**r, "groups": sorted(found.get(r["principal_id"], []))} for r in rows]


def _principal_id(conn: Any, name: str) -> str:
    found = conn.execute(sa.select(principals.c.principal_id).where(
        principals.c.name == name)).scalar()
    if found is None:
        raise ValueError(f"no principal is named {name!r}")
    return str(found)


async def add_to_groups(store: SqlStore, name: str, groups: Iterable[str]) -> None:
    chosen = {_check_name(g, "a group's name") for g in groups}

    def run(conn: Any) -> None:
        pid = _principal_id(conn, name)
        have = {g for _, g in conn.execute(_groups_query([pid]))}
        for group in sorted(chosen - have):
            conn.execute(sa.insert(group_members).values(group_name=group, principal_id=pid))

    await store.transaction(run)


async def remove_from_groups(store: SqlStore, name: str, groups: Iterable[str]) -> None:
    chosen = list(groups)

    def run(conn: Any) -> None:
        pid = _principal_id(conn, name)
        conn.execute(sa.delete(group_members).where(group_members.c.principal_id == pid,
                                                    group_members.c.group_name.in_(chosen)))

    await store.transaction(run)


async def remove(store: SqlStore, name: str, *, by: str = "stepsaga",
                 state: str | None = None) -> bool:
    """A principal gone, with its groups, its credentials (all refused from now on)
    and the policies naming it, in one transaction. ``state``: only while the
    principal is in this state (the users pack's unconfirmed user); whether it was
    removed."""
    from .policies import forget_in

    def run(conn: Any) -> bool:
        pid = _principal_id(conn, name)
        if state is not None:
            query = sa.select(principals.c.state).where(principals.c.principal_id == pid)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()  # not confirmed meanwhile
            if conn.execute(query).scalar() != state:
                return False
        conn.execute(sa.delete(credentials).where(credentials.c.principal_id == pid))
        conn.execute(sa.delete(group_members).where(group_members.c.principal_id == pid))
        conn.execute(sa.delete(principals).where(principals.c.principal_id == pid))
        forget_in(conn, by=by, principal=name)
        return True

    return bool(await store.transaction(run))


async def issue(store: SqlStore, name: str, *, kind: str = "token", label: str = "",
                seconds: float = 90 * 86400, limit: int | None = None,
                secret: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new credential of principal ``name``: the string to give its holder (shown this
    once) and its row. ``limit``: how many live credentials of this kind the principal
    may hold at most (a ``ValueError`` says so when it has them already). ``secret``:
    the caller's (a code a person types, salted by the caller) instead of 256 random
    bits."""
    if kind not in CREDENTIALS:
        raise ValueError(f"a credential is one of {', '.join(CREDENTIALS)}, got {kind!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not 0 < seconds <= 10 * 365 * 86400:
        raise ValueError(f"a credential lives more than 0 s and 10 years at most, got "
                         f"{seconds!r}")
    if len(label) > 200:
        raise ValueError("a credential's label is 200 characters at most")
    deployment = await deployment_id(store)
    now = time.time()
    secret = secrets.token_urlsafe(32) if secret is None else secret
    row = {"credential_id": "c" + secrets.token_hex(12), "kind": kind,
           "secret_hash": _hash(secret), "label": label, "created_at": now,
           "expires_at": now + seconds, "revoked_at": None, "csrf_hash": None}

    def run(conn: Any) -> str:
        pid = _principal_id(conn, name)
        if limit is not None:
            live = conn.execute(sa.select(sa.func.count()).select_from(credentials).where(
                credentials.c.principal_id == pid, credentials.c.kind == kind,
                credentials.c.revoked_at.is_(None), credentials.c.expires_at > now)).scalar()
            if int(live or 0) >= limit:
                raise ValueError(f"{name!r} holds {live} live {kind}s, the most it may: "
                                 f"revoke one first")
        conn.execute(sa.insert(credentials).values(principal_id=pid, **row))
        return pid

    pid = await store.transaction(run)
    return f"{PREFIX}.{deployment}.{row['credential_id']}.{secret}", {**row, "principal_id": pid}


def parse(credential: str) -> tuple[str, str, str]:
    """A credential's deployment, id and secret (``CredentialError`` when it is not one)."""
    parts = credential.split(".") if isinstance(credential, str) else []
    if len(parts) != 4 or parts[0] != PREFIX or not all(parts[1:]) or len(credential) > 200:
        raise CredentialError("malformed", "not a stepsaga credential")
    return parts[1], parts[2], parts[3]


async def verify(store: SqlStore, credential: str, *, kinds: Sequence[str] = ("token",),
                 deployment: str | None = None, consume: bool = False) -> Principal:
    """The principal a credential stands for, or ``CredentialError`` saying why not.
    ``consume``: the credential is used up by this (a one-time link)."""
    issuer, credential_id, secret = parse(credential)
    if issuer != (deployment or await deployment_id(store)):
        raise CredentialError("other_deployment",
                              f"this credential was issued by another deployment ({issuer})")
    now = time.time()
    async with store.reader.connect() as conn:
        row = (await conn.execute(
            sa.select(credentials, principals.c.name, principals.c.kind.label("pkind"),
                      principals.c.disabled_at)
            .join(principals, principals.c.principal_id == credentials.c.principal_id)
            .where(credentials.c.credential_id == credential_id))).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
            raise CredentialError("unknown", "no such credential")
        groups = frozenset(g for _, g in await conn.execute(
            _groups_query([row["principal_id"]])))
    if row["kind"] not in kinds:
        raise CredentialError("wrong_kind", f"a {row['kind']} is not taken here")
    if row["revoked_at"] is not None:
        raise CredentialError("revoked", "this link was used already" if row["kind"] == "link"
                              else "this credential was revoked")
    if row["expires_at"] <= now:
        raise CredentialError("expired", "this credential expired")
    if row["disabled_at"] is not None:
        raise CredentialError("disabled", f"{row['name']!r} is disabled")
    if consume and not await revoke(store, credential_id):
        raise CredentialError("revoked", "this credential was used already")
    return Principal(principal_id=row["principal_id"], name=row["name"], kind=row["pkind"],
                     groups=groups, credential_id=credential_id,
                     expires_at=row["expires_at"])


async def revoke(store: SqlStore, credential_id: str) -> bool:
    """Whether a live credential was revoked now (False: none such, or revoked already)."""
    def run(conn: Any) -> bool:
        done = conn.execute(sa.update(credentials).where(
            credentials.c.credential_id == credential_id,
            credentials.c.revoked_at.is_(None)).values(revoked_at=time.time()))
        return bool(done.rowcount)

    return bool(await store.transaction(run))


async def credentials_of(store: SqlStore, name: str | None = None) -> list[dict[str, Any]]:
    """Credentials (of one principal, or all), newest first, without their hashes."""
    query = (sa.select(*[c for c in credentials.c if c.name not in ("secret_hash", "csrf_hash")],
                       principals.c.name)
             .join(principals, principals.c.principal_id == credentials.c.principal_id)
             .order_by(credentials.c.created_at.desc()))
    if name is not None:
        query = query.where(principals.c.name == name)
    async with store.reader.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def set_csrf_hash(store: SqlStore, credential_id: str, csrf_hash: str) -> None:
    """A session's CSRF token (its hash), set once when the session is made."""
    def run(conn: Any) -> None:
        conn.execute(sa.update(credentials).where(
            credentials.c.credential_id == credential_id).values(csrf_hash=csrf_hash))

    await store.transaction(run)


async def csrf_hash_of(store: SqlStore, credential_id: str) -> str | None:
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(credentials.c.csrf_hash).where(
            credentials.c.credential_id == credential_id))).scalar()
    return None if found is None else str(found)


async def count(store: SqlStore) -> int:
    """How many principals there are (none: a fresh store)."""
    async with store.reader.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(
            principals))).scalar() or 0)


MAX_TOKENS = 20  # live tokens a principal may hold at once


async def issue_token(store: SqlStore, name: str, *, groups: Iterable[str] = (),
                      person: bool = False, seconds: float = 90 * 86400, label: str = ""
                      ) -> tuple[str, dict[str, Any], bool]:
    """A new API token of principal ``name``, made (a service, or a person) in
    ``groups`` when new, joining them when it exists: the token (shown this once), its
    row and whether the principal was made now. What ``stepsaga token create`` and the
    API's ``createToken`` both do."""
    chosen = list(groups)
    made = False
    if await find(store, name) is None:
        await create(store, name, groups=chosen, kind="person" if person else "service")
        made = True
    elif chosen:
        await add_to_groups(store, name, chosen)
    token, row = await issue(store, name, label=label, seconds=seconds, limit=MAX_TOKENS)
    return token, row, made
