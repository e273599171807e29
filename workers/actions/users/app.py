"""The users pack as a :class:`workers.node.WorkerApp`.

Load it with ``stepsaga serve --app workers.actions.users:app --config stepsaga.toml``
(or ``stepsaga worker``); its ``[users]`` section is documented in
:mod:`workers.actions.users.config`. It sends through the channels and templates of
the ``[messaging]`` section (the messaging pack's, delivered by its stages themselves:
a token is never in a message work), and needs a ``[secrets]`` key (passwords' hashes,
tokens and codes are sealed in its works). Its users are principals (migration 0018).
From Python::

    pack = UsersPack(parse({...}), MessagingPack(messaging_parse({...})))
    app = users_app(pack=pack)
    async with SqlStore.open(url) as store, Runtime(app.sagas, store=store,
                                                    secrets=key) as rt:
        work_id = await sign_up(rt, pack, "ada@example.com", "a long password")
        ...  # the mail's token:
        await confirm_sign_up(store, token)

Through the API (see :mod:`graphql_api.packs.users`): ``signUp``,
``confirmSignUp``, ``login``, ``logout``, ``me``, ``mySessions``, ``revokeSession``,
``requestPasswordReset``, ``resetPassword``, ``requestPhoneCode``, ``confirmPhone``;
and with ``[users.oidc]`` the routes ``/auth/oidc/start`` and ``/auth/oidc/callback``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.actions.messaging import MessagingConfig, MessagingPack
from workers.actions.messaging import parse as messaging_parse
from workers.node import ApiRef, WorkerApp

from .config import UsersConfig, parse
from .sagas import UsersPack, users_sagas

__all__ = ["app", "users_app"]


def users_app(settings: Mapping[str, Any] | None = None, *,
              config: UsersConfig | None = None,
              messaging: MessagingConfig | None = None,
              pack: UsersPack | None = None) -> WorkerApp:
    """The pack's sagas, the messaging channels' rate limits and the API part, of
    ``pack``, or one made from ``config`` and ``messaging`` or the ``users`` and
    ``messaging`` sections of ``settings`` (what :func:`graphql_api.config.load`
    returns)."""
    if pack is None:
        if config is None:
            config = parse((settings or {}).get("users"))
        if messaging is None:
            messaging = messaging_parse((settings or {}).get("messaging"))
        pack = UsersPack(config, MessagingPack(messaging))
    return WorkerApp(sagas=users_sagas(pack),
                     rate_limits=pack.messaging.config.rate_limits(),
                     api=[ApiRef("graphql_api.packs.users:users_part", (pack,))])


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.users:app`` loads (with the config's settings)."""
    return users_app(settings)
