"""A login answers an unknown email and a wrong password alike and in the same time: the
unknown one is verified against a dummy argon2 hash of the production cost. Medians of
50 tries each, interleaved, within 10% of each other."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from engine.store import SqlStore
from tests.workers.messaging.servers import MailServer, ProviderServer
from workers.actions.messaging import MessagingPack
from workers.actions.messaging import parse as messaging_parse
from workers.actions.users import SignInError, UsersPack, accounts, check_login, parse

from .conftest import messaging_section


async def test_unknown_email_and_wrong_password_take_the_same_time(
        tmp_path: Path, mail_server: MailServer, providers: ProviderServer) -> None:
    # the production hash cost (the defaults); no rate limit in the way
    config = parse({"login_burst": 1000, "address_burst": 1000})
    pack = UsersPack(config, MessagingPack(messaging_parse(
        messaging_section(mail_server, providers))))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/t.sqlite") as store:
        hashed = await pack.passwords.hash("the right password")
        await accounts.create_pending(store, "u1", "ada@example.com", None, hashed)
        await accounts.activate(store, "u1")
        times: dict[str, list[float]] = {"wrong": [], "unknown": []}
        answers: set[tuple[str, str]] = set()
        for i in range(50):
            for kind, email in (("wrong", "ada@example.com"),
                                ("unknown", f"nobody{i}@example.com")):
                started = time.perf_counter()
                with pytest.raises(SignInError) as refused:
                    await check_login(store, config, pack.passwords, email,
                                      "not the password", address="10.0.0.1")
                times[kind].append(time.perf_counter() - started)
                answers.add((refused.value.reason, str(refused.value)))
        assert answers == {("refused", accounts.REFUSED)}
        wrong, unknown = (statistics.median(times[k]) for k in ("wrong", "unknown"))
        assert abs(wrong - unknown) <= 0.1 * max(wrong, unknown), (wrong, unknown)
        assert wrong > 0.005  # the argon2 verify is really done (tens of ms)
