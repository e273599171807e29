"""The change feed from Python: each completed file operation is its work's
``work.completed`` event; :func:`changes` follows a bucket from a cursor, in order,
each once, and a subscriber resuming from a change's cursor gets only what came
after."""

from __future__ import annotations

from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from engine.store.feed import Feed
from workers.actions.files import CHANGES, Change, changes, files_app, parse, stage
from workers.gate import NodeGate

from .helpers import MODES, section


async def _take(feed: Feed, count: int, **options: object) -> list[Change]:
    found: list[Change] = []
    with anyio.fail_after(20):
        async for change in changes(feed, **options):  # type: ignore[arg-type]
            found.append(change)
            if len(found) == count:
                break
    return found


async def test_completed_operations_are_the_feed(tmp_path: Path) -> None:
    config = parse(section(tmp_path, {"kind": "directory", "path": str(tmp_path / "repo")},
                           docs=MODES["hmac"], other={}))
    app = files_app(config=config, api=False)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Feed.running(store, poll_interval=0.01) as feed, \
            Runtime(app.sagas, store=store, gate=NodeGate(store, holder="t")) as rt:
        for key in ("a.txt", "b.txt"):
            done = await rt.run("files.upload", {"bucket": "docs", "key": key,
                                                 **stage(config, [key.encode()])})
            assert done.status == "completed"
        await rt.run("files.download", {"bucket": "docs", "key": "a.txt"})  # a read
        await rt.run("files.list", {"bucket": "docs"})
        await rt.run("files.copy", {"bucket": "docs", "key": "a.txt", "to_bucket": "other",
                                    "to_key": "a.txt"})
        await rt.run("files.move", {"bucket": "docs", "key": "b.txt", "to_key": "c.txt"})
        await rt.run("files.delete", {"bucket": "docs", "key": "a.txt"})
        failed = await rt.run("files.delete", {"bucket": "docs", "key": "gone.txt"})
        assert failed.status == "failed"  # a failed operation changed nothing: not a change
        await rt.run("files.upload", {"bucket": "other", "key": "z.txt",
                                      **stage(config, [b"z"])})
        docs = await _take(feed, 5, bucket="docs", after=0)
        assert [(c.op, c.key) for c in docs] == [
            ("upload", "a.txt"), ("upload", "b.txt"), ("copy", "a.txt"), ("move", "b.txt"),
            ("delete", "a.txt")]
        assert docs[3].record["to_key"] == "c.txt" and docs[3].record["size"] == 5
        assert docs[2].touches("other") and not docs[0].touches("other")
        every = await _take(feed, 6, after=0)  # any bucket: the other's upload too
        assert [c.op for c in every] == ["upload", "upload", "copy", "move", "delete",
                                         "upload"]
        assert every[-1].bucket == "other" and every[-1].key == "z.txt"
        assert set(CHANGES) == {c.op for c in every}
        reads = await _take(feed, 2, ops=("download", "list"), after=0)
        assert [c.op for c in reads] == ["download", "list"]
        # resumed from a change's cursor: what came after it, each once
        later = await _take(feed, 2, bucket="docs", after=docs[2].cursor)
        assert [c.op for c in later] == ["move", "delete"]
        # live: a subscriber from the feed's position now sees the next operation as it
        # completes
        now = await feed.last_position()
        got: list[Change] = []

        async def follow() -> None:
            got.extend(await _take(feed, 1, bucket="docs", after=now))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await rt.run("files.upload", {"bucket": "docs", "key": "live.txt",
                                          **stage(config, [b"live"])})
        assert [(c.op, c.key) for c in got] == [("upload", "live.txt")]
        assert got[0].cursor > docs[-1].cursor
