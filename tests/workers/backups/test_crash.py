"""A stepsaga worker killed in the middle of an upload: another worker takes the work
over once the lease runs out, aborts the multipart upload the dead one left, and
completes the backup; the target holds the object and its manifest, nothing else."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from workers.actions.backups import backups_app, parse

from ..packs import Child
from .conftest import s3_client
from .helpers import target_table

WORKER = Path(__file__).with_name("worker_child.py")


async def test_a_backup_cut_off_mid_upload_is_completed_by_another_worker(
        tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(5):
        (tree / f"blob{i}").write_bytes(os.urandom(6 << 20))  # 30 MiB: 6 parts of 5 MiB
    settings = {"sources": {"src": {"kind": "directory", "path": str(tree)}},
                "targets": {"dst": target_table("s3", tmp_path, s3_endpoint, s3_bucket)},
                "jobs": {"job": {"source": "src", "target": "dst", "steps": []}}}
    config = tmp_path / "stepsaga.toml"
    config.write_text(_toml({"backups": settings}))
    url = f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    client = s3_client(s3_endpoint)
    args = (url, str(config))
    async with SqlStore.open(url) as store, Runtime(
            backups_app(config=parse(settings)).sagas, store=store) as rt:
        first = Child(WORKER, *args)
        try:
            first.ready()
            work_id = await rt.start("backups.backup", {"job": "job"}, run=False)
            began = time.monotonic()
            for _ in range(1000):  # until a part of the upload is stored
                uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
                if uploads and client.list_parts(
                        Bucket=s3_bucket, Key=uploads[0]["Key"],
                        UploadId=uploads[0]["UploadId"]).get("Parts"):
                    break
                await anyio.sleep(0.01)
            else:
                raise AssertionError("no part was uploaded")
            first.process.send_signal(signal.SIGKILL)
        finally:
            first.stop()
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")  # left
        second = Child(WORKER, *args)
        try:
            second.ready()
            for _ in range(1200):
                found = await store.work(work_id) or {}
                if found.get("status") in ("completed", "failed"):
                    break
                await anyio.sleep(0.05)
            taken = time.monotonic() - began
        finally:
            err = second.stop()
        assert found["status"] == "completed", (found, err)
        assert taken < 20  # the dead worker's lease (2 s) and lock (3 s) ran out
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert [k.rsplit("/", 1)[1] for k in keys] == ["data", "manifest.json"]
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=keys[1])["Body"].read())
    assert manifest["final"]["size"] == client.head_object(
        Bucket=s3_bucket, Key=keys[0])["ContentLength"] > 30 << 20


def _toml(data: dict[str, object], prefix: str = "") -> str:
    """Nested tables as TOML (only what this test writes: strings, ints, lists)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append(_toml(value, f"{prefix}{key}."))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    head = f"[{prefix[:-1]}]\n" if prefix and lines else ""
    return head + "\n".join(lines) + ("\n" if lines else "") + "".join(tables)
