"""The pack in a real ``stepsaga worker --app workers.actions.files:app --config FILE``
process: a client stages an upload and starts the work; the worker process takes it
from the shared staging directory into its bucket."""

from __future__ import annotations

from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from graphql_api.config import load
from workers.actions.files import files_app, open_bucket, parse, stage

from ...graphql_api.wire import Served
from .helpers import SECRET_HEX

ENDED = ("completed", "failed", "compensation_failed", "cancelled")


async def test_a_worker_process_runs_the_packs_sagas(tmp_path: Path) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[files]
staging = "{tmp_path}/staging"
[files.keys.main]
key = "{SECRET_HEX}"
[files.repositories.here]
kind = "directory"
path = "{tmp_path}/repo"
[files.buckets.docs]
repository = "here"
encrypt_names = "main"
encrypt_content = "main"
sign = "hmac-sha256"
sign_key = "main"
""")
    settings = load(config, {})
    files = parse(settings["files"])
    url = f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    app = files_app(settings, api=False)  # the client starts works it does not run
    async with SqlStore.open(url) as store, Runtime(app.sagas, store=store) as client:
        worker = Served("worker", "--store", url, "--app", "workers.actions.files:app",
                        "--config", str(config), "--lease-ttl", "2")
        try:
            assert worker.ready()["workers"]
            work_id = await client.start("files.upload", {
                "bucket": "docs", "key": "from/the/client.txt", "content_type": "text/plain",
                **stage(files, [b"hello from a client"])}, run=False)
            found: dict[str, object] = {}
            with anyio.fail_after(60):
                while found.get("status") not in ENDED:
                    await anyio.sleep(0.05)
                    found = await store.work(work_id) or {}
            assert found["status"] == "completed", found
        finally:
            code, out, err = worker.stop()
        assert code == 0, err
        assert '"stopped"' in out
    _, body = open_bucket(files, "docs").open("from/the/client.txt")
    assert b"".join(body) == b"hello from a client"
    assert not list((tmp_path / "staging").iterdir())
