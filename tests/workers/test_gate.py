"""Global locks, rate limits and service health, on a SQLite file and a real
PostgreSQL; contention from several real processes."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Service, Stage
from engine.store import SqlStore
from workers import health as health_history
from workers.health import HealthCheck
from workers.limits import RateLimit
from workers.locks import LockService, LockTimeoutError
from workers.node import WorkerNode, WorkerSpec

ROOT = Path(__file__).resolve().parents[2]


def spawn(mode: str, url: str, db: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.workers.contention_child", mode, url,
                             str(db), str(count)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def spans(db: Path, kind: str) -> list[tuple[int, float, float]]:
    with sqlite3.connect(db) as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(
            "SELECT pid, start, end FROM spans WHERE kind = ? ORDER BY start", (kind,))]


# ------------------------------------------------------------------ locks


async def test_locks_are_fair_visible_limited_and_expire(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        locks = LockService(store, poll_interval=0.01)
        await locks.acquire("L", "a", ttl=30)
        got: list[str] = []

        async def later(holder: str) -> None:
            await locks.acquire("L", holder, ttl=30)
            got.append(holder)
            await locks.release("L", holder)

        async with anyio.create_task_group() as tg:
            for holder in ("b", "c", "d"):  # they queue in this order
                tg.start_soon(later, holder)
                for _ in range(100):
                    if holder in [w["holder"] for w in await locks.waiters("L")]:
                        break
                    await anyio.sleep(0.01)
            assert [w["holder"] for w in await locks.waiters("L")] == ["b", "c", "d"]
            held = await locks.holders("L")
            assert [(h["name"], h["holder"]) for h in held] == [("L", "a")]
            assert held[0]["acquired_at"] <= time.time()
            await locks.release("L", "a")
        assert got == ["b", "c", "d"]  # first come, first served

        # a holder that dies stops renewing: the lock frees itself after its ttl
        await locks.acquire("M", "dead", ttl=0.2)
        with pytest.raises(LockTimeoutError, match=r"lock 'M' not acquired within 0\.05 s; "
                                                   r"held by dead"):
            await locks.acquire("M", "alive", ttl=5, max_wait=0.05)
        await locks.acquire("M", "alive", ttl=5, max_wait=5)
        assert [h["holder"] for h in await locks.holders("M")] == ["alive"]

        # a limit of two holders: a concurrency limit per key
        await locks.acquire("customer:7", "w1", ttl=30, limit=2)
        await locks.acquire("customer:7", "w2", ttl=30, limit=2)
        with pytest.raises(LockTimeoutError):
            await locks.acquire("customer:7", "w3", ttl=30, limit=2, max_wait=0.05)
        assert await locks.waiters("customer:7") == []  # who gave up left the line

        with pytest.raises(ValueError, match="time to live must be > 0 seconds, got 0"):
            await locks.acquire("N", "x", ttl=0)
        with pytest.raises(ValueError, match="limit of holders must be a whole number >= 1"):
            await locks.acquire("N", "x", ttl=1, limit=0)
        with pytest.raises(ValueError, match="'alive' holds lock 'M' already"):
            await locks.acquire("M", "alive", ttl=1)


@pytest.mark.timeout(120)
def test_a_lock_is_held_by_one_process_at_a_time_under_contention(store_url: str,
                                                                  tmp_path: Path) -> None:
    db = tmp_path / "spans.sqlite"
    children = [spawn("lock", store_url, db, 15) for _ in range(3)]
    for child in children:
        _out, err = child.communicate(timeout=100)
        assert child.returncode == 0, err
    held = spans(db, "lock")
    assert len(held) == 45 and len({pid for pid, _, _ in held}) == 3
    for (_, _, end), (_, start, _) in itertools.pairwise(held):
        assert start >= end  # no two holders at once


@pytest.mark.timeout(120)
def test_a_rate_limit_holds_across_two_nodes(store_url: str, tmp_path: Path) -> None:
    db = tmp_path / "spans.sqlite"
    seconds = 3
    children = [spawn("rate", store_url, db, seconds) for _ in range(2)]
    for child in children:
        _out, err = child.communicate(timeout=100)
        assert child.returncode == 0, err
    taken = [start for _, start, _ in spans(db, "rate")]
    pids = {pid for pid, _, _ in spans(db, "rate")}
    assert len(pids) == 2  # both drew from the one bucket
    window = max(taken) - min(taken)
    rate = (len(taken) - 5) / window  # the first five came from the full bucket
    assert 20 * 0.9 <= rate <= 20 * 1.1, (rate, len(taken), window)


# ------------------------------------------------------------------ services


async def test_a_service_outage_parks_works_and_recovery_resumes_them(
        store_url: str) -> None:
    vault = {"up": False}

    async def vault_check() -> None:
        if not vault["up"]:
            raise ConnectionError("vault sealed")

    async def send(ctx: Any, value: int) -> int:
        return value + 1

    checks = [HealthCheck("vault", vault_check), HealthCheck("mailer", lambda: None,
                                                             depends_on=("vault",)),
              HealthCheck("db", lambda: None)]
    services = [Service(name=n, factory=lambda scope: object()) for n in ("mailer", "db")]
    mail = Saga(name="mail", stages=[Stage(name="send", transaction=send,
                                           services=("mailer",))])
    query = Saga(name="query", stages=[Stage(name="read", transaction=send,
                                             services=("db",))])
    async with SqlStore.open(store_url) as store:
        async with Runtime([mail, query], store=store, services=services) as client:
            mails = [await client.start("mail", i, run=False) for i in range(3)]
            queries = [await client.start("query", i, run=False) for i in range(3)]
        node = WorkerNode(store, [mail, query], [WorkerSpec(name="w", concurrency=10)],
                          services=services, health_checks=checks, health_interval=0.1,
                          lease_ttl=5, node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)

            async def statuses(ids: list[str]) -> list[str]:
                return [(await store.work(w))["status"] for w in ids]  # type: ignore[index]

            for _ in range(100):
                if await statuses(queries) == ["completed"] * 3 and \
                        await statuses(mails) == ["waiting"] * 3:
                    break
                await anyio.sleep(0.05)
            # what needs the vault waits, with the reason; the rest went on
            assert await statuses(queries) == ["completed"] * 3
            assert await statuses(mails) == ["waiting"] * 3
            row = await store.work(mails[0])
            assert row is not None and "mailer needs vault" in row["waiting"]
            vault["up"] = True
            for _ in range(100):
                if await statuses(mails) == ["completed"] * 3:
                    break
                await anyio.sleep(0.05)
            assert await statuses(mails) == ["completed"] * 3
            await node.drain()
        for work in mails:
            types = [e.type for e in await store.read(work)]
            assert "stage.waiting" in types and "stage.retry.scheduled" not in types
            assert [e.event.attempt for e in await store.read(work)
                    if e.type == "stage.transaction.started"] == [1]  # no retry spent
        past = await health_history.history(store, "mailer", limit=1000)
        assert {(r["ok"], r["available"]) for r in past} == {(True, False), (True, True)}
        assert all(r["available"] for r in await health_history.history(store, "db"))


async def test_locks_and_rates_of_stages_through_a_node(tmp_path: Path) -> None:
    """A stage's lock key with a limit per key: two works of one customer never run
    the stage together, works of another customer do; a rate-limited stage waits."""
    running: dict[int, int] = {}
    most: dict[int, int] = {}

    async def charge(ctx: Any, value: dict[str, int]) -> dict[str, int]:
        customer = value["customer"]
        running[customer] = running.get(customer, 0) + 1
        most[customer] = max(most.get(customer, 0), running[customer])
        await anyio.sleep(0.05)
        running[customer] -= 1
        return value

    async def notify(ctx: Any, value: dict[str, int]) -> int:
        return value["customer"]

    saga = Saga(name="pay", stages=[
        Stage(name="charge", transaction=charge, lock_key="customer:{customer}"),
        Stage(name="notify", transaction=notify, rate_limit_key="sms:{customer}")])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([saga], store=store) as client:
            ids = [await client.start("pay", {"customer": c}, run=False)
                   for c in (1, 1, 1, 2, 2)]
        node = WorkerNode(store, [saga], [WorkerSpec(name="w", concurrency=10)],
                          lock_limits={"customer": 1},
                          rate_limits={"sms": RateLimit(rate=1000, burst=1)})
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            for _ in range(200):
                rows = [await store.work(w) for w in ids]
                if all(r is not None and r["status"] == "completed" for r in rows):
                    break
                await anyio.sleep(0.05)
            await node.drain()
        assert all(r is not None and r["status"] == "completed" for r in rows)
    assert most == {1: 1, 2: 1}


async def test_health_checks_are_followed_from_a_cursor(store_url: str) -> None:
    from workers.health import Health

    up = {"mailer": True}

    def mailer() -> None:
        if not up["mailer"]:
            raise ConnectionError("refused")

    checks = [HealthCheck("mailer", mailer), HealthCheck("relay", lambda: None,
                                                         depends_on=("mailer",))]
    async with SqlStore.open(store_url) as store:
        health = Health(store, checks, node="n")
        await health.check_all()
        (newest,) = await health_history.history(store, limit=1)
        live = health_history.follow(store, after=newest["position"], interval=0.02)
        up["mailer"] = False
        await health.check_all()
        with anyio.fail_after(10):
            got = [await live.__anext__(), await live.__anext__()]
        assert [(r["service"], r["ok"], r["available"], r["depends_on"]) for r in got] == [
            ("mailer", False, False, []), ("relay", True, False, ["mailer"])]
        assert "relay needs mailer" in got[1]["detail"]
        await live.aclose()
        # from the first row's cursor: the one after it, then each new round, once
        again = health_history.follow(store, after=got[0]["position"], interval=0.02)
        up["mailer"] = True
        await health.check_all()
        with anyio.fail_after(10):
            seen = [await again.__anext__() for _ in range(3)]
        assert [r["position"] for r in seen] == sorted({r["position"] for r in seen})
        assert seen[0]["position"] == got[1]["position"]
        assert [(r["service"], r["available"]) for r in seen[1:]] == [("mailer", True),
                                                                     ("relay", True)]
        await again.aclose()
