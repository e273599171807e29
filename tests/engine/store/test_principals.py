"""Principals in groups and their credentials, on both databases: a token is shown once
and kept as a hash, names its deployment, and is refused when revoked, expired, used up
(a one-time link), of a removed principal or of another deployment, each saying why."""

from __future__ import annotations

import hashlib

import anyio
import pytest
import sqlalchemy as sa

from engine.store import SqlStore
from engine.store import principals as pr
from engine.store.schema import credentials


async def test_a_token_stands_for_its_principal_until_revoked(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        deployment = await pr.deployment_id(store)
        assert await pr.deployment_id(store) == deployment  # made once, kept
        made = await pr.create(store, "ci-bot", kind="service", groups=["deployers", "ci"])
        assert made["groups"] == ["ci", "deployers"]
        token, row = await pr.issue(store, "ci-bot", label="nightly", seconds=3600)
        assert token.startswith(f"ss1.{deployment}.{row['credential_id']}.")
        # only the hash is stored: the secret is nowhere in the table
        secret = token.rsplit(".", 1)[1]
        async with store.reader.connect() as conn:
            stored = (await conn.execute(sa.select(credentials))).mappings().one()
        assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str(dict(stored))
        who = await pr.verify(store, token)
        assert (who.name, who.kind, who.groups, who.admin) == (
            "ci-bot", "service", frozenset({"ci", "deployers"}), False)
        listed = await pr.credentials_of(store, "ci-bot")
        assert [c["label"] for c in listed] == ["nightly"] and "secret_hash" not in listed[0]
        assert await pr.revoke(store, row["credential_id"]) is True
        assert await pr.revoke(store, row["credential_id"]) is False  # revoked already
        with pytest.raises(pr.CredentialError, match="revoked") as refused:
            await pr.verify(store, token)
        assert refused.value.reason == "revoked"


async def test_credentials_are_refused_saying_why(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await pr.create(store, "ana", kind="person", groups=[pr.ADMINS])
        token, _ = await pr.issue(store, "ana")
        assert (await pr.verify(store, token)).admin
        deployment, cid, secret = pr.parse(token)
        cases = [
            ("malformed", "not-a-token"),
            ("malformed", "ss1.only.three"),
            ("other_deployment", f"ss1.0000000000000000.{cid}.{secret}"),
            ("unknown", f"ss1.{deployment}.{cid}.{secret[:-2]}xx"),
            ("unknown", f"ss1.{deployment}.cnothere.{secret}"),
        ]
        for reason, given in cases:
            with pytest.raises(pr.CredentialError) as refused:
                await pr.verify(store, given)
            assert refused.value.reason == reason, given
        with pytest.raises(pr.CredentialError, match="a token is not taken here"):
            await pr.verify(store, token, kinds=("session",))
        short, _ = await pr.issue(store, "ana", seconds=0.2)
        await anyio.sleep(0.3)
        with pytest.raises(pr.CredentialError, match="expired"):
            await pr.verify(store, short)
        # a one-time link is used up by its first use
        link, _ = await pr.issue(store, "ana", kind="link", seconds=600)
        assert (await pr.verify(store, link, kinds=("link",), consume=True)).name == "ana"
        with pytest.raises(pr.CredentialError, match="this link was used already"):
            await pr.verify(store, link, kinds=("link",), consume=True)
        # a limit of live tokens per principal
        with pytest.raises(ValueError, match="holds 1 live tokens, the most it may"):
            await pr.issue(store, "ana", limit=1)
        # a removed principal's credentials are refused
        await pr.remove(store, "ana")
        with pytest.raises(pr.CredentialError) as refused:
            await pr.verify(store, token)
        assert refused.value.reason == "unknown"


async def test_principals_and_groups_name_what_is_wrong(tmp_path: object) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        await pr.create(store, "ops", groups=["operators"])
        with pytest.raises(ValueError, match="a principal named 'ops' exists already"):
            await pr.create(store, "ops")
        with pytest.raises(ValueError, match="a principal's name must be"):
            await pr.create(store, "two words")
        with pytest.raises(ValueError, match="kind must be one of person, service"):
            await pr.create(store, "x", kind="robot")
        with pytest.raises(ValueError, match="no principal is named 'nobody'"):
            await pr.issue(store, "nobody")
        with pytest.raises(ValueError, match="a credential lives more than 0 s"):
            await pr.issue(store, "ops", seconds=0)
        await pr.add_to_groups(store, "ops", ["admins", "operators"])
        await pr.remove_from_groups(store, "ops", ["operators"])
        found = await pr.find(store, "ops")
        assert found is not None and found["groups"] == ["admins"]
        assert [p["name"] for p in await pr.list_all(store)] == ["ops"]
        assert await pr.find(store, "nobody") is None
