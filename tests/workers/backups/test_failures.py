"""A failure at each stage of a backup leaves no partial object, no multipart upload
and no manifest, and calls the failure hook; backups of one source serialise on its
lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Breakpoint, RecordedEvent
from engine.store import SqlStore
from workers.actions.backups import backups_app, parse
from workers.node import WorkerSpec

from ...mariadb import MariadbServer
from .conftest import running, s3_client
from .helpers import make_sqlite, make_tree, section, target_table


def _left(kind: str, tmp_path: Path, endpoint: str, bucket: str) -> dict[str, Any]:
    """Every object, partial file and unfinished upload on the target."""
    if kind == "directory":
        root = tmp_path / "backups"
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
            if root.exists() else []
        return {"objects": files, "uploads": []}
    client = s3_client(endpoint)
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return {"objects": objects, "uploads": uploads}


NOTHING = {"objects": [], "uploads": []}


@pytest.fixture(params=["directory", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
           ) -> tuple[str, dict[str, Any], str]:
    bucket = request.getfixturevalue("s3_bucket") if request.param == "s3" else ""
    return request.param, target_table(request.param, tmp_path, s3_endpoint, bucket), bucket


async def test_a_source_that_cannot_be_read_leaves_nothing(
        tmp_path: Path, target: tuple[str, dict[str, Any], str], s3_endpoint: str) -> None:
    kind, table, bucket = target
    told: list[dict[str, Any]] = []
    app = backups_app(config=parse(section(
        {"kind": "sqlite", "path": str(tmp_path / "missing.sqlite")}, table)),
        notify=told.append)
    async with running(app, str(tmp_path / "store.sqlite")) as rt:
        done = await rt.run("backups.backup", {"job": "job"})
    assert done.status == "failed"
    assert "no SQLite database at" in done.error["message"]
    assert _left(kind, tmp_path, s3_endpoint, bucket) == NOTHING
    assert [(t["job"], t["stage"]) for t in told] == [("job", "transfer")]
    assert "no SQLite database" in told[0]["error"] and told[0]["work_id"] == done.work_id


async def test_a_dump_failing_midway_removes_its_partial_object_and_upload(
        tmp_path: Path, target: tuple[str, dict[str, Any], str], s3_endpoint: str,
        mariadb_server: MariadbServer) -> None:
    """mariadb-dump streams the first table (13 MB: parts of the upload are sent) and
    fails on the second, which its user may not read."""
    kind, table, bucket = target
    db = f"half_{kind[:3]}"
    mariadb_server.sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    mariadb_server.sql("CREATE TABLE a_big (id int PRIMARY KEY, v text); INSERT INTO a_big "
                       "SELECT seq, REPEAT(SHA2(seq, 256), 8) FROM seq_1_to_25000; "
                       "CREATE TABLE z_secret (id int)", db)
    mariadb_server.root_sql(
        f"CREATE USER IF NOT EXISTS 'partial'@'127.0.0.1' IDENTIFIED BY 'pw'; "
        f"GRANT SELECT ON {db}.a_big TO 'partial'@'127.0.0.1'; "
        f"GRANT INSERT ON {db}.z_secret TO 'partial'@'127.0.0.1'; "
        f"GRANT EVENT, SHOW VIEW ON {db}.* TO 'partial'@'127.0.0.1'")
    told: list[dict[str, Any]] = []
    app = backups_app(config=parse(section(
        {"kind": "mariadb", "host": "127.0.0.1", "port": mariadb_server.port,
         "user": "partial", "password": "pw", "database": db}, table, steps=[])),
        notify=told.append)
    try:
        async with running(app, str(tmp_path / "store.sqlite")) as rt:
            done = await rt.run("backups.backup", {"job": "job"})
    finally:
        mariadb_server.sql(f"DROP DATABASE {db}")
    assert done.status == "failed"
    assert "mariadb-dump of source 'src' failed" in done.error["message"]
    assert "z_secret" in done.error["message"]
    assert _left(kind, tmp_path, s3_endpoint, bucket) == NOTHING
    assert [t["stage"] for t in told] == ["transfer"]


async def test_a_manifest_that_cannot_be_written_compensates_the_transfer(
        tmp_path: Path, target: tuple[str, dict[str, Any], str], s3_endpoint: str) -> None:
    """Paused before the manifest stage, the data object vanishes (a person, another
    program): the manifest is refused, the transfer compensated, nothing is left."""
    kind, table, bucket = target
    make_sqlite(tmp_path / "a.sqlite")
    told: list[dict[str, Any]] = []
    app = backups_app(config=parse(section(
        {"kind": "sqlite", "path": str(tmp_path / "a.sqlite")}, table)), notify=told.append)
    paused = anyio.Event()

    def on_event(event: RecordedEvent) -> None:
        if event.type == "work.paused":
            paused.set()

    async with running(app, str(tmp_path / "store.sqlite"), on_event=on_event) as rt:
        work_id = await rt.start("backups.backup", {"job": "job"}, breakpoints=[
            Breakpoint(event="stage.transaction.started", path="manifest", when="before")])
        with anyio.fail_after(30):
            await paused.wait()
        (data,) = _left(kind, tmp_path, s3_endpoint, bucket)["objects"]
        assert data.endswith("/data")
        _remove(kind, tmp_path, s3_endpoint, bucket, data)
        await rt.resume(work_id)
        done = await rt.wait(work_id)
    assert done.status == "failed"
    assert "holds None bytes" in done.error["message"]
    assert "no manifest written" in done.error["message"]
    assert set(done.compensated) >= {"transfer", "prepare"}
    assert _left(kind, tmp_path, s3_endpoint, bucket) == NOTHING
    assert [t["stage"] for t in told] == ["manifest"]


def _remove(kind: str, tmp_path: Path, endpoint: str, bucket: str, key: str) -> None:
    if kind == "directory":
        (tmp_path / "backups" / key).unlink()
    else:
        s3_client(endpoint).delete_object(Bucket=bucket, Key=key)


async def test_two_backups_of_one_source_serialise_on_its_lock(tmp_path: Path,
                                                               store_url: str) -> None:
    """On a SQLite store and on PostgreSQL (the locks are the store's)."""
    make_tree(tmp_path / "tree")
    for i in range(6):  # enough that a transfer takes a while
        (tmp_path / "tree" / f"blob{i}").write_bytes(bytes(range(256)) * 40_000)
    app = backups_app(config=parse(section(
        {"kind": "directory", "path": str(tmp_path / "tree")},
        {"kind": "directory", "path": str(tmp_path / "backups")})))
    async with running(app, store_url) as rt:
        ids = [await rt.start("backups.backup", {"job": "job"}) for _ in range(2)]
        results = [await rt.wait(i) for i in ids]
        histories = [await rt.history(i) for i in ids]
    assert [r.status for r in results] == ["completed", "completed"]
    assert results[0].output["id"] != results[1].output["id"]
    waits = [e.event.payload.get("reason") for h in histories for e in h
             if e.type == "stage.waiting"]
    assert "lock backups.source:src" in waits
    first, second = sorted(r.output["transferred"] for r in results)
    assert first[1] <= second[0]  # one after the other, never at once
    described = {s["path"]: s["lock_key"] for s in rt.describe("backups.backup")["stages"]
                 if "lock_key" in s}
    assert described["transfer"] == "backups.source:{source}"
    assert described["manifest"] == "backups.target:{target}"


async def test_a_job_gone_from_the_config_fails_at_prepare_writing_nothing(
        tmp_path: Path) -> None:
    """A work created while the job existed, run by a node whose config no longer has it."""
    make_sqlite(tmp_path / "a.sqlite", rows=5)
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")})
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        work_id = await rt.start("backups.backup", {"job": "job"}, run=False)
    settings["jobs"]["other"] = settings["jobs"].pop("job")
    told: list[dict[str, Any]] = []
    app = backups_app(config=parse(settings), notify=told.append)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        node = app.node(store, [WorkerSpec(name="w")], node_id="n", poll_interval=0.05)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            for _ in range(400):
                done = await store.work(work_id) or {}
                if done.get("status") == "failed":
                    break
                await anyio.sleep(0.05)
            await node.drain()
    failure = json.loads(done["failure"])  # the store's row holds it as JSON
    assert done["status"] == "failed" and failure["path"] == "prepare"
    assert "unknown backup job 'job' (the jobs are: other)" in failure["error"]["message"]
    assert [(t["stage"], t["backup_id"]) for t in told] == [("prepare", None)]
    assert not (tmp_path / "backups").exists()


async def test_backups_of_one_target_wait_for_its_lock_to_write_their_manifests(
        tmp_path: Path) -> None:
    """Two jobs of two sources, one target: while another holder keeps the target's lock
    (a retention, a node elsewhere), both transfer and then wait; no manifest is written
    until the lock is let go."""
    from workers.locks import LockService

    for name in ("a", "b"):
        make_sqlite(tmp_path / f"{name}.sqlite", rows=50)
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")})
    settings["sources"]["other"] = {"kind": "sqlite", "path": str(tmp_path / "b.sqlite")}
    settings["jobs"]["second"] = {**settings["jobs"]["job"], "source": "other"}
    waiting: list[str] = []
    both = anyio.Event()

    def on_event(event: RecordedEvent) -> None:
        if event.type == "stage.waiting":
            waiting.append(f"{event.path}: {event.event.payload.get('reason')}")
            if len(waiting) == 2:
                both.set()

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        locks = LockService(store)
        await locks.acquire("backups.target:dst", "someone else", ttl=30)
        async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite"),
                           on_event=on_event) as rt:
            ids = [await rt.start("backups.backup", {"job": job}) for job in ("job", "second")]
            with anyio.fail_after(30):
                await both.wait()
            assert waiting == ["manifest: lock backups.target:dst"] * 2
            assert not list((tmp_path / "backups").rglob("manifest.json"))
            assert await locks.release("backups.target:dst", "someone else")
            results = [await rt.wait(i) for i in ids]
    assert [r.status for r in results] == ["completed", "completed"]
    assert len(list((tmp_path / "backups").rglob("manifest.json"))) == 2
