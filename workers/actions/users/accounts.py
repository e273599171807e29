"""Users in the store: a user is a principal of kind ``person`` (engine.store.principals)
with an email (its name, lowercased), an optional phone, an argon2id password hash, a
state and timestamps, all columns of ``principals`` (migration 0018). Their single-use
secrets (a sign-up's confirmation token, a password reset's token, a phone code) are
credentials of the principal, kept only as hashes; their sessions are the principals'
sessions, the cookie of graphql_api.auth.

- ``pending``: made by a sign-up, waiting for the email's confirmation; it cannot log
  in, and is removed when the confirmation does not come in time.
- ``active``: confirmed; it joins ``[users] groups`` (none by default: a new user has no
  rights over the engine's API until a policy gives them).
- ``disabled``: refused everywhere (its ``disabled_at`` set: every credential of it is
  refused as the principals' rule says).

A login is rate-limited per account and per client address by the engine's token
buckets (workers.limits), and answers the same, in the same time, for an unknown email
and a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store import SqlStore
from engine.store import principals as pr
from engine.store.schema import credentials, group_members, principals
from workers.actions.messaging.errors import MessageInputError
from workers.actions.messaging.providers import check_address
from workers.limits import RateLimit, take

from .config import UsersConfig
from .errors import SignInError, TokenError, UserInputError
from .passwords import Passwords

__all__ = ["STATES", "activate", "check_email", "check_login", "check_password",
           "check_phone", "confirm_phone", "create_pending", "disable", "issue_code",
           "issue_token", "login", "redeem_code", "redeem_token", "remove_pending",
           "revoke_session", "sessions", "set_password", "throttle", "user", "user_by_id",
           "user_id_for"]

STATES = ("pending", "active", "disabled")
_SHOWN = ("principal_id", "name", "email", "phone", "state", "created_at", "updated_at",
          "confirmed_at", "phone_confirmed_at", "disabled_at")
REFUSED = "the email or the password is wrong"


def check_email(value: object, field: str = "email") -> str:
    """An email address as a user's name: lowercased; a :class:`UserInputError` naming
    ``field`` when it is not one (or too long, or of characters a name cannot hold)."""
    try:
        found = check_address("email", value, field).strip().lower()
    except MessageInputError as exc:
        raise UserInputError(str(exc), field=field) from None
    if len(found) > 200 or not all(c.isalnum() or c in "._@+-" for c in found) \
            or not found[0].isalnum():
        raise UserInputError(f"{field}: expected an address of letters, digits and ._+- "
                             f"of 200 characters at most, got {value!r:.80}", field=field)
    return found


def check_phone(value: object, field: str = "phone") -> str:
    try:
        return check_address("sms", value, field)
    except MessageInputError as exc:
        raise UserInputError(str(exc), field=field) from None


def check_password(config: UsersConfig, value: object, field: str = "password") -> str:
    if not isinstance(value, str) or not config.min_password <= len(value) <= 1000:
        raise UserInputError(f"{field}: expected a password of {config.min_password} to "
                             f"1000 characters", field=field)
    return value


def user_id_for(work_id: str) -> str:
    """The principal id of the user a sign-up work makes: derived from the work, so a
    stage run again after a crash finds the user it made."""
    return "u" + hashlib.sha256(work_id.encode()).hexdigest()[:24]


def _shown(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in _SHOWN}


async def user(store: SqlStore, email: str) -> dict[str, Any] | None:
    """The user of ``email`` (a principal of kind person), with its password hash and
    groups; None when there is none."""
    query = sa.select(principals).where(principals.c.name == email.strip().lower()[:200],
                                        principals.c.kind == "person")
    async with store.reader.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        groups = sorted(g for (g,) in await conn.execute(sa.select(
            group_members.c.group_name).where(
                group_members.c.principal_id == row["principal_id"])))
    return {**_shown(row), "password_hash": row["password_hash"], "groups": groups}


async def user_by_id(store: SqlStore, user_id: str) -> dict[str, Any] | None:
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(principals).where(
            principals.c.principal_id == user_id))).mappings().first()
    return None if row is None else _shown(row)


async def create_pending(store: SqlStore, user_id: str, email: str, phone: str | None,
                         password_hash: str) -> dict[str, Any]:
    """The pending user ``user_id`` (made now, or found made by this same sign-up); a
    :class:`UserInputError` when another principal has the email."""
    now = time.time()

    def run(conn: Connection) -> dict[str, Any]:
        found = conn.execute(sa.select(principals).where(
            principals.c.name == email)).mappings().first()
        if found is not None:
            if found["principal_id"] == user_id:
                return _shown(found)
            raise UserInputError(f"email: {email!r} has an account already", field="email")
        row = {"principal_id": user_id, "kind": "person", "name": email, "email": email,
               "phone": phone, "password_hash": password_hash, "state": "pending",
               "created_at": now, "updated_at": now, "disabled_at": None,
               "confirmed_at": None, "phone_confirmed_at": None}
        conn.execute(sa.insert(principals).values(**row))
        return _shown(row)

    return await store.transaction(run)


async def remove_pending(store: SqlStore, user_id: str, *, by: str = "users") -> bool:
    """The user removed if it is still pending (with its credentials and the policies
    naming it); whether it was."""
    found = await user_by_id(store, user_id)
    if found is None or found["state"] != "pending":
        return False
    try:  # checked again in the removal's transaction: never a user confirmed meanwhile
        return await pr.remove(store, found["name"], by=by, state="pending")
    except ValueError:  # removed meanwhile
        return False


async def activate(store: SqlStore, user_id: str, groups: tuple[str, ...] = ()) -> dict[str, Any]:
    """A pending user active (confirmed now; an active one never confirmed, as one an
    OpenID Connect provider vouches for, confirmed now too), in ``groups``; a disabled
    one stays disabled."""
    now = time.time()

    def run(conn: Connection) -> None:
        conn.execute(sa.update(principals).where(
            principals.c.principal_id == user_id, sa.or_(
                principals.c.state == "pending", sa.and_(
                    principals.c.state == "active", principals.c.confirmed_at.is_(None))))
            .values(state="active", confirmed_at=now, updated_at=now))
        have = {g for (g,) in conn.execute(sa.select(group_members.c.group_name).where(
            group_members.c.principal_id == user_id))}
        for group in sorted(set(groups) - have):
            conn.execute(sa.insert(group_members).values(group_name=group,
                                                         principal_id=user_id))

    await store.transaction(run)
    found = await user_by_id(store, user_id)
    if found is None:
        raise TokenError("the user of this sign-up was removed", reason="unknown")
    return found


async def disable(store: SqlStore, email: str) -> None:
    """The user refused everywhere from now on (its sessions too)."""
    now = time.time()

    def run(conn: Connection) -> None:
        done = conn.execute(sa.update(principals).where(
            principals.c.name == email, principals.c.kind == "person").values(
                state="disabled", disabled_at=now, updated_at=now))
        if not done.rowcount:
            raise UserInputError(f"email: no user {email!r}", field="email")

    await store.transaction(run)


def _revoke_all(conn: Connection, user_id: str, kinds: tuple[str, ...]) -> int:
    done = conn.execute(sa.update(credentials).where(
        credentials.c.principal_id == user_id, credentials.c.kind.in_(kinds),
        credentials.c.revoked_at.is_(None)).values(revoked_at=time.time()))
    return int(done.rowcount or 0)


async def set_password(store: SqlStore, user_id: str, password_hash: str) -> int:
    """A new password hash, and every session and reset token of the user revoked in
    the same transaction; how many sessions were."""
    def run(conn: Connection) -> int:
        done = conn.execute(sa.update(principals).where(
            principals.c.principal_id == user_id).values(password_hash=password_hash,
                                                         updated_at=time.time()))
        if not done.rowcount:
            raise TokenError("the user of this reset was removed", reason="unknown")
        _revoke_all(conn, user_id, ("reset",))
        return _revoke_all(conn, user_id, ("session",))

    return await store.transaction(run)


async def confirm_phone(store: SqlStore, user_id: str, phone: str) -> None:
    now = time.time()

    def run(conn: Connection) -> None:
        conn.execute(sa.update(principals).where(principals.c.principal_id == user_id)
                     .values(phone=phone, phone_confirmed_at=now, updated_at=now))

    await store.transaction(run)


# ------------------------------------------------------------ single-use secrets


async def issue_token(store: SqlStore, name: str, kind: str, *, seconds: float,
                      work_id: str) -> str:
    """A single-use token (``confirm`` or ``reset``) of user ``name`` for the work
    ``work_id`` (its label: the work the token's use signals), shown this once."""
    token, _ = await pr.issue(store, name, kind=kind, label=work_id, seconds=seconds)
    return token


async def redeem_token(store: SqlStore, token: object, kind: str) -> tuple[pr.Principal, str]:
    """The user and the work of a ``kind`` token, which is used up by this (a
    :class:`TokenError` saying why not: unknown, used, expired)."""
    if not isinstance(token, str) or not token:
        raise TokenError("token: expected the token of the mail", reason="unknown")
    try:
        who = await pr.verify(store, token.strip(), kinds=(kind,), consume=True)
    except pr.CredentialError as exc:
        reason = {"revoked": "used", "expired": "expired"}.get(exc.reason, "unknown")
        raise TokenError(f"token: {'this token was used already' if reason == 'used' else exc}",
                         reason=reason) from None
    async with store.reader.connect() as conn:
        label = (await conn.execute(sa.select(credentials.c.label).where(
            credentials.c.credential_id == who.credential_id))).scalar()
    return who, str(label or "")


def _code_secret(user_id: str, code: str) -> str:
    return f"{user_id}:{code}"  # salted by the user: a code's hash is no one else's


async def issue_code(store: SqlStore, name: str, user_id: str, *, seconds: float,
                     work_id: str) -> str:
    """A six-digit code of user ``name`` for the work ``work_id`` (kept hashed, salted
    by the user), the user's earlier codes revoked."""
    code = f"{secrets.randbelow(10**6):06d}"

    def revoke(conn: Connection) -> int:
        return _revoke_all(conn, user_id, ("code",))

    await store.transaction(revoke)
    await pr.issue(store, name, kind="code", label=work_id, seconds=seconds,
                   secret=_code_secret(user_id, code))
    return code


async def throttle(store: SqlStore, key: str, limit: RateLimit) -> None:
    """A token from the bucket ``key`` (the engine's, shared by every node), or a
    :class:`SignInError` ``rate_limited`` saying when to try again."""
    wait = await take(store, key[:200], limit)
    if wait > 0:
        raise SignInError(f"too many attempts: try again in {wait:.0f} s",
                          reason="rate_limited", retry_after=wait)


async def redeem_code(store: SqlStore, user_id: str, code: object, *,
                      limit: RateLimit) -> str:
    """The work of the user's live code when ``code`` is it (used up by this); a
    :class:`TokenError` when it is not (a wrong code, none sent, expired). Every try
    takes a token of the user's bucket (``limit``): six digits are not guessed within
    a code's lifetime (a :class:`SignInError` ``rate_limited`` when it is spent)."""
    await throttle(store, f"users.code:{user_id}", limit)
    if not isinstance(code, str) or not code.strip().isdigit():
        raise TokenError("code: expected the six digits of the message", reason="unknown")
    now = time.time()
    async with store.reader.connect() as conn:
        rows = (await conn.execute(sa.select(credentials).where(
            credentials.c.principal_id == user_id, credentials.c.kind == "code",
            credentials.c.revoked_at.is_(None)))).mappings().all()
    wanted = pr.hash_secret(_code_secret(user_id, code.strip()))
    for row in rows:
        if hmac.compare_digest(row["secret_hash"], wanted):
            if row["expires_at"] <= now:
                raise TokenError("code: this code expired: ask for a new one",
                                 reason="expired")
            if not await pr.revoke(store, row["credential_id"]):
                raise TokenError("code: this code was used already", reason="used")
            return str(row["label"])
    raise TokenError("code: not the code sent (or none was sent)", reason="unknown")


# ------------------------------------------------------------ logging in


async def check_login(store: SqlStore, config: UsersConfig, passwords: Passwords,
                      email: object, password: object, *, address: str | None = None
                      ) -> dict[str, Any]:
    """The active user whose email and password these are, or a :class:`SignInError`:
    the same ``refused`` answer, in the same time, for an unknown email and a wrong
    password; ``rate_limited`` when the account or the client address (``address``)
    has tried too often (every attempt counts)."""
    name = email.strip().lower()[:200] if isinstance(email, str) else ""
    given = password if isinstance(password, str) else ""
    await throttle(store, f"users.login:{name[:180]}", config.account_limit)
    await throttle(store, f"users.address:{(address or '-')[:180]}", config.address_limit)
    # one query whether the account exists or not (no groups read for one that does)
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(principals).where(
            principals.c.name == name, principals.c.kind == "person"))).mappings().first()
    ok = await passwords.verify(None if found is None else found["password_hash"],
                                given[:1000])
    if found is None or not ok:
        raise SignInError(REFUSED)
    if found["state"] != "active":
        raise SignInError(f"this account is {found['state']}"
                          + (": confirm the email first" if found["state"] == "pending"
                             else ""), reason="not_active")
    return _shown(found)


async def login(store: SqlStore, config: UsersConfig, passwords: Passwords, email: object,
                password: object, *, address: str | None = None, label: str = "password"
                ) -> tuple[str, dict[str, Any]]:
    """A session of the user (as :func:`check_login` allows): the session credential
    (what the cookie holds) and its row."""
    found = await check_login(store, config, passwords, email, password, address=address)
    session, row = await pr.issue(store, found["name"], kind="session", label=label,
                                  seconds=config.session_lifetime)
    return session, row


async def sessions(store: SqlStore, name: str) -> list[dict[str, Any]]:
    """The user's live sessions, newest first (id, label, created_at, expires_at)."""
    now = time.time()
    return [r for r in await pr.credentials_of(store, name)
            if r["kind"] == "session" and r["revoked_at"] is None and r["expires_at"] > now]


async def revoke_session(store: SqlStore, name: str, session_id: str) -> bool:
    """Whether the user's live session ``session_id`` was revoked now (another's is
    never: False)."""
    if not any(r["credential_id"] == session_id for r in await sessions(store, name)):
        return False
    return await pr.revoke(store, session_id)
