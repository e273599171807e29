"""Building configs and real sources for the backups tests."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

KEY_HEX = "11" * 32
OTHER_KEY_HEX = "22" * 32


def target_table(kind: str, tmp_path: Path, s3_endpoint: str = "", bucket: str = ""
                 ) -> dict[str, Any]:
    if kind == "directory":
        return {"kind": "directory", "path": str(tmp_path / "backups")}
    return {"kind": "s3", "bucket": bucket, "prefix": "team/", "endpoint_url": s3_endpoint,
            "access_key_id": "test", "secret_access_key": "test",
            "part_size": 5 * 1024 * 1024}


def section(source: dict[str, Any], target: dict[str, Any], steps: list[Any] | None = None,
            **job: Any) -> dict[str, Any]:
    return {"keys": {"main": {"key": KEY_HEX}}, "restore_paths": ["/tmp"],
            "sources": {"src": source}, "targets": {"dst": target},
            "jobs": {"job": {"source": "src", "target": "dst",
                             "steps": ["zstd", {"kind": "aes-gcm", "key": "main"}]
                             if steps is None else steps, **job}}}


def make_sqlite(path: Path, rows: int = 2000) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                       [(i, f"item {i}", os.urandom(64)) for i in range(rows)])
    db.close()


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT * FROM items ORDER BY id").fetchall()
    db.close()
    return found


def add_rows(path: Path, *names: str) -> None:
    """Rows added to a database make_sqlite made."""
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO items (name, data) VALUES (?, x'00')",
                       [(n,) for n in names])
    db.close()


def make_tree(root: Path) -> None:
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "a.txt").write_text("hello\n" * 1000)
    (root / "docs" / "deep" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "top.json").write_text('{"x": 1}')
    os.symlink("docs/a.txt", root / "link")


def tree_of(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir",)
        else:
            found[rel] = ("file", path.read_bytes())
    return found


def write_config(tmp_path: Path) -> Path:
    """A stepsaga.toml with a [backups] section: jobs nightly (scheduled, zstd and
    AES-GCM, to target here) and plain (on demand, to target there) of the SQLite
    source at tmp_path/app.sqlite."""
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[backups]
[backups.keys.main]
key = "{KEY_HEX}"
[backups.sources.db]
kind = "sqlite"
path = "{tmp_path}/app.sqlite"
[backups.targets.here]
kind = "directory"
path = "{tmp_path}/backups"
[backups.targets.there]
kind = "directory"
path = "{tmp_path}/elsewhere"
[backups.jobs.nightly]
source = "db"
target = "here"
steps = ["zstd", {{kind = "aes-gcm", key = "main"}}]
schedule = "0 3 * * *"
timezone = "Europe/Paris"
keep_last = 5
[backups.jobs.plain]
source = "db"
target = "there"
""")
    return config


TOLD: list[dict[str, Any]] = []


def remember(message: dict[str, Any]) -> None:
    """A failure hook a config names (``notify = "tests.workers.backups.helpers:remember"``)."""
    TOLD.append(message)
