"""A worker killed in the middle of an upload that replaces a file on S3: another
worker takes the work over once the lease runs out, aborts the multipart upload the
dead one left, finds the old file where the dead one set it aside, writes the new one
and drops the old; the bucket holds the new file and nothing else."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from graphql_api.config import load
from workers.actions.files import files_app, open_bucket, parse, stage

from ..packs import Child, s3_client
from .helpers import SECRET_HEX

WORKER = Path(__file__).with_name("worker_child.py")


async def test_an_upload_cut_off_midway_is_completed_by_another_worker(
        tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[files]
staging = "{tmp_path}/staging"
[files.keys.main]
key = "{SECRET_HEX}"
[files.repositories.cloud]
kind = "s3"
bucket = "{s3_bucket}"
endpoint_url = "{s3_endpoint}"
access_key_id = "test"
secret_access_key = "test"
part_size = 5242880
[files.buckets.docs]
repository = "cloud"
encrypt_content = "main"
sign = "hmac-sha256"
sign_key = "main"
""")
    files = parse(load(config, {})["files"])
    url = f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    client = s3_client(s3_endpoint)
    new = os.urandom(30 << 20)  # 6 parts of 5 MiB
    async with SqlStore.open(url) as store, Runtime(
            files_app(config=files, api=False).sagas, store=store) as rt:
        old = await rt.run("files.upload", {"bucket": "docs", "key": "f.bin",
                                            **stage(files, [b"the old file"])})
        assert old.status == "completed"
        first = Child(WORKER, url, str(config))
        try:
            first.ready()
            work_id = await rt.start("files.upload", {
                "bucket": "docs", "key": "f.bin", "replace": True, **stage(files, [new])},
                run=False)
            began = time.monotonic()
            with anyio.fail_after(60):  # until a part of the upload is stored
                while True:
                    uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
                    if uploads and client.list_parts(
                            Bucket=s3_bucket, Key=uploads[0]["Key"],
                            UploadId=uploads[0]["UploadId"]).get("Parts"):
                        break
                    await anyio.sleep(0.01)
            first.process.send_signal(signal.SIGKILL)
        finally:
            first.stop()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert any(k.startswith(".aside/") for k in keys)  # the old file, set aside
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")  # left
        second = Child(WORKER, url, str(config))
        try:
            second.ready()
            found: dict[str, object] = {}
            with anyio.fail_after(60):
                while found.get("status") not in ("completed", "failed"):
                    await anyio.sleep(0.05)
                    found = await store.work(work_id) or {}
            taken = time.monotonic() - began
        finally:
            err = second.stop()
        assert found["status"] == "completed", (found, err)
        assert taken < 30  # the dead worker's lease (2 s) and lock (3 s) ran out
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["docs/f.bin"]
    _, body = open_bucket(files, "docs").open("f.bin")
    assert b"".join(body) == new
    assert not list((tmp_path / "staging").iterdir())
