"""The pack through the API (createWork of its sagas, schema.execute against a node
of the pack's app) and in a real ``stepsaga worker --app workers.actions.backups:app
--config FILE`` process; a config's notify names the failure hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from engine import Runtime
from engine.store import SqlStore
from engine.store.feed import Feed
from graphql_api.config import load
from graphql_api.schema import Context, schema
from graphql_api.service import Service
from workers.actions.backups import backups_app, parse
from workers.node import WorkerSpec

from ...graphql_api.wire import Served
from .conftest import running
from .helpers import KEY_HEX, TOLD, make_sqlite, section, sqlite_rows

CREATE = """mutation($saga: String!, $input: JSON) {
  createWork(saga: $saga, input: $input) {
    __typename
    ... on WorkCreated { work { workId } }
    ... on InvalidInput { message field }
  }
}"""
WORK = "query($id: String!) { work(workId: $id) { status output error } }"
ENDED = ("completed", "failed", "compensation_failed", "cancelled")


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[backups]
restore_paths = ["{tmp_path}/restores"]
[backups.keys.main]
key = "{KEY_HEX}"
[backups.sources.db]
kind = "sqlite"
path = "{tmp_path}/a.sqlite"
[backups.targets.here]
kind = "directory"
path = "{tmp_path}/backups"
[backups.jobs.nightly]
source = "db"
target = "here"
steps = ["zstd", {{kind = "aes-gcm", key = "main"}}]
""")
    return config


async def test_backups_are_started_and_restored_through_the_schema(tmp_path: Path) -> None:
    """createWork of the pack's sagas is all the API needs: the node of the pack's app
    runs them, and the input schema refuses an unknown job naming it."""
    make_sqlite(tmp_path / "a.sqlite", rows=300)
    app = backups_app(load(_config(tmp_path), {}))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/store.sqlite") as store:
        node = app.node(store, [WorkerSpec(name="w", concurrency=4)], node_id="n",
                        poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(app.sagas, store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return result.data

            async def finished(saga: str, input: Any) -> dict[str, Any]:
                created = (await run(CREATE, saga=saga, input=input))["createWork"]
                assert created["__typename"] == "WorkCreated", created
                for _ in range(600):
                    work = (await run(WORK, id=created["work"]["workId"]))["work"]
                    if work["status"] in ENDED:
                        return dict(work)
                    await anyio.sleep(0.05)
                raise AssertionError(f"{saga} did not end")

            bad = (await run(CREATE, saga="backups.backup", input={"job": "weekly"}))
            assert bad["createWork"]["__typename"] == "InvalidInput"
            assert "'weekly' is not one of ['nightly']" in bad["createWork"]["message"]
            done = await finished("backups.backup", {"job": "nightly"})
            assert done["status"] == "completed", done["error"]
            checked = await finished("backups.verify", {"job": "nightly",
                                                        "backup": done["output"]["id"]})
            assert checked["output"]["sha256"] == done["output"]["sha256"]
            outside = await finished("backups.restore", {"job": "nightly", "into": {
                "source": "db", "path": str(tmp_path / "restored.sqlite")}})
            assert outside["status"] == "failed"
            assert "is neither a source's path nor under backups.restore_paths" in \
                outside["error"]["message"]
            restored = await finished("backups.restore", {"job": "nightly", "into": {
                "source": "db", "path": str(tmp_path / "restores" / "r.sqlite")}})
            assert restored["status"] == "completed", restored["error"]
            await node.drain()
    assert sqlite_rows(tmp_path / "restores" / "r.sqlite") == \
        sqlite_rows(tmp_path / "a.sqlite")


async def test_a_stepsaga_worker_process_runs_the_pack_from_its_config(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "a.sqlite", rows=300)
    config = _config(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    app = backups_app(load(config, {}))  # the client starts works it does not run
    async with SqlStore.open(url) as store, Runtime(app.sagas, store=store) as client:
        worker = Served("worker", "--store", url, "--app", "workers.actions.backups:app",
                        "--config", str(config), "--lease-ttl", "2")
        try:
            assert worker.ready()["workers"]
            work_id = await client.start("backups.backup", {"job": "nightly"}, run=False)
            for _ in range(600):
                found = await store.work(work_id) or {}
                if found.get("status") in ENDED:
                    break
                await anyio.sleep(0.05)
            assert found["status"] == "completed", found
        finally:
            code, out, err = worker.stop()
        assert code == 0, err
        assert '"stopped"' in out
    assert len(list((tmp_path / "backups" / "nightly").iterdir())) == 1


async def test_the_config_names_the_failure_hook(tmp_path: Path) -> None:
    settings = section({"kind": "sqlite", "path": str(tmp_path / "none.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")})
    settings["notify"] = "tests.workers.backups.helpers:remember"
    TOLD.clear()
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("backups.backup", {"job": "job"})
    assert done.status == "failed"
    assert [(t["saga"], t["job"], t["stage"]) for t in TOLD] == [
        ("backups.backup", "job", "transfer")]
    told = TOLD[0]
    assert (told["version"], told["key"], told["work_id"]) == (1, done.work_id, done.work_id)
    assert (told["source"], told["target"], told["error_type"]) == (
        "src", "dst", "workers.actions.backups.errors.SourceError")
    assert "none.sqlite" in told["error"] and told["backup_id"] and told["failed_at"] > 0
    settings["notify"] = "tests.workers.backups.helpers:nowhere"
    try:
        backups_app(config=parse(settings))
    except ValueError as exc:
        assert "backups.notify: 'tests.workers.backups.helpers:nowhere' cannot be imported" \
            in str(exc)
    else:
        raise AssertionError("a notify naming nothing was taken")


async def test_a_failure_hook_that_raises_is_tried_again_then_leaves_the_work_for_a_person(
        tmp_path: Path) -> None:
    """A coroutine hook is awaited; one that raises is tried again with the same key (the
    compensation's retries), and when every try fails the backup ends
    compensation_failed: nobody was told, a person must look."""
    settings = section({"kind": "sqlite", "path": str(tmp_path / "none.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")})
    calls: list[dict[str, Any]] = []

    async def flaky(message: dict[str, Any]) -> None:
        calls.append(message)
        if len(calls) < 3:
            raise ConnectionError("the chat service is away")

    app = backups_app(config=parse(settings), notify=flaky)
    async with running(app, str(tmp_path / "s.sqlite")) as rt:
        told = await rt.run("backups.backup", {"job": "job"})
    assert told.status == "failed"
    assert [c["key"] for c in calls] == [told.work_id] * 3

    def broken(message: dict[str, Any]) -> None:  # a plain function: run in a thread
        calls.append(message)
        raise ConnectionError("the chat service is gone")

    calls.clear()
    app = backups_app(config=parse(settings), notify=broken)
    async with running(app, str(tmp_path / "s2.sqlite")) as rt:
        untold = await rt.run("backups.backup", {"job": "job"})
    assert untold.status == "compensation_failed"
    assert len(calls) == 3 and "the chat service is gone" in str(untold.error)
    assert not list((tmp_path / "backups").glob("job/*/manifest.json"))
