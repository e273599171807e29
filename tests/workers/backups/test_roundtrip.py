"""A backup of each source to each target, restored and compared (files byte for byte,
databases by content), with its manifest checked; through zstd and AES-256-GCM."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from workers.actions.backups import backups_app, parse

from ...mariadb import MariadbServer
from ...pg import PostgresCluster
from .conftest import running, s3_client
from .helpers import (
    OTHER_KEY_HEX,
    make_sqlite,
    make_tree,
    section,
    sqlite_rows,
    target_table,
    tree_of,
)

SOURCES = ["sqlite", "postgres", "mariadb", "directory"]
TARGETS = ["directory", "s3"]


class Source:
    """A real source of one kind, filled with data, and how to read one back."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.request = request
        if kind == "sqlite":
            make_sqlite(tmp_path / "app.sqlite")
            self.table: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "app.sqlite")}
        elif kind == "directory":
            make_tree(tmp_path / "tree")
            self.table = {"kind": "directory", "path": str(tmp_path / "tree")}
        elif kind == "postgres":
            self.pg: PostgresCluster = request.getfixturevalue("postgres_cluster")
            url = request.getfixturevalue("postgres_url")
            self.db = url.rsplit("/", 1)[1]
            self.pg.psql("CREATE TABLE items (id int PRIMARY KEY, name text, data bytea); "
                         "INSERT INTO items SELECT i, 'item ' || i, sha256(i::text::bytea) "
                         "FROM generate_series(1, 3000) i", self.db)
            self.table = {"kind": "postgres", "url": url}
        else:
            self.my: MariadbServer = request.getfixturevalue("mariadb_server")
            self.db = f"shop_{abs(hash(str(tmp_path))) % 10**8}"
            self.my.sql(f"CREATE DATABASE {self.db}")
            self.my.sql("CREATE TABLE items (id int PRIMARY KEY, name text, data blob) "
                        "ENGINE=InnoDB; INSERT INTO items SELECT seq, CONCAT('item ', seq), "
                        "SHA2(seq, 256) FROM seq_1_to_3000", self.db)
            self.table = {"kind": "mariadb", "host": "127.0.0.1", "port": self.my.port,
                          "user": self.my.user, "password": self.my.password,
                          "database": self.db}

    def destination(self) -> dict[str, Any]:
        """Where a restore goes: somewhere new of the same kind."""
        if self.kind == "sqlite":
            return {"kind": "sqlite", "path": str(self.tmp_path / "restored.sqlite")}
        if self.kind == "directory":
            return {"kind": "directory", "path": str(self.tmp_path / "restored")}
        if self.kind == "postgres":  # a table of its own
            parts = urllib.parse.urlsplit(self.table["url"])
            return {"kind": "postgres", "url": urllib.parse.urlunsplit(
                parts._replace(path="/" + self.db + "_restored"))}
        # another database on the source's server, with its credentials from the config
        return {"source": "src", "database": self.db + "_restored"}

    def content(self, table: dict[str, Any]) -> Any:
        if self.kind == "sqlite":
            return sqlite_rows(Path(table["path"]))
        if self.kind == "directory":
            return tree_of(Path(table["path"]))
        if self.kind == "postgres":
            db = table["url"].rsplit("/", 1)[1]
            return self.pg.psql("SELECT id, name, encode(data, 'hex') FROM items ORDER BY id",
                                db)
        return self.my.sql("SELECT id, name, HEX(data) FROM items ORDER BY id",
                           table["database"])

    def restored(self) -> Any:
        """What the restore wrote where destination() said."""
        if self.kind == "mariadb":
            return self.content({"database": self.db + "_restored"})
        return self.content(self.destination())

    def change(self) -> None:
        if self.kind == "postgres":
            self.pg.psql("INSERT INTO items VALUES (0, 'new', '')", self.db)
        else:
            self.my.sql("INSERT INTO items VALUES (0, 'new', '')", self.db)

    def databases(self) -> list[str]:
        if self.kind == "postgres":
            return self.pg.psql("SELECT datname FROM pg_database", "postgres").split()
        return self.my.sql("SHOW DATABASES").split()

    def cleanup(self) -> None:
        if self.kind == "postgres":
            self.pg.drop_database(self.db + "_restored")
        elif self.kind == "mariadb":
            self.my.sql(f"DROP DATABASE IF EXISTS {self.db}; "
                        f"DROP DATABASE IF EXISTS {self.db}_restored")


@pytest.mark.parametrize("target_kind", TARGETS)
@pytest.mark.parametrize("source_kind", SOURCES)
async def test_backup_and_restore_each_source_to_each_target(
        source_kind: str, target_kind: str, tmp_path: Path, request: pytest.FixtureRequest,
        s3_endpoint: str) -> None:
    source = Source(source_kind, tmp_path, request)
    bucket = request.getfixturevalue("s3_bucket") if target_kind == "s3" else ""
    target = target_table(target_kind, tmp_path, s3_endpoint, bucket)
    app = backups_app(config=parse(section(source.table, target)))
    try:
        async with running(app, str(tmp_path / "store.sqlite")) as rt:
            done = await rt.run("backups.backup", {"job": "job"})
            assert done.status == "completed", done.error
            backup_id = done.output["id"]
            checked = await rt.run("backups.verify", {"job": "job", "backup": backup_id})
            assert checked.status == "completed", checked.error
            assert checked.output["sha256"] == done.output["sha256"]
            restored = await rt.run("backups.restore", {
                "job": "job", "backup": "latest", "into": source.destination()})
            assert restored.status == "completed", restored.error
        assert source.restored() == source.content(source.table)
        assert source.content(source.table)  # something was compared

        manifest = _manifest(target_kind, tmp_path, s3_endpoint, bucket, backup_id)
        assert manifest["id"] == backup_id and manifest["job"] == "job"
        assert manifest["source"] == {"name": "src", "kind": source_kind}
        assert [s["step"] for s in manifest["steps"]] == ["source", "zstd", "aes-gcm"]
        assert manifest["steps"][-1] | {"step": "x"} == {"step": "x", **{
            k: manifest["final"][k] for k in ("size", "sha256", "md5", "content_type")},
            "kind": "aes-gcm", "key": "main"}
        for step in manifest["steps"]:
            assert len(step["sha256"]) == 64 and len(step["md5"]) == 32 and step["size"] > 0
        assert manifest["created_at"] <= manifest["completed_at"]
        assert manifest["tools"]["stepsaga"] and manifest["tools"]["zstandard"]
        assert {"sqlite": "sqlite", "postgres": "pg_dump", "mariadb": "mariadb-dump",
                "directory": "tarfile"}[source_kind] in manifest["tools"]
    finally:
        source.cleanup()


def _manifest(kind: str, tmp_path: Path, endpoint: str, bucket: str, backup_id: str
              ) -> dict[str, Any]:
    key = f"job/{backup_id}/manifest.json"
    if kind == "directory":
        path = tmp_path / "backups" / key
        assert not path.stat().st_mode & 0o222  # read-only once written
        return dict(json.loads(path.read_bytes()))
    client = s3_client(endpoint)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return dict(json.loads(client.get_object(Bucket=bucket, Key="team/" + key)["Body"].read()))


@pytest.mark.parametrize("source_kind", ["postgres", "mariadb"])
async def test_a_database_restored_in_place_is_moved_aside_and_rolled_back(
        source_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    source = Source(source_kind, tmp_path, request)
    settings = section(source.table, {"kind": "directory", "path": str(tmp_path / "b")})
    app = backups_app(config=parse(settings))
    try:
        async with running(app, str(tmp_path / "store.sqlite")) as rt:
            assert (await rt.run("backups.backup", {"job": "job"})).status == "completed"
            before = source.content(source.table)
            source.change()
            changed = source.content(source.table)
            assert changed != before
            refused = await rt.run("backups.restore", {"job": "job"})
            assert refused.status == "failed"
            assert "exists (ask for replace" in refused.error["message"]
            done = await rt.run("backups.restore", {"job": "job", "replace": True})
            assert done.status == "completed", done.error
            assert done.output["into"] == {"source": "src"}  # no password in the events
            assert source.content(source.table) == before
            assert done.output["aside"] in source.databases()
            undone = await rt.run("backups.rollback", done.output)
            assert undone.status == "completed", undone.error
            assert source.content(source.table) == changed
            assert done.output["aside"] not in source.databases()
        # a restore that fails after moving the database aside puts it back
        settings["keys"]["main"] = {"key": OTHER_KEY_HEX}
        async with running(backups_app(config=parse(settings)),
                           str(tmp_path / "store.sqlite")) as rt:
            failed = await rt.run("backups.restore", {"job": "job", "replace": True})
        assert failed.status == "failed" and "does not decrypt" in failed.error["message"]
        assert source.content(source.table) == changed
        assert not [d for d in source.databases() if "_before_" in d]
    finally:
        source.cleanup()
