"""The users pack's sagas, built from a checked :class:`UsersConfig` and the messaging
pack that sends their mail and SMS (its channels, templates, senders in turn and
failover: :class:`workers.actions.messaging.MessagingPack`).

Secrets stay out of events in the clear: a password reaches a work already hashed
(and sealed: the schemas mark it secret), a token or code is a stage's output field
marked secret (sealed in the store; the next stage, which sends it, gets it opened),
and the message carrying it is delivered by that stage itself, so no message work
holds it either. Tokens and codes are kept in the store as hashes only.

- ``users.sign_up`` ``{"email", "phone": optional, "password_hash"}``:
  ``create`` the pending user (compensation: removed, if still pending);
  ``token`` a single-use confirmation token (secret); ``mail`` it, with a link;
  ``confirmation`` waits for the signal ``users.confirmed`` up to ``[users]
  confirm_timeout`` (days in production, seconds in tests): on timeout the stage fails
  and the compensation removes the unconfirmed user; ``activate`` the user.
- ``users.reset_password`` ``{"email", "via": "email" | "sms"}``: ``find`` the active
  user (by SMS only once its phone is confirmed); then the branch ``found``: ``none``
  (no such user) ends the work at once, having sent nothing (the API answers the same
  either way); ``send`` makes a ``token`` (a token by
  email, a code by SMS), ``send``, ``reset`` waits for ``users.reset`` with the new
  password's hash (sealed) up to ``reset_lifetime``, ``change`` sets it and revokes
  every session of the user.
- ``users.confirm_phone`` ``{"user_id", "phone"}``: ``code`` (secret), ``send`` it by
  SMS, ``entered`` waits for ``users.phone_confirmed`` up to ``code_lifetime``,
  ``confirm`` the phone.

:func:`sign_up`, :func:`confirm_sign_up`, :func:`request_reset`, :func:`reset_password`,
:func:`request_phone_code` and :func:`confirm_phone` are the operations from Python;
the API's fields call them too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jinja2

from engine import Branch, Command, RetryPolicy, Runtime, Saga, Sleep, Stage, StageContext, Wait
from engine.store import SqlStore, inbox
from workers.actions.messaging import MessagingPack, message
from workers.actions.messaging.config import RATE_PREFIX

from . import accounts
from .config import UsersConfig
from .errors import TokenError, UserInputError, UsersConfigError
from .passwords import Passwords

__all__ = ["CONFIRMED", "PHONE_CONFIRMED", "RESET", "UsersPack", "confirm_phone",
           "confirm_sign_up", "request_phone_code", "request_reset", "reset_password",
           "sign_up", "users_sagas"]

SIGN_UP, RESET_SAGA, PHONE_SAGA = "users.sign_up", "users.reset_password", "users.confirm_phone"
CONFIRMED, RESET, PHONE_CONFIRMED = "users.confirmed", "users.reset", "users.phone_confirmed"
_SECRET = {"type": "string", "secret": True}
_SEND_RETRY = RetryPolicy(attempts=3)
_STORE_RETRY = RetryPolicy(attempts=3)


def _store(ctx: StageContext) -> SqlStore:
    store = ctx.store
    if not isinstance(store, SqlStore):
        raise UsersConfigError("the users pack keeps its users in the store: run its sagas "
                               "on a runtime or node with a SqlStore")
    return store


class UsersPack:
    """What the stages (and the API's fields) share: the config, the password hasher
    and the messaging pack."""

    def __init__(self, config: UsersConfig, messaging: MessagingPack) -> None:
        self.config = config
        self.messaging = messaging
        # the mails every deployment sends: their templates must be there at start (the
        # SMS ones are needed only where phones are confirmed, when first sent)
        for key in ("confirm_template", "reset_template"):
            name = getattr(config, key)
            try:
                messaging.templates.env.get_template(f"{name}.txt")
                messaging.templates.env.get_template(f"{name}.subject")
            except jinja2.TemplateNotFound as exc:
                raise UsersConfigError(
                    f"users.{key}: the messaging pack has no template {exc.name!r} "
                    f"([messaging.templates.{name}] text and subject, or "
                    f"{name}.txt and {name}.subject in messaging.templates_dir)") from None
        self.passwords = Passwords(config)

    def link(self, path: str, token: str) -> str:
        return f"{self.config.link_base}{path}?token={quote(token)}"

    async def _deliver(self, ctx: StageContext, channel: str, template: str, to: str,
                       context: dict[str, Any]) -> dict[str, Any]:
        sent = await self.messaging.deliver(ctx, message(channel, template, to, context))
        return {"channel": sent["channel"], "sender": sent["sender"],
                "provider_id": sent["provider_id"]}

    # ------------------------------------------------------------ users.sign_up

    async def create(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise UserInputError("a sign-up's input is {\"email\", \"phone\", "
                                 "\"password_hash\"}", field="email")
        email = accounts.check_email(data.get("email"))
        phone = data.get("phone")
        phone = None if phone in (None, "") else accounts.check_phone(phone)
        password_hash = data.get("password_hash")
        if not isinstance(password_hash, str) or not password_hash.startswith("$argon2"):
            raise UserInputError("password_hash: expected an argon2 hash (the password "
                                 "is hashed before the work starts)", field="password")
        made = await accounts.create_pending(_store(ctx), accounts.user_id_for(ctx.work_id),
                                             email, phone, password_hash)
        return {"user_id": made["principal_id"], "email": email}

    async def uncreate(self, ctx: StageContext, data: Any, output: Any, reason: Any) -> None:
        user_id = output["user_id"] if isinstance(output, dict) else \
            accounts.user_id_for(ctx.work_id)
        if await accounts.remove_pending(_store(ctx), user_id):
            ctx.logger.info("the unconfirmed user %s was removed", user_id)

    async def confirm_token(self, ctx: StageContext, made: dict[str, Any]) -> dict[str, Any]:
        token = await accounts.issue_token(_store(ctx), made["email"], "confirm",
                                           seconds=self.config.confirm_timeout,
                                           work_id=ctx.work_id)
        return {**made, "token": token}

    async def mail_confirmation(self, ctx: StageContext, made: dict[str, Any]
                                ) -> dict[str, Any]:
        sent = await self._deliver(ctx, self.config.email_channel,
                                   self.config.confirm_template, made["email"], {
                                       "email": made["email"], "token": made["token"],
                                       "link": self.link("/users/confirm", made["token"])})
        return {"user_id": made["user_id"], "email": made["email"], **sent}

    async def activate(self, ctx: StageContext, signalled: Any) -> dict[str, Any]:
        user_id = accounts.user_id_for(ctx.work_id)
        found = await accounts.activate(_store(ctx), user_id, self.config.groups)
        return {"user_id": user_id, "email": found["email"], "state": found["state"]}

    # ------------------------------------------------------------ users.reset_password

    async def find(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise UserInputError("a reset's input is {\"email\", \"via\"}", field="email")
        via = data.get("via", "email")
        if via not in ("email", "sms"):
            raise UserInputError(f"via: expected \"email\" or \"sms\", got {via!r:.40}",
                                 field="via")
        found = await accounts.user(_store(ctx), accounts.check_email(data.get("email")))
        if found is None or found["state"] != "active" or \
                (via == "sms" and found["phone_confirmed_at"] is None):
            return {"user_id": None, "via": via}
        return {"user_id": found["principal_id"], "email": found["email"], "via": via,
                "to": found["email"] if via == "email" else found["phone"]}

    async def choose(self, ctx: StageContext, found: Any) -> str:
        return "none" if found.get("user_id") is None else "send"

    async def reset_token(self, ctx: StageContext, found: dict[str, Any]) -> dict[str, Any]:
        store, seconds = _store(ctx), self.config.reset_lifetime
        if found["via"] == "sms":
            token = await accounts.issue_code(store, found["email"], found["user_id"],
                                              seconds=seconds, work_id=ctx.work_id)
        else:
            token = await accounts.issue_token(store, found["email"], "reset",
                                               seconds=seconds, work_id=ctx.work_id)
        return {**found, "token": token}

    async def send_reset(self, ctx: StageContext, found: dict[str, Any]) -> dict[str, Any]:
        if found["via"] == "sms":
            sent = await self._deliver(ctx, self.config.sms_channel,
                                       self.config.reset_sms_template, found["to"],
                                       {"code": found["token"]})
        else:
            sent = await self._deliver(ctx, self.config.email_channel,
                                       self.config.reset_template, found["to"], {
                                           "email": found["email"], "token": found["token"],
                                           "link": self.link("/users/reset", found["token"])})
        return {"user_id": found["user_id"], "via": found["via"], **sent}

    async def change(self, ctx: StageContext, signalled: Any) -> dict[str, Any]:
        if not isinstance(signalled, dict) or signalled.get("expired"):
            return {"changed": False, "sessions_revoked": 0}
        user_id, password_hash = signalled.get("user_id"), signalled.get("password_hash")
        if not isinstance(user_id, str) or not isinstance(password_hash, str) or \
                not password_hash.startswith("$argon2"):
            raise UserInputError("a reset's signal is {user_id, password_hash (argon2)}",
                                 field="password")
        revoked = await accounts.set_password(_store(ctx), user_id, password_hash)
        return {"changed": True, "sessions_revoked": revoked}

    # ------------------------------------------------------------ users.confirm_phone

    async def phone_code(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("user_id"), str):
            raise UserInputError("a phone confirmation's input is {\"user_id\", \"phone\"}",
                                 field="user_id")
        phone = accounts.check_phone(data.get("phone"))
        found = await accounts.user_by_id(_store(ctx), data["user_id"])
        if found is None:
            raise UserInputError(f"user_id: no user {data['user_id']!r}", field="user_id")
        code = await accounts.issue_code(_store(ctx), found["name"], data["user_id"],
                                         seconds=self.config.code_lifetime,
                                         work_id=ctx.work_id)
        return {"user_id": data["user_id"], "phone": phone, "code": code}

    async def send_code(self, ctx: StageContext, made: dict[str, Any]) -> dict[str, Any]:
        sent = await self._deliver(ctx, self.config.sms_channel, self.config.phone_template,
                                   made["phone"], {"code": made["code"]})
        return {"user_id": made["user_id"], "phone": made["phone"], **sent}

    async def phone_confirmed(self, ctx: StageContext, signalled: Any) -> dict[str, Any]:
        if not isinstance(signalled, dict) or signalled.get("expired"):
            return {"confirmed": False}
        await accounts.confirm_phone(_store(ctx), signalled["user_id"], signalled["phone"])
        return {"confirmed": True, "phone": signalled["phone"]}


def _schema(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def users_sagas(pack: UsersPack) -> list[Saga]:
    """The pack's three sagas (see the module docstring)."""
    config = pack.config
    email_rate = f"{RATE_PREFIX}:{config.email_channel}"
    sms_rate = f"{RATE_PREFIX}:{config.sms_channel}"
    text = {"type": "string"}
    return [
        Saga(name=SIGN_UP, description="sign a user up: create, mail a confirmation "
             "token, wait for it; removed when it does not come in time",
             input_schema=_schema(["email", "password_hash"], email=text,
                                  phone={"type": ["string", "null"]},
                                  password_hash=_SECRET),
             stages=[
                 Stage(name="create", transaction=pack.create, compensation=pack.uncreate,
                       retry=_STORE_RETRY),
                 Stage(name="token", transaction=pack.confirm_token, retry=_STORE_RETRY,
                       output_schema=_schema([], token=_SECRET)),
                 Stage(name="mail", transaction=pack.mail_confirmation, retry=_SEND_RETRY,
                       rate_limit_key=email_rate),
                 Wait(name="confirmation", signal=CONFIRMED, timeout=config.confirm_timeout),
                 Stage(name="activate", transaction=pack.activate, retry=_STORE_RETRY),
             ]),
        Saga(name=RESET_SAGA, description="reset a password by a single-use token mailed "
             "(or a code by SMS); every session revoked after the change",
             input_schema=_schema(["email"], email=text, via={"enum": ["email", "sms"]}),
             stages=[
                 Stage(name="find", transaction=pack.find, retry=_STORE_RETRY),
                 Branch(name="found", choose=pack.choose, cases=[
                     Sleep(name="none", seconds=0),  # no such user: nothing is sent
                     Saga(name="send", stages=[
                         Stage(name="token", transaction=pack.reset_token,
                               retry=_STORE_RETRY, output_schema=_schema([], token=_SECRET)),
                         Stage(name="deliver", transaction=pack.send_reset, retry=_SEND_RETRY),
                         Wait(name="reset", signal=RESET, timeout=config.reset_lifetime,
                              timeout_output={"expired": True}),
                         Stage(name="change", transaction=pack.change, retry=_STORE_RETRY),
                     ]),
                 ]),
             ]),
        Saga(name=PHONE_SAGA, description="confirm a user's phone by a code sent by SMS",
             input_schema=_schema(["user_id", "phone"], user_id=text, phone=text),
             stages=[
                 Stage(name="code", transaction=pack.phone_code, retry=_STORE_RETRY,
                       output_schema=_schema([], code=_SECRET)),
                 Stage(name="send", transaction=pack.send_code, retry=_SEND_RETRY,
                       rate_limit_key=sms_rate),
                 Wait(name="entered", signal=PHONE_CONFIRMED, timeout=config.code_lifetime,
                      timeout_output={"expired": True}),
                 Stage(name="confirm", transaction=pack.phone_confirmed, retry=_STORE_RETRY),
             ]),
    ]


# ------------------------------------------------------------ operations


async def _signal(store: SqlStore, work_id: str, name: str, payload: Any, by: str) -> None:
    await inbox.send(store, work_id, Command(kind="signal", by=by, reason=name,
                                             args={"name": name, "payload": payload}))


def _sql(runtime: Runtime) -> SqlStore:
    store = runtime.store
    if not isinstance(store, SqlStore):
        raise UsersConfigError("the users pack keeps its users in the store: give the "
                               "runtime a SqlStore")
    return store


async def _work_of(store: SqlStore, work_id: str, saga: str) -> dict[str, Any]:
    """The row of the work a token was issued for, which must be of ``saga`` (a code
    sent for another purpose is refused, as unknown here)."""
    from engine.store.aggregates import plain_row

    row = await store.work(work_id)
    if row is None or row.get("saga") != saga:
        raise TokenError("code: not the code sent (or none was sent)")
    return plain_row(row)


async def sign_up(runtime: Runtime, pack: UsersPack, email: object, password: object,
                  phone: object = None) -> str:
    """Start a sign-up (a work of ``users.sign_up`` queued for the worker nodes, its id)
    with the password hashed here: it never reaches the work in the clear. A
    :class:`UserInputError` naming the field first when one is wrong (the email taken
    too); nothing stored then."""
    address = accounts.check_email(email)
    number = None if phone in (None, "") else accounts.check_phone(phone)
    accounts.check_password(pack.config, password)
    if await accounts.user(_sql(runtime), address) is not None:
        raise UserInputError(f"email: {address!r} has an account already", field="email")
    hashed = await pack.passwords.hash(str(password))
    return await runtime.start(SIGN_UP, {"email": address, "phone": number,
                                         "password_hash": hashed}, run=False)


async def confirm_sign_up(store: SqlStore, token: object, *, by: str = "users") -> str:
    """The sign-up the token of its mail confirms, told so (the token used up); its work
    id. A :class:`TokenError` for a token unknown, used or expired."""
    _, work_id = await accounts.redeem_token(store, token, "confirm")
    await _signal(store, work_id, CONFIRMED, {}, by)
    return work_id


async def request_reset(runtime: Runtime, pack: UsersPack, email: object,
                        via: str = "email") -> str:
    """Start a password reset (its work's id): a token mailed, or a code by SMS once the
    phone is confirmed; for an unknown email nothing is sent, and the answer is the
    same. Rate-limited per address as logins are (no mail bombing): a
    :class:`SignInError` ``rate_limited`` when spent."""
    address = accounts.check_email(email)
    if via not in ("email", "sms"):
        raise UserInputError(f"via: expected \"email\" or \"sms\", got {via!r:.40}",
                             field="via")
    await accounts.throttle(_sql(runtime), f"users.reset:{address}", pack.config.account_limit)
    return await runtime.start(RESET_SAGA, {"email": address, "via": via}, run=False)


async def reset_password(store: SqlStore, pack: UsersPack, secrets: Any, password: object,
                         *, token: object = None, email: object = None, code: object = None,
                         by: str = "users") -> str:
    """Set a new password with the reset's token (or, by SMS, the user's email and its
    code): the reset's work told so with the hash, sealed with ``secrets`` (the
    deployment's engine.secrets.Secrets); its work id. The work then sets it and
    revokes every session."""
    accounts.check_password(pack.config, password)
    if secrets is None:
        raise UsersConfigError("a reset carries the new password's hash sealed: the "
                               "deployment needs a [secrets] key")
    if code is not None:
        found = await accounts.user(store, accounts.check_email(email))
        if found is None:
            raise TokenError("code: not the code sent (or none was sent)")
        work_id = await accounts.redeem_code(store, found["principal_id"], code,
                                             limit=pack.config.account_limit)
        user_id = found["principal_id"]
    else:
        who, work_id = await accounts.redeem_token(store, token, "reset")
        user_id = who.principal_id
    await _work_of(store, work_id, RESET_SAGA)
    hashed = await pack.passwords.hash(str(password))
    await _signal(store, work_id, RESET, {"user_id": user_id,
                                          "password_hash": secrets.seal_value(hashed)}, by)
    return work_id


async def request_phone_code(runtime: Runtime, pack: UsersPack, user_id: str,
                             phone: object) -> str:
    """Send a code by SMS to ``phone`` for the user to confirm it (its work's id);
    rate-limited per user (a :class:`SignInError` ``rate_limited`` when spent)."""
    number = accounts.check_phone(phone)
    await accounts.throttle(_sql(runtime), f"users.sms:{user_id}", pack.config.account_limit)
    return await runtime.start(PHONE_SAGA, {"user_id": user_id, "phone": number},
                               run=False)


async def confirm_phone(store: SqlStore, pack: UsersPack, user_id: str, code: object, *,
                        by: str = "users") -> str:
    """The phone confirmation the user's code confirms, told so; its work id (tries
    rate-limited per user)."""
    work_id = await accounts.redeem_code(store, user_id, code,
                                         limit=pack.config.account_limit)
    given = (await _work_of(store, work_id, PHONE_SAGA)).get("input")
    number = given.get("phone") if isinstance(given, dict) else None
    if not isinstance(number, str):
        raise TokenError("code: this code is not a phone confirmation's")
    await _signal(store, work_id, PHONE_CONFIRMED, {"user_id": user_id, "phone": number}, by)
    return work_id
