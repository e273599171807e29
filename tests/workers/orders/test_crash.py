"""A worker killed in the middle of a charge (the provider charged, its answer never
reached the worker): another worker takes the work over once the lease runs out and
asks again with the same Idempotency-Key; the provider answers with the first charge,
so the customer is charged once and the order completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from workers.actions.orders import order, orders_app

from .conftest import SECRETS, SECRETS_TOML, config_of
from .provider import KEY, Provider

ROOT = Path(__file__).resolve().parents[3]


async def test_a_worker_killed_mid_charge_does_not_charge_twice(
        store_url: str, provider: Provider, tmp_path: Path) -> None:
    config_file = tmp_path / "stepsaga.toml"
    config_file.write_text(SECRETS_TOML +
                           f'[orders.provider]\nurl = "{provider.url}"\nkey = "{KEY}"\n'
                           '[orders.products.tee]\nname = "T-shirt"\nprice = 1500\n'
                           'stock = 5\n')
    provider.hold()
    async with SqlStore.open(store_url) as store, Runtime(
            orders_app(config=config_of(provider)).sagas, store=store,
            secrets=SECRETS) as rt:
        work_id = await rt.start("orders.place", {
            "owner": "alice", "email": "alice@example.com", "payment_method": "pm_card_visa",
            "lines": [{"sku": "tee", "quantity": 2}]}, run=False)
        first = Child(store_url, str(config_file))
        try:
            first.ready()
            for _ in range(600):  # until the provider charged and holds its answer
                if provider.held.is_set():
                    break
                await anyio.sleep(0.05)
            else:
                raise AssertionError("the charge never reached the provider")
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
        finally:
            first.stop()
            provider.release()
        assert len(provider.intents) == 1
        began = time.monotonic()
        second = Child(store_url, str(config_file))
        try:
            second.ready()
            for _ in range(600):
                found = await store.work(work_id) or {}
                if found.get("status") in ("completed", "failed", "compensation_failed"):
                    break
                await anyio.sleep(0.05)
        finally:
            err = second.stop()
        assert found["status"] == "completed", (found, err)
        assert time.monotonic() - began < 20  # the dead worker's lease (2 s) ran out
        placed = await order(store, work_id)
    (intent,) = provider.intents.values()
    assert intent["amount"] == 3000
    charges = [s for s in provider.seen if s.path == "/v1/payment_intents"]
    assert [s.key for s in charges] == [f"stepsaga:{work_id}:charge"] * 2
    assert [s.replayed for s in charges] == [False, True]
    assert placed is not None and placed["status"] == "completed"
    assert placed["payment_intent"] == intent["id"]


class Child:
    """worker_child.py in a process of its own."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("worker_child.py")), *args],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self) -> None:
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            raise AssertionError(f"the worker died: {self.process.communicate()[1]}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=60)[1]
