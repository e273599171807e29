"""The users pack's sagas on a worker node with the real SMTP server and SMS provider on
loopback: a sign-up confirmed by its mailed token, one timing out (the user removed),
login, a wrong password and an unknown email answered alike, the login rate limit,
a password reset revoking every session, phone confirmation by SMS code and a reset
by SMS code; secrets never in an event in the clear."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.store import principals as pr
from engine.store.schema import events
from tests.workers.messaging.servers import MailServer, ProviderServer
from workers.actions.users import (
    SignInError,
    TokenError,
    UserInputError,
    accounts,
    confirm_phone,
    confirm_sign_up,
    login,
    request_phone_code,
    request_reset,
    reset_password,
    sign_up,
)

from .conftest import KEY, Env, mailed_token, running, status_of, texted_code

PASSWORD = "correct horse battery"


async def signed_up(env: Env, email: str = "ada@example.com") -> str:
    work_id = await sign_up(env.runtime, env.pack, email, PASSWORD)
    await confirm_sign_up(env.store, await mailed_token(env.mail, email))
    await status_of(env.store, work_id, ("completed",))
    return work_id


async def all_events_text(env: Env) -> str:
    async with env.store.reader.connect() as conn:
        rows = (await conn.execute(sa.select(events.c.payload))).all()
    return "\n".join(str(r[0]) for r in rows)


async def test_a_sign_up_confirmed_by_its_mailed_token(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers) as env:
        work_id = await sign_up(env.runtime, env.pack, "Ada@Example.com", PASSWORD)
        token = await mailed_token(mail_server, "ada@example.com")
        pending = await accounts.user(env.store, "ada@example.com")
        assert pending is not None and pending["state"] == "pending"
        with pytest.raises(SignInError) as early:
            await login(env.store, env.pack.config, env.pack.passwords, "ada@example.com",
                        PASSWORD)
        assert early.value.reason == "not_active"
        await confirm_sign_up(env.store, token)
        row = await status_of(env.store, work_id, ("completed",))
        assert row["status"] == "completed"
        found = await accounts.user(env.store, "ada@example.com")
        assert found is not None and found["state"] == "active" and found["groups"] == []
        assert found["confirmed_at"] is not None
        with pytest.raises(TokenError) as again:  # single-use
            await confirm_sign_up(env.store, token)
        assert again.value.reason == "used"
        # neither the password, nor its hash, nor the token in any event in the clear
        text = await all_events_text(env)
        assert PASSWORD not in text and found["password_hash"] not in text
        assert token.split(".")[-1] not in text and "$secret" in text
        # the same email again is refused naming the field, nothing made
        with pytest.raises(UserInputError) as taken:
            await sign_up(env.runtime, env.pack, "ada@example.com", PASSWORD)
        assert taken.value.field == "email"
        for bad, field in ((("not-an-email", PASSWORD), "email"),
                           (("bob@example.com", "short"), "password")):
            with pytest.raises(UserInputError) as refused:
                await sign_up(env.runtime, env.pack, *bad)
            assert refused.value.field == field
        with pytest.raises(UserInputError) as phone:
            await sign_up(env.runtime, env.pack, "bob@example.com", PASSWORD, "12345")
        assert phone.value.field == "phone" and await accounts.user(
            env.store, "bob@example.com") is None


async def test_a_sign_up_not_confirmed_in_time_removes_the_user(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers, confirm_timeout=1.5) as env:
        work_id = await sign_up(env.runtime, env.pack, "late@example.com", PASSWORD)
        token = await mailed_token(mail_server, "late@example.com")
        assert await accounts.user(env.store, "late@example.com") is not None
        row = await status_of(env.store, work_id, ("failed",), seconds=30)
        assert row["status"] == "failed"  # compensated: the user is gone
        assert await accounts.user(env.store, "late@example.com") is None
        with pytest.raises(TokenError):
            await confirm_sign_up(env.store, token)
        # the address is free again
        again = await sign_up(env.runtime, env.pack, "late@example.com", PASSWORD)
        assert again != work_id


async def test_login_wrong_password_unknown_email_and_rate_limit(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers, login_burst=3,
                       login_rate=0.001) as env:
        await signed_up(env)
        config, passwords = env.pack.config, env.pack.passwords
        session, row = await login(env.store, config, passwords, "ada@example.com", PASSWORD,
                                   address="10.0.0.1")
        who = await pr.verify(env.store, session, kinds=("session",))
        assert who.name == "ada@example.com" and who.kind == "person"
        assert not who.admin and who.groups == frozenset()  # no rights of its own
        answers = []
        for email, password in (("ada@example.com", "wrong password!"),
                                ("nobody@example.com", PASSWORD)):
            with pytest.raises(SignInError) as refused:
                await login(env.store, config, passwords, email, password,
                            address="10.0.0.1")
            answers.append((refused.value.reason, str(refused.value)))
        assert answers[0] == answers[1] == ("refused", accounts.REFUSED)
        with pytest.raises(SignInError):
            await login(env.store, config, passwords, "ada@example.com", "wrong again!",
                        address="10.0.0.1")
        # ada has used her 3 attempts: the 4th is refused whatever the password
        with pytest.raises(SignInError) as limited:
            await login(env.store, config, passwords, "ada@example.com", PASSWORD,
                        address="10.0.0.2")
        assert limited.value.reason == "rate_limited" and limited.value.retry_after
        assert [s["credential_id"] for s in await accounts.sessions(
            env.store, "ada@example.com")] == [row["credential_id"]]


async def test_login_is_limited_per_client_address(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers, address_burst=4,
                       address_rate=0.001) as env:
        reasons = []
        for i in range(6):
            try:
                await login(env.store, env.pack.config, env.pack.passwords,
                            f"u{i}@example.com", PASSWORD, address="10.9.9.9")
            except SignInError as exc:
                reasons.append(exc.reason)
        assert reasons == ["refused"] * 4 + ["rate_limited"] * 2


async def test_a_password_reset_revokes_every_session(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers) as env:
        await signed_up(env)
        config, passwords = env.pack.config, env.pack.passwords
        sessions = [(await login(env.store, config, passwords, "ada@example.com",
                                 PASSWORD))[0] for _ in range(2)]
        work_id = await request_reset(env.runtime, env.pack, "ada@example.com")
        token = await mailed_token(mail_server, "ada@example.com", count=2)
        await reset_password(env.store, env.pack, KEY, "a brand new password", token=token)
        row = await status_of(env.store, work_id, ("completed",))
        assert row["status"] == "completed"
        for session in sessions:
            with pytest.raises(pr.CredentialError) as revoked:
                await pr.verify(env.store, session, kinds=("session",))
            assert revoked.value.reason == "revoked"
        with pytest.raises(SignInError):
            await login(env.store, config, passwords, "ada@example.com", PASSWORD)
        await login(env.store, config, passwords, "ada@example.com", "a brand new password")
        with pytest.raises(TokenError) as reused:
            await reset_password(env.store, env.pack, KEY, "another new password",
                                 token=token)
        assert reused.value.reason == "used"
        text = await all_events_text(env)
        assert "a brand new password" not in text and token.split(".")[-1] not in text
        # an unknown email: the work ends having sent nothing
        before = len(mail_server.mails)
        other = await request_reset(env.runtime, env.pack, "nobody@example.com")
        await status_of(env.store, other, ("completed",))
        assert len(mail_server.mails) == before


async def test_phone_confirmation_and_a_reset_by_sms(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers) as env:
        await signed_up(env)
        ada = await accounts.user(env.store, "ada@example.com")
        assert ada is not None
        # by SMS only once the phone is confirmed: nothing is sent before
        early = await request_reset(env.runtime, env.pack, "ada@example.com", "sms")
        await status_of(env.store, early, ("completed",))
        assert providers.state.sms == []
        work_id = await request_phone_code(env.runtime, env.pack, ada["principal_id"],
                                           "+441632960961")
        code = await texted_code(providers, "+441632960961")
        with pytest.raises(TokenError):
            await confirm_phone(env.store, env.pack, ada["principal_id"],
                                f"{(int(code) + 1) % 10**6:06d}")
        await confirm_phone(env.store, env.pack, ada["principal_id"], code)
        await status_of(env.store, work_id, ("completed",))
        found = await accounts.user(env.store, "ada@example.com")
        assert found is not None and found["phone"] == "+441632960961"
        assert found["phone_confirmed_at"] is not None
        assert code not in await all_events_text(env)
        with pytest.raises(TokenError):
            await confirm_phone(env.store, env.pack, ada["principal_id"], code)  # used
        reset = await request_reset(env.runtime, env.pack, "ada@example.com", "sms")
        sms_code = await texted_code(providers, "+441632960961", count=2)
        await reset_password(env.store, env.pack, KEY, "a password by sms",
                             email="ada@example.com", code=sms_code)
        await status_of(env.store, reset, ("completed",))
        await login(env.store, env.pack.config, env.pack.passwords, "ada@example.com",
                    "a password by sms")
        # six digits are not guessed: the tries of a user's codes are rate-limited
        await request_phone_code(env.runtime, env.pack, ada["principal_id"], "+441632960962")
        reasons = []
        for guess in range(6):
            try:
                await confirm_phone(env.store, env.pack, ada["principal_id"], f"{guess:06d}")
            except (TokenError, SignInError) as exc:
                reasons.append(exc.reason)
        assert reasons[-1] == "rate_limited" and "unknown" in reasons


async def test_an_expired_reset_token_and_a_disabled_user_are_refused(
        store_url: str, mail_server: MailServer, providers: ProviderServer) -> None:
    async with running(store_url, mail_server, providers, reset_lifetime=1.0) as env:
        await signed_up(env)
        work_id = await request_reset(env.runtime, env.pack, "ada@example.com")
        token = await mailed_token(mail_server, "ada@example.com", count=2)
        row = await status_of(env.store, work_id, ("completed",), seconds=30)
        assert row["status"] == "completed"  # the wait ran out: nothing changed
        with pytest.raises(TokenError) as expired:
            await reset_password(env.store, env.pack, KEY, "a brand new password",
                                 token=token)
        assert expired.value.reason == "expired"
        session, _ = await login(env.store, env.pack.config, env.pack.passwords,
                                 "ada@example.com", PASSWORD)  # the old password holds
        await accounts.disable(env.store, "ada@example.com")
        with pytest.raises(pr.CredentialError) as disabled:
            await pr.verify(env.store, session, kinds=("session",))
        assert disabled.value.reason == "disabled"
        with pytest.raises(SignInError) as refused:
            await login(env.store, env.pack.config, env.pack.passwords, "ada@example.com",
                        PASSWORD)
        assert refused.value.reason == "not_active"
        for bad, field in ((lambda: reset_password(env.store, env.pack, KEY, "short",
                                                   token=token), "password"),
                           (lambda: request_reset(env.runtime, env.pack, "ada@example.com", "fax"),
                            "via")):
            with pytest.raises(UserInputError) as wrong:
                await bad()
            assert wrong.value.field == field
